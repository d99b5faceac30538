"""Layer numbering, as transformers' `output_hidden_states`, and the choice of stored layers.

With N decoder layers there are N + 1 hidden states: 0 = embeddings, i = output of decoder
layer i, N = the final-normed output. Negative indices count from the end (-1 = N). The
client and the storage service resolve a read's layers here, so both say the same thing
about a layer a record does not hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

PRESETS = ("last", "all", "recommended")


def recommended_layers(num_layers: int) -> list[int]:
    """The layers from 45% to 85% of depth, where representation-engineering probes work best."""
    first = max(1, math.ceil(0.45 * num_layers))
    last = min(num_layers, math.floor(0.85 * num_layers))
    return list(range(first, last + 1))


def parse_layer_spec(spec: str) -> tuple[list[int], str]:
    """`last`, `all`, `recommended` or comma-separated indices -> (indices, preset)."""
    spec = spec.strip()
    if spec in PRESETS:
        return [], spec
    return [int(part) for part in spec.split(",") if part.strip()], ""


class LayerError(ValueError):
    """A requested layer that does not name a stored one; the message says which."""


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
        if preset == "last":
            return [num_layers]
        if preset == "all":
            return list(range(num_layers + 1))
        if preset == "recommended":
            return recommended_layers(num_layers)
        raise LayerError(f"unknown layer preset {preset!r}; expected one of {PRESETS}")
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
