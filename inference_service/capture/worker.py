"""Hidden-state capture inside vLLM's worker process.

Loaded by vLLM as `worker_extension_cls`: the class is mixed into the worker, so `self` is the
worker and `self.model_runner` its model runner. Importing this module in the worker installs
the load hook of the compiled path (compiled.py), which vLLM runs before it traces the
model. `actlog_install` (called once through `collective_rpc` once the engine is up) wraps the
runner's model call, so that each step is planned before the forward and its rows sent after
it. Where the rows come from depends on the path:
- eager: forward hooks on the embeddings, every decoder layer and the final norm copy the rows
  of the requests that want that layer; each returns at once when none does.
- compiled: the op inside the graph has written the layers into a static buffer; the rows of
  the requests are taken from it after the step. Hooks would never fire there: sentinel hooks
  count that they do not.

vLLM flattens all scheduled requests of a step into one token batch. The runner's batch layout
(request order, `query_start_loc`, tokens already computed) maps rows back to (request,
position). Rows are keyed by position, so a recompute after preemption overwrites instead of
duplicating. Requests of a step that want the same layers travel as one frame (frames.py).

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

from inference_service.capture import compiled
from inference_service.capture.frames import encode_frame_header

logger = logging.getLogger(__name__)

# Keys of SamplingParams.extra_args that carry a request's capture options.
KEY = "actlog_capture"
LAYERS = "actlog_layers"
SINK = "actlog_sink"
N = "actlog_n"
DTYPE = "actlog_dtype"

# n > 1: vLLM fans one request out into children "<index>_<parent id>" (each with n=1).
_CHILD_ID = re.compile(r"^(\d+)_")

compiled.install_load_hook()


def _dtype_name(dtype: torch.dtype) -> str:
    """The dtype table's name of a torch dtype (torch.bfloat16 -> "bfloat16")."""
    return str(dtype).removeprefix("torch.")


@dataclass
class _Slot:
    """One captured request's rows in this step."""

    key: str
    row_start: int  # first row in the flattened batch
    row_end: int
    pos_start: int  # position of the first row in the request's sequence


