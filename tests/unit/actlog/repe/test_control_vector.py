"""Control-vector directions, their files, and the GGUF layer mapping.

The data are synthetic pairs with a planted concept direction: each pair has its own topic
(large, and orthogonal to the concept, so only the concept tells positive from negative),
the positive sits half the pair's concept strength along the planted direction and the
negative half of it against, plus noise. The strength varies across pairs, as it does for
real prompts; pca_diff needs that (it centers the differences).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors import safe_open

from actlog.repe.control_vector import (
    METHODS,
    ControlVector,
    import_gguf,
    load_safetensors,
    make_metadata,
    orient_direction,
    project_layers,
    project_onto_direction,
    train_direction,
    train_directions,
)

HIDDEN = 16
N_PAIRS = 96


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def planted_pairs(
    seed: int = 0, n_pairs: int = N_PAIRS, hidden: int = HIDDEN, noise: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positive, negative, planted unit direction), float32 like captured states."""
    rng = np.random.default_rng(seed)
    planted = unit(rng.normal(size=hidden))
    topic = rng.normal(scale=2.0, size=(n_pairs, hidden)) + 5.0
    topic -= np.outer(topic @ planted, planted)
    strength = rng.uniform(0.5, 3.0, size=(n_pairs, 1))
    positive = topic + strength / 2 * planted + rng.normal(scale=noise, size=topic.shape)
    negative = topic - strength / 2 * planted + rng.normal(scale=noise, size=topic.shape)
    return positive.astype(np.float32), negative.astype(np.float32), planted


# Independent references in plain numpy: PCA as the top right-singular vector of the centered
# data, mean_diff as the difference of the means.
def first_principal_component(data: np.ndarray) -> np.ndarray:
    centered = data - data.mean(axis=0)
    return np.linalg.svd(centered, full_matrices=False)[2][0]


def reference_direction(positive: np.ndarray, negative: np.ndarray, method: str) -> np.ndarray:
    pos, neg = positive.astype(np.float64), negative.astype(np.float64)
    if method == "mean_diff":
        return unit(pos.mean(axis=0) - neg.mean(axis=0))
    if method == "pca_diff":
        return first_principal_component(pos - neg)
    center = (pos + neg) / 2
    return first_principal_component(np.concatenate([pos - center, neg - center]))


def share_positive_above(
    positive: np.ndarray, negative: np.ndarray, direction: np.ndarray
) -> float:
    return float(np.mean(positive @ direction > negative @ direction))


@pytest.mark.parametrize("method", METHODS)
def test_each_method_agrees_with_an_independent_numpy_implementation(method: str) -> None:
    positive, negative, _ = planted_pairs()
    ours = train_direction(positive, negative, method)
    reference = reference_direction(positive, negative, method)
    assert ours.dtype == np.float32 and ours.shape == (HIDDEN,)
    assert np.linalg.norm(ours) == pytest.approx(1.0, abs=1e-6)
    assert abs(float(ours @ reference)) >= 0.99
    assert share_positive_above(positive, negative, ours) > 0.5


@pytest.mark.parametrize("method", METHODS)
def test_each_method_recovers_the_planted_direction_pointing_at_the_positives(method: str) -> None:
    positive, negative, planted = planted_pairs(seed=1)
    direction = train_direction(positive, negative, method)
    assert float(direction @ planted) >= 0.9


@pytest.mark.parametrize("method", METHODS)
def test_swapping_the_labels_flips_the_direction(method: str) -> None:
    positive, negative, planted = planted_pairs(seed=2)
    direction = train_direction(positive, negative, method)
    swapped = train_direction(negative, positive, method)
    assert float(direction @ swapped) <= -0.99
    assert float(swapped @ planted) <= -0.9
    assert share_positive_above(negative, positive, swapped) > 0.5


