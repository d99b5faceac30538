"""Layer numbering, as transformers' `output_hidden_states`, and the choice of stored layers.

With N decoder layers there are N + 1 hidden states: 0 = embeddings, i = output of decoder
layer i, N = the final-normed output. Negative indices count from the end (-1 = N). The
client and the storage service resolve a read's layers here, so both say the same thing
about a layer a record does not hold.
"""

from __future__ import annotations

from collections.abc import Sequence


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
