"""Layer numbering, as transformers' `output_hidden_states`, and the choice of stored layers.

With N decoder layers there are N + 1 hidden states: 0 = embeddings, i = output of decoder
layer i, N = the final-normed output. Negative indices count from the end (-1 = N). The
client and the storage service resolve a read's layers here, so both say the same thing
about a layer a record does not hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# first_half / second_half: the original activation-logging server's --target-layers.
PRESETS = ("last", "all", "recommended", "first_half", "second_half")


def recommended_layers(num_layers: int) -> list[int]:
    """The layers from 45% to 85% of depth, where representation-engineering probes work best."""
    first = max(1, math.ceil(0.45 * num_layers))
    last = min(num_layers, math.floor(0.85 * num_layers))
    return list(range(first, last + 1))


def preset_layers(preset: str, num_layers: int) -> list[int]:
    """The hidden-state indices a preset names in a model of `num_layers` decoder layers;
    the halves split the num_layers + 1 states, the embeddings in the first."""
    half = (num_layers + 1) // 2
    presets = {
        "last": [num_layers],
        "all": list(range(num_layers + 1)),
        "recommended": recommended_layers(num_layers),
        "first_half": list(range(half)),
        "second_half": list(range(half, num_layers + 1)),
    }
    if preset not in presets:
        raise LayerError(f"unknown layer preset {preset!r}; expected one of {PRESETS}")
    return presets[preset]


class LayerError(ValueError):
    """A requested layer that does not name a stored one; the message says which."""


@dataclass(frozen=True)
class LayerSpec:
    """A choice of layers as every entry point takes it: a preset or hidden-state indices.

    Written `last`, `all`, `recommended` or comma-separated indices (`0,15,-1`; negative
    count from the end). The one parser of a layer choice: the CLI's --layers, the capture
    API, the settings CAPTURE_LAYERS_AVAILABLE / CAPTURE_DEFAULT_LAYERS and the HalluLens
    script's --capture_layers all read it here. Resolve it against a model (`choose`) or
    against the layers a record stores (`of_stored`).
    """

    indices: tuple[int, ...] = ()
    preset: str = ""

    @classmethod
    def parse(cls, spec: LayerChoice, default: str = "all") -> LayerSpec:
        """A spec from its text, an index, indices, or None / "" (= the `default` preset)."""
        if isinstance(spec, LayerSpec):
            return spec
        if spec is None or (isinstance(spec, str) and not spec.strip()):
            return cls(preset=default)
        if isinstance(spec, str):
            text = spec.strip()
            if text in PRESETS:
                return cls(preset=text)
            try:
                return cls(tuple(int(part) for part in text.split(",") if part.strip()))
            except ValueError:
                raise LayerError(
                    f"{spec!r} is neither comma-separated integers nor one of {', '.join(PRESETS)}"
                ) from None
        try:
            items = [spec] if isinstance(spec, int) else list(spec)
        except TypeError:
            items = [spec]
        if any(isinstance(i, bool) or not isinstance(i, int) for i in items):
            raise LayerError(f"layers must be integers or one of {', '.join(PRESETS)}: {spec!r}")
        return cls(tuple(items))

    def __str__(self) -> str:
        return self.preset or ",".join(str(i) for i in self.indices)

    def choose(self, num_layers: int) -> list[int]:
        """The layers of a model with `num_layers` decoder layers (`choose_layers`)."""
        return choose_layers(self.indices, self.preset, num_layers)

    def of_stored(self, stored: Sequence[int], num_layers: int, record_id: str) -> list[int]:
        """The stored layers this spec names in a record (`resolve_stored_layers`); a preset
        keeps the stored layers it covers (`all`: every one)."""
        if self.preset == "all":
            return list(stored)
        if not self.preset:
            return resolve_stored_layers(self.indices, stored, num_layers, record_id)
        wanted = preset_layers(self.preset, num_layers)
        chosen = [layer for layer in wanted if layer in stored]
        if not chosen:
            raise LayerError(
                f"record {record_id} stores layers {list(stored)}, none of the "
                f"{self.preset} layers {wanted}"
            )
        return chosen


# What a layer choice may be given as, wherever one is taken.
LayerChoice = LayerSpec | str | int | Iterable[int] | None


def resolve_stored_layers(
    requested: Sequence[int], stored: Sequence[int], num_layers: int, record_id: str
) -> list[int]:
    """Requested layers as stored layer numbers, in request order without repeats.

    Empty = every stored layer. Negative indices count from the end of the model's hidden
    states (num_layers + 1 of them), so they need the record's num_layers.
    """
    stored = list(stored)
    if not requested:
        return stored
    resolved: list[int] = []
    for layer in requested:
        if layer < 0 and num_layers == 0:
            raise LayerError(f"negative layer {layer}: record {record_id} does not say num_layers")
        index = num_layers + 1 + layer if layer < 0 else layer
        if index not in stored:
            shown = f"{layer} (= layer {index})" if layer < 0 else str(layer)
            raise LayerError(
                f"layer {shown} was not stored for record {record_id}; stored layers: {stored}"
            )
        if index not in resolved:
            resolved.append(index)
    return resolved


def choose_layers(layers: Iterable[int], preset: str, num_layers: int) -> list[int]:
    """A layer choice (indices or a preset) as sorted, unique, non-negative indices."""
    requested = list(layers)
    if preset and requested:
        raise LayerError("give either capture layers or a layer preset, not both")
    if preset:
        return preset_layers(preset, num_layers)
    if not requested:
        return [num_layers]
    total = num_layers + 1
    resolved = set()
    for layer in requested:
        if not -total <= layer < total:
            raise LayerError(
                f"layer {layer} does not exist: the model has hidden states 0..{num_layers} "
                f"(or {-total}..-1 counting from the end)"
            )
        resolved.add(layer % total)
    return sorted(resolved)