@dataclass
class _Group:
    """The requests of a step that capture the same layers to the same sink, stored in the
    same dtype: one frame."""

    sink: str
    layers: tuple[int, ...]
    # The dtype rows leave the worker in ("" = as computed).
    dtype: str = ""
    slots: list[_Slot] = field(default_factory=list)
    # rows of the flattened batch, as one slice when they are contiguous, else an index
    rows: slice | torch.Tensor | None = None
    # [layers, rows, hidden], filled by the hooks (eager) or from the static buffer (compiled)
    block: torch.Tensor | None = None

    @property
    def n_rows(self) -> int:
        return sum(s.row_end - s.row_start for s in self.slots)

    def seal(self, device: torch.device) -> None:
        first, contiguous = self.slots[0].row_start, True
        for a, b in zip(self.slots, self.slots[1:], strict=False):
            contiguous &= b.row_start == a.row_end
        if contiguous:
            self.rows = slice(first, self.slots[-1].row_end)
        else:
            index = [r for s in self.slots for r in range(s.row_start, s.row_end)]
            self.rows = torch.tensor(index, dtype=torch.long, device=device)

    def take(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """This group's rows of a batch tensor (rows along `dim`)."""
        if isinstance(self.rows, slice):
            return tensor.narrow(dim, self.rows.start, self.rows.stop - self.rows.start)
        return tensor.index_select(dim, self.rows)


@dataclass
class _Step:
    groups: list[_Group] = field(default_factory=list)
    # eager: layer -> (group, position of the layer in the group's block)
    wanted: dict[int, list[tuple[_Group, int]]] = field(default_factory=dict)


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


class _Capture:
    """Per-step planning and sending, shared by both paths."""

    def __init__(
        self,
        runner: Any,
        num_layers: int,
        hidden: int,
        dtype: torch.dtype,
        device: torch.device,
        static: compiled.StaticCapture | None,
    ) -> None:
        self.runner = runner
        self.num_layers = num_layers
        self.hidden = hidden
        self.dtype = dtype
        self.device = device
        self.static = static
        self.sender = _Sender()
        self.step: _Step | None = None
        self.counters = {"steps": 0, "capture_steps": 0, "frames": 0, "layer_hook_calls": 0}

    def plan(self) -> _Step | None:
        """The capturing requests of the step about to run, grouped by layers and sink."""
        runner = self.runner
        batch = runner.input_batch
        self.counters["steps"] += 1
        n = batch.num_reqs
        groups: dict[tuple[str, tuple[int, ...], str], _Group] = {}
        if n:
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
                layers = tuple(extra[LAYERS])
                where = (extra[SINK], layers, extra.get(DTYPE, ""))
                group = groups.get(where)
                if group is None:
                    group = groups[where] = _Group(*where)
                group.slots.append(_Slot(key, int(qsl[i]), int(qsl[i + 1]), int(computed[i])))
        if not groups:
            return None
        self.counters["capture_steps"] += 1
        step = _Step(list(groups.values()))
        for group in step.groups:
            group.seal(self.device)
        if self.static is None:
            for group in step.groups:
                group.block = self._new_block(group)
                for position, layer in enumerate(group.layers):
                    step.wanted.setdefault(layer, []).append((group, position))
        else:
            self.static.want({layer for g in step.groups for layer in g.layers})
        return step

    def _new_block(self, group: _Group) -> torch.Tensor:
        """Room for the group's rows of its layers: [layers, rows, hidden]."""
        return torch.empty(
            (len(group.layers), group.n_rows, self.hidden), dtype=self.dtype, device=self.device
        )

    def begin(self) -> None:
        self.step = self.plan()

    def end(self) -> _Step | None:
        """The step that just ran; the op copies nothing more until the next plan."""
        step, self.step = self.step, None
        if self.static is not None and step is not None:
            self.static.want_nothing()
        return step

    # -- eager path --------------------------------------------------------------------------

    def layer_hook(self, index: int) -> Any:
        final_norm = index == self.num_layers

        def hook(module: Any, args: Any, output: Any) -> None:
            self.counters["layer_hook_calls"] += 1
            step = self.step
            entries = step.wanted.get(index) if step is not None else None
            if not entries:
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
            # Copied into the group's own block: never an alias of vLLM's buffers, which
            # later layers or steps may reuse in place.
            for group, position in entries:
                out = group.block[position]  # type: ignore[index]
                if residual is None:
                    out.copy_(group.take(hidden))
                else:
                    torch.add(group.take(hidden), group.take(residual), out=out)

        return hook

    def sentinel_hook(self, module: Any, args: Any, output: Any) -> None:
        """On the compiled path: counts layer calls that ran eagerly (there should be none)."""
        self.counters["layer_hook_calls"] += 1

    # -- after the step ----------------------------------------------------------------------

    def flush(self, step: _Step, output: Any) -> None:
        if self.static is not None:
            final = output[0] if isinstance(output, tuple) else output
            for group in step.groups:
                group.block = self._from_static(group, final)
        for group in step.groups:
            block = group.block
            assert block is not None
            if group.dtype and group.dtype != _dtype_name(block.dtype):
                # Rounded once, from the values as computed (on the device: fewer bytes to copy).
                block = block.to(getattr(torch, group.dtype))
            if block.device.type != "cpu":
                block = block.to("cpu")
            payload = block.contiguous().view(torch.uint8).numpy()
            header = encode_frame_header(
                [(s.key, s.pos_start, s.row_end - s.row_start) for s in group.slots],
                group.layers,
                self.hidden,
                _dtype_name(block.dtype),
                payload.nbytes,
            )
            self.sender.send(group.sink, header, payload)
            self.counters["frames"] += 1

    def _from_static(self, group: _Group, final: torch.Tensor) -> torch.Tensor:
        """The group's rows of every layer it wants, in one gather from the static buffer
        (plus the final norm's rows from the model's output)."""
        static = self.static
        assert static is not None
        in_graph = [layer for layer in group.layers if layer != static.final]
        block = self._new_block(group)
        if in_graph:
            slots = [static.slot_of[layer] for layer in in_graph]
            first = slots[0]
            if slots == list(range(first, first + len(slots))):
                block[: len(slots)] = group.take(static.buffer.narrow(0, first, len(slots)), 1)
            else:
                index = torch.tensor(slots, dtype=torch.long, device=self.device)
                block[: len(slots)] = group.take(static.buffer.index_select(0, index), 1)
        if len(in_graph) < len(group.layers):
            # Layers are sorted, so the final norm is the block's last.
            block[-1] = group.take(final)
        return block


def _compiled_graphs(counter: Any) -> int:
    # Which counter moves depends on how vLLM compiles: ahead of time (the default on CPU),
    # through its own backend (piecewise, CUDA graphs), or with stock torch.compile.
    return int(
        counter.num_aot_compiles
        + counter.num_aot_artifacts_loaded
        + counter.num_backend_compilations
        + counter.stock_torch_compile_count
    )


class ActivationCaptureExtension:
    """Mixed into vLLM's worker class; methods are called via `collective_rpc`."""

    def actlog_install(self) -> dict[str, Any]:
        from vllm.compilation.counter import compilation_counter

        runner = self.model_runner  # type: ignore[attr-defined]
        model = runner.get_model()
        inner = model.model
        layers = inner.layers
        num_layers = len(layers)
        parameter = next(model.parameters())
        static = getattr(runner, "_actlog_static", None)
        capture = _Capture(
            runner,
            num_layers,
            int(getattr(model.config, "hidden_size", 0)),
            parameter.dtype,
            parameter.device,
            static,
        )
        self._actlog_capture = capture

        # Every step passes here (also when vLLM replays a CUDA graph inside the call), with
        # the runner's batch layout already prepared for it.
        forward = getattr(runner, "_model_forward", None)
        if forward is not None:

            def model_forward(*args: Any, **kwargs: Any) -> Any:
                capture.begin()
                try:
                    output = forward(*args, **kwargs)
                finally:
                    step = capture.end()
                if step is not None:
                    capture.flush(step, output)
                return output

            runner._model_forward = model_forward
        else:
            # A vLLM without that method: hooks on the top-level model, which run each step
            # outside compiled code (but not within a full CUDA graph's replay).
            model.register_forward_pre_hook(lambda module, args: capture.begin())

            def after(module: Any, args: Any, output: Any) -> None:
                if (step := capture.end()) is not None:
                    capture.flush(step, output)

            model.register_forward_hook(after)

        if static is None:
            # Hidden state i is decoder layer i's output; the last one's is replaced by the
            # final norm's, as in transformers, so that layer needs no hook of its own.
            hooked = {0: inner.embed_tokens, num_layers: inner.norm}
            hooked.update({i + 1: layers[i] for i in range(num_layers - 1)})
            for index, module in hooked.items():
                module.register_forward_hook(capture.layer_hook(index))
        else:
            for module in (inner.embed_tokens, *layers, inner.norm):
                module.register_forward_hook(capture.sentinel_hook)

        mode = runner.vllm_config.compilation_config.mode
        return {
            "num_layers": num_layers,
            "hidden_size": capture.hidden,
            "dtype": _dtype_name(parameter.dtype),
            "path": "eager" if static is None else "compiled",
            "available": list(static.available) if static is not None else [],
            "compile_mode": getattr(mode, "name", str(mode)),
            # Models vLLM compiled (or loaded compiled) in this process: 0 when nothing was.
            "compiled_graphs": _compiled_graphs(compilation_counter),
        }

    def actlog_counters(self) -> dict[str, int]:
        """What capture did in the worker since it started (reading them pauses stepping)."""
        counters = dict(self._actlog_capture.counters)
        counters["graph_writes"] = compiled.StaticCapture.writes()
        return counters
