"""The original tool's API and command line, in-process on the default model.

What people who used `capture_activations.py` will type again: its imports, signatures,
result structure and shapes, its flags, and files that plain `torch.load` opens.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reference import load_reference

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loaded():
    from capture_activations import load_model

    return load_model("default")


def test_a_capture_has_the_original_structure_and_shapes(loaded) -> None:
    from capture_activations import capture_activations

    model, tokenizer = loaded
    data = capture_activations(model, tokenizer, "Your prompt here")
    n = model.config.num_hidden_layers
    ids = tokenizer("Your prompt here")["input_ids"]
    assert set(data) >= {"activations", "input_ids", "tokens", "prompt", "num_layers",
                         "captured_layers"}  # fmt: skip
    assert data["num_layers"] == n == 30
    assert data["captured_layers"] == list(range(n + 1)) == sorted(data["activations"])
    assert data["input_ids"].tolist() == [ids]
    assert data["tokens"] == [tokenizer.decode([t]) for t in ids]
    assert data["prompt"] == "Your prompt here"
    for hidden in data["activations"].values():
        assert hidden.shape == (1, len(ids), model.config.hidden_size)
        assert hidden.dtype == torch.float32


def test_layers_are_hidden_state_indices_as_transformers_numbers_them(loaded) -> None:
    from capture_activations import capture_activations

    model, tokenizer = loaded
    data = capture_activations(model, tokenizer, "Hello", layers=[0, 14, -1])
    assert data["captured_layers"] == [0, 14, 30]
    reference = load_reference(str(model.config._name_or_path), "float32")
    expected = reference.hidden_states(data["input_ids"][0].tolist())
    for layer in (0, 14, 30):
        np.testing.assert_allclose(data["activations"][layer][0].numpy(), expected[layer],
                                   rtol=1e-5, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("layers", [[14, 15, 16, 17], "recommended", "last", [0, 1, 29, 30]])
def test_hooks_capture_exactly_what_output_hidden_states_gives(loaded, layers) -> None:
    from capture_activations import capture_activations

    model, tokenizer = loaded
    plain = capture_activations(model, tokenizer, "Tell me a story", layers=layers)
    hooked = capture_activations(model, tokenizer, "Tell me a story", layers=layers,
                                 use_hooks=True)  # fmt: skip
    assert hooked["captured_layers"] == plain["captured_layers"]
    for layer in plain["captured_layers"]:
        assert torch.equal(hooked["activations"][layer], plain["activations"][layer])
    if layers == "recommended":
        assert plain["captured_layers"] == list(range(14, 26))  # 45%..85% of 30


def test_contrastive_capture_pairs_positives_with_negatives(loaded) -> None:
    from capture_activations import capture_contrastive_activations

    model, tokenizer = loaded
    positive = ["Act as an honest assistant. Hello!", "Act as an honest assistant. How can I help?"]
    negative = ["Act as a deceptive assistant. Hello!",
                "Act as a deceptive assistant. How can I help?"]  # fmt: skip
    data = capture_contrastive_activations(model, tokenizer, positive, negative,
                                           layers=[14, 15, 16])  # fmt: skip
    assert [d["prompt"] for d in data["positive"]] == positive
    assert [d["prompt"] for d in data["negative"]] == negative
    for pos, neg in zip(data["positive"], data["negative"], strict=True):
        assert pos["activations"][14].shape[-1] == neg["activations"][14].shape[-1] == 576
    with pytest.raises(ValueError, match="pairs need one of each"):
        capture_contrastive_activations(model, tokenizer, positive, negative[:1])


def test_a_concept_capture_takes_the_first_max_samples_pairs(loaded, tmp_path) -> None:
    from actlog.repe.pairs import load_concept
    from capture_activations import capture_from_concept

    model, tokenizer = loaded
    data = capture_from_concept(model, tokenizer, concept="honesty", layers=[14, 15, 16],
                                max_samples=5)  # fmt: skip
    pairs = load_concept("honesty").pairs[:5]
    assert [d["prompt"] for d in data["positive"]] == [p.positive for p in pairs]
    assert [d["prompt"] for d in data["negative"]] == [p.negative for p in pairs]
    assert data["concept"] == "honesty" and len(data["dataset_sha256"]) == 64
    with pytest.raises(ValueError, match="unknown concept 'bravery'; available: honesty"):
        capture_from_concept(model, tokenizer, concept="bravery")

    own = tmp_path / "mine.jsonl"
    own.write_text('{"positive": "I love it.", "negative": "I hate it."}\n')
    mine = capture_from_concept(model, tokenizer, concept_file=str(own), layers="last")
    assert mine["concept"] == "mine" and mine["positive"][0]["prompt"] == "I love it."
    own.write_text('{"positive": "only one side"}\n')
    with pytest.raises(ValueError, match=r"mine.jsonl:1: expected"):
        capture_from_concept(model, tokenizer, concept_file=str(own))


def test_statistics_equal_a_numpy_recomputation(loaded) -> None:
    from capture_activations import capture_activations, compute_activation_stats

    model, tokenizer = loaded
    data = capture_activations(model, tokenizer, "Water boils at", layers=[3, 30])
    stats = compute_activation_stats(data)
    for layer in (3, 30):
        values = data["activations"][layer].numpy().astype(np.float64)
        assert stats[layer]["mean"] == pytest.approx(values.mean(), rel=1e-9)
        assert stats[layer]["std"] == pytest.approx(values.std(ddof=1), rel=1e-9)
        assert stats[layer]["norm"] == pytest.approx(np.sqrt((values**2).sum()), rel=1e-9)
        assert stats[layer]["last_token_norm"] == pytest.approx(
            np.linalg.norm(values[0, -1]), rel=1e-9
        )


def test_a_contrastive_diff_compares_last_tokens_and_is_trivial_for_the_same_capture(
    loaded,
) -> None:
    from capture_activations import capture_activations, compute_contrastive_diff

    model, tokenizer = loaded
    pos = capture_activations(model, tokenizer, "Act as honest. Hello!", layers=[10, 20])
    neg = capture_activations(model, tokenizer, "Act as deceptive. Hello!", layers=[10, 20])
    same = compute_contrastive_diff(pos, pos)
    for layer in (10, 20):
        assert same[layer]["cosine_sim"] == pytest.approx(1.0, abs=1e-12)
        assert same[layer]["diff_norm"] == 0.0
    diffs = compute_contrastive_diff(pos, neg)
    for layer in (10, 20):
        p = pos["activations"][layer][0, -1].double().numpy()
        n = neg["activations"][layer][0, -1].double().numpy()
        assert diffs[layer]["diff_norm"] == pytest.approx(np.linalg.norm(p - n), rel=1e-9)
        cosine = p @ n / (np.linalg.norm(p) * np.linalg.norm(n))
        assert diffs[layer]["cosine_sim"] == pytest.approx(cosine, rel=1e-9)
        assert diffs[layer]["cosine_sim"] < 1.0


def test_saved_files_open_with_plain_torch_load_and_carry_the_statistics(loaded, tmp_path):
    from capture_activations import (
        capture_activations,
        capture_from_concept,
        compute_activation_stats,
        save_activations,
    )

    model, tokenizer = loaded
    data = capture_activations(model, tokenizer, "Hello", layers=[1, 2])
    save_activations(data, tmp_path / "my_activations")
    loaded_data = torch.load(tmp_path / "my_activations.pt")  # weights_only=True by default
    assert torch.equal(loaded_data["activations"][2], data["activations"][2])
    assert loaded_data["tokens"] == data["tokens"]
    meta = json.loads((tmp_path / "my_activations.json").read_text())
    assert meta["captured_layers"] == [1, 2] and meta["prompt"] == "Hello"
    assert meta["stats"]["2"] == pytest.approx(compute_activation_stats(data)[2])

    pairs = capture_from_concept(model, tokenizer, concept="empathy", layers=[5], max_samples=2)
    save_activations(pairs, tmp_path / "empathy")
    again = torch.load(tmp_path / "empathy.pt", weights_only=True)
    assert len(again["positive"]) == 2
    meta = json.loads((tmp_path / "empathy.json").read_text())
    assert meta["num_pairs"] == 2 and set(meta["pairs"][0]) == {"positive", "negative", "diff"}


def run_tool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python capture_activations.py ...` as the guide types it, from the repository."""
    return subprocess.run(
        [sys.executable, str(ROOT / "capture_activations.py"), *args],
        capture_output=True, text=True, timeout=600, cwd=cwd,
    )  # fmt: skip


