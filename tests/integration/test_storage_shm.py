"""Activations read through shared memory: same bytes as the stream, clear refusals, fallback.

Equality with the gRPC stream for every dtype, layer choice and row range is covered by
test_storage_service.py (its `client` runs over both transports); this file covers what
only the shared-memory path has.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from actlog.client import StorageClient
from actlog.errors import (
    ERROR_TYPE_KEY,
    ActlogError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    UnavailableError,
)
from actlog.reads.shm import Arena
from actlog_common.ids import new_record_id
from actlog_common.same_host import SHM_DIR, local_socket_path, private_directory
from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from storage_service.testing import SyntheticRecord, synthetic_record

pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(), reason="needs /dev/shm")
GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


@pytest.fixture(scope="module")
def stub(storage) -> Iterator[storage_pb2_grpc.StorageStub]:
    with grpc.insecure_channel(storage.address, options=GRPC_OPTIONS) as channel:
        yield storage_pb2_grpc.StorageStub(channel)


def stored(stub, name: str, **fields) -> SyntheticRecord:
    record = synthetic_record(f"{name} {new_record_id()}", **fields)
    reply = stub.Ingest(iter(record.requests(7)), timeout=30)
    assert reply.status == storage_pb2.RECORD_STATUS_COMPLETE
    return record


def arenas() -> set[str]:
    """Names of this user's arenas, as the client sends them."""
    directory = SHM_DIR / f"actlog-u{os.getuid()}"
    return {f"{directory.name}/{path.name}" for path in directory.glob("*")}


def rpc_error(stub, **request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamActivations(storage_pb2.StreamActivationsRequest(**request), timeout=10))
    return info.value


def test_the_shm_client_reuses_one_arena_and_removes_it_on_close(storage, stub) -> None:
    record = stored(stub, "arena", layers=(0, 2, 4), num_positions=40, hidden_size=96)
    before = arenas()
    with StorageClient(storage.address, transport="shm") as client:
        assert client.activation_transport == "shm"
        for as_float32 in (False, True, False, True):
            got = client.get_activations(record.header.record_id, as_float32=as_float32)
            for layer, values in got.items():
                expected = record.values if as_float32 else record.wire
                np.testing.assert_array_equal(values, expected[layer])
            del got, values
        assert len(arenas() - before) == 1, "one arena, reused by every read"
    assert arenas() <= before


def test_arrays_in_hand_are_never_overwritten_by_later_reads(storage, stub) -> None:
    records = [stored(stub, f"held {i}", dtype=dtype, num_positions=30, hidden_size=64, seed=i)
               for i, dtype in enumerate(["bfloat16", "float32", "float16"])]  # fmt: skip
    with StorageClient(storage.address, transport="shm") as client:
        held = [client.get_activations(r.header.record_id, as_float32=False) for r in records]
        views = [arrays[4][5:9] for arrays in held]  # views outlive the arrays below
        for _ in range(3):  # more reads, arenas coming and going
            for record in records:
                client.get_activations(record.header.record_id, layers=[0])
        for record, arrays in zip(records, held, strict=True):
            for layer, values in arrays.items():
                np.testing.assert_array_equal(values, record.wire[layer])
        held.clear()
        for _ in range(3):
            for record in records:
                client.get_activations(record.header.record_id)
        for record, view in zip(records, views, strict=True):
            np.testing.assert_array_equal(view, record.wire[4][5:9])

        values = client.get_activations(records[0].header.record_id, as_float32=False)[0]
        values += 1  # the caller's to change; the next read is unaffected
        again = client.get_activations(records[0].header.record_id, as_float32=False)[0]
        np.testing.assert_array_equal(again, records[0].wire[0])


