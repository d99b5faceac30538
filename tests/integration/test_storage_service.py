"""The storage service as a real process: ingest through the gRPC stub, read via StorageClient."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from actlog.client import StorageClient
from actlog.errors import (
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    WaitTimeoutError,
)
from actlog_common.dtypes import bf16_bits_to_float32
from actlog_common.hashing import prompt_hash
from actlog_common.ids import new_record_id
from actlog_common.same_host import shm_supported
from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from storage_service.config import StorageSettings
from storage_service.server import create_server
from storage_service.testing import SyntheticRecord, synthetic_record

MIB = 1 << 20


@pytest.fixture(scope="module")
def channel(storage) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(storage.address, options=options) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> storage_pb2_grpc.StorageStub:
    return storage_pb2_grpc.StorageStub(channel)


@pytest.fixture(scope="module", params=["stream", "shm"])
def client(storage, request: pytest.FixtureRequest) -> Iterator[StorageClient]:
    """The client, reading activations over each transport in turn."""
    if request.param == "shm" and not shm_supported():
        pytest.skip("no writable /dev/shm here")
    with StorageClient(storage.address, timeout=30, transport=request.param) as client:
        yield client


@pytest.fixture(autouse=True)
def server_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test on the shared server, it is still up and answers Stats."""
    yield
    if "storage" in request.fixturenames:
        storage = request.getfixturevalue("storage")
        assert storage.alive(), storage.log()
        with StorageClient(storage.address, timeout=10) as client:
            client.stats()


def ingest(stub, record: SyntheticRecord, rows_per_chunk: int = 5, **commit):
    return stub.Ingest(iter(record.requests(rows_per_chunk, **commit)), timeout=30)


def ingest_error(stub, requests) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.Ingest(iter(requests), timeout=30)
    return info.value


def unique_prompt(name: str) -> str:
    return f"{name} {new_record_id()}"


# -- queries -----------------------------------------------------------------------------


def test_startup_log_names_the_bound_address(storage) -> None:
    assert f"storage listening on 127.0.0.1:{storage.port}" in storage.log()


def test_records_sharing_a_prompt_hash_are_kept_newest_first(stub, client) -> None:
    prompt = unique_prompt("shared")
    first = synthetic_record(prompt, seed=1, model="model-a")
    second = synthetic_record(prompt, seed=2, model="model-b")
    assert first.header.record_id < second.header.record_id
    for record in (first, second):
        reply = ingest(stub, record)
        assert reply.record_id == record.header.record_id
        assert reply.status == storage_pb2.RECORD_STATUS_COMPLETE
        assert reply.bytes_written == record.header.num_positions * 16 * 2 * 3

    found = client.find_by_prompt_hash(prompt_hash(prompt))
    assert [r.record_id for r in found] == [second.header.record_id, first.header.record_id]
    assert [r.response for r in found] == ["response 2", "response 1"]
    assert client.find_by_prompt(prompt) == found
    only_a = client.find_by_prompt_hash(prompt_hash(prompt), model="model-a")
    assert [r.record_id for r in only_a] == [first.header.record_id]
    assert client.find_by_prompt_hash(prompt_hash(unique_prompt("never stored"))) == []
    assert len(client.wait_for_record(prompt_hash(prompt), count=2, timeout=5)) == 2
    assert client.wait_for_record_id(first.header.record_id, timeout=5) == found[1]
    with pytest.raises(WaitTimeoutError, match="was not stored within"):
        client.wait_for_record_id(new_record_id(), timeout=0.2, poll_interval=0.05)


