"""Hidden-state capture inside vLLM's worker process.

Loaded by vLLM as `worker_extension_cls`: the class is mixed into the worker, so `self` is the
worker and `self.model_runner` its model runner. `actlog_install` (called once through
`collective_rpc`) hooks the embeddings, every decoder layer and the final norm; each hook returns
at once unless a request in the current step asked for that layer, so requests without capture
pay only for a dictionary lookup per layer.

vLLM flattens all scheduled requests of a step into one token batch. The pre-hook on the model
reads the runner's batch layout (request order, `query_start_loc`, tokens already computed) to
map rows back to (request, position). Rows are keyed by position, so a recompute after
preemption overwrites instead of duplicating.

Layer numbering follows transformers' `output_hidden_states`: 0 = embeddings, i = output of
decoder layer i (vLLM returns it as `hidden_states + residual`), N = final-normed output.
"""

from __future__ import annotations

import logging
import queue
import re
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from inference_service.capture_frames import encode_header

logger = logging.getLogger(__name__)

# Keys of SamplingParams.extra_args that carry a request's capture options.
KEY = "actlog_capture"
LAYERS = "actlog_layers"
SINK = "actlog_sink"
N = "actlog_n"

# n > 1: vLLM fans one request out into children "<index>_<parent id>" (each with n=1).
_CHILD_ID = re.compile(r"^(\d+)_")


def _dtype_name(dtype: torch.dtype) -> str:
    """The dtype table's name of a torch dtype (torch.bfloat16 -> "bfloat16")."""
    return str(dtype).removeprefix("torch.")


@dataclass
class _Slot:
    """One captured request's rows in this step."""

    key: str
    sink: str
    row_start: int  # first row in the flattened batch
    row_end: int
    pos_start: int  # position of the first row in the request's sequence


@dataclass
class _Step:
    # layer -> the slots that want it, in batch order
    wanted: dict[int, list[_Slot]] = field(default_factory=dict)
    # layer -> their rows, concatenated in the same order (still on the model's device)
    captured: dict[int, torch.Tensor] = field(default_factory=dict)


class _Sender:
    """Ships frames to the inference service on a background thread, off the step loop."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, bytes, Any]] = queue.SimpleQueue()
        self._sockets: dict[str, socket.socket] = {}
        self._thread = threading.Thread(target=self._run, name="actlog-capture", daemon=True)
        self._thread.start()

    def send(self, sink: str, header: bytes, payload: Any) -> None:
        self._queue.put((sink, header, payload))

    def _connect(self, sink: str) -> socket.socket:
        sock = self._sockets.get(sink)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(sink)
            self._sockets[sink] = sock
        return sock

    def _run(self) -> None:
        while True:
            sink, header, payload = self._queue.get()
            try:
                sock = self._connect(sink)
                sock.sendall(header)
                sock.sendall(payload)
            except OSError:
                # The service restarted or went away: its pending captures are gone with it.
                logger.exception("capture sink %s unreachable; frame dropped", sink)
                stale = self._sockets.pop(sink, None)
                if stale is not None:
                    stale.close()


class ActivationCaptureExtension:
    """Mixed into vLLM's worker class; methods are called via `collective_rpc`."""

    def actlog_install(self) -> dict[str, Any]:
        runner = self.model_runner  # type: ignore[attr-defined]
        model = runner.get_model()
        inner = model.model
        layers = inner.layers
        num_layers = len(layers)
        self._actlog_step = _Step()
        self._actlog_sender = _Sender()
        self._actlog_num_layers = num_layers

        model.register_forward_pre_hook(self._actlog_plan_step)
        model.register_forward_hook(self._actlog_flush_step)
        inner.embed_tokens.register_forward_hook(self._actlog_layer_hook(0))
        for i, layer in enumerate(layers):
            layer.register_forward_hook(self._actlog_layer_hook(i + 1))
        # The last decoder layer's pre-norm output is replaced by the norm output, as in
        # transformers: index N is the final-normed hidden state.
        inner.norm.register_forward_hook(self._actlog_layer_hook(num_layers))

        dtype = next(model.parameters()).dtype
        return {
            "num_layers": num_layers,
            "hidden_size": int(getattr(model.config, "hidden_size", 0)),
            "dtype": _dtype_name(dtype),
        }

    # -- hooks -------------------------------------------------------------------------------

    def _actlog_plan_step(self, module: Any, args: Any) -> None:
        runner = self.model_runner  # type: ignore[attr-defined]
        batch = runner.input_batch
        step = _Step()
        self._actlog_step = step
        n = batch.num_reqs
        if n == 0:
            return
        qsl = runner.query_start_loc.np
        computed = batch.num_computed_tokens_cpu
        for i, req_id in enumerate(batch.req_ids[:n]):
            state = runner.requests.get(req_id)
            extra = getattr(getattr(state, "sampling_params", None), "extra_args", None)
            if not extra or KEY not in extra:
                continue
            key = extra[KEY]
            if extra.get(N, 1) > 1:
                child = _CHILD_ID.match(req_id)
                key = f"{key}:{child.group(1) if child else 0}"
            slot = _Slot(
                key=key,
                sink=extra[SINK],
                row_start=int(qsl[i]),
                row_end=int(qsl[i + 1]),
                pos_start=int(computed[i]),
            )
            for layer in extra[LAYERS]:
                step.wanted.setdefault(layer, []).append(slot)

    def _actlog_layer_hook(self, index: int) -> Any:
        final_norm = index == self._actlog_num_layers

        def hook(module: Any, args: Any, output: Any) -> None:
            step: _Step = self._actlog_step
            slots = step.wanted.get(index)
            if not slots:
                return
            residual = None
            if isinstance(output, tuple):
                # Decoder layers return (mlp output, residual): the residual stream is their
                # sum. The final norm returns (normed, residual): the normed part is wanted.
                hidden = output[0]
                if not final_norm and len(output) > 1:
                    residual = output[1]
            else:
                hidden = output
            # Only the rows of capturing requests are summed or copied. The result never
            # aliases vLLM's buffers, which may be reused in place by later layers or steps.
            parts = []
            for s in slots:
                rows = hidden[s.row_start : s.row_end]
                if residual is not None:
                    rows = rows + residual[s.row_start : s.row_end]
                parts.append(rows)
            if len(parts) > 1:
                step.captured[index] = torch.cat(parts)
            else:
                step.captured[index] = parts[0] if residual is not None else parts[0].clone()

        return hook

    def _actlog_flush_step(self, module: Any, args: Any, output: Any) -> None:
        step: _Step = self._actlog_step
        self._actlog_step = _Step()
        if not step.captured:
            return
        layers = list(step.captured)
        tensors = [step.captured[layer] for layer in layers]
        if tensors[0].device.type != "cpu":
            # One device->host copy per step for the whole batch, not one per layer/request.
            sizes = [t.shape[0] for t in tensors]
            tensors = list(torch.cat(tensors).to("cpu").split(sizes))
        for layer, tensor in zip(layers, tensors, strict=True):
            dtype = _dtype_name(tensor.dtype)
            hidden = tensor.shape[-1]
            offset = 0
            for slot in step.wanted[layer]:
                n_rows = slot.row_end - slot.row_start
                payload = tensor[offset : offset + n_rows].contiguous().view(torch.uint8).numpy()
                offset += n_rows
                header = encode_header(
                    slot.key, layer, slot.pos_start, n_rows, hidden, dtype, payload.nbytes
                )
                self._actlog_sender.send(slot.sink, header, payload)
