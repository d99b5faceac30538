"""What a fault-injection run of storage found, each reproduced against a real storage
process: replays that destroyed complete records, headers claiming impossible sizes, stats
inflated by partial records, a second server silently sharing a port, and a full disk
reported as an internal error."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from actlog.client import StorageClient
from actlog.errors import InvalidArgumentError, NotFoundError
from actlog_common.ids import new_record_id
from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from storage_service.testing import synthetic_record

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stub(storage):
    with grpc.insecure_channel(storage.address) as channel:
        yield storage_pb2_grpc.StorageStub(channel)


@pytest.fixture(scope="module")
def client(storage):
    with StorageClient(storage.address, timeout=30, transport="stream") as client:
        yield client


def ingest_error(stub, requests) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.Ingest(iter(requests), timeout=30)
    return info.value


def assert_counts_unchanged(client: StorageClient, before) -> None:
    after = client.stats()
    for name in ("records", "complete_records", "activation_bytes", "prompt_hashes", "models"):
        assert getattr(after, name) == getattr(before, name), name


def test_a_header_only_replay_of_a_complete_record_changes_nothing(stub, client) -> None:
    record = synthetic_record(f"replay {new_record_id()}", seed=1)
    stub.Ingest(iter(record.requests(5)), timeout=30)
    before = client.stats()
    reply = stub.Ingest(iter([storage_pb2.IngestRequest(header=record.header)]), timeout=30)
    assert reply.status == storage_pb2.RECORD_STATUS_COMPLETE and reply.bytes_written == 0
    again = stub.Ingest(iter(record.requests(3)), timeout=30)  # a whole replay, too
    assert again.status == storage_pb2.RECORD_STATUS_COMPLETE and again.bytes_written == 0
    stored = client.get_record(record.header.record_id)
    assert stored.is_complete
    for layer, values in client.get_activations(stored).items():
        np.testing.assert_array_equal(values, record.values[layer])
    assert_counts_unchanged(client, before)


def test_only_complete_records_count_in_the_bytes(stub, client) -> None:
    before = client.stats()
    record = synthetic_record(f"partial {new_record_id()}", model="partial-model", seed=2)
    reply = ingest_error(stub, record.requests(5)[:2])  # header and one chunk, no commit
    assert reply.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = client.stats()
    assert after.records == before.records + 1
    assert after.complete_records == before.complete_records
    assert after.activation_bytes == before.activation_bytes
    assert "partial-model" not in after.models


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_positions": 2**31 - 1, "hidden_size": 2**20}, "maximum record size"),
        ({"num_positions": 2**32 - 1}, "num_positions"),
        ({"model": "m" * 600}, "model name"),
    ],
    ids=["claims-18-PB", "positions-2^32-1", "model-name-600-bytes"],
)
def test_impossible_headers_are_invalid_argument(stub, client, fields, message) -> None:
    before = client.stats()
    record = synthetic_record(f"huge {new_record_id()}", seed=3)
    header = storage_pb2.RecordHeader()
    header.CopyFrom(record.header)
    for name, value in fields.items():
        setattr(header, name, value)
    del header.token_ids[:]  # so num_positions is not bounded by the token count
    del header.token_strings[:]
    error = ingest_error(stub, [storage_pb2.IngestRequest(header=header)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert message in error.details()
    assert_counts_unchanged(client, before)


def test_a_second_server_on_the_same_port_fails_to_start(storage, tmp_path) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "storage_service", "--storage-port", str(storage.port),
         "--storage-metrics-port", "0", "--activation-lmdb-path", str(tmp_path / "other")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert second.returncode != 0
    last = second.stderr.strip().splitlines()[-1]
    assert f"could not bind 127.0.0.1:{storage.port}" in last, second.stderr
    assert "Traceback" not in second.stderr
    # Every new connection still reaches the one server.
    record = synthetic_record(f"one server {new_record_id()}", seed=4)
    with grpc.insecure_channel(storage.address) as channel:
        storage_pb2_grpc.StorageStub(channel).Ingest(iter(record.requests()), timeout=30)
    for _ in range(10):
        with StorageClient(storage.address, transport="stream") as fresh:
            assert fresh.get_record(record.header.record_id).is_complete


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def test_a_full_disk_is_resource_exhausted_with_the_free_bytes(start_storage, tmp_path) -> None:
    disk = tmp_path / "small-disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "8m"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        storage = start_storage(disk / "lmdb", "--lmdb-map-size", str(64 << 20))
        with grpc.insecure_channel(storage.address) as channel:
            stub = storage_pb2_grpc.StorageStub(channel)
            error = None
            for seed in range(40):  # 1 MiB each: the disk fills before the map does
                record = synthetic_record(
                    f"fill {seed}",
                    seed=seed,
                    layers=(0,),
                    num_positions=512,
                    hidden_size=512,
                    dtype="float32",
                )
                try:
                    stub.Ingest(iter(record.requests(64)), timeout=30)
                except grpc.RpcError as exc:
                    error = exc
                    break
            assert error is not None, "8 MB held 40 MB of records?"
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
            assert "storage disk full" in error.details() and "bytes free" in error.details()
        assert storage.alive()
    finally:
        storage.stop()
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_an_empty_row_range_is_an_error_like_one_past_the_end(stub, client) -> None:
    record = synthetic_record(f"rows {new_record_id()}", num_positions=12, seed=5)
    stub.Ingest(iter(record.requests()), timeout=30)
    for start in (12, 20):
        with pytest.raises(InvalidArgumentError, match="outside record"):
            client.get_activations(record.header.record_id, row_start=start)
    assert client.get_activations(record.header.record_id, row_start=11)[0].shape == (1, 16)


def test_partial_records_expire_complete_ones_stay(start_storage) -> None:
    storage = start_storage(None, "--storage-partial-ttl-s", "1")
    with (
        grpc.insecure_channel(storage.address) as channel,
        StorageClient(storage.address, transport="stream") as client,
    ):
        stub = storage_pb2_grpc.StorageStub(channel)
        kept = synthetic_record(f"kept {new_record_id()}", seed=6)
        stub.Ingest(iter(kept.requests()), timeout=30)
        dead = synthetic_record(f"abandoned {new_record_id()}", seed=7)
        ingest_error(stub, dead.requests(5)[:2])  # the sender died mid-stream
        assert client.get_record(dead.header.record_id).status == "PARTIAL"
        deadline = time.monotonic() + 30
        while True:
            try:
                client.get_record(dead.header.record_id)
            except NotFoundError:
                break
            assert time.monotonic() < deadline, "the partial record never expired"
            time.sleep(0.2)
        assert client.get_record(kept.header.record_id).is_complete
        stats = client.stats()
        assert (stats.records, stats.complete_records) == (1, 1)
    assert "deleted 1 PARTIAL records" in storage.log()
