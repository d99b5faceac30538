"""Limits that keep every read of a record within a message, and reads that race a delete:
a record's labels are bounded in total (STORAGE_MAX_LABEL_BYTES) and a refused SetLabels
changes nothing; Features batches are sized by their whole encoded size, labels included; a
read of a record deleted under it is NOT_FOUND, never a short or broken answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from actlog.client import StorageClient
from actlog.errors import InvalidArgumentError, NotFoundError
from actlog_common.ids import new_record_id
from actlog_common.v1 import storage_pb2
from storage_service.testing import synthetic_record
from tests.integration.helpers import ingest


@pytest.fixture(scope="module")
def client(storage) -> Iterator[StorageClient]:
    with StorageClient(storage.address, timeout=120) as client:
        yield client


def test_a_records_labels_are_bounded_in_total_and_a_refused_call_changes_nothing(stub, client):
    prompt = f"labelled {new_record_id()}"
    record = ingest(stub, synthetic_record(prompt, model="labels-model"))
    record_id = record.header.record_id
    big = "x" * (64 << 10)
    # 600 labels of 64 KiB: 39 MB in one call, each label within the per-label limits.
    with pytest.raises(InvalidArgumentError) as refused:
        client.set_labels(record_id, {f"k{i}": big for i in range(600)})
    assert "STORAGE_MAX_LABEL_BYTES" in str(refused.value) and "nothing was changed" in str(
        refused.value
    )
    # Up to the limit (1 MiB of keys and values) is taken; one more label is not, and the
    # refused call removes nothing it asked to remove.
    near = {f"k{i}": "y" * 60_000 for i in range(17)}
    kept = client.set_labels(record_id, near)
    assert len(kept.labels) == 18  # with the synthetic record's "source"
    with pytest.raises(InvalidArgumentError):
        client.set_labels(record_id, {"one-more": "z" * 60_000}, remove=["source"])
    after = client.get_record(record_id)
    assert after.labels == kept.labels
    # Every read of the record still works, and a label can still be replaced or removed.
    assert [r.record_id for r in client.find_by_prompt(prompt)] == [record_id]
    listed, _ = client.list_records(model="labels-model")
    assert [r.record_id for r in listed] == [record_id]
    features = client.features(model="labels-model", layers=[0])
    assert features.record_ids == [record_id]
    assert len(client.set_labels(record_id, {}, remove=list(near)).labels) == 1


def test_features_batches_count_the_labels_they_carry(stub, client):
    """1,400 records with a 60,000-byte label each (84 MB of labels): within the limits,
    so the pooled features of all of them arrive, in batches that fit a message."""
    tag = new_record_id()
    label = "v" * 60_000
    expected = []
    for i in range(1400):
        record = synthetic_record(
            f"heavy {tag} {i}", model=f"heavy-{tag}", seed=i, layers=(0,), num_positions=2,
            hidden_size=8, labels={"note": label, "set": tag},
        )  # fmt: skip
        ingest(stub, record)
        expected.append(record.header.record_id)
    started = time.monotonic()
    features = client.features(labels={"set": tag}, layers=[0], timeout=120)
    assert sorted(features.record_ids) == sorted(expected)
    assert features.vectors[0].shape == (1400, 8)
    assert all(labels["note"] == label for labels in features.labels)
    print(f"features of 1,400 label-heavy records in {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize("transport", ["stream", "shm"])
def test_a_record_deleted_while_four_readers_read_it_is_whole_or_not_found(
    stub, storage, transport
):
    """Rounds with the delete later and later, until some reads were cut by it midway."""
    outcomes: list[str] = []
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5):
        outcomes += delete_under_readers(stub, storage, transport, delay)
        if "deleted midway" in outcomes and "whole" in outcomes:
            break
    print(f"{transport}: {outcomes}")
    assert "deleted midway" in outcomes, "no read was under way when the delete came"


def delete_under_readers(stub, storage, transport: str, delay: float) -> list[str]:
    # 64 MB: 2 layers x 2048 rows x 4096 float32.
    record = ingest(
        stub,
        synthetic_record(f"deleted under its readers {new_record_id()}", dtype="float32",
                         layers=(0, 1), num_layers=1, num_positions=2048, hidden_size=4096),
        rows_per_chunk=256,
    )  # fmt: skip
    record_id = record.header.record_id
    outcomes: list[str] = []
    errors: list[BaseException] = []
    go = threading.Barrier(5)

    def read() -> None:
        with StorageClient(storage.address, timeout=120, transport=transport) as reader:
            header = reader.get_record(record_id)
            go.wait()
            try:
                rows = reader.get_activations(header)
            except NotFoundError as exc:
                outcomes.append("deleted midway" if "while" in str(exc) else "not found")
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)
            else:
                for layer, values in record.values.items():
                    np.testing.assert_array_equal(rows[layer], values)
                outcomes.append("whole")

    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    go.wait()
    time.sleep(delay)
    stub.DeleteRecord(storage_pb2.DeleteRecordRequest(record_id=record_id), timeout=60)
    for thread in readers:
        thread.join(120)
    assert not errors, errors
    assert len(outcomes) == 4
    return outcomes