FORKED_READER = """
import os, sys
import numpy as np
from actlog.client import StorageClient
client = StorageClient(sys.argv[1], transport="shm")
held = client.get_activations(sys.argv[2], as_float32=False)
snapshot = {layer: values.copy() for layer, values in held.items()}
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # the child keeps reading the arrays it inherited
    os.close(write)
    os.read(read, 1)  # until the parent has dropped its copy and read other records
    same = all(np.array_equal(held[k], snapshot[k]) for k in held)
    os._exit(0 if same else 3)
del held  # the parent lets go: the arena must still not be reused
for _ in range(5):
    client.get_activations(sys.argv[3], as_float32=False)
os.write(write, b"x")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_arrays_a_forked_child_inherited_stay_intact(storage, stub) -> None:
    first, other = stored(stub, "fork a", num_positions=20), stored(stub, "fork b", seed=5)
    child = subprocess.run(
        [sys.executable, "-c", FORKED_READER, storage.address, first.header.record_id,
         other.header.record_id],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert child.returncode == 0, f"the child saw other values ({child.returncode}) {child.stderr}"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_reads_larger_than_the_arena_cap_are_split(storage, stub, dtype: str) -> None:
    record = stored(stub, "split", dtype=dtype, layers=(0, 2, 4), num_positions=300,
                    hidden_size=1024, seed=3)  # fmt: skip
    cap = 1 << 20  # at most 256 float32 rows of 1024, 512 of 16-bit values, per call
    with StorageClient(storage.address, transport="shm", shm_arena_bytes=cap) as client:
        got = client.get_activations(record.header.record_id, layers=[4, 0], row_start=3)
        assert list(got) == [4, 0]
        for layer, values in got.items():
            np.testing.assert_array_equal(values, record.values[layer][3:])
        raw = client.get_activations(record.header.record_id, layers=-1, as_float32=False)
        np.testing.assert_array_equal(raw[4], record.wire[4])
        with pytest.raises(ValueError, match="at least"):
            StorageClient(storage.address, shm_arena_bytes=1000)


def test_concurrent_threads_each_read_their_own_records(storage, stub) -> None:
    records = [
        stored(stub, f"thread {i}", dtype=dtype, num_positions=20 + i, hidden_size=64, seed=i)
        for i, dtype in enumerate(["bfloat16", "float16", "float32"] * 3)
    ]
    failures: list[BaseException] = []
    with StorageClient(storage.address, transport="shm") as client:

        def read(record: SyntheticRecord) -> None:
            try:
                for _ in range(5):
                    got = client.get_activations(record.header.record_id)
                    for layer, values in got.items():
                        np.testing.assert_array_equal(values, record.values[layer])
            except BaseException as error:
                failures.append(error)

        threads = [threading.Thread(target=read, args=(r,)) for r in records]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures, failures[0]


def test_segments_the_server_cannot_use_are_refused_clearly(storage, stub) -> None:
    record = stored(stub, "refused", layers=(0, 2, 4), num_positions=12, hidden_size=16)
    rid = record.header.record_id
    selection_bytes = 3 * 12 * 16 * 2

    error = rpc_error(stub, record_id=rid, shm_name="../../etc/passwd", shm_size=10**6)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lowercase hex" in error.details()

    missing = f"actlog-u{os.getuid()}/" + "0" * 32
    error = rpc_error(stub, record_id=rid, shm_name=missing, shm_size=10**6)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not reachable" in error.details()
    assert (ERROR_TYPE_KEY, "SharedMemoryUnavailable") in error.trailing_metadata()

    arena = Arena(selection_bytes - 1, private_directory())
    try:
        error = rpc_error(stub, record_id=rid, shm_name=arena.name, shm_size=arena.size)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"holds {selection_bytes} bytes, more than shm_size" in error.details()
        error = rpc_error(stub, record_id=rid, shm_name=arena.name, shm_size=10**6)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "fewer than shm_size" in error.details()
        # The shared-memory path checks the record like the stream does.
        error = rpc_error(stub, record_id=rid, layers=[3], shm_name=arena.name, shm_size=10)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not stored" in error.details()
    finally:
        arena.close()


def test_with_shm_reads_off_auto_falls_back_to_the_stream(start_storage) -> None:
    storage = start_storage(None, "--storage-shm-reads", "false")
    with grpc.insecure_channel(storage.address, options=GRPC_OPTIONS) as channel:
        record = stored(storage_pb2_grpc.StorageStub(channel), "fallback", num_positions=30)
    rid = record.header.record_id

    with StorageClient(storage.address) as client:
        assert client.activation_transport == "shm"
        for _ in range(2):
            got = client.get_activations(rid)
            for layer, values in got.items():
                np.testing.assert_array_equal(values, record.values[layer])
            assert client.activation_transport == "stream"

    with StorageClient(storage.address, transport="shm") as client:
        with pytest.raises(FailedPreconditionError, match="turned off") as info:
            client.get_activations(rid)
        assert info.value.error_type == "SharedMemoryUnavailable"
    assert storage.alive()


def test_clients_on_other_hosts_use_the_stream(storage) -> None:
    assert StorageClient("storage.internal:50052").activation_transport == "stream"
    assert StorageClient(storage.address, transport="stream").activation_transport == "stream"
    with pytest.raises(ValueError, match="auto, stream or shm"):
        StorageClient(storage.address, transport="tcp")  # type: ignore[arg-type]


def test_a_partial_record_is_refused_before_anything_is_written(storage, stub) -> None:
    record = synthetic_record(f"partial {new_record_id()}")
    with pytest.raises(grpc.RpcError):
        stub.Ingest(iter(record.requests(5, sha256="0" * 64)), timeout=30)
    with StorageClient(storage.address, transport="shm") as client:
        with pytest.raises(FailedPreconditionError, match="partial"):
            client.get_activations(record.header.record_id)
        with pytest.raises(InvalidArgumentError, match="rows"):
            client.get_activations(stored(stub, "rows").header.record_id, row_start=10, row_end=5)


def test_without_room_for_an_arena_auto_reads_over_the_stream(storage, stub, tmp_path) -> None:
    """A full /dev/shm cannot be made here; an arena directory that refuses files stands in."""
    record = stored(stub, "no room", num_positions=16)
    for transport in ("auto", "shm"):
        with StorageClient(storage.address, transport=transport) as client:
            client._reads._arenas.root = tmp_path / "missing"  # no arena can be made there
            if transport == "shm":
                with pytest.raises(ActlogError, match="no shared-memory arena"):
                    client.get_activations(record.header.record_id)
                continue
            got = client.get_activations(record.header.record_id)
            for layer, values in got.items():
                np.testing.assert_array_equal(values, record.values[layer])
            assert client.activation_transport == "shm", "the next read tries again"


KILLED_CLIENT = """
import os, signal, sys
from actlog.client import StorageClient
client = StorageClient(sys.argv[1], transport="shm")
client.get_activations(sys.argv[2])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_arena_of_a_killed_client_is_removed_by_the_next_one(storage, stub) -> None:
    record = stored(stub, "killed", num_positions=8)
    before = arenas()
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_CLIENT, storage.address, record.header.record_id],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = arenas() - before
    assert len(left) == 1, "SIGKILL left the arena behind"
    with StorageClient(storage.address, transport="shm") as client:
        client.get_activations(record.header.record_id)
        assert not left & arenas()


