"""Layer selection follows transformers' output_hidden_states numbering."""

from __future__ import annotations

import pytest

from actlog_common.layers import LayerError, LayerSpec, recommended_layers
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


# -- LayerSpec: the one parser of a layer choice, wherever one is written ---------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("last", LayerSpec(preset="last")),
        (" recommended ", LayerSpec(preset="recommended")),
        ("0,15,-1", LayerSpec((0, 15, -1))),
        ("3", LayerSpec((3,))),
        (7, LayerSpec((7,))),
        ([1, 2], LayerSpec((1, 2))),
        (None, LayerSpec(preset="all")),
        ("", LayerSpec(preset="all")),
    ],
)
def test_a_layer_spec_reads_presets_indices_and_nothing(text, expected):
    assert LayerSpec.parse(text) == expected
    assert LayerSpec.parse(LayerSpec.parse(text)) == expected


@pytest.mark.parametrize("bad", ["zero", "1,,x", "first", [True], ["1"], 1.5])
def test_a_malformed_layer_spec_names_what_is_accepted(bad):
    with pytest.raises(LayerError, match="last, all, recommended"):
        LayerSpec.parse(bad)


def test_a_spec_resolves_against_a_model_or_a_records_stored_layers():
    assert LayerSpec.parse("last").choose(30) == [30]
    assert LayerSpec.parse("-1,0").choose(30) == [0, 30]
    stored = [0, 14, 20, 30]
    assert LayerSpec.parse("all").of_stored(stored, 30, "r") == stored
    assert LayerSpec.parse("recommended").of_stored(stored, 30, "r") == [14, 20]
    assert LayerSpec.parse("last").of_stored(stored, 30, "r") == [30]
    assert LayerSpec.parse("-1,14").of_stored(stored, 30, "r") == [30, 14]
    with pytest.raises(LayerError, match="none of the recommended layers"):
        LayerSpec.parse("recommended").of_stored([0, 30], 30, "r")
    with pytest.raises(LayerError, match="layer 5 was not stored for record r"):
        LayerSpec.parse("5").of_stored(stored, 30, "r")


def test_every_entry_point_parses_layers_with_it():
    """The capture API, the HalluLens flag and the capture settings agree with the CLI."""
    from actlog.hallulens.stack_inference import parse_capture_layers
    from actlog.repe.capture import layer_spec
    from inference_service.capture.path import CaptureConfigError

    assert parse_capture_layers("recommended") == "recommended"
    assert parse_capture_layers("0,-1") == [0, -1]
    assert layer_spec("last") == ([], "last") and layer_spec([3]) == ([3], "")
    for call in (lambda: parse_capture_layers("x"), lambda: layer_spec("x")):
        with pytest.raises(ValueError, match="last, all, recommended"):
            call()
    assert issubclass(CaptureConfigError, Exception)
