"""`actlog probe` and `actlog dataset export` against a real storage process.

The records are synthetic with a planted signal: at layer 2 the row that predicted the
first response token is shifted along one direction when the record is labelled
hallucinated=true; every other layer and row is noise. The probe must find layer 2, and
the exported Parquet must read back, through pyarrow and `datasets`, to the stored values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from actlog.cli import app
from actlog.client import StorageClient
from actlog_common.dtypes import float32_to_bf16_bits
from actlog_common.ids import new_record_id
from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from storage_service.testing import synthetic_record

runner = CliRunner()
SIGNAL_LAYER = 2
HIDDEN = 32
N_RECORDS = 120


@pytest.fixture(scope="module")
def client(storage) -> Iterator[StorageClient]:
    with StorageClient(storage.address, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def planted(storage) -> dict:
    """N_RECORDS bf16 records of one model, 40% hallucinated=true, 6 of them unparsed."""
    model = f"probe-model-{new_record_id()}"
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(HIDDEN)
    direction /= np.linalg.norm(direction)
    ids, values = [], {}
    with grpc.insecure_channel(storage.address) as channel:
        stub = storage_pb2_grpc.StorageStub(channel)
        for i in range(N_RECORDS):
            hallucinated = bool(rng.random() < 0.4)
            verdict = "unparsed" if i % 20 == 0 else str(hallucinated).lower()
            record = synthetic_record(
                f"probe prompt {i} {model}", model=model, layers=(0, 1, 2, 3), num_layers=3,
                num_positions=8 + i % 5, prompt_length=3 + i % 3, hidden_size=HIDDEN,
                seed=i, labels={"hallucinated": verdict, "benchmark": model},
            )  # fmt: skip
            p = record.header.prompt_length
            if hallucinated:
                f32 = record.values[SIGNAL_LAYER]
                f32[p - 1] += (6.0 * direction).astype(np.float32)
                record.wire[SIGNAL_LAYER][:] = float32_to_bf16_bits(f32)
                record.values[SIGNAL_LAYER][:] = (
                    record.wire[SIGNAL_LAYER].astype(np.uint32) << 16
                ).view(np.float32)
            reply = stub.Ingest(iter(record.requests(4)), timeout=30)
            assert reply.status == storage_pb2.RECORD_STATUS_COMPLETE
            ids.append(record.header.record_id)
            values[record.header.record_id] = record
    return {"model": model, "ids": ids, "records": values}


def run(*args: str) -> object:
    result = runner.invoke(app, list(args))
    return result


def test_the_probe_finds_the_layer_that_carries_the_label(storage, planted, tmp_path) -> None:
    out = tmp_path / "probe"
    result = run("probe", "--label", "hallucinated", "--positive", "true", "--pool", "last_prompt",
                 "--filter", f"benchmark={planted['model']}", "--bootstrap", "100", "--folds", "4",
                 "--storage-addr",
                 storage.address, "--output-dir", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert (out / "auroc_by_layer.png").read_bytes()[:4] == b"\x89PNG"
    assert report["best_layer"] == SIGNAL_LAYER
    by_layer = {entry["layer"]: entry for entry in report["layers"]}
    assert sorted(by_layer) == [0, 1, 2, 3]
    assert by_layer[SIGNAL_LAYER]["auroc"] > 0.95
    low, high = by_layer[SIGNAL_LAYER]["auroc_ci"]
    assert low <= by_layer[SIGNAL_LAYER]["auroc"] <= high
    for layer in (0, 1, 3):
        assert abs(by_layer[layer]["auroc"] - 0.5) < 0.2, by_layer[layer]
    for entry in by_layer.values():
        assert abs(entry["control_auroc"] - 0.5) < 0.2, entry  # the shuffled-label control
    assert report["excluded_records"] == N_RECORDS // 20  # the unparsed verdicts
    counts = report["class_counts"]
    assert counts["positive"] + counts["negative"] == N_RECORDS - N_RECORDS // 20
    assert f"best layer {SIGNAL_LAYER}" in result.output

    # The saved probe of the best layer scores the records as the report says it separates
    # them: P = sigmoid(x @ w + b) on the features pooled in storage.
    from safetensors.numpy import load_file

    probes = load_file(str(out / "probes.safetensors"))
    assert sorted(probes) == sorted(f"layer_{i}.{p}" for i in range(4) for p in ("weight", "bias"))
    with StorageClient(storage.address) as client:
        feats = client.features(labels={"benchmark": planted["model"]}, layers=[SIGNAL_LAYER])
    verdicts = feats.label("hallucinated")
    known = verdicts != "unparsed"
    logits = feats[SIGNAL_LAYER] @ probes["layer_2.weight"] + probes["layer_2.bias"][0]
    predicted = logits[known] > 0
    assert np.mean(predicted == (verdicts[known] == "true")) > 0.95

    # The same records pooled over the response: the signal was planted in one prompt row.
    result = run("probe", "--label", "hallucinated", "--pool", "mean_prompt", "--layers", "2",
                 "--filter", f"benchmark={planted['model']}", "--no-control", "--bootstrap", "0",
                 "--storage-addr",
                 storage.address, "--output-dir", str(tmp_path / "mean"))  # fmt: skip
    assert result.exit_code == 0, result.output
    mean_report = json.loads((tmp_path / "mean" / "report.json").read_text())
    assert 0.5 < mean_report["layers"][0]["auroc"] < by_layer[SIGNAL_LAYER]["auroc"]


def test_a_class_with_too_few_records_is_a_clear_error(storage, planted, tmp_path) -> None:
    result = run("probe", "--label", "hallucinated", "--positive", "unparsed", "--negative",
                 "false", "--filter", f"benchmark={planted['model']}", "--storage-addr",
                 storage.address, "--output-dir", str(tmp_path / "x"))  # fmt: skip
    # "unparsed" is no verdict: nothing is positive.
    assert result.exit_code == 2
    assert "positive class has 0 record(s)" in result.output
    result = run("probe", "--label", "nope", "--filter", f"benchmark={planted['model']}",
                 "--storage-addr",
                 storage.address, "--output-dir", str(tmp_path / "y"))  # fmt: skip
    assert result.exit_code == 2 and "0 record(s)" in result.output
    result = run(
        "probe", "--label", "hallucinated", "--pool", "max", "--storage-addr", storage.address
    )
    assert result.exit_code == 2 and "'max' is not one of" in result.output
    benchmark = f"benchmark={planted['model']}"
    result = run("probe", "--label", "hallucinated", "--layers", "9", "--filter", benchmark,
                 "--storage-addr",
                 storage.address)  # fmt: skip
    assert result.exit_code == 2
    assert f"none of the {N_RECORDS} selected records" in result.output
    assert "layer 9" in result.output
    result = run("probe", "--label", "hallucinated", "--filter", "benchmark=nobody",
                 "--storage-addr",
                 storage.address)  # fmt: skip
    assert result.exit_code == 2 and "no records match the filters" in result.output


def test_per_record_parquet_reads_back_through_pyarrow_and_datasets(
    storage, planted, client, tmp_path
) -> None:
    out = tmp_path / "records"
    result = run("dataset", "export", "--output", str(out), "--per", "record", "--layers", "2,-1",
                 "--pool", "mean_response", "--filter", f"benchmark={planted['model']}",
                 "--shard-size", "8KB", "--storage-addr",
                 storage.address)  # fmt: skip
    assert result.exit_code == 0, result.output
    shards = sorted(out.glob("part-*.parquet"))
    assert len(shards) > 1  # 8 KB of data per shard
    manifest = json.loads((out / ".manifest.json").read_text())
    assert manifest["records"] == N_RECORDS and manifest["shards"] == [p.name for p in shards]

    schema = pq.read_schema(shards[0])
    meta = json.loads(schema.metadata[b"actlog"])
    assert meta["per"] == "record" and meta["layers"] == [2, 3] and meta["dtype"] == "float32"
    assert meta["pooling"] == "mean_response" and "predicted token p+1" in meta["positions"]
    vector = schema.field("layer_2").type
    assert pa.types.is_fixed_size_list(vector) and vector.list_size == HIDDEN
    assert vector.value_type == pa.float32()

    table = pq.read_table(out)  # the folder, as Spark or DuckDB would (manifest skipped)
    assert table.num_rows == N_RECORDS
    listed = [r.record_id for r in client.iter_records(labels={"benchmark": planted["model"]})]
    assert table.column("record_id").to_pylist() == listed
    feats = client.features(listed, layers=[2, 3], pooling="mean_response")
    for layer in (2, 3):
        column = np.array(table.column(f"layer_{layer}").to_pylist(), dtype=np.float32)
        assert np.array_equal(column, feats[layer])
    first = planted["records"][listed[0]]
    p = first.header.prompt_length
    expected = first.values[2][p - 1 :].mean(axis=0, dtype=np.float64).astype(np.float32)
    assert np.array_equal(np.array(table.column("layer_2")[0].as_py(), np.float32), expected)
    assert table.column("label_hallucinated").to_pylist() == [
        planted["records"][i].header.labels["hallucinated"] for i in listed
    ]

    import datasets

    # As the README reads it.
    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    rows = ds.with_format("numpy")[:]
    x, y = rows["layer_2"], rows["label_hallucinated"] == "true"
    assert x.dtype == np.float32 and np.array_equal(x, feats[2])
    assert list(rows["record_id"]) == listed
    assert y.sum() == sum(planted["records"][i].header.labels["hallucinated"] == "true"
                          for i in listed)  # fmt: skip
    by_files = datasets.load_dataset("parquet", data_files=[str(s) for s in shards], split="train")
    assert by_files.num_rows == N_RECORDS


def test_per_token_parquet_holds_every_row_with_its_tokens(
    storage, planted, client, tmp_path
) -> None:
    ids = planted["ids"][:7]
    out = tmp_path / "tokens"
    args = ["dataset", "export", "-o", str(out), "--per", "token", "--layers", "0,2",
            "--storage-addr",
                 storage.address]  # fmt: skip
    for record_id in ids:
        args += ["--record-id", record_id]
    result = run(*args)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    records = [planted["records"][i] for i in ids]
    assert table.num_rows == sum(r.header.num_positions for r in records)
    at = 0
    for record in records:
        h = record.header
        rows = table.slice(at, h.num_positions)
        at += h.num_positions
        assert set(rows.column("record_id").to_pylist()) == {h.record_id}
        assert rows.column("position").to_pylist() == list(range(h.num_positions))
        assert rows.column("token_id").to_pylist() == list(h.token_ids[: h.num_positions])
        assert rows.column("next_token_id").to_pylist() == list(
            h.token_ids[1 : h.num_positions + 1]
        )
        assert rows.column("is_prompt").to_pylist() == [
            p < h.prompt_length for p in range(h.num_positions)
        ]
        for layer in (0, 2):
            got = np.array(rows.column(f"layer_{layer}").to_pylist(), dtype=np.float32)
            assert np.array_equal(got, record.values[layer])

    import datasets

    loaded = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    assert loaded.num_rows == table.num_rows
    meta = json.loads(pq.read_schema(next(out.glob("part-*.parquet"))).metadata[b"actlog"])
    assert meta["per"] == "token" and meta["source_dtype"] == "bfloat16"

    response = tmp_path / "response"
    result = run("dataset", "export", "-o", str(response), "--per", "token", "--rows", "response",
                 "--layers", "2", "--record-id", ids[0], "--storage-addr",
                 storage.address)  # fmt: skip
    assert result.exit_code == 0, result.output
    h = records[0].header
    assert pq.read_table(response).column("position").to_pylist() == list(
        range(h.prompt_length, h.num_positions)
    )
    # A second export into the same folder is refused: shards are never mixed.
    result = run("dataset", "export", "-o", str(response), "--per", "token", "--layers", "2",
                 "--record-id", ids[0], "--storage-addr",
                 storage.address)  # fmt: skip
    assert result.exit_code == 2 and "already holds Parquet shards" in result.output


def test_export_streams_without_holding_the_collection(monkeypatch, storage, planted, tmp_path):
    """Pages of features and row groups of tokens: each write holds a bounded slice."""
    from actlog.datasets import parquet

    monkeypatch.setattr(parquet, "PAGE_RECORDS", 16)
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 4096)
    written: list[int] = []
    original = parquet.ShardWriter.write

    def spy(self, batch) -> None:
        written.append(batch.num_rows)
        original(self, batch)

    monkeypatch.setattr(parquet.ShardWriter, "write", spy)  # the batches, before any split
    chosen = {"labels": {"benchmark": planted["model"]}, "layers": [2], "progress": False}
    with StorageClient(storage.address) as client:
        summary = parquet.export_dataset(client, tmp_path / "r", **chosen)
        assert summary.records == N_RECORDS and max(written) <= 16
        written.clear()
        summary = parquet.export_dataset(client, tmp_path / "t", per="token", **chosen)
    assert summary.rows == sum(r.header.num_positions for r in planted["records"].values())
    assert max(written) < 4096 // (HIDDEN * 4) + 13  # one row group per ~4 KB of rows