def test_get_record_returns_every_header_field(stub, client) -> None:
    record = synthetic_record(unique_prompt("fields"), dtype="float16", seed=3)
    ingest(stub, record)
    h = record.header
    got = client.get_record(h.record_id)
    assert got.record_id == h.record_id
    assert got.prompt_hash == hashlib.sha256(h.prompt.encode()).hexdigest()
    assert (got.prompt, got.response, got.model) == (h.prompt, h.response, h.model)
    assert got.token_ids == tuple(h.token_ids)
    assert got.token_strings == tuple(h.token_strings)
    assert got.prompt_length == h.prompt_length
    assert got.sampling_params == {"temperature": 0.7, "max_tokens": 8, "seed": 3}
    assert got.layers == (0, 2, 4)
    assert (got.num_positions, got.hidden_size, got.dtype) == (12, 16, "float16")
    assert (got.num_layers, got.finish_reason) == (4, "length")
    assert got.created_at_ms == h.created_at_ms
    assert got.labels == {"source": "synthetic"}
    assert (got.choice_index, got.request_id) == (0, "req-3")
    assert got.status == "COMPLETE" and got.is_complete
    assert got.activation_bytes == 3 * 12 * 16 * 2


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_activations_round_trip(stub, client, dtype: str) -> None:
    record = synthetic_record(
        unique_prompt(dtype), dtype=dtype, layers=(0, 7, 15, 16), num_layers=16,
        num_positions=23, hidden_size=64, seed=4,
    )  # fmt: skip
    ingest(stub, record, rows_per_chunk=5)
    rid = record.header.record_id

    everything = client.get_activations(rid)
    assert sorted(everything) == [0, 7, 15, 16]
    for layer, values in everything.items():
        assert values.dtype == np.float32 and values.shape == (23, 64)
        np.testing.assert_array_equal(values, record.values[layer])

    # A row range across chunk boundaries, negative layer indices, one int layer.
    some = client.get_activations(rid, layers=[-1, 7, -2], row_start=3, row_end=17)
    assert list(some) == [16, 7, 15]
    for layer, values in some.items():
        np.testing.assert_array_equal(values, record.values[layer][3:17])
    tail = client.get_activations(rid, layers=0, row_start=20)
    np.testing.assert_array_equal(tail[0], record.values[0][20:])
    # A Record in hand instead of the id: the same rows, without asking for the header.
    by_record = client.get_activations(client.get_record(rid), layers=[7], row_start=2)
    np.testing.assert_array_equal(by_record[7], record.values[7][2:])

    raw = client.get_activations(rid, layers=[15], as_float32=False)[15]
    np.testing.assert_array_equal(raw, record.wire[15])
    if dtype == "bfloat16":
        assert raw.dtype == np.uint16
        np.testing.assert_array_equal(bf16_bits_to_float32(raw), record.values[15])


def test_stream_chunks_come_layer_by_layer_in_ascending_rows(stub) -> None:
    record = synthetic_record(unique_prompt("order"), num_positions=30, seed=5)
    ingest(stub, record, rows_per_chunk=4)
    request = storage_pb2.StreamActivationsRequest(
        record_id=record.header.record_id, layers=[4, 0], row_start=6, row_end=21
    )
    chunks = list(stub.StreamActivations(request, timeout=30))
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    order = [(c.layer, c.row_start, c.row_count) for c in chunks]
    expected = [(4, 6, 2), (4, 8, 4), (4, 12, 4), (4, 16, 4), (4, 20, 1)]
    assert order == expected + [(0, s, n) for _, s, n in expected]


def test_stats_count_records_models_and_hashes(stub, client) -> None:
    before = client.stats()
    prompt = unique_prompt("stats")
    model = f"stats-model-{new_record_id()}"
    for seed in (6, 7):
        ingest(stub, synthetic_record(prompt, model=model, seed=seed))
    after = client.stats()
    assert after.records == before.records + 2
    assert after.complete_records == before.complete_records + 2
    assert after.prompt_hashes == before.prompt_hashes + 1
    assert after.activation_bytes == before.activation_bytes + 2 * 3 * 12 * 16 * 2
    assert after.models[model].records == 2
    assert after.models[model].activation_bytes == 2 * 3 * 12 * 16 * 2
    assert 0 < after.lmdb_used_bytes <= after.lmdb_map_size


