"""Log-probabilities are reported for the chosen token, with the top k by rank."""

from __future__ import annotations

from vllm.logprobs import Logprob

from inference_service.logprobs import token_logprobs


def decode(ids: list[int]) -> str:
    return f"<{ids[0]}>"


def test_first_prompt_token_has_no_logprob_and_top_k_follows_rank():
    per_position = [
        None,
        {7: Logprob(-0.5, rank=2, decoded_token="b"), 3: Logprob(-0.1, rank=1, decoded_token="a"),
         9: Logprob(-2.0, rank=3, decoded_token="c")},
    ]  # fmt: skip
    first, second = token_logprobs([5, 7], per_position, 0, 2, decode)
    assert (first.token, first.logprob, first.top) == ("<5>", None, ())
    assert second.token == "b" and second.logprob == -0.5
    assert second.top == ((3, "a", -0.1), (7, "b", -0.5))


def test_nothing_when_not_asked_and_start_skips_earlier_tokens():
    per_position = [{1: Logprob(-1.0, rank=1, decoded_token="x")}] * 3
    assert token_logprobs([1, 1, 1], per_position, 0, None, decode) == ()
    assert len(token_logprobs([1, 1, 1], per_position, 2, 0, decode)) == 1
    assert token_logprobs([1], per_position, 0, 0, decode)[0].top == ()
