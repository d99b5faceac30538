"""ActivationStore's on-disk layout: labels apart from records, counters, upgrades."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from actlog_common.v1 import storage_pb2
from storage_service.errors import ConflictingState, RecordNotFound
from storage_service.ingest import IngestSession
from storage_service.store import ActivationStore
from storage_service.testing import synthetic_record


def ingest(store: ActivationStore, record) -> None:
    session = IngestSession(store)
    for request in record.requests(5):
        session.add(request)
    assert session.finish().status == storage_pb2.RECORD_STATUS_COMPLETE


def raw(path: Path, db: bytes) -> dict[bytes, bytes]:
    env = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return dict(txn.cursor(db=env.open_db(db, txn=txn, create=False)))
    finally:
        env.close()


def test_labels_never_rewrite_the_header_or_the_chunks(tmp_path: Path) -> None:
    store = ActivationStore(tmp_path, 1 << 20)
    record = synthetic_record(labels={"source": "synthetic"})
    ingest(store, record)
    rid = record.header.record_id
    store.close()
    before = {db: raw(tmp_path, db) for db in (b"records", b"chunks")}

    store = ActivationStore(tmp_path, 1 << 20)
    header = store.set_labels(rid, {"hallucinated": "true"}, remove=["source"])
    assert dict(header.labels) == {"hallucinated": "true"}
    store.close()
    assert {db: raw(tmp_path, db) for db in (b"records", b"chunks")} == before
    assert raw(tmp_path, b"labels") == {bytes.fromhex(rid) + b"hallucinated": b"true"}


def test_an_older_environment_is_upgraded_once(tmp_path: Path) -> None:
    """Layout 1 kept labels inside headers and had no counters."""
    records = [synthetic_record(f"old {i}", seed=i, model=f"m{i % 2}") for i in range(3)]
    env = lmdb.open(str(tmp_path), map_size=1 << 20, max_dbs=8)
    with env.begin(write=True) as txn:
        for r in records:
            header = storage_pb2.RecordHeader()
            header.CopyFrom(r.header)
            header.status = storage_pb2.RECORD_STATUS_COMPLETE
            header.activation_bytes = 1152
            rid = bytes.fromhex(header.record_id)
            txn.put(rid, header.SerializeToString(), db=env.open_db(b"records", txn=txn))
            txn.put(
                bytes.fromhex(header.prompt_hash) + rid, b"", db=env.open_db(b"by_hash", txn=txn)
            )
            txn.put(rid + b"\0\0\0\0\0\0", b"x" * 1152, db=env.open_db(b"chunks", txn=txn))
    env.close()

    store = ActivationStore(tmp_path, 1 << 20)
    stats = store.stats()
    assert (stats.records, stats.complete_records, stats.prompt_hashes) == (3, 3, 3)
    assert stats.activation_bytes == stats.stored_bytes == 3 * 1152
    assert {m: c.records for m, c in stats.models.items()} == {"m0": 2, "m1": 1}
    got = store.get(records[0].header.record_id)
    assert dict(got.labels) == {"source": "synthetic"}
    store.close()
    stored = storage_pb2.RecordHeader.FromString(
        raw(tmp_path, b"records")[bytes.fromhex(records[0].header.record_id)]
    )
    assert not stored.labels  # moved to the labels sub-database


def test_an_environment_with_model_counters_is_upgraded_again(tmp_path: Path) -> None:
    """A layout-2 environment already has per-model counters: the upgrade clears and recounts
    them (it once crashed reading their keys)."""
    store = ActivationStore(tmp_path, 1 << 20)
    for i in range(3):
        ingest(store, synthetic_record(f"counted {i}", seed=i, model=f"m{i % 2}"))
    store.close()
    env = lmdb.open(str(tmp_path), map_size=1 << 20, max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(b"layout", b"2", db=env.open_db(b"meta", txn=txn))
    env.close()

    store = ActivationStore(tmp_path, 1 << 20)
    assert {m: c.records for m, c in store.stats().models.items()} == {"m0": 2, "m1": 1}
    store.close()


def record_id_of(requests: list[storage_pb2.IngestRequest]) -> str:
    return requests[0].header.record_id


def test_a_stale_stream_cannot_mix_rows_into_a_replay_or_a_deleted_record(tmp_path) -> None:
    store = ActivationStore(tmp_path, 1 << 20)
    record = synthetic_record(num_positions=12)
    requests = record.requests(4)  # header, 9 chunks, commit
    first, second = IngestSession(store), IngestSession(store)
    first.add(requests[0])
    first.add(requests[1])
    second.add(requests[0])  # a replay starts: the first stream's rows are dropped
    for request in requests[1:]:
        second.add(request)
    assert second.finish().status == storage_pb2.RECORD_STATUS_COMPLETE
    with pytest.raises(ConflictingState, match="re-ingested or deleted"):
        for request in requests[2:]:
            first.add(request)
    first.settle()
    assert store.get(record.header.record_id).status == storage_pb2.RECORD_STATUS_COMPLETE
    assert store.stats().stored_bytes == 3 * 12 * 16 * 2

    # A replay of the complete record writes nothing, so a delete meanwhile stays a delete.
    replay = IngestSession(store)
    replay.add(requests[0])
    store.delete(record.header.record_id)
    for request in requests[1:]:
        replay.add(request)
    replay.settle()
    with pytest.raises(RecordNotFound):
        store.get(record.header.record_id)

    other = synthetic_record(num_positions=12, seed=1).requests(4)
    third = IngestSession(store)
    third.add(other[0])
    third.settle()
    store.delete(record_id_of(other))
    with pytest.raises(ConflictingState):
        for request in other[1:]:
            third.add(request)
    third.settle()
    with pytest.raises(RecordNotFound):
        store.get(record_id_of(other))
    stats = store.stats()
    assert (stats.records, stats.stored_bytes, stats.prompt_hashes) == (0, 0, 0)
    store.close()
