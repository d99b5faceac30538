"""Capture through the served stack gives what in-process capture gives, and keeps it.

The same prompts, through the gateway (vLLM batches them, storage keeps the rows) and through
transformers in this process: same tokens, same activations within bf16 tolerance, and each
served capture can be read again from storage by its record id.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from actlog.client import StorageClient
from tests.reference import row_mismatches

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(stack):
    from actlog.repe.served import ServedStack

    with ServedStack(stack.config.gateway_url, stack.config.storage_addr) as served_stack:
        yield served_stack


@pytest.fixture(scope="module")
def in_process():
    from capture_activations import load_model

    return load_model("default")


def test_a_served_capture_has_the_original_structure_and_is_stored(served, stack) -> None:
    from capture_activations import capture_activations

    data = capture_activations(None, None, "Tell me a story", layers=[0, 14, -1], server=served)
    assert data["engine"] == "served" and data["captured_layers"] == [0, 14, 30]
    assert data["num_layers"] == 30 and data["prompt"] == "Tell me a story"
    seq = data["input_ids"].shape[1]
    assert data["tokens"] == ["Tell", " me", " a", " story"] and seq == 4
    for layer in (0, 14, 30):
        assert data["activations"][layer].shape == (1, seq, 576)
    with StorageClient(stack.config.storage_addr) as client:
        again = client.get_activations(data["record_id"], layers=[14], row_end=seq)
    np.testing.assert_array_equal(again[14], data["activations"][14][0].numpy())


def test_served_and_in_process_captures_of_a_concept_agree(served, in_process) -> None:
    from capture_activations import capture_from_concept

    model, tokenizer = in_process
    layers = [0, 7, 14, 22, 30]
    remote = capture_from_concept(None, None, "honesty", layers, max_samples=6, server=served)
    local = capture_from_concept(model, tokenizer, "honesty", layers, max_samples=6)
    assert remote["dataset_sha256"] == local["dataset_sha256"]
    for side in ("positive", "negative"):
        for far, near in zip(remote[side], local[side], strict=True):
            assert far["prompt"] == near["prompt"]
            assert far["input_ids"].tolist() == near["input_ids"].tolist()
            assert far["tokens"] == near["tokens"]
            for layer in layers:
                problems = row_mismatches(
                    far["activations"][layer][0].numpy(),
                    near["activations"][layer][0].numpy(),
                    "bfloat16",
                )
                assert not problems, f"{side} {far['prompt']!r} layer {layer}: {problems}"
    assert len({d["record_id"] for d in remote["positive"] + remote["negative"]}) == 12


def test_the_command_line_captures_through_the_stack(stack, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "capture_activations.py"), "--server",
         stack.config.gateway_url, "--storage-addr", stack.config.storage_addr, "--concept",
         "empathy", "--max-samples", "2", "--layers", "recommended", "--output", "empathy"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = torch.load(tmp_path / "empathy.pt")
    assert data["engine"] == "served" and data["captured_layers"] == list(range(14, 26))
    assert all(d["record_id"] for d in data["positive"] + data["negative"])
    hooks = subprocess.run(
        [sys.executable, str(ROOT / "capture_activations.py"), "--server",
         stack.config.gateway_url, "--prompt", "Hello", "--use-hooks"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert hooks.returncode == 2 and "--use-hooks is for in-process capture" in hooks.stderr


def test_a_control_vector_through_the_stack_names_the_records_it_came_from(served, stack):
    import json

    from actlog.repe.training import train_concept_vector

    result = train_concept_vector(None, None, "enthusiasm", [10, 20], "mean_diff", served,
                                  max_samples=8)  # fmt: skip
    meta = result.vector.metadata
    assert meta["engine"] == "served" and meta["model_type"] == "llama"
    record_ids = json.loads(meta["record_ids"])
    assert len(record_ids) == 16 == len(set(record_ids))
    with StorageClient(stack.config.storage_addr) as client:
        record = client.get_record(record_ids[0])
    assert record.prompt == result.data["positive"][0]["prompt"]
    assert sorted(result.vector.directions) == [10, 20]