@pytest.mark.slow
def test_the_guides_command_lines_work_as_written(tmp_path) -> None:
    story = run_tool("--prompt", "Tell me a story", "--output", "my_activations", cwd=tmp_path)
    assert story.returncode == 0, story.stderr
    data = torch.load(tmp_path / "my_activations.pt")
    assert data["captured_layers"] == list(range(31))

    concept = run_tool("--concept", "honesty", "--output", "honesty_acts", "--max-samples",
                       "2", "--layers", "14,15,16,17", "--use-hooks", cwd=tmp_path)  # fmt: skip
    assert concept.returncode == 0, concept.stderr
    acts = torch.load(tmp_path / "honesty_acts.pt")
    assert len(acts["positive"]) == 2 and acts["captured_layers"] == [14, 15, 16, 17]

    model_dir = str(load_model_dir())
    hello = run_tool("--model", model_dir, "--prompt", "Hello", "--layers", "recommended",
                     cwd=tmp_path)  # fmt: skip
    assert hello.returncode == 0, hello.stderr
    assert torch.load(tmp_path / "activations.pt")["captured_layers"] == list(range(14, 26))

    bad = run_tool("--prompt", "Hello", "--layers", "middle", cwd=tmp_path)
    assert bad.returncode == 2 and "neither comma-separated integers" in bad.stderr
    both = run_tool("--prompt", "Hello", "--concept", "honesty", cwd=tmp_path)
    assert both.returncode == 2 and "one of --prompt, --concept or --concept-file" in both.stderr


def load_model_dir() -> Path:
    from actlog_common.default_model import prepare_default_model

    return prepare_default_model()


def test_statistics_of_pairs_pool_every_prompt(loaded) -> None:
    from capture_activations import capture_from_concept, compute_activation_stats

    model, tokenizer = loaded
    pairs = capture_from_concept(model, tokenizer, concept="formality", layers=[9], max_samples=3)
    captures = pairs["positive"] + pairs["negative"]
    values = np.concatenate([c["activations"][9].numpy().ravel() for c in captures]).astype(float)
    stats = compute_activation_stats(pairs)[9]
    assert stats["mean"] == pytest.approx(values.mean(), rel=1e-9)
    assert stats["std"] == pytest.approx(values.std(ddof=1), rel=1e-9)
    assert stats["norm"] == pytest.approx(np.linalg.norm(values), rel=1e-9)
