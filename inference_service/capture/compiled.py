"""Capture inside vLLM's compiled model (torch.compile on CPU, CUDA graphs on a GPU).

Forward hooks never run inside compiled code. Instead, when the model loads (before vLLM traces
it), each decoder layer whose hidden state may be captured gets a call to `actlog::capture`, a
custom op that declares the static buffer it writes: compilation keeps it (no graph break),
and a CUDA graph records its copy at a fixed address. Every step the op writes the layer's
`hidden + residual` for the whole flattened batch into its slot of one preallocated buffer
[slots, max tokens per step, hidden]; after the step, worker.py takes the rows of the
requests that asked for them out of it, mapped to (request, position) exactly as on the eager
path. The final-normed state (index N) is the model's output, read from it after the step.

Index 0 (the embeddings) is the input of decoder layer 0, which receives residual None; index i
(1..N-1) the output of decoder layer i-1. The layer set is fixed when the graph is traced.

On CPU the op's body runs every step (inductor calls it), so it copies only the slots a request
of this step wants; while a CUDA graph is being recorded it always copies, since a replay
repeats whatever was recorded.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inference_service.capture.path import ADDITIONAL_CONFIG_KEY

logger = logging.getLogger(__name__)

# Hash of this file: part of the compile cache key (capture_path.CapturePath.additional_config).
CODE_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


@dataclass
class _OpState:
    # slot -> whether a request of the current step wants it
    wanted: list[bool] = field(default_factory=list)
    # copies the op made (the op ran from the compiled graph when hooks did not)
    writes: int = 0


_STATE = _OpState()


@torch.library.custom_op(
    "actlog::capture",
    mutates_args=("buffer",),
    schema="(Tensor(a!) buffer, int slot, Tensor hidden, Tensor? residual) -> ()",
)
def capture_rows(
    buffer: torch.Tensor, slot: int, hidden: torch.Tensor, residual: torch.Tensor | None
) -> None:
    recording = buffer.is_cuda and torch.cuda.is_current_stream_capturing()
    if not recording and not (slot < len(_STATE.wanted) and _STATE.wanted[slot]):
        return
    n = hidden.shape[0]
    if n > buffer.shape[1]:
        raise RuntimeError(
            f"actlog capture: a step of {n} tokens exceeds the buffer of {buffer.shape[1]}"
        )
    out = buffer[slot, :n]
    if residual is None:
        out.copy_(hidden)
    else:
        torch.add(hidden, residual, out=out)
    _STATE.writes += 1


@capture_rows.register_fake
def _(buffer: torch.Tensor, slot: int, hidden: torch.Tensor, residual: torch.Tensor | None) -> None:
    return None


@dataclass
class StaticCapture:
    """The compiled capture of one loaded model."""

    buffer: torch.Tensor  # [slots, max tokens per step, hidden]
    slot_of: dict[int, int]  # hidden-state index -> its slot in `buffer`
    available: tuple[int, ...]  # every capturable index, the final norm's included
    num_layers: int

    @property
    def final(self) -> int:
        """The index of the final-normed state, taken from the model's output."""
        return self.num_layers

    def want(self, layers: set[int]) -> None:
        """Let the op copy these layers in the coming step (and no others)."""
        wanted = _STATE.wanted
        for index, slot in self.slot_of.items():
            wanted[slot] = index in layers

    def want_nothing(self) -> None:
        _STATE.wanted[:] = [False] * len(_STATE.wanted)

    @staticmethod
    def writes() -> int:
        return _STATE.writes


class UnsupportedModel(RuntimeError):
    pass


def _check_contract(model: Any, num_layers: int) -> tuple[Any, Any]:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(inner, "norm"):
        raise UnsupportedModel(
            f"compiled capture needs model.model.layers and model.model.norm; "
            f"{type(model).__name__} has not: set ENFORCE_EAGER=true"
        )
    if len(layers) != num_layers:
        raise UnsupportedModel(
            f"compiled capture was planned for {num_layers} layers, the model has {len(layers)}"
        )
    cls = type(layers[0])
    params = list(
        inspect.signature(getattr(cls.forward, "_actlog_original", cls.forward)).parameters
    )
    if params[1:4] != ["positions", "hidden_states", "residual"]:
        raise UnsupportedModel(
            f"compiled capture needs decoder layers called as (positions, hidden_states, "
            f"residual); {cls.__name__}.forward takes {params[1:]}: set ENFORCE_EAGER=true"
        )
    return inner, cls


