"""Storage throughput: the real service over gRPC against raw LMDB, in one run.

    .venv/bin/python benchmarks/storage_ingest.py [--records 32 --streams 4 ...]

Starts `python -m storage_service` on a free port with its LMDB in a temporary directory,
streams synthetic records of realistic shape through it from several concurrent Ingest
streams, then writes the same bytes straight into a second LMDB environment in-process
(same chunk keys, same ~1 MiB values, one durable transaction per record, LMDB's default
sync). Then reads every record back as per-layer numpy arrays with
`StorageClient.get_activations` (StreamActivations requests): shared memory requested on
storage's local socket (what a same-host client does), shared memory requested over
gRPC, and the gRPC byte stream (clients on other hosts); and in-process straight from
LMDB into the same arrays, on as many threads. Prints the throughputs and their ratios
(targets: ingest >= 0.7 of raw; same-host reads >= 0.5 of raw), and for reference LMDB's
bare copy-out speed, which keeps nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc
import lmdb
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actlog.client import StorageClient  # noqa: E402
from actlog.launcher import free_port  # noqa: E402
from actlog_common.defaults import message_size_options  # noqa: E402
from actlog_common.dtypes import DTYPES, float32_to_bf16_bits  # noqa: E402
from actlog_common.hashing import prompt_hash  # noqa: E402
from actlog_common.ids import new_record_id  # noqa: E402
from actlog_common.v1 import storage_pb2, storage_pb2_grpc  # noqa: E402
from storage_service import records as rec  # noqa: E402

# How StorageClient reads, per measured path: shared memory requested on storage's
# local read socket, shared memory requested over gRPC, the gRPC byte stream.
READ_PATHS = {
    "shm": {"transport": "shm"},
    "shm-grpc": {"transport": "shm", "local_socket": False},
    "stream": {"transport": "stream"},
}
GRPC_OPTIONS = message_size_options(-1)


@dataclass(frozen=True)
class Shape:
    positions: int
    hidden: int
    layers: tuple[int, ...]
    dtype: str
    rows_per_chunk: int

    @property
    def record_bytes(self) -> int:
        return len(self.layers) * self.positions * self.hidden * DTYPES[self.dtype].itemsize


@dataclass(frozen=True)
class Payload:
    """One record's chunk data (reused for every record a stream sends) and its digest.

    `encoded` holds each chunk as a serialized IngestRequest without its record id.
    """

    chunks: list[tuple[int, int, int, bytes]]  # layer, row_start, row_count, data
    sha256: str
    encoded: list[bytes]


def make_payload(shape: Shape, seed: int) -> Payload:
    rng = np.random.default_rng(seed)
    chunks = []
    digest = hashlib.sha256()
    for layer in shape.layers:
        values = rng.standard_normal((shape.positions, shape.hidden), dtype=np.float32)
        if shape.dtype == "bfloat16":
            wire = float32_to_bf16_bits(values)
        else:
            wire = values.astype("<f2" if shape.dtype == "float16" else "<f4")
        for start in range(0, shape.positions, shape.rows_per_chunk):
            rows = wire[start : start + shape.rows_per_chunk]
            data = rows.tobytes()
            digest.update(data)
            chunks.append((layer, start, rows.shape[0], data))
    encoded = [
        storage_pb2.IngestRequest(
            chunk=storage_pb2.ActivationChunk(
                sequence=sequence, layer=layer, row_start=start, row_count=count, data=data
            )
        ).SerializeToString()
        for sequence, (layer, start, count, data) in enumerate(chunks)
    ]
    return Payload(chunks, digest.hexdigest(), encoded)


def header(shape: Shape, record_id: str, index: int) -> storage_pb2.RecordHeader:
    prompt = f"benchmark prompt {index}"
    num_tokens = shape.positions + 1
    return storage_pb2.RecordHeader(
        record_id=record_id,
        prompt_hash=prompt_hash(prompt),
        prompt=prompt,
        response="benchmark response",
        model="benchmark-model",
        token_ids=list(range(num_tokens)),
        token_strings=[f"t{i}" for i in range(num_tokens)],
        prompt_length=shape.positions // 2,
        layers=list(shape.layers),
        num_positions=shape.positions,
        hidden_size=shape.hidden,
        dtype=shape.dtype,
        num_layers=max(shape.layers),
        created_at_ms=int(time.time() * 1000),
    )


def ingest_messages(shape: Shape, payload: Payload, record_id: str, index: int) -> Iterator[bytes]:
    """One record's serialized IngestRequests: header, chunks, commit.

    A sender's job, done cheaply so the client steals little CPU from the service on a
    small machine: each chunk is the record id's IngestRequest followed by the
    pre-encoded chunk (concatenated protobuf messages merge), one copy per chunk.
    """
    yield storage_pb2.IngestRequest(header=header(shape, record_id, index)).SerializeToString()
    rid = storage_pb2.IngestRequest(
        chunk=storage_pb2.ActivationChunk(record_id=record_id)
    ).SerializeToString()
    for encoded in payload.encoded:
        yield rid + encoded
    commit = storage_pb2.IngestCommit(
        record_id=record_id, num_chunks=len(payload.chunks), sha256=payload.sha256
    )
    yield storage_pb2.IngestRequest(commit=commit).SerializeToString()


# -- the service ---------------------------------------------------------------------------


def start_service(lmdb_path: Path, map_size: int, compression: str, log: Path):
    port = free_port()
    args = [
        sys.executable, "-m", "storage_service", "--storage-port", str(port),
        "--activation-lmdb-path", str(lmdb_path), "--lmdb-map-size", str(map_size),
        "--storage-compression", compression, "--log-level", "WARNING",
        "--storage-metrics-port", "0",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=out)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                sys.exit(f"storage exited with {proc.returncode}:\n{log.read_text()}")
            try:
                request = health_pb2.HealthCheckRequest(service="actlog.v1.Storage")
                if (
                    health.Check(request, timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return proc, address
            except grpc.RpcError:
                time.sleep(0.05)
    proc.kill()
    sys.exit(f"storage not serving after 30 s:\n{log.read_text()}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` used so far (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_threads(count: int, target, setup=None) -> float:
    """Run target(i) on `count` threads at once; the seconds they took together.

    Each thread runs setup(i) first, untimed.
    """
    barrier = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            if setup:
                setup(i)
        except BaseException as error:
            errors.append(error)
        barrier.wait()
        try:
            target(i)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


def service_ingest(address: str, shape: Shape, payloads: list[Payload], ids: list[str]) -> float:
    streams = len(payloads)
    with grpc.insecure_channel(address, options=GRPC_OPTIONS) as channel:
        ingest = channel.stream_unary(  # sends the already serialized messages as they are
            "/actlog.v1.Storage/Ingest",
            request_serializer=None,
            response_deserializer=storage_pb2.IngestResponse.FromString,
        )

        def stream(s: int) -> None:
            for index in range(s, len(ids), streams):
                reply = ingest(ingest_messages(shape, payloads[s], ids[index], index))
                assert reply.status == storage_pb2.RECORD_STATUS_COMPLETE, reply

        return run_threads(streams, stream)


def service_read(
    address: str, transport: str, ids: list[str], readers: int, expected: int
) -> float:
    """Every record's activations as numpy arrays in hand, via StorageClient.get_activations.

    The records (headers) are fetched before the clock starts, as a reader iterating over
    `iter_records` has them and as the raw reads know the shape. Each reader thread reads
    one record untimed first, as a long-lived client would have: it sets up the thread's
    shared-memory arena, once per thread.
    """
    options = READ_PATHS[transport]
    with StorageClient(address, timeout=120, **options) as client:  # type: ignore[arg-type]
        records = [client.get_record(record_id) for record_id in ids]

        def warm_up(r: int) -> None:
            client.get_activations(records[r], as_float32=False)

        def read(r: int) -> None:
            for record in records[r::readers]:
                arrays = client.get_activations(record, as_float32=False)
                got = sum(array.nbytes for array in arrays.values())
                assert got == expected, (got, expected)

        return run_threads(readers, read, warm_up)


# -- raw LMDB ------------------------------------------------------------------------------


def raw_ingest(env: lmdb.Environment, shape: Shape, payloads: list[Payload], ids: list[str]):
    chunks_db = env.open_db(b"chunks")
    records_db = env.open_db(b"records")
    start = time.perf_counter()
    for index, record_id in enumerate(ids):
        rid = bytes.fromhex(record_id)
        payload = payloads[index % len(payloads)]
        with env.begin(write=True) as txn:
            txn.put(rid, header(shape, record_id, index).SerializeToString(), db=records_db)
            for layer, row_start, _, data in payload.chunks:
                txn.put(rec.chunk_key(rid, layer, row_start), data, db=chunks_db)
    return time.perf_counter() - start


def read_raw_record(
    env: lmdb.Environment, chunks_db: lmdb._Database, shape: Shape, record_id: str
) -> dict[int, np.ndarray]:
    """One record into per-layer numpy arrays straight from LMDB, in this process."""
    dtype = np.dtype(DTYPES[shape.dtype].numpy)
    rid = bytes.fromhex(record_id)
    arrays = {layer: np.empty((shape.positions, shape.hidden), dtype) for layer in shape.layers}
    rows = 0
    with env.begin(buffers=True) as txn:
        cursor = txn.cursor(db=chunks_db)
        found = cursor.set_range(rid)
        while found and cursor.key()[:16] == rid:
            layer, row_start = rec.split_chunk_key(bytes(cursor.key()))
            block = np.frombuffer(cursor.value(), dtype).reshape(-1, shape.hidden)
            arrays[layer][row_start : row_start + len(block)] = block
            rows += len(block)
            found = cursor.next()
    assert rows == shape.positions * len(shape.layers), (rows, record_id)
    return arrays


def raw_read(env: lmdb.Environment, shape: Shape, ids: list[str], readers: int) -> float:
    """Every record into per-layer numpy arrays straight from LMDB: the same arrays
    get_activations returns, read by as many threads as the service's readers, each
    after one untimed read as they have."""

    # Opened here, once: open_db takes LMDB's write lock, and from several threads at once
    # it deadlocks.
    chunks_db = env.open_db(b"chunks")

    def read(r: int) -> None:
        for record_id in ids[r::readers]:
            read_raw_record(env, chunks_db, shape, record_id)

    return run_threads(readers, read, lambda r: read_raw_record(env, chunks_db, shape, ids[r]))


def raw_copy(env: lmdb.Environment, ids: list[str], expected: int) -> float:
    """Each stored value copied out to a bytes object and dropped: LMDB's bare read speed
    (the destination stays in cache; nothing is kept)."""
    chunks_db = env.open_db(b"chunks")
    start = time.perf_counter()
    for record_id in ids:
        rid = bytes.fromhex(record_id)
        got = 0
        with env.begin(buffers=True) as txn:
            cursor = txn.cursor(db=chunks_db)
            found = cursor.set_range(rid)
            while found and cursor.key()[:16] == rid:
                got += len(bytes(cursor.value()))  # the copy out
                found = cursor.next()
        assert got == expected, (got, expected)
    return time.perf_counter() - start


def verify(
    address: str,
    env: lmdb.Environment,
    shape: Shape,
    payloads: list[Payload],
    service_ids: list[str],
    raw_ids: list[str],
) -> None:
    """The timed reads only counted bytes: check, untimed, that every path returns the
    values that were written (the last round's first record of each stream)."""
    for s, payload in enumerate(payloads[: len(service_ids)]):
        expected = b"".join(data for _, _, _, data in payload.chunks)
        got = {}
        for transport, options in READ_PATHS.items():
            with StorageClient(address, timeout=120, **options) as client:  # type: ignore[arg-type]
                arrays = client.get_activations(service_ids[s], as_float32=False)
                got[transport] = b"".join(arrays[layer].tobytes() for layer in shape.layers)
        raw = read_raw_record(env, env.open_db(b"chunks"), shape, raw_ids[s])
        got["raw"] = b"".join(raw[layer].tobytes() for layer in shape.layers)
        wrong = [path for path, data in got.items() if data != expected]
        assert not wrong, f"record of stream {s}: {wrong} returned other values than written"


@dataclass
class Tally:
    """Seconds and CPU seconds (service process, this process) of one kind of work."""

    seconds: list[float]
    service_cpu: float = 0.0
    client_cpu: float = 0.0

    def timed(self, service_pid: int | None, work) -> None:
        cpu = (cpu_seconds(service_pid) if service_pid else 0.0, time.process_time())
        self.seconds.append(work())
        if service_pid:
            self.service_cpu += cpu_seconds(service_pid) - cpu[0]
        self.client_cpu += time.process_time() - cpu[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=16, help="records per round, each way")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (medians are reported)")
    parser.add_argument("--positions", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=4, help="captured layers per record")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--chunk-mib", type=float, default=1.0, help="size of one chunk")
    parser.add_argument("--streams", type=int, default=4, help="concurrent Ingest streams")
    parser.add_argument("--readers", type=int, default=2, help="concurrent activation streams")
    parser.add_argument("--compression", choices=["none", "zstd", "lz4"], default="none")
    parser.add_argument("--dir", help="where the LMDB environments go (default: a temp dir)")
    args = parser.parse_args()

    row_bytes = args.hidden * DTYPES[args.dtype].itemsize
    rows_per_chunk = max(1, int(args.chunk_mib * (1 << 20)) // row_bytes)
    shape = Shape(args.positions, args.hidden, tuple(range(args.layers)), args.dtype,
                  rows_per_chunk)  # fmt: skip
    per_round = shape.record_bytes * args.records
    map_size = int(per_round * args.rounds * 1.25) + (64 << 20)
    print(
        f"{args.rounds} rounds of {args.records} records x {shape.record_bytes / 2**20:.1f} MiB "
        f"({args.positions} positions x {args.hidden} hidden x {args.dtype} x {args.layers} "
        f"layers), chunks of {rows_per_chunk * row_bytes / 2**20:.2f} MiB, {args.streams} "
        f"ingest streams, {args.readers} readers, compression {args.compression}"
    )
    payloads = [make_payload(shape, seed) for seed in range(args.streams)]
    names = ("service in", "raw in", "shm out", "shm-grpc out", "stream out", "raw out",
             "raw copy")  # fmt: skip
    tallies = {name: Tally([]) for name in names}

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="actlog-bench-") as tmp:
        proc, address = start_service(
            Path(tmp) / "service.lmdb", map_size, args.compression, Path(tmp) / "storage.log"
        )
        env = lmdb.open(str(Path(tmp) / "raw.lmdb"), map_size=map_size, max_dbs=8)
        try:
            for round_ in range(args.rounds):  # alternate, so all see the same machine load
                service_ids = [new_record_id() for _ in range(args.records)]
                raw_ids = [new_record_id() for _ in range(args.records)]
                t = tallies
                t["service in"].timed(
                    proc.pid, partial(service_ingest, address, shape, payloads, service_ids)
                )
                t["raw in"].timed(None, partial(raw_ingest, env, shape, payloads, raw_ids))
                paths = list(READ_PATHS)
                for transport in paths[round_ % 3 :] + paths[: round_ % 3]:  # rotated
                    t[f"{transport} out"].timed(
                        proc.pid,
                        partial(
                            service_read,
                            address,
                            transport,
                            service_ids,
                            args.readers,
                            shape.record_bytes,
                        ),  # fmt: skip
                    )
                t["raw out"].timed(None, partial(raw_read, env, shape, raw_ids, args.readers))
                t["raw copy"].timed(None, partial(raw_copy, env, raw_ids, shape.record_bytes))
            verify(address, env, shape, payloads, service_ids, raw_ids)
            with grpc.insecure_channel(address) as channel:
                stats = storage_pb2_grpc.StorageStub(channel).Stats(storage_pb2.StatsRequest())
        finally:
            env.close()
            proc.terminate()
            proc.wait(30)

    def mbps(name: str) -> float:
        return per_round / statistics.median(tallies[name].seconds) / 1e6

    def rounds(name: str) -> str:
        return " ".join(f"{per_round / t / 1e6:.0f}" for t in tallies[name].seconds)

    lines = (
        ("ingest", "service in", "raw in", ">= 0.7"),
        ("read shm", "shm out", "raw out", ">= 0.5"),
        ("shm-grpc", "shm-grpc out", "raw out", "none: shm requested over gRPC"),
        ("stream", "stream out", "raw out", "none: clients on other hosts"),
        ("read shm", "shm out", "raw copy", "none: bare LMDB copy-out, 1 thread, nothing kept"),
    )
    for label, service_name, raw_name, target in lines:
        service, raw = mbps(service_name), mbps(raw_name)
        print(
            f"{label:11s}  service {service:6.0f} MB/s   raw LMDB {raw:6.0f} MB/s   "
            f"ratio {service / raw:.2f} (target {target})   "
            f"[rounds: service {rounds(service_name)}; raw {rounds(raw_name)}]"
        )
    print(
        f"service stored {stats.stored_bytes / 1e6:.0f} MB for {stats.activation_bytes / 1e6:.0f} "
        f"MB of activations ({stats.complete_records} complete records)"
    )
    gb = per_round * args.rounds / 1e9
    t = tallies
    print(
        f"CPU seconds per GB: ingest service {t['service in'].service_cpu / gb:.2f} + client "
        f"{t['service in'].client_cpu / gb:.2f}, raw {t['raw in'].client_cpu / gb:.2f}; read "
        f"shm service {t['shm out'].service_cpu / gb:.2f} + client "
        f"{t['shm out'].client_cpu / gb:.2f}, stream service {t['stream out'].service_cpu / gb:.2f}"
        f" + client {t['stream out'].client_cpu / gb:.2f}, raw {t['raw out'].client_cpu / gb:.2f}"
    )
    print(f"(reads: {args.readers} threads each, service and raw; values checked equal to "
          "those written on every path)")  # fmt: skip
    print(f"(medians of {args.rounds} rounds; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end; MB = 10^6 bytes of activations)")  # fmt: skip


if __name__ == "__main__":
    main()