def test_the_sign_rule_flips_only_when_more_pairs_project_below_than_above() -> None:
    positive, negative, planted = planted_pairs(seed=3)
    assert np.array_equal(orient_direction(-planted, positive, negative), planted)
    assert np.array_equal(orient_direction(planted, positive, negative), planted)
    # One pair above, one below, one tied: not a majority against, so no flip.
    direction = np.array([1.0, 0.0])
    pos = np.array([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    neg = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 5.0]])
    assert np.array_equal(orient_direction(direction, pos, neg), direction)


def test_train_directions_trains_every_layer_on_its_own_pairs() -> None:
    first, second = planted_pairs(seed=4), planted_pairs(seed=5)
    hiddens = {3: first[:2], 7: second[:2]}
    directions = train_directions(hiddens, "pca_center")
    assert sorted(directions) == [3, 7]
    assert float(directions[3] @ first[2]) >= 0.9
    assert float(directions[7] @ second[2]) >= 0.9


def test_bad_inputs_are_rejected_with_the_layer_named() -> None:
    positive, negative, _ = planted_pairs()
    with pytest.raises(ValueError, match="unknown method"):
        train_directions({1: (positive, negative)}, "lat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"layer 4: .*\(n_pairs, hidden\)"):
        train_directions({4: (positive, negative[:-1])}, "mean_diff")
    with pytest.raises(ValueError, match="pca_diff needs at least 2 pairs"):
        train_direction(positive[:1], negative[:1], "pca_diff")
    with pytest.raises(ValueError, match="no direction"):
        train_direction(positive, positive, "mean_diff")


def test_projection_is_the_scalar_projection_whatever_the_direction_scale() -> None:
    positive, negative, planted = planted_pairs()
    assert np.allclose(project_onto_direction(positive, 3.0 * planted), positive @ planted)
    projections = project_layers({2: (positive, negative)}, {2: planted, 9: planted})
    assert list(projections) == [2]
    pos, neg = projections[2]
    assert np.allclose(pos - neg, (positive - negative) @ planted)
    with pytest.raises(ValueError, match="non-zero"):
        project_onto_direction(positive, np.zeros(HIDDEN))


def make_vector(layers: list[int], num_layers: int = 6) -> ControlVector:
    rng = np.random.default_rng(7)
    directions = {k: unit(rng.normal(size=HIDDEN)).astype(np.float32) for k in layers}
    metadata = make_metadata(
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        model_type="llama",
        num_layers=num_layers,
        method="pca_diff",
        layers=layers,
        hidden_size=HIDDEN,
        dataset_name="honesty",
        dataset_sha256="0" * 64,
        record_ids=["rec-1", "rec-2"],
        created_at="2025-01-01T00:00:00+00:00",
    )
    return ControlVector(directions=directions, metadata=metadata)


def test_metadata_is_strings_with_lists_as_json() -> None:
    metadata = make_vector([2, 5]).metadata
    assert all(isinstance(value, str) for value in metadata.values())
    assert json.loads(metadata["layers"]) == [2, 5]
    assert json.loads(metadata["record_ids"]) == ["rec-1", "rec-2"]
    assert metadata["position"] == "last token"
    with pytest.raises(TypeError, match="strings"):
        ControlVector({1: np.ones(3, np.float32)}, {"hidden_size": 3})  # type: ignore[dict-item]


def test_safetensors_round_trip_keeps_directions_and_metadata(tmp_path: Path) -> None:
    vector = make_vector([0, 1, 3, 6])
    path = tmp_path / "honesty.safetensors"
    vector.save_safetensors(path)
    with safe_open(str(path), framework="np") as handle:
        assert sorted(handle.keys()) == ["direction.0", "direction.1", "direction.3", "direction.6"]
    loaded = load_safetensors(path)
    assert loaded.metadata == vector.metadata
    assert list(loaded.directions) == [0, 1, 3, 6]
    for layer, direction in vector.directions.items():
        assert loaded.directions[layer].dtype == np.float32
        assert np.array_equal(loaded.directions[layer], direction)


def gguf_string(reader: gguf.GGUFReader, key: str) -> str:
    field = reader.get_field(key)
    assert field is not None, key
    return bytes(field.parts[field.data[0]]).decode()


def test_gguf_export_writes_our_index_i_as_direction_i_minus_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vector = make_vector([0, 1, 2, 4, 6], num_layers=6)
    path = tmp_path / "honesty.gguf"
    with caplog.at_level(logging.WARNING):
        result = vector.export_gguf(path)

    reader = gguf.GGUFReader(str(path))
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    assert sorted(tensors) == ["direction.1", "direction.3", "direction.5"]
    for layer, name in ((2, "direction.1"), (4, "direction.3"), (6, "direction.5")):
        tensor = tensors[name]
        assert list(tensor.shape) == [HIDDEN]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert tensor.data.dtype == np.float32
        assert np.array_equal(tensor.data, vector.directions[layer])
    assert gguf_string(reader, "general.architecture") == "controlvector"
    assert gguf_string(reader, "controlvector.model_hint") == "llama"
    assert reader.get_field("controlvector.layer_count").contents() == 3
    assert gguf_string(reader, "controlvector.actlog.dataset_name") == "honesty"

    # Embeddings never get a slot; block 0 is off by default (llama.cpp rejects direction.0).
    assert result.written == {2: "direction.1", 4: "direction.3", 6: "direction.5"}
    assert set(result.skipped) == {0, 1}
    assert json.loads(gguf_string(reader, "controlvector.actlog.gguf_skipped")).keys() == {"0", "1"}
    assert "skips layer 0" in caplog.text and "skips layer 1" in caplog.text
    # The final-normed state is exported but applied before the norm: noted.
    assert "before the final norm" in result.notes[6]


def test_gguf_export_keeps_block0_for_repeng_users_and_never_writes_embeddings(
    tmp_path: Path,
) -> None:
    path = tmp_path / "repeng.gguf"
    result = make_vector([0, 1, 2]).export_gguf(path, keep_block0=True, model_hint="mistral")
    reader = gguf.GGUFReader(str(path))
    assert sorted(tensor.name for tensor in reader.tensors) == ["direction.0", "direction.1"]
    assert gguf_string(reader, "controlvector.model_hint") == "mistral"
    assert reader.get_field("controlvector.layer_count").contents() == 2
    assert list(result.skipped) == [0]


def test_gguf_export_needs_a_model_hint_and_a_slot(tmp_path: Path) -> None:
    vector = make_vector([3])
    del vector.metadata["model_type"]
    with pytest.raises(ValueError, match="model hint"):
        vector.export_gguf(tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="no direction has a GGUF slot"):
        make_vector([0, 1]).export_gguf(tmp_path / "b.gguf")


def test_import_gguf_of_an_export_gives_back_the_directions_under_our_indices(
    tmp_path: Path,
) -> None:
    vector = make_vector([0, 1, 2, 4, 6])
    path = tmp_path / "honesty.gguf"
    vector.export_gguf(path, keep_block0=True)
    imported = import_gguf(path)
    assert list(imported.directions) == [1, 2, 4, 6]
    for layer, direction in imported.directions.items():
        assert np.array_equal(direction, vector.directions[layer])
    assert imported.metadata["model_type"] == "llama"
    assert imported.metadata["dataset_sha256"] == vector.metadata["dataset_sha256"]


def test_import_gguf_reads_a_plain_repeng_file(tmp_path: Path) -> None:
    """What repeng's export_gguf writes: its layer id l is block l, our index l + 1."""
    path = tmp_path / "repeng.gguf"
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_uint32("controlvector.layer_count", 2)
    writer.add_tensor("direction.0", np.full(4, 0.5, np.float32))
    writer.add_tensor("direction.9", np.full(4, -0.5, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    imported = import_gguf(path)
    assert list(imported.directions) == [1, 10]
    assert np.array_equal(imported.directions[10], np.full(4, -0.5, np.float32))
    assert imported.metadata == {"model_type": "llama"}