def _patch_layer_class(cls: type) -> None:
    """Give the decoder layer class the op calls; layers without a slot trace none."""
    if getattr(cls.forward, "_actlog_original", None) is not None:
        return
    original = cls.forward

    @functools.wraps(original)
    def forward(
        self: Any, positions: Any, hidden_states: Any, residual: Any, *args: Any, **kw: Any
    ):
        if self._actlog_input_slot is not None:
            torch.ops.actlog.capture(self._actlog_buffer, self._actlog_input_slot, hidden_states,
                                     residual)  # fmt: skip
        hidden_states, residual = original(self, positions, hidden_states, residual, *args, **kw)
        if self._actlog_output_slot is not None:
            torch.ops.actlog.capture(self._actlog_buffer, self._actlog_output_slot, hidden_states,
                                     residual)  # fmt: skip
        return hidden_states, residual

    forward._actlog_original = original  # type: ignore[attr-defined]
    cls._actlog_input_slot = None  # type: ignore[attr-defined]
    cls._actlog_output_slot = None  # type: ignore[attr-defined]
    cls._actlog_buffer = None  # type: ignore[attr-defined]
    cls.forward = forward  # type: ignore[method-assign]


def build(runner: Any, config: dict[str, Any]) -> StaticCapture:
    """Buffer and op calls for the layers of `config`, on the model `runner` just loaded."""
    model = runner.get_model()
    num_layers = int(config["num_layers"])
    inner, cls = _check_contract(model, num_layers)
    available = tuple(sorted(int(i) for i in config["layers"]))
    in_graph = [i for i in available if i != num_layers]
    slot_of = {index: slot for slot, index in enumerate(in_graph)}
    parameter = next(model.parameters())
    sched = runner.vllm_config.scheduler_config
    comp = runner.vllm_config.compilation_config
    max_tokens = max(
        int(sched.max_num_batched_tokens), int(getattr(comp, "max_cudagraph_capture_size", 0) or 0)
    )
    hidden = int(model.config.hidden_size)
    # Empty when only the final norm is captured: it is read from the model's output.
    buffer = torch.zeros(
        (len(in_graph), max_tokens if in_graph else 0, hidden),
        dtype=parameter.dtype,
        device=parameter.device,
    )
    _patch_layer_class(cls)
    layers = inner.layers
    for index, slot in slot_of.items():
        if index == 0:
            layers[0]._actlog_input_slot = slot
            layers[0]._actlog_buffer = buffer
        else:
            layers[index - 1]._actlog_output_slot = slot
            layers[index - 1]._actlog_buffer = buffer
    _STATE.wanted = [False] * len(in_graph)
    logger.info(
        "compiled capture of layers %s: a %s buffer of %.1f MiB",
        list(available),
        tuple(buffer.shape),
        buffer.numel() * buffer.element_size() / 2**20,
    )
    return StaticCapture(buffer, slot_of, available, num_layers)


def install_load_hook() -> None:
    """Build the compiled capture right after the model runner loads the model, before vLLM
    compiles it, when the engine's additional_config asks for it. Runs in the worker process
    (vLLM imports the worker extension module there before loading the model)."""
    classes: list[type] = []
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    classes.append(GPUModelRunner)
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner

        classes.append(CPUModelRunner)
    except Exception:  # noqa: BLE001 - not every platform ships the CPU runner
        pass
    for cls in classes:
        original = vars(cls).get("load_model")
        if original is None or getattr(original, "_actlog", False):
            continue

        @functools.wraps(original)
        def load_model(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
            _original(self, *args, **kwargs)
            config = (self.vllm_config.additional_config or {}).get(ADDITIONAL_CONFIG_KEY)
            if config and getattr(self, "_actlog_static", None) is None:
                self._actlog_static = build(self, config)

        load_model._actlog = True  # type: ignore[attr-defined]
        cls.load_model = load_model  # type: ignore[method-assign]
