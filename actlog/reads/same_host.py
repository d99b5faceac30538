"""Client side of storage's local read socket (the protocol: actlog_common/same_host.py).

Shared-memory reads of a storage service on this host, as one small request and reply
on a Unix socket instead of a gRPC call. One connection per thread (and process: a
forked child opens its own), opened on first use. A connection carries one exchange
at a time and is never used again after an exchange that did not complete (a timeout,
Ctrl-C, a broken pipe), so a late reply can never answer a later request. When no
connection can be made, `read` says so before sending anything and the socket is not
tried again for `RETRY_AFTER_S`: the caller goes over gRPC meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import weakref
from pathlib import Path

from google.protobuf.message import DecodeError

from actlog.errors import DeadlineExceededError, UnavailableError, from_status
from actlog_common.same_host import recv_message, send_message
from actlog_common.v1 import storage_pb2
from actlog_common.wire import ChunkView

RETRY_AFTER_S = 5.0


class NotConnected(UnavailableError):
    """No connection to the local socket: nothing was sent."""


class SameHostReads:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.reads = 0  # reads answered through the socket
        self._retry_at = 0.0
        self._local = threading.local()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._retry_at

    def read(
        self, request: storage_pb2.StreamActivationsRequest, timeout: float
    ) -> list[ChunkView]:
        """The chunks of one shared-memory read; raises the typed error storage sent.

        NotConnected: nothing was sent (go over gRPC). UnavailableError: the exchange
        broke after sending (storage restarted?): the segment may have been written to.
        """
        try:
            conn = self._connection(timeout)
        except OSError as error:
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            raise NotConnected(f"local read socket {self.path}: {error}") from None
        try:
            conn.settimeout(timeout)
            send_message(conn, request.SerializeToString())
            body = recv_message(conn)
            if body is None:
                raise ConnectionResetError("the storage service closed the local read socket")
            reply = storage_pb2.LocalReadReply.FromString(body)
            views = [
                ChunkView(
                    request.record_id,
                    sequence,
                    chunk.layer,
                    chunk.row_start,
                    chunk.row_count,
                    memoryview(b""),
                    chunk.shm_offset,
                )
                for sequence, chunk in enumerate(reply.chunks)
            ]
        except TimeoutError:
            self._drop_connection()
            raise DeadlineExceededError(
                f"local read of record {request.record_id} took more than {timeout} s"
            ) from None
        except (OSError, DecodeError) as error:
            self._drop_connection()
            raise UnavailableError(f"local read socket {self.path}: {error!r}") from None
        except BaseException:  # Ctrl-C: the reply may still come, on this connection
            self._drop_connection()
            raise
        if reply.HasField("failure"):
            failure = reply.failure
            raise from_status(failure.code, failure.message, failure.error_type or None)
        self.reads += 1
        return views

    def close(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for conn in sockets:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _connection(self, timeout: float) -> socket.socket:
        conn: socket.socket | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid != os.getpid():
            conn.close()  # the parent's connection, inherited by fork: not ours to use
            conn = None
        if conn is None:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(timeout)
            try:
                conn.connect(str(self.path))
            except OSError:
                conn.close()
                raise
            self._local.conn, self._local.pid = conn, os.getpid()
            with self._lock:
                self._sockets.add(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()
