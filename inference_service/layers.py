"""Which layers a request captures, numbered as actlog_common.layers says (-1 = final norm)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from inference_service.errors import InvalidRequest

PRESETS = ("last", "all", "recommended")


def recommended_layers(num_layers: int) -> list[int]:
    """The layers from 45% to 85% of depth, where representation-engineering probes work best."""
    first = max(1, math.ceil(0.45 * num_layers))
    last = min(num_layers, math.floor(0.85 * num_layers))
    return list(range(first, last + 1))


def resolve_layers(layers: Iterable[int], preset: str, num_layers: int) -> list[int]:
    """Normalize a request's layer choice to sorted, unique, non-negative indices."""
    requested = list(layers)
    if preset and requested:
        raise InvalidRequest(
            "give either capture layers or a layer preset, not both", param="capture_layers"
        )
    if preset:
        if preset == "last":
            return [num_layers]
        if preset == "all":
            return list(range(num_layers + 1))
        if preset == "recommended":
            return recommended_layers(num_layers)
        raise InvalidRequest(
            f"unknown layer preset {preset!r}; expected one of {PRESETS}", param="capture_layers"
        )
    if not requested:
        return [num_layers]
    total = num_layers + 1
    resolved = set()
    for layer in requested:
        if not -total <= layer < total:
            raise InvalidRequest(
                f"layer {layer} does not exist: the model has hidden states 0..{num_layers} "
                f"(or {-total}..-1 counting from the end)",
                param="capture_layers",
            )
        resolved.add(layer % total)
    return sorted(resolved)


def parse_layer_spec(spec: str) -> tuple[list[int], str]:
    """`last`, `all`, `recommended` or comma-separated indices -> (indices, preset)."""
    spec = spec.strip()
    if spec in ("last", "all", "recommended"):
        return [], spec
    return [int(part) for part in spec.split(",") if part.strip()], ""
