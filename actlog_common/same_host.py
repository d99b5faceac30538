"""The same-host read protocol: what a reader and the storage service on one host agree on.

A reader on the storage service's host hands StreamActivations the name of a shared-memory
segment it made; the service copies the selection straight from LMDB's map into it. The
segments, and the Unix socket that serves these reads without gRPC's per-call cost, live in
the reader's private directory ``/dev/shm/actlog-u<uid>`` (mode 0700, so other users can
neither learn a name nor open a file). The messages are in storage.proto
(`StreamActivationsRequest` in, `LocalReadReply` out); this module holds the conventions
around them: paths and names, and the framing, a little-endian u32 length then the
serialized message, both ways.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import struct
from pathlib import Path

from actlog_common.v1 import storage_pb2

SHM_DIR = Path("/dev/shm")
# A segment's name as StreamActivationsRequest.shm_name carries it.
SEGMENT_NAME = re.compile(r"actlog-u(?P<uid>[0-9]{1,10})/(?P<file>[0-9a-f]{32})")
SEGMENT_NAME_RULE = "'actlog-u<uid>/' followed by 32 lowercase hex digits"
# Framing of the local read socket, both ways: a little-endian u32 length, the bytes.
LENGTH = struct.Struct("<I")
# Larger requests are not from a client of this protocol: the server hangs up.
MAX_REQUEST_BYTES = 1 << 20


class UnsafeDirectory(OSError):
    """The private directory exists but is not this user's alone."""


def shm_supported(directory: Path = SHM_DIR) -> bool:
    return directory.is_dir() and os.access(directory, os.W_OK)


def private_directory_name(uid: int) -> str:
    return f"actlog-u{uid}"


def private_directory(root: Path = SHM_DIR) -> Path:
    """This user's directory under `root`, created 0700; UnsafeDirectory when it is not."""
    uid = os.getuid()
    path = root / private_directory_name(uid)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        raise UnsafeDirectory(f"{path} is not a private directory of uid {uid} (mode 0700)")
    return path


def segment_name(directory: Path, token: str) -> str:
    """The shm_name of segment file `token` (32 hex digits) in a private `directory`."""
    return f"{directory.name}/{token}"


def local_socket_path(port: int, root: Path = SHM_DIR) -> Path:
    """Where a storage service on `port` of this host serves this user's local reads."""
    return root / private_directory_name(os.getuid()) / f"storage-{port}.sock"


def send_message(conn: socket.socket, body: bytes) -> None:
    conn.sendall(LENGTH.pack(len(body)) + body)


def recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    """`size` bytes from `conn`; None when the peer closes first."""
    data = bytearray()
    while len(data) < size:
        part = conn.recv(size - len(data))
        if not part:
            return None
        data += part
    return bytes(data)


def recv_message(conn: socket.socket, max_bytes: int | None = None) -> bytes | None:
    """One framed message; None when the peer closes first or announces over `max_bytes`."""
    head = recv_exactly(conn, LENGTH.size)
    if head is None:
        return None
    (size,) = LENGTH.unpack(head)
    if max_bytes is not None and size > max_bytes:
        return None
    return recv_exactly(conn, size)


def chunks_reply(chunks: list[tuple[int, int, int, int]]) -> storage_pb2.LocalReadReply:
    """The reply for a read whose chunks are (layer, row_start, row_count, shm_offset)."""
    return storage_pb2.LocalReadReply(
        chunks=[
            storage_pb2.LocalReadReply.Chunk(
                layer=layer, row_start=row_start, row_count=row_count, shm_offset=offset
            )
            for layer, row_start, row_count, offset in chunks
        ]
    )


def failure_reply(code: str, message: str, error_type: str = "") -> storage_pb2.LocalReadReply:
    return storage_pb2.LocalReadReply(
        failure=storage_pb2.LocalReadReply.Failure(
            code=code, message=message, error_type=error_type
        )
    )
