"""How activations travel from storage: the gRPC stream, or a shared-memory arena the
storage service fills (requested on its local read socket when it has one, else over
gRPC), with the fallbacks between them."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Literal

import numpy as np

from actlog.connection import ProcessConnection, stream
from actlog.errors import (
    ActlogError,
    FailedPreconditionError,
    ResourceExhaustedError,
    UnavailableError,
)
from actlog.reads.plan import ReadPlan, copy_out, put_rows
from actlog.reads.same_host import NotConnected, SameHostReads
from actlog.reads.shm import Arena, ArenaError, ArenaPool, is_local_address
from actlog_common.dtypes import DTYPES
from actlog_common.same_host import local_socket_path, shm_supported
from actlog_common.v1 import storage_pb2
from actlog_common.wire import ChunkView

logger = logging.getLogger(__name__)

MIN_SHM_ARENA_BYTES = 1 << 20
Transport = Literal["auto", "stream", "shm"]


class _LocalSocketLost(UnavailableError):
    """The local read socket broke mid-read (storage restarting?): the read is redone."""


class _NoArena(ActlogError):
    """This process could not set up a shared-memory arena."""


def _port_of(address: str) -> int | None:
    host, sep, port = address.rpartition(":")
    return int(port) if sep and host and port.isdigit() and not address.startswith("unix") else None


class ActivationReads:
    """Reads selections over the transport `transport` names (see StorageClient)."""

    def __init__(
        self,
        connection: ProcessConnection,
        timeout: float,
        transport: Transport,
        shm_arena_bytes: int,
        local_socket: bool,
    ) -> None:
        if transport not in ("auto", "stream", "shm"):
            raise ValueError(f"transport must be auto, stream or shm, not {transport!r}")
        if transport == "shm" and not shm_supported():
            raise ValueError("transport shm needs a writable /dev/shm on this host")
        if shm_arena_bytes < MIN_SHM_ARENA_BYTES:
            raise ValueError(f"shm_arena_bytes must be at least {MIN_SHM_ARENA_BYTES}")
        address = connection.address
        self.transport = transport
        self.timeout = timeout
        self._connection = connection
        self._shm_ok = transport == "shm" or (
            transport == "auto" and is_local_address(address) and shm_supported()
        )
        self._arenas = ArenaPool(max_bytes=shm_arena_bytes)
        port = _port_of(address)
        self._local_reads = (
            SameHostReads(local_socket_path(port))
            if self._shm_ok and port and local_socket
            else None
        )

    @property
    def current(self) -> Literal["stream", "shm"]:
        return "shm" if self._shm_enabled() else "stream"

    @property
    def local_socket_reads(self) -> int:
        return self._local_reads.reads if self._local_reads is not None else 0

    def close(self) -> None:
        self._arenas.close()
        if self._local_reads is not None:
            self._local_reads.close()

    def read(self, selection: ReadPlan, as_float32: bool) -> dict[int, np.ndarray]:
        """The selection's arrays, over shared memory when it works here, else the stream."""
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

    def _read_stream(self, sel: ReadPlan, as_float32: bool) -> dict[int, np.ndarray]:
        arrays = sel.empty_arrays(as_float32)
        filled = dict.fromkeys(sel.layers, 0)
        raw_dtype = np.dtype(DTYPES[sel.record.dtype].numpy)
        for chunk in stream(self._connection.live.stream_activations, sel.request(), self.timeout):
            put_rows(sel, chunk, np.frombuffer(chunk.data, dtype=raw_dtype), arrays)
            filled[chunk.layer] += chunk.row_count
        sel.check_rows(filled)
        return arrays

    def _read_shm(self, sel: ReadPlan, as_float32: bool) -> dict[int, np.ndarray]:
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
                    copy_out(sel, chunk, arena, arrays)
                    filled[chunk.layer] += chunk.row_count
            except BaseException:
                # A call cut short may still be writing into the arena: never reuse it.
                self._arenas.discard(arena)
                raise
            self._arenas.release(arena)
        sel.check_rows(filled)
        return arrays

    def _read_shm_in_place(self, sel: ReadPlan) -> dict[int, np.ndarray]:
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
        return stream(self._connection.live.stream_activations, request, self.timeout)

    def _acquire_arena(self, nbytes: int) -> Arena:
        try:
            return self._arenas.acquire(nbytes)
        except ArenaError as error:  # e.g. /dev/shm is full
            raise _NoArena(str(error)) from None
