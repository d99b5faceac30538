"""Which layers a request captures, numbered as actlog_common.layers says (-1 = final norm)."""

from __future__ import annotations

from collections.abc import Iterable

from actlog_common.layers import LayerError, choose_layers
from inference_service.errors import InvalidRequest


def resolve_layers(layers: Iterable[int], preset: str, num_layers: int) -> list[int]:
    """A request's layer choice as sorted, unique hidden-state indices (`choose_layers`)."""
    try:
        return choose_layers(layers, preset, num_layers)
    except LayerError as error:
        raise InvalidRequest(str(error), param="capture_layers") from None
