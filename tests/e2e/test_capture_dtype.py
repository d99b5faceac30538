"""Stored precision apart from compute precision: on the float32 engine, a request's
`capture_dtype` (or the server's CAPTURE_DTYPE) stores float16 or bfloat16 rows, converted in
the worker before they leave it. A float16 record is half the bytes of the float32 record of
the same request, its rows are exactly the float32 rows rounded to float16, and everything
that reads records (export-record, features, probe, dataset export) reads it as stored."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from actlog.cli import app
from actlog_common.dtypes import float32_to_bf16_bits

pytestmark = pytest.mark.vllm

LAYERS = [0, 15, -1]
PROMPT = "Stored precision apart from compute precision:"
runner = CliRunner()


def capture(client, model: str, prompt, dtype: str | None, max_tokens: int = 6):
    extra: dict = {"capture_layers": LAYERS}
    if dtype:
        extra["capture_dtype"] = dtype
    reply = client.completions.create(
        model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, extra_body=extra
    )
    return reply, [i for a in reply.model_extra["activations"] for i in a["record_ids"]]


@pytest.fixture(scope="module")
def records(openai_client, served_model, storage):
    out = {}
    for dtype in ("float32", "float16", "bfloat16"):
        # float32 is the engine's own: sent without the field, as the default.
        reply, [record_id] = capture(
            openai_client, served_model, PROMPT, None if dtype == "float32" else dtype
        )
        out[dtype] = (reply, storage.wait_for_record_id(record_id, timeout=120))
    return out


def test_the_engine_computes_in_float32_and_stores_so_by_default(records) -> None:
    _, record = records["float32"]
    assert record.dtype == "float32"


def test_float16_rows_are_the_float32_rows_rounded_and_half_the_bytes(records, storage) -> None:
    _, full = records["float32"]
    reply, half = records["float16"]
    assert half.dtype == "float16"
    assert list(half.token_ids) == list(full.token_ids), "the same greedy generation"
    assert half.activation_bytes * 2 == full.activation_bytes
    f32 = storage.get_activations(full, as_float32=False)
    f16 = storage.get_activations(half, as_float32=False)
    assert sorted(f16) == sorted(f32) == [0, 15, full.num_layers]
    for layer, rows in f32.items():
        assert f16[layer].dtype == np.float16
        np.testing.assert_array_equal(f16[layer], rows.astype(np.float16))
    # Read as float32, they widen exactly.
    widened = storage.get_activations(half)
    np.testing.assert_array_equal(widened[15], f32[15].astype(np.float16).astype(np.float32))
    assert reply.choices[0].text == records["float32"][0].choices[0].text


def test_bfloat16_rows_are_the_float32_rows_rounded_to_nearest_even(records, storage) -> None:
    _, full = records["float32"]
    _, bf16 = records["bfloat16"]
    assert bf16.dtype == "bfloat16" and bf16.activation_bytes * 2 == full.activation_bytes
    f32 = storage.get_activations(full, as_float32=False)
    bits = storage.get_activations(bf16, as_float32=False)
    for layer, rows in f32.items():
        np.testing.assert_array_equal(bits[layer], float32_to_bf16_bits(rows))


def test_an_unknown_capture_dtype_is_a_400_naming_the_field(openai_client, served_model):
    import openai

    with pytest.raises(openai.BadRequestError) as refused:
        capture(openai_client, served_model, PROMPT, "float8")
    assert refused.value.body["param"] == "capture_dtype"


def test_export_features_probe_and_dataset_export_read_float16_records(
    records, openai_client, served_model, storage, stack, tmp_path
) -> None:
    _, full = records["float32"]
    _, half = records["float16"]
    addr = ["--storage-addr", stack.config.storage_addr]
    expected = {
        layer: rows.astype(np.float16)
        for layer, rows in storage.get_activations(full, as_float32=False).items()
    }

    # export-record keeps the stored dtype.
    out = tmp_path / "half.safetensors"
    result = runner.invoke(app, ["export-record", "--record-id", half.record_id, "-o", str(out),
                                 "--layers", "all", *addr])  # fmt: skip
    assert result.exit_code == 0, result.output
    tensors = load_file(str(out))
    for layer, rows in expected.items():
        assert tensors[f"layer_{layer}"].dtype == np.float16
        np.testing.assert_array_equal(tensors[f"layer_{layer}"], rows)

    # Features pooled in storage: the float16 rows widened, then pooled as everywhere.
    feats = storage.features([half.record_id], layers=LAYERS, pooling="mean_response")
    start, end = feats.rows[0]
    assert (start, end) == (half.prompt_length - 1, half.num_positions)
    for layer, rows in expected.items():
        want = rows[start:end].astype(np.float32).mean(axis=0, dtype=np.float64)
        np.testing.assert_array_equal(feats[layer][0], want.astype(np.float32))

    # A probe and a dataset over float16 records only: 4 prompts per class, labelled here.
    task = f"capture-dtype-{uuid.uuid4().hex[:8]}"
    prompts = [f"Fact {i}: the number {i} is" for i in range(8)]
    _, ids = capture(openai_client, served_model, prompts, "float16", max_tokens=2)
    assert len(ids) == 8
    for i, record_id in enumerate(ids):
        storage.wait_for_record_id(record_id, timeout=120)
        storage.set_labels(record_id, {"task": task, "parity": "odd" if i % 2 else "even"})
    result = runner.invoke(app, ["probe", "--label", "parity", "--positive", "odd",
                                 "--filter", f"task={task}", "--layers", "15,-1", "--folds", "2",
                                 "--no-control", "--bootstrap", "0",
                                 "--output-dir", str(tmp_path / "probe"), *addr])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "probe" / "report.json").read_text())
    assert report["class_counts"] == {"positive": 4, "negative": 4}

    dataset = tmp_path / "tokens"
    result = runner.invoke(app, ["dataset", "export", "-o", str(dataset), "--per", "token",
                                 "--layers", "15", "--filter", f"task={task}", *addr])  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pq.read_table(dataset)
    meta = json.loads(table.schema.metadata[b"actlog"])
    assert meta["source_dtype"] == "float16"
    first = storage.get_record(table.column("record_id")[0].as_py())
    rows = storage.get_activations(first, layers=[15], as_float32=False)[15]
    assert rows.dtype == np.float16
    mine = table.filter(pc.equal(table["record_id"], first.record_id)).sort_by("position")
    assert mine.column("position").to_pylist() == list(range(first.num_positions))
    values = np.array(mine.column("layer_15").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(values, rows.astype(np.float32))
