"""`actlog control-vector` on the default model, in-process: from a concept's pairs to the
vector files and the report, with the provenance a reader needs to trust them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from actlog.repe.control_vector import ControlVector, import_gguf

ROOT = Path(__file__).resolve().parents[2]
ACTLOG = Path(sys.executable).parent / "actlog"


@pytest.fixture(scope="module")
def loaded():
    from actlog.repe.inprocess import load_model

    return load_model("default")


@pytest.fixture(scope="module")
def honesty(loaded):
    from actlog.repe.capture import capture_from_concept
    from actlog.repe.training import last_token_hiddens

    model, tokenizer = loaded
    data = capture_from_concept(model, tokenizer, "honesty", [1, 12, 20, 30], max_samples=24)
    return data, last_token_hiddens(data)


def test_the_hiddens_are_each_prompts_last_token(honesty) -> None:
    data, hiddens = honesty
    pos, neg = hiddens[20]
    assert pos.shape == neg.shape == (24, 576)
    np.testing.assert_array_equal(pos[3], data["positive"][3]["activations"][20][0, -1].numpy())
    np.testing.assert_array_equal(neg[0], data["negative"][0]["activations"][20][0, -1].numpy())


def numpy_pca_first_component(x: np.ndarray) -> np.ndarray:
    centered = x - x.mean(axis=0)
    return np.linalg.svd(centered, full_matrices=False)[2][0]


@pytest.mark.parametrize("method", ["mean_diff", "pca_diff", "pca_center"])
def test_on_real_states_each_method_matches_its_reference_definition(honesty, method) -> None:
    """repe's cluster mean and repeng's pca_diff / pca_center, written out in numpy."""
    from actlog.repe.control_vector import train_directions

    _, hiddens = honesty
    ours = train_directions(hiddens, method)
    for layer, (pos, neg) in hiddens.items():
        pos64, neg64 = pos.astype(np.float64), neg.astype(np.float64)
        if method == "mean_diff":
            reference = pos64.mean(axis=0) - neg64.mean(axis=0)
        elif method == "pca_diff":
            reference = numpy_pca_first_component(pos64 - neg64)
        else:
            center = (pos64 + neg64) / 2
            reference = numpy_pca_first_component(np.vstack([pos64 - center, neg64 - center]))
        reference /= np.linalg.norm(reference)
        cosine = float(ours[layer] @ reference)
        assert abs(cosine) >= 0.99, f"layer {layer}: |cosine| {abs(cosine):.4f}"
        # Oriented so that positives project higher in most pairs.
        assert np.mean(pos64 @ ours[layer] > neg64 @ ours[layer]) >= 0.5


@pytest.mark.slow
def test_the_command_writes_the_vector_the_gguf_and_the_report(tmp_path) -> None:
    result = subprocess.run(
        [str(ACTLOG), "control-vector", "--concept", "honesty", "--layers", "1,12,20,30",
         "--method", "mean_diff", "--max-samples", "24", "--output", "honesty"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "best layer" in result.stdout and "held-out accuracy" in result.stdout
    assert "not in the GGUF: layer 1" in result.stderr  # direction.0: llama.cpp refuses it

    vector = ControlVector.load_safetensors(tmp_path / "honesty.safetensors")
    assert sorted(vector.directions) == [1, 12, 20, 30]
    meta = vector.metadata
    assert meta["model"] == "SmolLM2-135M-Instruct" and meta["model_type"] == "llama"
    assert meta["dataset_name"] == "honesty" and meta["method"] == "mean_diff"
    assert meta["position"] == "last token" and json.loads(meta["layers"]) == [1, 12, 20, 30]
    from actlog.repe.pairs import load_concept

    assert meta["dataset_sha256"] == load_concept("honesty").sha256
    for direction in vector.directions.values():
        assert direction.shape == (576,) and abs(np.linalg.norm(direction) - 1) < 1e-5

    reader = gguf.GGUFReader(tmp_path / "honesty.gguf")
    names = {t.name: t for t in reader.tensors}
    assert set(names) == {"direction.11", "direction.19", "direction.29"}  # ours i -> i-1
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    np.testing.assert_allclose(names["direction.19"].data, vector.directions[20])
    back = import_gguf(tmp_path / "honesty.gguf")
    assert sorted(back.directions) == [12, 20, 30]

    report = json.loads((tmp_path / "honesty.report.json").read_text())
    assert [row["layer"] for row in report["rows"]] == [1, 12, 20, 30]
    assert report["best_layer"] in (1, 12, 20, 30) and report["recommended_layers"]
    assert (tmp_path / "honesty.report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    control = json.loads((tmp_path / "honesty.control.json").read_text())
    assert control["shuffled_labels"] is True and "shuffled-label control" in result.stdout


def test_bad_choices_are_refused_before_any_capture(tmp_path) -> None:
    wrong = subprocess.run(
        [str(ACTLOG), "control-vector", "--concept", "honesty", "--method", "lda"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert wrong.returncode == 2 and "--method must be one of mean_diff" in wrong.stderr
    none = subprocess.run(
        [str(ACTLOG), "control-vector"], capture_output=True, text=True, timeout=120,
        cwd=tmp_path,
    )  # fmt: skip
    assert none.returncode == 2 and "one of --concept or --concept-file" in none.stderr