def local_request(path: Path, body: bytes) -> storage_pb2.LocalReadReply:
    """One exchange as the protocol frames it: u32 little-endian length, then the message."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        conn.sendall(struct.pack("<I", len(body)) + body)
        size = struct.unpack("<I", conn.recv(4, socket.MSG_WAITALL))[0]
        return storage_pb2.LocalReadReply.FromString(conn.recv(size, socket.MSG_WAITALL))


def test_storage_serves_shared_memory_reads_on_a_private_local_socket(storage, stub) -> None:
    record = stored(stub, "socket", layers=(0, 2, 4), num_positions=12, hidden_size=16)
    path = local_socket_path(storage.port)
    assert stat.S_ISSOCK(path.stat().st_mode) and path.stat().st_mode & 0o777 == 0o600

    arena = Arena(3 * 12 * 16 * 2, private_directory())
    try:
        request = storage_pb2.StreamActivationsRequest(
            record_id=record.header.record_id, layers=[4, 0], row_start=2,
            shm_name=arena.name, shm_size=arena.size,
        )  # fmt: skip
        reply = local_request(path, request.SerializeToString())
        layer_bytes = 10 * 16 * 2
        chunks = [(c.layer, c.row_start, c.row_count, c.shm_offset) for c in reply.chunks]
        assert chunks == [(4, 2, 10, 0), (0, 2, 10, layer_bytes)]
        assert not reply.HasField("failure")
        got = np.frombuffer(arena.buffer, np.uint16, 160, layer_bytes).reshape(10, 16)
        np.testing.assert_array_equal(got, record.wire[0][2:])

        # The same refusals, codes and error types as over gRPC.
        missing = storage_pb2.StreamActivationsRequest(
            record_id=new_record_id(), shm_name=arena.name, shm_size=arena.size
        )
        unknown = local_request(path, missing.SerializeToString())
        assert (unknown.failure.code, unknown.failure.error_type) == ("NOT_FOUND", "RecordNotFound")
        assert not unknown.chunks
        bad_layer = storage_pb2.StreamActivationsRequest(
            record_id=record.header.record_id, layers=[3], shm_name=arena.name, shm_size=10
        )
        bad = local_request(path, bad_layer.SerializeToString())
        assert bad.failure.code == "INVALID_ARGUMENT"
        no_shm = storage_pb2.StreamActivationsRequest(record_id=record.header.record_id)
        reply = local_request(path, no_shm.SerializeToString())
        assert reply.failure.code == "INVALID_ARGUMENT"
        assert "shared-memory reads only" in reply.failure.message
        assert local_request(path, b"\xff\xff\xff").failure.code == "INVALID_ARGUMENT"
    finally:
        arena.close()
    with StorageClient(storage.address) as client:  # auto, on this host: the socket
        got = client.get_activations(record.header.record_id, layers=[2], as_float32=False)
        np.testing.assert_array_equal(got[2], record.wire[2])
        assert client.local_socket_reads == 1
    assert storage.alive()


def test_reads_without_the_local_socket_go_over_grpc(start_storage) -> None:
    storage = start_storage(None, "--storage-local-socket", "false")
    assert not local_socket_path(storage.port).exists()
    with grpc.insecure_channel(storage.address, options=GRPC_OPTIONS) as channel:
        record = stored(storage_pb2_grpc.StorageStub(channel), "no socket", num_positions=30)
    for local_socket in (True, False):
        with StorageClient(storage.address, transport="shm", local_socket=local_socket) as client:
            got = client.get_activations(record.header.record_id, as_float32=False)
            for layer, values in got.items():
                np.testing.assert_array_equal(values, record.wire[layer])
            assert client.activation_transport == "shm"
            assert client.local_socket_reads == 0


def test_a_storage_restart_breaks_no_read(start_storage, tmp_path) -> None:
    storage = start_storage(tmp_path / "restart.lmdb")
    with grpc.insecure_channel(storage.address, options=GRPC_OPTIONS) as channel:
        record = stored(storage_pb2_grpc.StorageStub(channel), "restart", num_positions=30)
    rid = record.header.record_id
    with StorageClient(storage.address, transport="shm", timeout=10) as client:
        client.get_activations(rid)
        assert client.local_socket_reads == 1, "read through the local socket"
        assert storage.stop() == 0
        with pytest.raises(UnavailableError):  # typed, as over gRPC
            client.get_activations(rid)
        storage.start(port=storage.port)  # same LMDB, same port: a new socket
        deadline = time.monotonic() + 10
        while True:  # gRPC's channel reconnects after a back-off
            try:
                client.get_record(rid)
                break
            except UnavailableError:
                assert time.monotonic() < deadline, "gRPC never reconnected"
                time.sleep(0.1)
        for _ in range(2):
            got = client.get_activations(rid, as_float32=False)
            for layer, values in got.items():
                np.testing.assert_array_equal(values, record.wire[layer])
    assert storage.stop() == 0


def test_a_broken_connection_is_redone_on_a_new_one(start_storage, tmp_path) -> None:
    storage = start_storage(tmp_path / "reconnect.lmdb")
    with grpc.insecure_channel(storage.address, options=GRPC_OPTIONS) as channel:
        record = stored(storage_pb2_grpc.StorageStub(channel), "reconnect", num_positions=30)
    rid = record.header.record_id
    with StorageClient(storage.address, transport="shm") as client:
        client.get_activations(rid)
        assert storage.stop() == 0
        storage.start(port=storage.port)
        got = client.get_activations(rid, as_float32=False)  # its connection broke: redone
        np.testing.assert_array_equal(got[4], record.wire[4])
        assert client.local_socket_reads == 2
    assert storage.stop() == 0


def test_a_read_cut_short_never_answers_a_later_one(storage, stub) -> None:
    record = stored(stub, "cut short", layers=(0, 1, 2, 3), num_positions=512, hidden_size=4096)
    rid = record.header.record_id
    with StorageClient(storage.address, transport="shm") as client:
        in_hand = client.get_record(rid)  # so that the only call is the read itself
        client.get_activations(in_hand, layers=[0], row_end=1)
        client.timeout = 0.0002  # far less than copying 16 MiB takes
        with pytest.raises(DeadlineExceededError, match="local read"):
            client.get_activations(in_hand, as_float32=False)
        client.timeout = 30
        got = client.get_activations(rid, layers=[3, 1], row_start=7, as_float32=False)
        assert list(got) == [3, 1]
        np.testing.assert_array_equal(got[3], record.wire[3][7:])
        np.testing.assert_array_equal(got[1], record.wire[1][7:])


FORKED_CLIENT = """
import os, sys
import numpy as np
from actlog.client import StorageClient
client = StorageClient(sys.argv[1], transport="shm")
rid = sys.argv[2]
first = client.get_activations(rid, as_float32=False)
parents_channel = client._live.channel
read, write = os.pipe()
pid = os.fork()
results = []
for start in range(8):  # parent and child read at once, on the client they share
    # By id: a gRPC GetRecord first, then the rows on the local socket.
    got = client.get_activations(rid, row_start=start, as_float32=False)
    results.append(all(np.array_equal(got[k], first[k][start:]) for k in got))
if pid == 0:
    own = client._live.channel is not parents_channel
    client.close()  # must not cut the parent's connection
    os.write(write, b"x")
    os._exit(0 if all(results) and own and client.local_socket_reads >= 8 else 3)
os.close(write)
os.read(read, 1)  # the child has closed its client (or died): the parent's still works
for start in range(4):
    got = client.get_activations(rid, row_start=start, as_float32=False)
    results.append(all(np.array_equal(got[k], first[k][start:]) for k in got))
results.append(client._live.channel is parents_channel)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) or (0 if all(results) else 4))
"""


def test_a_forked_child_reads_on_connections_of_its_own(storage, stub) -> None:
    """A client inherited through fork() opens its own gRPC channel in the child (one used on
    both sides breaks: "Wrong file descriptor generation"); closing it there leaves the
    parent's connection working."""
    record = stored(stub, "fork reads", num_positions=40, hidden_size=256)
    child = subprocess.run(
        [sys.executable, "-c", FORKED_CLIENT, storage.address, record.header.record_id],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert child.returncode == 0, f"crossed or wrong reads ({child.returncode}): {child.stderr}"
