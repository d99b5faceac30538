"""Layer selection follows transformers' output_hidden_states numbering."""

from __future__ import annotations

import pytest

from actlog_common.layers import recommended_layers
from inference_service.errors import InvalidRequest
from inference_service.layers import resolve_layers

N = 30  # SmolLM2-135M: 30 decoder layers, hidden states 0..30


def test_default_is_the_last_hidden_state():
    assert resolve_layers([], "", N) == [N]


def test_negative_indices_count_from_the_end_and_duplicates_collapse():
    assert resolve_layers([-1, 30, 0, -31, 5], "", N) == [0, 5, 30]


@pytest.mark.parametrize("bad", [31, -32, 1000])
def test_layers_outside_the_model_are_rejected_with_the_valid_range(bad):
    with pytest.raises(InvalidRequest, match=r"0\.\.30"):
        resolve_layers([bad], "", N)


def test_presets():
    assert resolve_layers([], "last", N) == [30]
    assert resolve_layers([], "all", N) == list(range(31))
    assert resolve_layers([], "recommended", N) == recommended_layers(N)


def test_recommended_spans_45_to_85_percent_of_depth():
    assert recommended_layers(30) == list(range(14, 26))
    assert recommended_layers(100) == list(range(45, 86))


def test_unknown_preset_and_mixed_choice_are_rejected():
    with pytest.raises(InvalidRequest, match="preset"):
        resolve_layers([], "middle", N)
    with pytest.raises(InvalidRequest, match="not both"):
        resolve_layers([1], "all", N)
