"""Client side of storage's local read socket (storage_service/local_socket.py).

Shared-memory reads of a storage service on this host, as one small request and reply
on a Unix socket instead of a gRPC call. One connection per thread, opened on first
use; when the socket is absent or refuses a connection, `available` turns false and
the caller uses gRPC. A connection that breaks mid-read (storage restarted) is opened
again by the next read.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import weakref
from pathlib import Path

import grpc

from actlog.errors import ActlogError, UnavailableError, from_status
from actlog.v1 import storage_pb2
from actlog.wire import ChunkView

LENGTH = struct.Struct("<I")


class LocalReads:
    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.available = True
        self._local = threading.local()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()

    def read(self, request: storage_pb2.StreamActivationsRequest) -> list[ChunkView]:
        """The chunks of one shared-memory read; raises the typed error storage sent.

        Raises UnavailableError (and sets `available` false) when the socket cannot be
        used: nothing was read, the caller may go over gRPC.
        """
        body = request.SerializeToString()
        try:
            conn = self._connection()
        except OSError as error:  # no socket (yet), or nobody serving it: use gRPC
            self.available = False
            raise UnavailableError(f"local read socket {self.path}: {error}") from None
        try:
            conn.sendall(LENGTH.pack(len(body)) + body)
            head = _recv_exactly(conn, LENGTH.size)
            reply = json.loads(_recv_exactly(conn, LENGTH.unpack(head)[0]))
        except (OSError, ValueError) as error:
            self._drop_connection()  # the next read connects again
            if isinstance(error, TimeoutError):
                raise ActlogError(
                    f"local read timed out after {self.timeout} s",
                    code=grpc.StatusCode.DEADLINE_EXCEEDED,
                ) from None
            raise UnavailableError(f"local read socket {self.path}: {error}") from None
        if "code" in reply:
            raise from_status(reply["code"], reply["message"], reply.get("error_type") or None)
        return [
            ChunkView(
                request.record_id,
                sequence,
                layer,
                row_start,
                row_count,
                memoryview(b""),
                shm_offset,
            )  # fmt: skip
            for sequence, (layer, row_start, row_count, shm_offset) in enumerate(reply["chunks"])
        ]

    def close(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for conn in sockets:
            conn.close()

    def _connection(self) -> socket.socket:
        conn: socket.socket | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(self.timeout)
            try:
                conn.connect(str(self.path))
            except OSError:
                conn.close()
                raise
            self._local.conn = conn
            with self._lock:
                self._sockets.add(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        part = conn.recv(size - len(data))
        if not part:
            raise ConnectionResetError("the storage service closed the local read socket")
        data += part
    return bytes(data)
