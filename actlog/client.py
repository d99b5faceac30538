"""Python client of the storage service: find records, read their activations.

    from actlog.client import StorageClient

    with StorageClient("127.0.0.1:50052") as client:
        records = client.find_by_prompt("What is the capital of France?")
        acts = client.get_activations(records[0], layers=[-1])  # a Record or a record id
        acts[30].shape  # (num_positions, hidden_size), float32
        client.set_labels(records[0].record_id, {"hallucinated": "false"})
        for record in client.iter_records(model="m", labels={"hallucinated": "true"}):
            ...

Failed calls raise the typed errors of `actlog.errors`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
import numpy as np

from actlog.errors import (
    ActlogError,
    FailedPreconditionError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
    WaitTimeoutError,
    from_rpc_error,
)
from actlog.local_reads import LocalReads, NotConnected
from actlog.shm import MAX_ARENA_BYTES, Arena, ArenaError, ArenaPool, is_local_address
from actlog_common.defaults import BULK_STREAM_OPTIONS, STORAGE_ADDR, message_size_options
from actlog_common.dtypes import DTYPES
from actlog_common.grpc_security import GrpcSecurity
from actlog_common.hashing import prompt_hash as hash_prompt
from actlog_common.layers import LayerError, resolve_stored_layers
from actlog_common.local_read import local_socket_path, shm_supported
from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from actlog_common.wire import ChunkView, decode_chunk

logger = logging.getLogger(__name__)

MIN_SHM_ARENA_BYTES = 1 << 20
CHANNEL_OPTIONS = [*message_size_options(-1), *BULK_STREAM_OPTIONS]


@dataclass(frozen=True)
class Record:
    """One stored completion choice: everything but its activations (see RecordHeader)."""

    record_id: str
    prompt_hash: str
    prompt: str
    response: str
    model: str
    token_ids: tuple[int, ...]
    token_strings: tuple[str, ...]
    prompt_length: int
    sampling_params: dict[str, Any]
    layers: tuple[int, ...]
    num_positions: int
    hidden_size: int
    dtype: str
    num_layers: int
    finish_reason: str
    created_at_ms: int
    labels: dict[str, str]
    status: str  # "COMPLETE", "PARTIAL" or "UNSPECIFIED"
    activation_bytes: int
    choice_index: int
    request_id: str
    compression: str = "none"  # how storage keeps the activations; reads are uncompressed
    stored_bytes: int = 0  # activation bytes on disk (after compression), once complete

    @property
    def is_complete(self) -> bool:
        return self.status == "COMPLETE"

    @classmethod
    def from_pb(cls, header: storage_pb2.RecordHeader) -> Record:
        return cls(
            record_id=header.record_id,
            prompt_hash=header.prompt_hash,
            prompt=header.prompt,
            response=header.response,
            model=header.model,
            token_ids=tuple(header.token_ids),
            token_strings=tuple(header.token_strings),
            prompt_length=header.prompt_length,
            sampling_params=_parse_json(header.sampling_params_json),
            layers=tuple(header.layers),
            num_positions=header.num_positions,
            hidden_size=header.hidden_size,
            dtype=header.dtype,
            num_layers=header.num_layers,
            finish_reason=header.finish_reason,
            created_at_ms=header.created_at_ms,
            labels=dict(header.labels),
            status=storage_pb2.RecordStatus.Name(header.status).removeprefix("RECORD_STATUS_"),
            activation_bytes=header.activation_bytes,
            choice_index=header.choice_index,
            request_id=header.request_id,
            compression=header.compression or "none",
            stored_bytes=header.stored_bytes,
        )


def _parse_json(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"_unparsed": text}
    return value if isinstance(value, dict) else {"_value": value}


@dataclass(frozen=True)
class ModelStats:
    records: int
    activation_bytes: int


@dataclass(frozen=True)
class StorageStats:
    records: int
    complete_records: int
    activation_bytes: int
    prompt_hashes: int
    models: dict[str, ModelStats] = field(default_factory=dict)
    lmdb_used_bytes: int = 0
    lmdb_map_size: int = 0
    stored_bytes: int = 0  # activation bytes on disk, after compression


@dataclass(frozen=True)
class DeletedRecord:
    record_id: str
    activation_bytes: int
    stored_bytes: int


class StorageClient:
    """Blocking client of the storage service; usable as a context manager.

    `timeout` (seconds) bounds every call, a whole activation stream included (a read
    larger than the shared-memory arena makes one call per piece).

    `transport` picks how activations travel: "stream" in gRPC messages; "shm" through
    a shared-memory segment the client owns, which the storage service fills (same host
    only, several times faster); "auto" (default) uses shared memory when the address
    is on this host and switches to the stream for good if the service cannot open the
    segment (e.g. it runs in a container). Arenas hold at most `shm_arena_bytes` each
    (larger reads are split) and are reused from read to read. With `local_socket`,
    shared-memory reads are requested on storage's local read socket when it serves one
    (same requests, same answers, without gRPC's per-call cost), else over gRPC.
    """

    def __init__(
        self,
        address: str = STORAGE_ADDR,
        timeout: float = 30.0,
        transport: Literal["auto", "stream", "shm"] = "auto",
        shm_arena_bytes: int = MAX_ARENA_BYTES,
        local_socket: bool = True,
        security: GrpcSecurity | None = None,
    ) -> None:
        if transport not in ("auto", "stream", "shm"):
            raise ValueError(f"transport must be auto, stream or shm, not {transport!r}")
        if transport == "shm" and not shm_supported():
            raise ValueError("transport shm needs a writable /dev/shm on this host")
        if shm_arena_bytes < MIN_SHM_ARENA_BYTES:
            raise ValueError(f"shm_arena_bytes must be at least {MIN_SHM_ARENA_BYTES}")
        self.address = address
        self.timeout = timeout
        self.transport = transport
        self._shm_ok = transport == "shm" or (
            transport == "auto" and is_local_address(address) and shm_supported()
        )
        self._arenas = ArenaPool(max_bytes=shm_arena_bytes)
        port = _port_of(address)
        self._local_reads = (
            LocalReads(local_socket_path(port)) if self._shm_ok and port and local_socket else None
        )
        # TLS and the shared token: GRPC_TLS_CA, GRPC_TLS_CERT, GRPC_TLS_KEY, GRPC_AUTH_TOKEN.
        self._security = security or GrpcSecurity.from_env()
        self._connection = _Connection.open(address, self._security)
        # Connections a forked child inherited: never used or closed there, since their
        # sockets and gRPC's polling state belong to the parent.
        self._inherited: list[_Connection] = []
        self._connection_lock = threading.Lock()

    @property
    def activation_transport(self) -> Literal["stream", "shm"]:
        """How the next get_activations call reads: "shm" or "stream"."""
        return "shm" if self._shm_enabled() else "stream"

    @property
    def local_socket_reads(self) -> int:
        """How many reads storage's local read socket answered (diagnostics)."""
        return self._local_reads.reads if self._local_reads is not None else 0

    @property
    def _live(self) -> _Connection:
        """This process's own gRPC connection, opened afresh in a forked child."""
        connection = self._connection
        if connection.pid == os.getpid():
            return connection
        with self._connection_lock:
            if self._connection.pid != os.getpid():
                self._inherited.append(self._connection)
                self._connection = _Connection.open(self.address, self._security)
            return self._connection

    @property
    def _stub(self) -> storage_pb2_grpc.StorageStub:
        return self._live.stub

    def close(self) -> None:
        if self._connection.pid == os.getpid():
            self._connection.channel.close()
        self._arenas.close()
        if self._local_reads is not None:
            self._local_reads.close()

    def __enter__(self) -> StorageClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- records --------------------------------------------------------------------

    def find_by_prompt_hash(self, prompt_hash: str, model: str | None = None) -> list[Record]:
        """Every record (complete or partial) of this prompt hash, newest first."""
        request = storage_pb2.FindByPromptHashRequest(prompt_hash=prompt_hash, model=model or "")
        response = self._call(self._stub.FindByPromptHash, request)
        return [Record.from_pb(header) for header in response.records]

    def find_by_prompt(self, prompt: str, model: str | None = None) -> list[Record]:
        """Records of this exact prompt text (hashed as SHA-256 of its UTF-8), newest first."""
        return self.find_by_prompt_hash(hash_prompt(prompt), model=model)

    def get_record(self, record_id: str) -> Record:
        request = storage_pb2.GetRecordRequest(record_id=record_id)
        return Record.from_pb(self._call(self._stub.GetRecord, request))

    def wait_for_record(
        self,
        prompt_hash: str,
        count: int = 1,
        timeout: float = 30.0,
        model: str | None = None,
        poll_interval: float = 0.1,
    ) -> list[Record]:
        """Poll until at least `count` COMPLETE records of `prompt_hash` exist.

        Storage is asynchronous (captures reach it after the response); this returns the
        complete records, newest first, or raises WaitTimeoutError after `timeout` s.
        """
        deadline = time.monotonic() + timeout
        while True:
            complete = [r for r in self.find_by_prompt_hash(prompt_hash, model) if r.is_complete]
            if len(complete) >= count:
                return complete
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(
                    f"{len(complete)} complete record(s) of prompt hash {prompt_hash} after "
                    f"{timeout} s, wanted {count}"
                )
            time.sleep(poll_interval)

    def stats(self) -> StorageStats:
        response = self._call(self._stub.Stats, storage_pb2.StatsRequest())
        return StorageStats(
            records=response.records,
            complete_records=response.complete_records,
            activation_bytes=response.activation_bytes,
            prompt_hashes=response.prompt_hashes,
            models={
                m.model: ModelStats(records=m.records, activation_bytes=m.activation_bytes)
                for m in response.models
            },
            lmdb_used_bytes=response.lmdb_used_bytes,
            lmdb_map_size=response.lmdb_map_size,
            stored_bytes=response.stored_bytes,
        )

    def list_records(
        self,
        model: str | None = None,
        labels: Mapping[str, str] | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[Record], str]:
        """One page of the records matching every filter given, newest first.

        `labels`: every key must be present with exactly this value. Times are Unix ms
        on `created_at_ms`, `since_ms` included, `until_ms` excluded. Returns the page
        and the token of the next one ("" when no records are left). A page may be
        shorter than `page_size`, even empty, with a token: keep paging, or use
        `iter_records`.
        """
        request = storage_pb2.ListRecordsRequest(
            model=model or "",
            labels=dict(labels or {}),
            since_ms=since_ms or 0,
            until_ms=until_ms or 0,
            page_size=page_size,
            page_token=page_token,
        )
        response = self._call(self._stub.ListRecords, request)
        return [Record.from_pb(h) for h in response.records], response.next_page_token

    def iter_records(
        self,
        model: str | None = None,
        labels: Mapping[str, str] | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        page_size: int = 100,
    ) -> Iterator[Record]:
        """Every record matching the filters (as `list_records`), newest first, page by page."""
        token = ""
        while True:
            page, token = self.list_records(model, labels, since_ms, until_ms, page_size, token)
            yield from page
            if not token:
                return

    def set_labels(
        self, record_id: str, labels: Mapping[str, str], remove: Iterable[str] = ()
    ) -> Record:
        """Add or overwrite `labels` and drop the keys in `remove`; the updated record.

        Labels are free-form strings (e.g. ``{"hallucinated": "true", "judge": "gpt"}``);
        changing them never rewrites the record's activations.
        """
        request = storage_pb2.SetLabelsRequest(
            record_id=record_id, labels=dict(labels), remove=list(remove)
        )
        return Record.from_pb(self._call(self._stub.SetLabels, request))

    def delete_record(self, record_id: str) -> DeletedRecord:
        """Remove a record, its activations and labels; NotFoundError when unknown."""
        request = storage_pb2.DeleteRecordRequest(record_id=record_id)
        response = self._call(self._stub.DeleteRecord, request)
        return DeletedRecord(
            record_id=response.record_id,
            activation_bytes=response.activation_bytes,
            stored_bytes=response.stored_bytes,
        )

    # -- activations ----------------------------------------------------------------

    def get_activations(
        self,
        record: str | Record,
        layers: int | Sequence[int] | None = None,
        row_start: int = 0,
        row_end: int | None = None,
        as_float32: bool = True,
    ) -> dict[int, np.ndarray]:
        """Activations of one complete record: {layer: array of (rows, hidden_size)}.

        `layers`: stored layer numbers (0 = embeddings ... num_layers = final-normed
        output); negative counts from the end (-1 = num_layers); None = every stored
        layer. Keys of the result are the non-negative layer numbers. Rows are
        [row_start, row_end), row_end None (or 0) = to the end.

        With `as_float32` the values are float32 (bfloat16 and float16 convert exactly).
        Without it they keep the stored dtype; bfloat16, which numpy lacks, comes back as
        its uint16 bit patterns (convert with `bf16_bits_to_float32`).

        `record` is a record id or a `Record` already in hand (from `find_by_prompt`,
        `iter_records`...), which saves a round trip: the shape fields used here never
        change once a record exists.

        The arrays are the caller's own: nothing else writes to their memory. Read over
        shared memory without conversion, they live in a shared-memory arena that returns
        to the client's pool when they (and every view of them) are gone.
        """
        if not isinstance(record, Record):
            record = self.get_record(record)
        requested = [layers] if isinstance(layers, int) else list(layers or [])
        selection = _Selection(
            record, requested, resolve_record_layers(record, requested), row_start, row_end or 0
        )
        if self._shm_enabled():
            try:
                try:
                    return self._read_shm(selection, as_float32)
                except _LocalSocketLost as lost:  # its arena was discarded: read again
                    logger.info("%s; reading again", lost)
                    return self._read_shm(selection, as_float32)
            except FailedPreconditionError as error:
                if self.transport == "shm" or error.error_type != "SharedMemoryUnavailable":
                    raise
                logger.info("reading activations over the gRPC stream: %s", error.details)
                self._shm_ok = False
            except ResourceExhaustedError as error:
                if self.transport == "shm" or error.error_type != "SharedMemoryBusy":
                    raise
                logger.warning("%s; this read goes over the gRPC stream", error.details)
            except _NoArena as error:
                if self.transport == "shm":
                    raise
                logger.warning("%s; this read goes over the gRPC stream", error)
        return self._read_stream(selection, as_float32)

    def _shm_enabled(self) -> bool:
        return self._shm_ok and self.transport != "stream"

    def _read_stream(self, sel: _Selection, as_float32: bool) -> dict[int, np.ndarray]:
        arrays = sel.empty_arrays(as_float32)
        filled = dict.fromkeys(sel.layers, 0)
        raw_dtype = np.dtype(DTYPES[sel.record.dtype].numpy)
        for chunk in self._stream(self._live.stream_activations, sel.request()):
            _put_rows(sel, chunk, np.frombuffer(chunk.data, dtype=raw_dtype), arrays)
            filled[chunk.layer] += chunk.row_count
        sel.check_rows(filled)
        return arrays

    def _read_shm(self, sel: _Selection, as_float32: bool) -> dict[int, np.ndarray]:
        """Read through shared-memory arenas, in pieces of at most the arena cap.

        Without a conversion to make, and in one piece, the arrays are the arena's own
        memory (the one copy is the storage service's; the arena goes back to the pool
        once the arrays are gone); otherwise they are converted or copied out of it.
        """
        converts = as_float32 and sel.record.dtype != "float32"
        pieces = list(sel.split(self._arenas.max_bytes))
        if not converts and len(pieces) == 1 and sel.nbytes and self._arenas.can_lease(sel.nbytes):
            return self._read_shm_in_place(sel)
        arrays = sel.empty_arrays(as_float32)
        filled = dict.fromkeys(sel.layers, 0)
        for piece in pieces:
            arena = self._acquire_arena(piece.nbytes)
            request = piece.request(shm_name=arena.name, shm_size=arena.size)
            try:
                for chunk in self._shm_chunks(request):
                    _copy_out(sel, chunk, arena, arrays)
                    filled[chunk.layer] += chunk.row_count
            except BaseException:
                # A call cut short may still be writing into the arena: never reuse it.
                self._arenas.discard(arena)
                raise
            self._arenas.release(arena)
        sel.check_rows(filled)
        return arrays

    def _read_shm_in_place(self, sel: _Selection) -> dict[int, np.ndarray]:
        arena = self._acquire_arena(sel.nbytes)
        request = sel.request(shm_name=arena.name, shm_size=arena.size)
        layer_bytes = sel.rows * sel.row_bytes
        offsets: dict[int, int] = {}
        try:
            for chunk in self._shm_chunks(request):
                if (
                    chunk.data
                    or chunk.layer not in sel.layers
                    or (chunk.row_start, chunk.row_count) != (sel.row_start, sel.rows)
                    or chunk.shm_offset + layer_bytes > sel.nbytes
                ):
                    raise ActlogError(f"record {sel.record.record_id}: malformed chunk {chunk}")
                offsets[chunk.layer] = chunk.shm_offset
            if len(offsets) != len(sel.layers):
                raise ActlogError(
                    f"record {sel.record.record_id}: the stream returned layers "
                    f"{sorted(offsets)}, expected {sel.layers}"
                )
        except BaseException:
            self._arenas.discard(arena)
            raise
        lease = self._arenas.lease(arena, sel.nbytes)
        raw_dtype, hidden = np.dtype(DTYPES[sel.record.dtype].numpy), sel.record.hidden_size
        return {
            layer: np.frombuffer(
                lease.buffer, raw_dtype, sel.rows * hidden, offsets[layer]
            ).reshape(sel.rows, hidden)
            for layer in sel.layers
        }

    def _shm_chunks(self, request: storage_pb2.StreamActivationsRequest) -> Iterable[ChunkView]:
        """A shared-memory read's chunks: over the local read socket when there is one."""
        local = self._local_reads
        if local is not None and local.available:
            try:
                return local.read(request, self.timeout)
            except NotConnected:
                pass  # nothing was sent: this read goes over gRPC
            except UnavailableError as error:
                raise _LocalSocketLost(error.details) from None
        return self._stream(self._live.stream_activations, request)

    def _acquire_arena(self, nbytes: int) -> Arena:
        try:
            return self._arenas.acquire(nbytes)
        except ArenaError as error:  # e.g. /dev/shm is full
            raise _NoArena(str(error)) from None

    # -- plumbing -------------------------------------------------------------------

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def _stream(self, method: Any, request: Any) -> Iterator[Any]:
        try:
            yield from method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None


@dataclass(frozen=True)
class _Connection:
    """A gRPC channel to storage and its stubs, owned by the process that opened it."""

    channel: grpc.Channel
    stub: storage_pb2_grpc.StorageStub
    stream_activations: Any
    pid: int

    @classmethod
    def open(cls, address: str, security: GrpcSecurity) -> _Connection:
        # A subchannel pool of its own: gRPC otherwise shares connections between channels
        # to the same address, so a forked child's new channel would reuse the TCP
        # connection it inherited ("Wrong file descriptor generation").
        options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
        channel = security.channel(address, options=options)
        # Chunks as views into the received messages: one copy of the rows fewer.
        stream = channel.unary_stream(
            f"/{storage_pb2.DESCRIPTOR.services_by_name['Storage'].full_name}/StreamActivations",
            request_serializer=storage_pb2.StreamActivationsRequest.SerializeToString,
            response_deserializer=decode_chunk,
        )
        return cls(channel, storage_pb2_grpc.StorageStub(channel), stream, os.getpid())


class _LocalSocketLost(UnavailableError):
    """The local read socket broke mid-read (storage restarting?): the read is redone."""


def _port_of(address: str) -> int | None:
    host, sep, port = address.rpartition(":")
    return int(port) if sep and host and port.isdigit() and not address.startswith("unix") else None


class _NoArena(ActlogError):
    """This process could not set up a shared-memory arena."""


@dataclass(frozen=True)
class _Selection:
    """What one get_activations call reads: resolved layers, rows [row_start, row_end)."""

    record: Record
    requested: list[int]
    layers: list[int]
    row_start: int
    row_end: int  # 0 = to the end

    @property
    def rows(self) -> int:
        return max((self.row_end or self.record.num_positions) - self.row_start, 0)

    @property
    def row_bytes(self) -> int:
        return self.record.hidden_size * DTYPES[self.record.dtype].itemsize

    @property
    def nbytes(self) -> int:
        return len(self.layers) * self.rows * self.row_bytes

    def request(self, **shm: Any) -> storage_pb2.StreamActivationsRequest:
        return storage_pb2.StreamActivationsRequest(
            record_id=self.record.record_id,
            layers=self.requested,
            row_start=self.row_start,
            row_end=self.row_end,
            **shm,
        )

    def split(self, max_bytes: int) -> Iterator[_Selection]:
        """This selection in pieces of at most `max_bytes`: whole, by layer, then by rows."""
        if self.nbytes <= max_bytes:
            yield self
            return
        step = max(1, max_bytes // max(self.row_bytes, 1))
        end = self.row_end or self.record.num_positions
        for layer in self.layers:
            for start in range(self.row_start, end, step):
                yield _Selection(self.record, [layer], [layer], start, min(start + step, end))

    def empty_arrays(self, as_float32: bool) -> dict[int, np.ndarray]:
        """Arrays to read the selection into: float32, or the stored (raw) dtype."""
        dtype = np.dtype(np.float32) if as_float32 else np.dtype(DTYPES[self.record.dtype].numpy)
        shape = (self.rows, self.record.hidden_size)
        return {layer: np.empty(shape, dtype) for layer in self.layers}

    def check_rows(self, filled: Mapping[int, int]) -> None:
        short = {layer: rows for layer, rows in filled.items() if rows != self.rows}
        if short:
            raise ActlogError(
                f"record {self.record.record_id}: the stream returned {short} rows per layer, "
                f"expected {self.rows}"
            )


def _copy_out(
    sel: _Selection, chunk: ChunkView, arena: Arena, arrays: dict[int, np.ndarray]
) -> None:
    """Copy (converting to the arrays' dtype) one chunk's rows from the arena."""
    if chunk.data or chunk.shm_offset + chunk.row_count * sel.row_bytes > arena.size:
        raise ActlogError(f"record {sel.record.record_id}: malformed chunk {chunk}")
    count = chunk.row_count * sel.record.hidden_size
    raw_dtype = np.dtype(DTYPES[sel.record.dtype].numpy)
    _put_rows(sel, chunk, np.frombuffer(arena.buffer, raw_dtype, count, chunk.shm_offset), arrays)


def _put_rows(
    sel: _Selection, chunk: ChunkView, block: np.ndarray, arrays: dict[int, np.ndarray]
) -> None:
    """Put one chunk's rows (`block`: its raw values) in place, converted to the arrays' dtype."""
    hidden, offset = sel.record.hidden_size, chunk.row_start - sel.row_start
    if (
        chunk.layer not in arrays
        or offset < 0
        or offset + chunk.row_count > sel.rows
        or block.size != chunk.row_count * hidden
    ):
        raise ActlogError(f"record {sel.record.record_id}: malformed chunk {chunk}")
    target = arrays[chunk.layer][offset : offset + chunk.row_count]
    if target.dtype == np.float32 and sel.record.dtype == "bfloat16":
        bits = target.view(np.uint32)  # float32 = the bfloat16 bits followed by 16 zeros
        bits[...] = block.reshape(target.shape)
        bits <<= 16
    else:
        target[...] = block.reshape(target.shape)


def resolve_record_layers(record: Record, requested: list[int]) -> list[int]:
    """The stored layers a read of `record` gets (`actlog_common.layers`); the error the
    server would give, without asking it."""
    try:
        return resolve_stored_layers(requested, record.layers, record.num_layers, record.record_id)
    except LayerError as error:
        raise InvalidArgumentError(str(error)) from None
