"""Shared-memory reads over a Unix socket: StreamActivations without gRPC's per-call cost.

A same-host reader's shared-memory read (see shm.py) moves no rows through the call,
yet Python gRPC still costs about a millisecond per call and a third of one per
streamed message on each side: more than copying a 16 MiB record. This socket serves
exactly that call with one small request and one small reply, and nothing else; the
full query surface stays on gRPC, which also serves these reads where the socket is
out of reach.

The socket lives in the owner's private directory next to the segments, so only that
user connects. Its path, framing and messages are the same-host read protocol's
(actlog_common/same_host.py, and `LocalReadReply` in storage.proto): a
`StreamActivationsRequest` with `shm_name` set in, one `LocalReadReply` out, with the
chunks or the gRPC status the same request gets over gRPC.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from google.protobuf.message import DecodeError

from actlog_common.same_host import (
    MAX_REQUEST_BYTES,
    chunks_reply,
    failure_reply,
    recv_message,
    send_message,
)
from actlog_common.v1 import storage_pb2
from storage_service.errors import InvalidRequest, StorageError
from storage_service.interceptors import public_error_type, status_code

logger = logging.getLogger(__name__)

# (layer, row_start, row_count, shm_offset) of each chunk, for one request.
ReadFn = Callable[[storage_pb2.StreamActivationsRequest], Iterable[tuple[int, int, int, int]]]


def _answers(path: Path) -> bool:
    """Whether a server accepts connections on the socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class LocalReadServer:
    """Serves shared-memory reads on a Unix socket, a thread per connection."""

    def __init__(self, path: Path, read: ReadFn) -> None:
        self.path = path
        self._read = read
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._closed = threading.Event()
        self._inode = 0
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    def start(self) -> bool:
        """Bind and serve; False (gRPC only) when another live server holds the path."""
        if self.path.exists():
            if _answers(self.path):
                logger.warning(
                    "%s is served by another storage process: shared-memory reads of this "
                    "one go over gRPC",
                    self.path,
                )
                self._sock.close()
                return False
            self.path.unlink(missing_ok=True)  # left by a server that was killed
        self._sock.bind(str(self.path))
        os.chmod(self.path, 0o600)  # and its directory is the owner's only
        self._inode = self.path.stat().st_ino
        self._sock.listen(64)
        accept = threading.Thread(target=self._accept, name="local-reads", daemon=True)
        self._threads.append(accept)
        accept.start()
        logger.info("shared-memory reads also served on %s", self.path)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking reads, end every connection, wait for reads in progress."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(OSError):
            if self._inode and self.path.stat().st_ino == self._inode:
                self.path.unlink()  # ours, not a successor's

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                if self._closed.is_set():
                    conn.close()
                    return
                self._connections.add(conn)
                thread = threading.Thread(
                    target=self._serve, args=(conn,), name="local-read", daemon=True
                )
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                # None also when the request is too large: not a client of this protocol.
                body = recv_message(conn, MAX_REQUEST_BYTES)
                if body is None or self._closed.is_set():
                    return
                send_message(conn, self._answer(body).SerializeToString())
        except OSError:
            return
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _answer(self, body: bytes) -> storage_pb2.LocalReadReply:
        try:
            request = storage_pb2.StreamActivationsRequest.FromString(body)
            if not request.shm_name:
                raise InvalidRequest("the local read socket serves shared-memory reads only")
            return chunks_reply(list(self._read(request)))
        except DecodeError:
            return failure_reply("INVALID_ARGUMENT", "malformed StreamActivationsRequest")
        except StorageError as error:
            code = status_code(error)
            logger.info("local StreamActivations -> %s: %s", code.name, error)
            return failure_reply(code.name, str(error), public_error_type(error, code))
        except Exception as error:
            logger.error("local StreamActivations failed", exc_info=error)
            return failure_reply("INTERNAL", "internal error in the storage service")
