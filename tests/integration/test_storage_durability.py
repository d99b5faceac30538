"""Concurrent Ingest streams (group commit), kill -9 mid-flight, compression on disk."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import numpy as np
import pytest

from actlog.client import StorageClient
from actlog.errors import FailedPreconditionError, NotFoundError
from actlog_common.ids import new_record_id
from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from storage_service.testing import SyntheticRecord, synthetic_record

GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def big_record(prompt: str, seed: int, **fields) -> SyntheticRecord:
    """4 layers x 64 rows x 1024 hidden x bf16 = 512 KiB, in 32 KiB chunks of 16 rows."""
    return synthetic_record(
        prompt, seed=seed, layers=(0, 4, 8, 12), num_layers=12, num_positions=64,
        hidden_size=1024, **fields,
    )  # fmt: skip


def assert_identical(client: StorageClient, record: SyntheticRecord) -> None:
    got = client.get_activations(record.header.record_id, as_float32=False)
    assert sorted(got) == sorted(record.wire)
    for layer, raw in got.items():
        np.testing.assert_array_equal(raw, record.wire[layer])


def test_sixteen_concurrent_streams_all_land_complete(start_storage) -> None:
    storage = start_storage()
    prompts = [f"group commit {i} {new_record_id()}" for i in range(4)]
    records = [big_record(prompts[i % 4], seed=i) for i in range(16)]
    barrier = threading.Barrier(len(records))
    replies: dict[str, storage_pb2.IngestResponse] = {}

    with grpc.insecure_channel(storage.address, options=GRPC_OPTIONS) as channel:
        stub = storage_pb2_grpc.StorageStub(channel)

        def send(record: SyntheticRecord) -> None:
            requests = record.requests(16)
            barrier.wait()
            replies[record.header.record_id] = stub.Ingest(iter(requests), timeout=60)

        threads = [threading.Thread(target=send, args=(r,)) for r in records]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert len(replies) == 16
    assert all(r.status == storage_pb2.RECORD_STATUS_COMPLETE for r in replies.values())
    with StorageClient(storage.address) as client:
        stats = client.stats()
        assert (stats.records, stats.complete_records, stats.prompt_hashes) == (16, 16, 4)
        assert stats.activation_bytes == stats.stored_bytes == 16 * 512 * 1024
        for prompt in prompts:
            assert len(client.find_by_prompt(prompt)) == 4
        for record in records:
            assert_identical(client, record)


def _stream(record: SyntheticRecord, mode: str, stall: threading.Event):
    """The record's Ingest messages: "stall" blocks halfway until `stall` is set (and then
    ends the stream), "slow" trickles, "fast" sends everything at once."""
    requests = record.requests(16)
    for i, request in enumerate(requests):
        if mode == "stall" and i == len(requests) // 2:
            stall.wait()
            return
        if mode == "slow":
            time.sleep(0.005)
        yield request


def test_kill_9_mid_flight_leaves_complete_or_partial_records(start_storage, tmp_path) -> None:
    lmdb_path = tmp_path / "crash.lmdb"
    storage = start_storage(lmdb_path)
    prompts = [f"crash {i} {new_record_id()}" for i in range(5)]
    records = [big_record(prompts[i % 5], seed=200 + i) for i in range(20)]
    # Half stall midway, a quarter trickle (cut at any point), a quarter finish first.
    modes = ["stall", "fast", "stall", "slow"] * 5
    stall = threading.Event()
    acked: set[str] = set()

    channel = grpc.insecure_channel(storage.address, options=GRPC_OPTIONS)
    stub = storage_pb2_grpc.StorageStub(channel)

    def send(i: int, record: SyntheticRecord) -> None:
        try:
            reply = stub.Ingest(_stream(record, modes[i], stall), timeout=60)
        except grpc.RpcError:
            return
        if reply.status == storage_pb2.RECORD_STATUS_COMPLETE:
            acked.add(record.header.record_id)

    threads = [threading.Thread(target=send, args=(i, r)) for i, r in enumerate(records)]
    for thread in threads:
        thread.start()
    with StorageClient(storage.address) as client:
        deadline = time.monotonic() + 30
        pending = {r.header.record_id for r in records}
        fast = {r.header.record_id for r, m in zip(records, modes, strict=True) if m == "fast"}
        while (pending or not fast <= acked) and time.monotonic() < deadline:
            for rid in list(pending):
                try:
                    client.get_record(rid)
                    pending.discard(rid)
                except NotFoundError:
                    pass
            time.sleep(0.01)
        assert not pending and fast <= acked, "headers not stored or fast records not acked"
    assert storage.proc is not None
    storage.proc.send_signal(signal.SIGKILL)
    storage.proc.wait()
    stall.set()
    for thread in threads:
        thread.join(30)
    channel.close()

    restarted = start_storage(lmdb_path)
    partial: list[SyntheticRecord] = []
    with StorageClient(restarted.address) as client:
        for record, mode in zip(records, modes, strict=True):
            got = client.get_record(record.header.record_id)
            assert got.is_complete or mode != "fast"
            assert not got.is_complete or mode != "stall"
            if got.is_complete:
                assert_identical(client, record)
            else:
                assert got.status == "PARTIAL", got.status
                assert record.header.record_id not in acked, "an acknowledged record was lost"
                with pytest.raises(FailedPreconditionError):
                    client.get_activations(record.header.record_id)
                partial.append(record)
        stats = client.stats()
        assert (stats.records, stats.complete_records) == (20, 20 - len(partial))

        with grpc.insecure_channel(restarted.address, options=GRPC_OPTIONS) as channel:
            stub = storage_pb2_grpc.StorageStub(channel)
            for record in partial:  # the sender's replay
                reply = stub.Ingest(iter(record.requests(16)), timeout=60)
                assert reply.status == storage_pb2.RECORD_STATUS_COMPLETE
        for record in partial:
            assert_identical(client, record)
        for i, prompt in enumerate(prompts):
            found = client.find_by_prompt(prompt)
            expected = sorted((r.header.record_id for r in records[i::5]), reverse=True)
            assert [r.record_id for r in found] == expected  # no duplicates
            assert all(r.is_complete for r in found)
        stats = client.stats()
        assert (stats.records, stats.complete_records, stats.prompt_hashes) == (20, 20, 5)
        assert stats.stored_bytes == stats.activation_bytes == 20 * 512 * 1024


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_records_round_trip_exactly(start_storage, tmp_path, codec) -> None:
    lmdb_path = tmp_path / f"{codec}.lmdb"
    storage = start_storage(lmdb_path, "--storage-compression", codec)
    assert f"compression {codec}" in storage.log()
    records = [
        big_record(f"{codec} {dtype} {new_record_id()}", seed=300 + i, dtype=dtype)
        for i, dtype in enumerate(("bfloat16", "float16", "float32"))
    ]
    # A compressible record: a quarter of each row is zeros.
    sparse = big_record(f"{codec} sparse {new_record_id()}", seed=310)
    for layer in sparse.wire:
        sparse.wire[layer][:, :256] = 0
        sparse.values[layer][:, :256] = 0
    with grpc.insecure_channel(storage.address, options=GRPC_OPTIONS) as channel:
        stub = storage_pb2_grpc.StorageStub(channel)
        for record in [*records, sparse]:
            reply = stub.Ingest(iter(record.requests(16)), timeout=60)
            assert reply.status == storage_pb2.RECORD_STATUS_COMPLETE
            size = 4 * 64 * 1024 * (4 if record.header.dtype == "float32" else 2)
            assert reply.bytes_written == size  # as sent, uncompressed
        # The checksum is over the uncompressed bytes: a wrong one is still refused.
        bad = big_record(f"{codec} bad {new_record_id()}", seed=320)
        with pytest.raises(grpc.RpcError, match="checksum mismatch"):
            stub.Ingest(iter(bad.requests(16, sha256="0" * 64)), timeout=60)

    for transport in ("stream", "shm"):
        _check_compressed_reads(StorageClient(storage.address, transport=transport), codec,
                                records, sparse)  # fmt: skip
    assert storage.stop() == 0

    # Restarted without compression: old records still read back, new ones are raw.
    plain = start_storage(lmdb_path)
    with StorageClient(plain.address) as client:
        for record in [*records, sparse]:
            assert_identical(client, record)
        fresh = big_record(f"plain {new_record_id()}", seed=330)
        with grpc.insecure_channel(plain.address, options=GRPC_OPTIONS) as channel:
            storage_pb2_grpc.StorageStub(channel).Ingest(iter(fresh.requests(16)), timeout=60)
        got = client.get_record(fresh.header.record_id)
        assert (got.compression, got.stored_bytes) == ("none", 512 * 1024)
        assert_identical(client, fresh)


def _check_compressed_reads(
    client: StorageClient, codec: str, records: list[SyntheticRecord], sparse: SyntheticRecord
) -> None:
    with client:
        for record in [*records, sparse]:
            got = client.get_record(record.header.record_id)
            assert got.compression == codec and got.is_complete
            assert got.stored_bytes > 0
            assert_identical(client, record)
            some = client.get_activations(got.record_id, layers=[-1, 4], row_start=5, row_end=41)
            for layer, values in some.items():
                np.testing.assert_array_equal(values, record.values[layer][5:41])
        assert client.get_record(sparse.header.record_id).stored_bytes < 0.9 * 512 * 1024
        stats = client.stats()
        assert stats.stored_bytes < stats.activation_bytes
