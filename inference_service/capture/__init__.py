"""The capture pipeline: hidden states from inside vLLM to the storage service.

- `path`: which path an engine runs (compiled: inside the graph; eager: forward hooks) and
  the layers it can capture, chosen before the engine starts.
- `worker` (in vLLM's worker process) with `compiled`: rows of each step, sent as `frames`.
- `collector` (in the service): files each request's rows in the `spool` on disk.
- `sink`: streams finished records from the spool to storage, off the response path.
"""
