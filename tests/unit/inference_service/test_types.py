"""The inference service's domain types that go out as messages name their fields exactly as
the messages do, so each converts field by field and none can drift from its .proto."""

from __future__ import annotations

import dataclasses

import pytest

from actlog_common.v1 import inference_pb2
from inference_service.types import GenerationResult, ModelDescription, TokenDelta, TokenLogprob

SENT_AS = [
    (TokenDelta, inference_pb2.TokenDelta),
    (GenerationResult, inference_pb2.GenerateResult),
    (ModelDescription, inference_pb2.ModelInfo),
]


@pytest.mark.parametrize(("domain", "message"), SENT_AS, ids=lambda t: t.__name__)
def test_a_domain_type_has_exactly_its_messages_fields(domain: type, message: type) -> None:
    fields = {f.name for f in dataclasses.fields(domain)}
    assert fields == {f.name for f in message.DESCRIPTOR.fields}


def test_model_description_is_sent_as_model_info() -> None:
    info = ModelDescription(
        model="tiny", num_layers=30, hidden_size=576, dtype="bfloat16", max_model_len=8192,
        default_layers=(30,), recommended_layers=(14, 20, 26), kv_cache_bytes=1 << 30,
        capture_path="compiled", available_layers=(0, 30),
    )  # fmt: skip
    assert info.to_pb() == inference_pb2.ModelInfo(
        model="tiny", num_layers=30, hidden_size=576, dtype="bfloat16", max_model_len=8192,
        default_layers=[30], recommended_layers=[14, 20, 26], kv_cache_bytes=1 << 30,
        capture_path="compiled", available_layers=[0, 30],
    )  # fmt: skip


def test_results_and_deltas_carry_their_log_probabilities() -> None:
    first = TokenLogprob(5, "<5>", None)
    second = TokenLogprob(7, "b", -0.5, top=((3, "a", -0.25), (7, "b", -0.5)))
    result = GenerationResult(
        text="b", prompt_token_ids=(5,), output_token_ids=(7,), finish_reason="length",
        prompt_hash="h", record_id="r", layers=(0, 2), model="tiny", index=1, prompt="p",
        logprobs=(second,), prompt_logprobs=(first,),
    )  # fmt: skip
    pb = result.to_pb().result
    assert (pb.text, list(pb.layers), pb.index, pb.record_id) == ("b", [0, 2], 1, "r")
    assert not pb.prompt_logprobs[0].HasField("logprob")  # nothing predicts the first token
    assert [(t.token_id, t.logprob) for t in pb.logprobs[0].top] == [(3, -0.25), (7, -0.5)]

    delta = TokenDelta((7,), "b", 1, (second,)).to_pb().delta
    assert (list(delta.token_ids), delta.text, delta.index) == ([7], "b", 1)
    assert delta.logprobs[0] == second.to_pb()