def test_reingesting_the_same_record_is_idempotent(stub, client) -> None:
    record = synthetic_record(unique_prompt("replay"), seed=8)
    ingest(stub, record, rows_per_chunk=5)
    before = client.stats()
    ingest(stub, record, rows_per_chunk=3)  # a replay, chunked differently
    after = client.stats()
    for name in ("records", "complete_records", "activation_bytes", "prompt_hashes"):
        assert getattr(after, name) == getattr(before, name), name
    found = client.find_by_prompt_hash(record.header.prompt_hash)
    assert [r.record_id for r in found] == [record.header.record_id]
    for layer, values in client.get_activations(record.header.record_id).items():
        np.testing.assert_array_equal(values, record.values[layer])


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_hash", ["abc", "A" * 64, "g" * 64, "0" * 63, ""])
def test_malformed_prompt_hash_is_invalid_argument(stub, client, bad_hash: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.FindByPromptHash(storage_pb2.FindByPromptHashRequest(prompt_hash=bad_hash))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompt hash" in info.value.details()
    with pytest.raises(InvalidArgumentError):
        client.find_by_prompt_hash(bad_hash)


def test_unknown_and_malformed_record_ids(stub, client) -> None:
    unknown = new_record_id()
    with pytest.raises(grpc.RpcError) as info:
        stub.GetRecord(storage_pb2.GetRecordRequest(record_id=unknown))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(NotFoundError, match=unknown):
        client.get_record(unknown)
    with pytest.raises(NotFoundError):
        client.get_activations(unknown)
    with pytest.raises(InvalidArgumentError, match="record id"):
        client.get_record("not-an-id")
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamActivations(storage_pb2.StreamActivationsRequest(record_id="XYZ")))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_layer_and_bad_rows_are_invalid_argument(stub, client) -> None:
    record = synthetic_record(unique_prompt("layers"), seed=9)
    ingest(stub, record)
    rid = record.header.record_id
    with pytest.raises(InvalidArgumentError, match=r"stored layers: \[0, 2, 4\]"):
        client.get_activations(rid, layers=[3])
    with pytest.raises(InvalidArgumentError, match=r"stored layers"):
        client.get_activations(rid, layers=[-2])  # = layer 3
    with pytest.raises(InvalidArgumentError, match="positions"):
        client.get_activations(rid, row_start=5, row_end=13)


def _assert_not_complete(client: StorageClient, record: SyntheticRecord) -> None:
    rid = record.header.record_id
    found = client.find_by_prompt_hash(record.header.prompt_hash)
    assert all(not r.is_complete for r in found)
    with pytest.raises(WaitTimeoutError):
        client.wait_for_record(record.header.prompt_hash, timeout=0.2, poll_interval=0.05)
    with pytest.raises(WaitTimeoutError):
        client.wait_for_record_id(rid, timeout=0.2, poll_interval=0.05)
    if found:
        assert client.get_record(rid).status == "PARTIAL"
        with pytest.raises(FailedPreconditionError, match="partial"):
            client.get_activations(rid)


def _chunk(requests, index: int) -> storage_pb2.ActivationChunk:
    return requests[index].chunk


def test_chunk_before_header_is_rejected(stub, client) -> None:
    record = synthetic_record(unique_prompt("no header"), seed=10)
    requests = record.requests()
    error = ingest_error(stub, requests[1:])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "before the record's header" in error.details()
    _assert_not_complete(client, record)
    assert client.find_by_prompt_hash(record.header.prompt_hash) == []


def test_wrong_checksum_leaves_the_record_partial(stub, client) -> None:
    record = synthetic_record(unique_prompt("checksum"), seed=11)
    error = ingest_error(stub, record.requests(5, sha256="0" * 64))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "checksum mismatch" in error.details()
    _assert_not_complete(client, record)
    # The sender's replay, now correct, completes the same record.
    ingest(stub, record)
    assert client.get_record(record.header.record_id).is_complete


def test_wrong_chunk_count_leaves_the_record_partial(stub, client) -> None:
    record = synthetic_record(unique_prompt("count"), seed=12)
    error = ingest_error(stub, record.requests(5, num_chunks=99))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "99 chunks" in error.details()
    _assert_not_complete(client, record)


def _corrupt(name: str, requests: list[storage_pb2.IngestRequest]) -> str:
    """Damage one chunk of `requests` in place; the expected error text."""
    chunk = requests[2].chunk
    if name == "size":
        chunk.data = chunk.data[:-2]
        return "data bytes, expected"
    if name == "layer":
        chunk.layer = 3
        return "layer 3 is not in the header's layers"
    if name == "rows":
        chunk.row_start = 10
        return "beyond num_positions 12"
    if name == "record id":
        chunk.record_id = new_record_id()
        return "but this stream ingests record"
    if name == "sequence":
        chunk.sequence = 7
        return "out of order"
    if name == "missing commit":
        requests.pop()
        return "ended without a commit"
    if name == "gap":
        del requests[2]
        for sequence, request in enumerate(requests[1:-1]):
            request.chunk.sequence = sequence
        requests[-1].commit.num_chunks -= 1
        return "checksum mismatch"
    raise AssertionError(name)


