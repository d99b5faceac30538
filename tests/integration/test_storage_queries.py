"""ListRecords, SetLabels, DeleteRecord and Stats counters against a real storage process."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from actlog.client import StorageClient
from actlog.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from actlog_common.hashing import prompt_hash
from actlog_common.ids import new_record_id
from actlog_common.v1 import storage_pb2_grpc
from storage_service.testing import SyntheticRecord, synthetic_record
from tests.integration.helpers import ingest

RECORD_BYTES = 3 * 12 * 16 * 2  # synthetic_record's default: 3 layers x 12 rows x 16 x bf16


@pytest.fixture(scope="module")
def stub(storage) -> Iterator[storage_pb2_grpc.StorageStub]:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(storage.address, options=options) as channel:
        yield storage_pb2_grpc.StorageStub(channel)


@pytest.fixture(scope="module")
def client(storage) -> Iterator[StorageClient]:
    with StorageClient(storage.address, timeout=30) as client:
        yield client


def unique(name: str) -> str:
    return f"{name}-{new_record_id()}"


@pytest.fixture(scope="module")
def listed(stub) -> list[SyntheticRecord]:
    """Seven records of one model, oldest first, one second apart, labelled by parity."""
    model = unique("list-model")
    base_ms = 1_700_000_000_000
    records = []
    for i in range(7):
        record = synthetic_record(
            unique("list"),
            model=model,
            seed=100 + i,
            created_at_ms=base_ms + i * 1000,
            labels={"parity": "even" if i % 2 == 0 else "odd", "group": str(i // 3)},
        )
        ingest(stub, record)
        records.append(record)
    return records


def ids(records) -> list[str]:
    return [r.record_id if hasattr(r, "record_id") else r.header.record_id for r in records]


# -- ListRecords -------------------------------------------------------------------------


def test_list_pages_newest_first_across_pages(client, listed) -> None:
    model = listed[0].header.model
    newest_first = ids(reversed(listed))
    pages, token = [], ""
    while True:
        page, token = client.list_records(model=model, page_size=3, page_token=token)
        pages.append(ids(page))
        if not token:
            break
    assert pages == [newest_first[:3], newest_first[3:6], newest_first[6:]]
    assert ids(client.iter_records(model=model, page_size=2)) == newest_first
    # Without a model filter this model's records still come newest first among the rest.
    everything = ids(client.iter_records(page_size=50))
    assert [i for i in everything if i in newest_first] == newest_first
    assert everything == sorted(everything, reverse=True)


def test_list_filters_by_model_labels_and_time(client, listed) -> None:
    model = listed[0].header.model
    expect = ids(reversed(listed))
    assert ids(client.iter_records(model=unique("no-such-model"))) == []
    odd = ids(client.iter_records(model=model, labels={"parity": "odd"}))
    assert odd == [expect[1], expect[3], expect[5]]  # records 5, 3, 1
    both = client.iter_records(model=model, labels={"parity": "even", "group": "0"})
    assert ids(both) == [listed[2].header.record_id, listed[0].header.record_id]
    assert ids(client.iter_records(labels={"parity": "odd", "group": "9"})) == []
    base = listed[0].header.created_at_ms
    window = client.iter_records(model=model, since_ms=base + 2000, until_ms=base + 5000)
    assert ids(window) == [listed[4].header.record_id, listed[3].header.record_id,
                           listed[2].header.record_id]  # fmt: skip
    assert ids(client.iter_records(model=model, since_ms=base + 6000)) == expect[:1]
    assert ids(client.iter_records(model=model, until_ms=base + 1)) == expect[-1:]
    record = client.list_records(model=model, page_size=1)[0][0]
    assert record.labels == {"parity": "even", "group": "2"}
    assert record.status == "COMPLETE" and record.compression == "none"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"page_token": "not-a-token"}, "page token"),
        ({"page_size": 5000}, "page_size"),
        ({"since_ms": 10, "until_ms": 5}, "empty time range"),
        ({"since_ms": -1}, ">= 0"),
    ],
)
def test_list_rejects_bad_arguments(client, kwargs, message) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        client.list_records(**kwargs)


# -- SetLabels ---------------------------------------------------------------------------


def test_labels_set_update_remove_and_filter(stub, client) -> None:
    record = synthetic_record(unique("labels"), seed=30, labels={"source": "synthetic"})
    ingest(stub, record)
    rid = record.header.record_id
    before = client.stats()

    updated = client.set_labels(rid, {"hallucinated": "true", "judge": "gpt-x"})
    assert updated.labels == {"source": "synthetic", "hallucinated": "true", "judge": "gpt-x"}
    assert client.get_record(rid).labels == updated.labels
    assert ids(client.iter_records(labels={"judge": "gpt-x", "hallucinated": "true"})) == [rid]

    updated = client.set_labels(rid, {"hallucinated": "false"}, remove=["judge", "absent"])
    assert updated.labels == {"source": "synthetic", "hallucinated": "false"}
    assert ids(client.iter_records(labels={"judge": "gpt-x"})) == []
    assert ids(client.iter_records(labels={"hallucinated": "false", "source": "synthetic"}))[
        :1
    ] == [rid]
    assert client.find_by_prompt_hash(record.header.prompt_hash)[0].labels == updated.labels

    # Labels live apart from the activations: those and the counters are untouched.
    for layer, values in client.get_activations(rid).items():
        np.testing.assert_array_equal(values, record.values[layer])
    after = client.stats()
    assert (after.records, after.stored_bytes) == (before.records, before.stored_bytes)
    # A replay of the record keeps the labels attached since.
    ingest(stub, record, rows_per_chunk=4)
    assert client.get_record(rid).labels == updated.labels


def test_set_labels_errors(stub, client) -> None:
    with pytest.raises(NotFoundError):
        client.set_labels(new_record_id(), {"a": "b"})
    record = synthetic_record(unique("label-errors"), seed=31)
    ingest(stub, record)
    rid = record.header.record_id
    with pytest.raises(InvalidArgumentError, match="both set and removed"):
        client.set_labels(rid, {"a": "1"}, remove=["a"])
    with pytest.raises(InvalidArgumentError, match="empty label key"):
        client.set_labels(rid, {"": "1"})
    with pytest.raises(InvalidArgumentError, match="longer than"):
        client.set_labels(rid, {"k" * 300: "1"})
    assert client.get_record(rid).labels == {"source": "synthetic"}


# -- DeleteRecord and Stats --------------------------------------------------------------


def test_stats_follow_ingest_reingest_partial_and_delete(stub, client) -> None:
    model = unique("stats-model")
    prompt = unique("stats")
    first = synthetic_record(prompt, model=model, seed=40)
    second = synthetic_record(prompt, model=model, seed=41)
    base = client.stats()

    def delta(**expected: int) -> None:
        now = client.stats()
        for name, value in expected.items():
            assert getattr(now, name) - getattr(base, name) == value, name

    ingest(stub, first)
    delta(records=1, complete_records=1, activation_bytes=RECORD_BYTES, prompt_hashes=1,
          stored_bytes=RECORD_BYTES)  # fmt: skip
    assert client.stats().models[model].records == 1
    ingest(stub, first, rows_per_chunk=3)  # a replay replaces, never adds
    delta(records=1, complete_records=1, activation_bytes=RECORD_BYTES, prompt_hashes=1,
          stored_bytes=RECORD_BYTES)  # fmt: skip
    ingest(stub, second)
    delta(records=2, complete_records=2, activation_bytes=2 * RECORD_BYTES, prompt_hashes=1)
    assert client.stats().models[model].activation_bytes == 2 * RECORD_BYTES

    # A replay of a complete record, even one cut after two chunks, changes nothing.
    stub.Ingest(iter(first.requests(5)[:3]), timeout=30)
    delta(records=2, complete_records=2, activation_bytes=2 * RECORD_BYTES, prompt_hashes=1,
          stored_bytes=2 * RECORD_BYTES)  # fmt: skip
    assert client.get_record(first.header.record_id).is_complete

    # A new record cut after two chunks stays PARTIAL: counted as a record, not in the bytes
    # (its header claims bytes it may never hold); its rows were never stored.
    third = synthetic_record(prompt, model=model, seed=42)
    with pytest.raises(grpc.RpcError):
        stub.Ingest(iter(third.requests(5)[:3]), timeout=30)
    delta(records=3, complete_records=2, activation_bytes=2 * RECORD_BYTES, prompt_hashes=1,
          stored_bytes=2 * RECORD_BYTES)  # fmt: skip
    with pytest.raises(FailedPreconditionError):
        client.get_activations(third.header.record_id)
    assert client.stats().models[model].records == 2

    deleted = client.delete_record(third.header.record_id)
    assert (deleted.activation_bytes, deleted.stored_bytes) == (RECORD_BYTES, 0)
    deleted = client.delete_record(first.header.record_id)
    assert deleted.record_id == first.header.record_id
    assert (deleted.activation_bytes, deleted.stored_bytes) == (RECORD_BYTES, RECORD_BYTES)
    delta(records=1, complete_records=1, activation_bytes=RECORD_BYTES, prompt_hashes=1,
          stored_bytes=RECORD_BYTES)  # fmt: skip
    client.delete_record(second.header.record_id)
    delta(records=0, complete_records=0, activation_bytes=0, prompt_hashes=0, stored_bytes=0)
    assert model not in client.stats().models


def test_delete_removes_everything(stub, client) -> None:
    prompt = unique("delete")
    keep = synthetic_record(prompt, seed=50)
    gone = synthetic_record(prompt, seed=51, labels={"tag": unique("gone")})
    for record in (keep, gone):
        ingest(stub, record)
    rid = gone.header.record_id
    tag = dict(gone.header.labels)

    client.delete_record(rid)
    with pytest.raises(NotFoundError):
        client.get_record(rid)
    with pytest.raises(NotFoundError):
        client.get_activations(rid)
    with pytest.raises(NotFoundError):
        client.delete_record(rid)
    with pytest.raises(NotFoundError):
        client.set_labels(rid, {"a": "b"})
    assert ids(client.find_by_prompt(prompt)) == [keep.header.record_id]
    assert ids(client.iter_records(labels=tag)) == []
    assert rid not in ids(client.iter_records(model=gone.header.model))
    with pytest.raises(InvalidArgumentError):
        client.delete_record("nope")
    # The id can be ingested again from scratch, labels and all.
    ingest(stub, gone)
    assert client.get_record(rid).labels == tag
    assert ids(client.find_by_prompt_hash(prompt_hash(prompt))) == [rid, keep.header.record_id]
