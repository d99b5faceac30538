"""export_record against an in-process storage server: safetensors names, dtypes, metadata."""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import safetensors

from actlog.client import StorageClient
from actlog.errors import InvalidArgumentError, NotFoundError
from actlog.export import export_record
from actlog_common.v1 import storage_pb2_grpc
from storage_service.config import StorageSettings
from storage_service.server import create_server
from storage_service.testing import SyntheticRecord, synthetic_record

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    lmdb_path = tmp_path_factory.mktemp("export") / "lmdb"
    server, port = create_server(
        StorageSettings(activation_lmdb_path=str(lmdb_path), storage_port=0, storage_metrics_port=0)
    )
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=1)


@pytest.fixture(scope="module")
def client(address: str) -> Iterator[StorageClient]:
    with StorageClient(address) as client:
        yield client


def store(address: str, *records: SyntheticRecord) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = storage_pb2_grpc.StorageStub(channel)
        for record in records:
            stub.Ingest(iter(record.requests(rows_per_chunk=4)), timeout=30)


def read_header(path: Path) -> dict:
    """The safetensors JSON header (readable whatever the dtypes)."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def read_tensor_bytes(path: Path, name: str) -> bytes:
    header = read_header(path)
    start, end = header[name]["data_offsets"]
    data = path.read_bytes()
    base = 8 + struct.unpack("<Q", data[:8])[0]
    return data[base + start : base + end]


@pytest.mark.parametrize(("dtype", "tag"), [("bfloat16", "BF16"), ("float16", "F16"),
                                            ("float32", "F32")])  # fmt: skip
def test_export_round_trip(address, client, tmp_path, dtype: str, tag: str) -> None:
    record = synthetic_record(
        f"Export me as {dtype} ✓", dtype=dtype, layers=(0, 3, 6), num_layers=6,
        num_positions=10, hidden_size=8, seed=1,
    )  # fmt: skip
    store(address, record)
    h = record.header

    summary = export_record(client, h.record_id, tmp_path / "out" / "record.safetensors")
    assert summary.path.exists() and summary.file_bytes == summary.path.stat().st_size
    assert (summary.record_id, summary.dtype, summary.layers) == (h.record_id, dtype, (0, 3, 6))
    assert summary.matched_records == 1 and summary.note == ""

    header = read_header(summary.path)
    meta = header.pop("__metadata__")
    assert set(header) == {"layer_0", "layer_3", "layer_6", "token_ids"}
    for layer in (0, 3, 6):
        assert header[f"layer_{layer}"]["dtype"] == tag
        assert header[f"layer_{layer}"]["shape"] == [10, 8]
        raw = read_tensor_bytes(summary.path, f"layer_{layer}")
        assert raw == record.wire[layer].tobytes()  # the stored bytes, not a conversion
    assert (header["token_ids"]["dtype"], header["token_ids"]["shape"]) == ("I64", [11])
    token_ids = np.frombuffer(read_tensor_bytes(summary.path, "token_ids"), dtype="<i8")
    assert token_ids.tolist() == list(h.token_ids)

    assert meta["record_id"] == h.record_id and meta["prompt_hash"] == h.prompt_hash
    assert (meta["prompt"], meta["response"], meta["model"]) == (h.prompt, h.response, h.model)
    assert meta["prompt_length"] == str(h.prompt_length)
    assert meta["dtype"] == dtype
    assert json.loads(meta["layers"]) == [0, 3, 6]
    assert json.loads(meta["token_strings"]) == list(h.token_strings)
    assert json.loads(meta["sampling_params"]) == json.loads(h.sampling_params_json)

    if dtype != "bfloat16":
        with safetensors.safe_open(summary.path, framework="numpy") as f:
            np.testing.assert_array_equal(f.get_tensor("layer_3"), record.wire[3])
    if HAS_TORCH:
        import torch

        with safetensors.safe_open(summary.path, framework="pt") as f:
            assert set(f.keys()) == {"layer_0", "layer_3", "layer_6", "token_ids"}
            assert f.metadata() == meta
            layer = f.get_tensor("layer_6")
            assert layer.dtype == getattr(torch, dtype) and tuple(layer.shape) == (10, 8)
            np.testing.assert_array_equal(layer.float().numpy(), record.values[6])
            assert f.get_tensor("token_ids").tolist() == list(h.token_ids)


def test_export_by_prompt_hash_takes_the_newest(address, client, tmp_path) -> None:
    prompt = "Which record wins?"
    older = synthetic_record(prompt, model="model-a", seed=2)
    newer = synthetic_record(prompt, model="model-b", seed=3)
    store(address, older, newer)

    summary = export_record(client, older.header.prompt_hash, tmp_path / "newest.safetensors")
    assert summary.record_id == newer.header.record_id
    assert summary.matched_records == 2 and "newest" in summary.note

    only_a = export_record(
        client, older.header.prompt_hash, tmp_path / "a.safetensors", model="model-a"
    )
    assert only_a.record_id == older.header.record_id and only_a.matched_records == 1

    one_layer = export_record(client, newer.header.record_id, tmp_path / "l.safetensors", [-1])
    assert one_layer.layers == (4,)
    assert set(read_header(one_layer.path)) == {"__metadata__", "layer_4", "token_ids"}


def test_export_of_a_token_range_keeps_those_rows_and_says_which(client, address, tmp_path):
    record = synthetic_record("Export rows 3 to 7", layers=(0, 2), num_layers=2, seed=9,
                              num_positions=10, hidden_size=8)  # fmt: skip
    store(address, record)
    summary = export_record(
        client, record.header.record_id, tmp_path / "rows.safetensors", row_start=3, row_end=7
    )
    assert summary.rows == (3, 7)
    header = read_header(summary.path)
    assert header["layer_2"]["shape"] == [4, 8]
    assert read_tensor_bytes(summary.path, "layer_2") == record.wire[2][3:7].tobytes()
    assert (header["__metadata__"]["row_start"], header["__metadata__"]["row_end"]) == ("3", "7")
    assert header["token_ids"]["shape"] == [11], "token ids stay whole, for context"
    tail = export_record(client, record.header.record_id, tmp_path / "t.safetensors", row_start=8)
    assert tail.rows == (8, 10) and read_header(tail.path)["layer_0"]["shape"] == [2, 8]


def test_export_errors(client, tmp_path) -> None:
    with pytest.raises(InvalidArgumentError):
        export_record(client, "not-a-key", tmp_path / "x.safetensors")
    with pytest.raises(NotFoundError):
        export_record(client, "0" * 64, tmp_path / "x.safetensors")
    with pytest.raises(NotFoundError):
        export_record(client, "0" * 32, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_export_by_prompt_hash_takes_the_newest_record_with_the_layers(address, client, tmp_path):
    prompt = "Which record has layer 2?"
    with_layer = synthetic_record(prompt, layers=(0, 2, 4), seed=4)
    newest = synthetic_record(prompt, layers=(4,), seed=5)  # captured the last layer only
    store(address, with_layer, newest)
    summary = export_record(client, newest.header.prompt_hash, tmp_path / "l2.safetensors", [2])
    assert summary.record_id == with_layer.header.record_id
    assert "newest with layers [2]" in summary.note
    assert export_record(client, newest.header.prompt_hash, tmp_path / "last.safetensors",
                         [-1]).record_id == newest.header.record_id  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="records and their layers"):
        export_record(client, newest.header.prompt_hash, tmp_path / "none.safetensors", [3])