@pytest.mark.parametrize(
    "damage", ["size", "layer", "rows", "record id", "sequence", "missing commit", "gap"]
)
def test_inconsistent_ingest_is_invalid_argument(stub, client, damage: str) -> None:
    record = synthetic_record(unique_prompt(damage), seed=13)
    requests = record.requests(5)
    message = _corrupt(damage, requests)
    error = ingest_error(stub, requests)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    _assert_not_complete(client, record)


def test_rows_must_cover_every_layer(stub, client) -> None:
    record = synthetic_record(unique_prompt("coverage"), seed=14)
    requests = [r for r in record.requests(5) if not (r.chunk.layer == 4 and r.chunk.row_start)]
    for sequence, request in enumerate(requests[1:-1]):
        request.chunk.sequence = sequence
    digest = hashlib.sha256(b"".join(r.chunk.data for r in requests[1:-1])).hexdigest()
    requests[-1].commit.num_chunks, requests[-1].commit.sha256 = len(requests) - 2, digest
    error = ingest_error(stub, requests)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "layer 4 rows are not covered" in error.details()
    _assert_not_complete(client, record)


def test_malformed_header_is_invalid_argument(stub) -> None:
    for fields, message in (
        ({"dtype": "int8"}, "dtype"),
        ({"layers": [2, 0]}, "ascending"),
        ({"layers": [0, 9]}, "beyond num_layers"),
        ({"prompt_hash": "abc"}, "prompt hash"),
        ({"record_id": "abc"}, "record id"),
    ):
        header = synthetic_record(unique_prompt("header")).header
        for name, value in fields.items():
            if isinstance(value, list):
                header.ClearField(name)
                getattr(header, name).extend(value)
            else:
                setattr(header, name, value)
        error = ingest_error(stub, [storage_pb2.IngestRequest(header=header)])
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in error.details()


# -- durability --------------------------------------------------------------------------


def test_map_grows_on_demand_and_data_survives_a_restart(start_storage, tmp_path) -> None:
    lmdb_path = tmp_path / "small.lmdb"
    storage = start_storage(lmdb_path, "--lmdb-map-size", str(MIB))
    records = [
        synthetic_record(
            unique_prompt("big"),
            dtype="float32",
            layers=(0, 8),
            num_layers=8,
            num_positions=640,
            hidden_size=1024,
            seed=20 + i,
        )  # fmt: skip
        for i in range(4)
    ]  # 4 records x 2 layers x 640 rows x 4 KiB = 20 MiB
    with grpc.insecure_channel(storage.address) as channel:
        stub = storage_pb2_grpc.StorageStub(channel)
        for record in records:
            ingest(stub, record, rows_per_chunk=128)  # 512 KiB chunks
    with StorageClient(storage.address) as client:
        stats = client.stats()
        assert stats.activation_bytes == 20 * MIB
        assert stats.lmdb_map_size >= 20 * MIB
    assert "grew map" in storage.log()
    assert storage.stop() == 0

    restarted = start_storage(lmdb_path, "--lmdb-map-size", str(MIB))
    with StorageClient(restarted.address) as client:
        assert client.stats().complete_records == 4
        for record in records:
            (found,) = client.find_by_prompt_hash(record.header.prompt_hash)
            assert found.record_id == record.header.record_id and found.is_complete
            for layer, values in client.get_activations(found.record_id).items():
                np.testing.assert_array_equal(values, record.values[layer])


def test_sigterm_stops_gracefully(start_storage) -> None:
    storage = start_storage()
    assert storage.stop() == 0
    log = storage.log()
    assert "received SIGTERM" in log and "storage stopped" in log


def test_unexpected_errors_are_internal_and_logged(tmp_path, caplog, monkeypatch) -> None:
    settings = StorageSettings(
        activation_lmdb_path=str(tmp_path / "lmdb"), storage_port=0, storage_metrics_port=0
    )
    server, port = create_server(settings)

    def broken_stats() -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(server.store, "stats", broken_stats)
    server.start()
    try:
        with StorageClient(f"127.0.0.1:{port}") as client, pytest.raises(InternalError) as info:
            client.stats()
        assert "disk on fire" not in info.value.details
        assert "disk on fire" in caplog.text and "Traceback" in caplog.text
        with StorageClient(f"127.0.0.1:{port}") as client:
            assert client.find_by_prompt("nothing here") == []
    finally:
        server.stop(grace=1)
