"""Which capture path an engine runs, chosen before it starts, and what it can capture.

- `compiled`: vLLM compiles the model (torch.compile; CUDA graphs on a GPU). Forward hooks never
  fire inside compiled code, so the layers of CAPTURE_LAYERS_AVAILABLE are written every step
  by an operation inside the graph (compiled.py). The set is fixed when the graph is
  traced: a request for another layer is refused.
- `eager`: ENFORCE_EAGER=true (and auto on CPU: inference_service/machine.py), or a model
  family the compiled path does not know. Forward hooks on every layer; any layer may be asked
  for.

Kept free of torch and vLLM: the service decides here, the worker reads the decision from
vLLM's `additional_config`, which vLLM also hashes into its compile cache key, so a graph traced
for one capture configuration is never loaded into an engine started with another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from actlog_common.layers import LayerError, LayerSpec
from inference_service.errors import StartupError
from inference_service.machine import Choice

# Key of the capture configuration in vLLM's `additional_config`.
ADDITIONAL_CONFIG_KEY = "actlog_capture"

# Families whose vLLM decoder layer is `forward(positions, hidden_states, residual)` returning
# (hidden, residual), whose first layer receives the embeddings with residual None, and whose
# model has `.model.layers` and `.model.norm`: the contract compiled.py relies on (and
# checks when the model loads).
COMPILED_ARCHITECTURES = frozenset(
    {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}
)

PathName = Literal["compiled", "eager"]


class CaptureConfigError(StartupError):
    """Capture settings that cannot work together; the message names them."""


@dataclass(frozen=True)
class CapturePath:
    name: PathName
    # Hidden-state indices a request may capture; empty on the eager path (any layer).
    available: tuple[int, ...]
    # Why this path, for the logs and /health ("ENFORCE_EAGER=true", ...).
    reason: str
    # The setting the available set came from, quoted in refusals.
    available_spec: str = ""

    @property
    def compiled(self) -> bool:
        return self.name == "compiled"

    def additional_config(self, num_layers: int, code_version: str) -> dict[str, Any]:
        """What the worker needs to build the compiled capture; empty on the eager path."""
        if not self.compiled:
            return {}
        return {
            ADDITIONAL_CONFIG_KEY: {
                "layers": list(self.available),
                "num_layers": num_layers,
                # The patched layer code is not part of vLLM's source hash: a new version of
                # it must not load graphs traced with the old one.
                "code": code_version,
            }
        }

    def unavailable(self, layers: list[int]) -> list[int]:
        """The layers of `layers` this engine cannot capture."""
        if not self.compiled:
            return []
        return [layer for layer in layers if layer not in self.available]

    def refusal(self, missing: list[int]) -> str:
        return (
            f"layers {missing} are not captured by this engine: it compiles capture of layers "
            f"{list(self.available)} (CAPTURE_LAYERS_AVAILABLE={self.available_spec}). Ask for "
            "those, or restart it with CAPTURE_LAYERS_AVAILABLE covering the layers wanted "
            "(actlog up --capture-layers-available all), or with ENFORCE_EAGER=true (any layer)"
        )


def choose_capture_path(
    *,
    eager: Choice,
    available_spec: str,
    default_spec: str,
    architectures: list[str],
    num_layers: int,
    cannot_compile: str = "",
) -> CapturePath:
    """Compiled capture unless ENFORCE_EAGER resolved to eager (`eager`, from
    machine.choose_enforce_eager, says so and why), the model family is not supported, or the
    host cannot compile (`cannot_compile` says why, e.g. no C++ compiler on a CPU host). The
    layers captured by default (CAPTURE_DEFAULT_LAYERS) are always available."""
    if eager.value == "true":
        return CapturePath("eager", (), eager.reason)
    if cannot_compile:
        return CapturePath("eager", (), cannot_compile)
    unknown = [a for a in architectures if a not in COMPILED_ARCHITECTURES]
    if unknown or not architectures:
        return CapturePath(
            "eager",
            (),
            f"compiled capture does not support {unknown or 'a model without architectures'}"
            f" (supported: {sorted(COMPILED_ARCHITECTURES)})",
        )
    layers = {}
    for name, spec in (("CAPTURE_LAYERS_AVAILABLE", available_spec),
                       ("CAPTURE_DEFAULT_LAYERS", default_spec)):  # fmt: skip
        try:
            layers[name] = LayerSpec.parse(spec, default="last").choose(num_layers)
        except (LayerError, ValueError) as error:
            raise CaptureConfigError(f"{name}={spec!r}: {error}") from None
    available = sorted(
        set(layers["CAPTURE_LAYERS_AVAILABLE"]) | set(layers["CAPTURE_DEFAULT_LAYERS"])
    )
    return CapturePath("compiled", tuple(available), eager.reason, available_spec=available_spec)
