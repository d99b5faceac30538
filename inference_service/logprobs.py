"""vLLM's per-position log-probabilities in the shape the API returns them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from inference_service.types import TokenLogprob


def token_logprobs(
    token_ids: Sequence[int],
    per_position: Any,
    start: int,
    k: int | None,
    decode: Callable[[list[int]], str],
) -> tuple[TokenLogprob, ...]:
    """vLLM's per-position {token id: Logprob} maps -> the chosen token's and the top k."""
    if per_position is None or k is None:
        return ()
    out = []
    for i in range(start, len(token_ids)):
        token_id = token_ids[i]
        entries = per_position[i] if i < len(per_position) else None
        if not entries:
            # The first prompt token: nothing predicts it.
            out.append(TokenLogprob(token_id, decode([token_id]), None))
            continue
        chosen = entries.get(token_id)
        ranked = sorted(
            (item for item in entries.items() if item[1].rank is not None and item[1].rank <= k),
            key=lambda item: item[1].rank,
        )
        out.append(
            TokenLogprob(
                token_id=token_id,
                token=chosen.decoded_token
                if chosen and chosen.decoded_token is not None
                else decode([token_id]),
                logprob=chosen.logprob if chosen else None,
                top=tuple((tid, lp.decoded_token or "", lp.logprob) for tid, lp in ranked),
            )
        )
    return tuple(out)
