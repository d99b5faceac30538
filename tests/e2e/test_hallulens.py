"""HalluLens' nonsense mixed entities test through the real stack, as its users run it.

`--N 2` makes 8 prompts (2 names in each of 4 domains); every answer's record ends up
labelled with what the judge said of it, found by the record id the gateway returned. The
judge's own calls never become records, and a re-run's evaluation relabels its own records
only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from actlog.client import StorageClient

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tasks" / "refusal_test" / "nonsense_mixed_entities.py"
LABEL_KEYS = {"benchmark", "exp", "entity_type", "name", "judge", "refused", "hallucinated"}


def run(stack, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--server", stack.config.gateway_url, "--storage-addr",
         stack.config.storage_addr, "--output_base_dir", str(tmp / "output"), "--threads", "8",
         *args],
        capture_output=True, text=True, timeout=900, cwd=tmp,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def stored_records(stack) -> int:
    with StorageClient(stack.config.storage_addr) as client:
        return client.stats().records


def labels_of(stack, record_ids: list[str]) -> list[dict[str, str]]:
    with StorageClient(stack.config.storage_addr) as client:
        return [client.get_record(rid).labels for rid in record_ids]


def probe_features_of_the_run(stack, nonsense: list[str], factual: list[str]) -> None:
    """What a probe reads of these records: features pooled in storage, selected by the
    run's labels, equal to numpy pooling of the rows the model computed."""
    import numpy as np

    with StorageClient(stack.config.storage_addr) as client:
        task = client.get_record(nonsense[0]).labels["task"]
        feats = client.features(labels={"task": task}, layers=None, pooling="last_prompt")
        assert sorted(feats.record_ids) == sorted(nonsense + factual)
        assert feats.layers == (0, 15, 30)  # --capture_layers 0,15,-1
        assert sorted(feats.label("exp")) == ["factual_control"] * 4 + ["nonsense_all"] * 8
        means = client.features(feats.record_ids, layers=[-1], pooling="mean_response")
        for i, record_id in enumerate(feats.record_ids):
            record = client.get_record(record_id)
            rows = client.get_activations(record, layers=[15, 30])
            p = record.prompt_length
            assert np.array_equal(feats[15][i], rows[15][p - 1])
            assert np.array_equal(feats[30][i], rows[30][p - 1])
            mean = rows[30][p - 1 :].mean(axis=0, dtype=np.float64).astype(np.float32)
            assert np.array_equal(means[30][i], mean)


@pytest.mark.slow
def test_a_small_run_labels_every_answers_record(stack, served_model, tmp_path) -> None:
    before = stored_records(stack)
    out = run(stack, tmp_path, "--do_inference", "--do_eval", "--N", "2", "--seed", "0",
              "--factual_samples", "4", "--capture_layers", "0,15,-1").stdout  # fmt: skip
    task_dir = tmp_path / "output" / "nonsense_all_0_2" / served_model
    generations = [json.loads(x) for x in (task_dir / "generation.jsonl").read_text().splitlines()]
    assert len(generations) == 8
    assert sorted({g["type"] for g in generations}) == ["animal", "bacteria", "medicine", "plant"]
    results = json.loads((task_dir / "eval_results.json").read_text())
    assert results["n"] == 8 and len(results["refusal_eval_raw"]) == 8
    assert results["false_acceptance_rate"] == pytest.approx(1 - results["refusal_rate"])
    assert len((task_dir / "raw_eval_res.jsonl").read_text().splitlines()) == 8
    assert "False Acceptance Rate" in out and "Factual control: accuracy" in out

    ids = [g["record_id"] for g in generations]
    assert len(set(ids)) == 8
    for generation, labels, refused in zip(generations, labels_of(stack, ids),
                                           results["refusal_eval_raw"], strict=True):  # fmt: skip
        assert set(labels) >= LABEL_KEYS
        assert labels["benchmark"] == "hallulens_nonsense_mixed_entities"
        assert (labels["exp"], labels["judge"]) == ("nonsense_all", "rules")
        assert labels["name"] == generation["name"]
        assert labels["entity_type"] == generation["type"]
        assert labels["refused"] == str(refused).lower()
        assert labels["hallucinated"] == str(not refused).lower()

    factual = [
        json.loads(x) for x in (task_dir / "factual_generation.jsonl").read_text().splitlines()
    ]
    factual_labels = labels_of(stack, [f["record_id"] for f in factual])
    assert len(factual_labels) == 4
    assert all(lab["exp"] == "factual_control" and set(lab) >= LABEL_KEYS for lab in factual_labels)
    assert stored_records(stack) == before + 8 + 4  # one record per answer, nothing else
    probe_features_of_the_run(stack, ids, [f["record_id"] for f in factual])

    # Another run, then this run's evaluation again with an LLM judge (the served model
    # itself, through the gateway): its calls leave no record, and only this run is relabelled.
    other = run(stack, tmp_path, "--do_inference", "--do_eval", "--N", "1", "--seed", "3",
                "--exp", "nonsense_animal", "--skip_factual")  # fmt: skip
    assert "Total Number of Samples: 1" in other.stdout
    other_dir = tmp_path / "output" / "nonsense_animal_3_1" / served_model
    other_id = json.loads((other_dir / "generation.jsonl").read_text())["record_id"]
    records = stored_records(stack)
    judged = run(stack, tmp_path, "--do_eval", "--eval_overwrite", "--N", "2", "--seed", "0",
                 "--judge_url", f"{stack.config.gateway_url}/v1", "--judge_model", served_model,
                 "--judge_max_tokens", "16").stdout  # fmt: skip
    assert "Judge: llm:" in judged
    assert stored_records(stack) == records, "the judge's calls became records"
    assert all(lab["judge"].startswith("llm:") for lab in labels_of(stack, ids))
    assert labels_of(stack, [other_id])[0]["judge"] == "rules"
    results = json.loads((task_dir / "eval_results.json").read_text())
    assert results["n"] == 8 and results["unparsed"] == sum(
        1 for refused in results["refusal_eval_raw"] if refused is None
    )
