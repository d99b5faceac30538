"""Shared-memory segments named by same-host readers of StreamActivations.

Python gRPC moves about 1 GB/s through one process pair here, while LMDB serves a
record at memory speed; a reader on the same host names a segment it created in
/dev/shm and the server copies the selection straight from LMDB's map into it (one
copy, as a raw LMDB read makes), streaming only where each layer landed.

Segments are mapped once and the mapping kept (a client reuses its segment for every
read): mapping fresh pages costs a page fault per 4 KiB, several times the copy
itself. A mapping is dropped as soon as its file is unlinked or replaced, and the
least recently used go beyond `MAX_CACHED`, so a departed client pins no memory for
long. The server only opens existing regular files whose name matches `NAME_PATTERN`
(no path can be smuggled in), without following links, and fully allocated (a hole
written in a full /dev/shm is a SIGBUS); files are the client's, so other users'
segments are out of reach by their permissions.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from storage_service.errors import FailedPrecondition, InvalidArgument

logger = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
NAME_PATTERN = re.compile(r"actlog-[0-9a-f]{16,64}")
MAX_CACHED = 64


class SharedMemoryUnavailable(FailedPrecondition):
    """The named segment cannot be opened here: the reader should use the byte stream."""


@dataclass
class Segment:
    """An open, mapped segment; `view` is writable and spans the whole file."""

    fd: int
    device: int
    inode: int
    mapping: mmap.mmap

    @property
    def size(self) -> int:
        return len(self.mapping)

    def unlinked(self) -> bool:
        return os.fstat(self.fd).st_nlink == 0

    def close(self) -> None:
        # The mapping itself goes with its last reference: a stream may still be writing.
        os.close(self.fd)


class SegmentCache:
    """Mapped segments by name, reused across calls; thread-safe."""

    def __init__(self, enabled: bool = True, directory: Path = SHM_DIR) -> None:
        self.enabled = enabled
        self._dir = directory
        self._segments: OrderedDict[str, Segment] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, name: str, size: int) -> Segment:
        """The segment `name`, mapped, at least `size` bytes long.

        Raises InvalidArgument for a malformed name or a file shorter than `size`, and
        SharedMemoryUnavailable when shared-memory reads are off or the file cannot be
        opened here.
        """
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidArgument(
                f"shm_name {name!r} is not 'actlog-' followed by 16 to 64 lowercase hex digits"
            )
        if not self.enabled:
            raise SharedMemoryUnavailable(
                "shared-memory reads are turned off on this storage service (STORAGE_SHM_READS)"
            )
        path = self._dir / name
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError as error:
            raise SharedMemoryUnavailable(
                f"shared-memory segment {name} is not visible to the storage service "
                f"({error.strerror}): it runs on another host or in another container"
            ) from None
        with self._lock:
            self._sweep()
            cached = self._segments.get(name)
            same_file = cached and (cached.device, cached.inode) == (info.st_dev, info.st_ino)
            if cached and same_file and cached.size >= size:
                self._segments.move_to_end(name)
                return cached
            segment = self._map(path, name, size)
            if cached:
                self._drop(name)
            self._segments[name] = segment
            while len(self._segments) > MAX_CACHED:
                self._drop(next(iter(self._segments)))
            return segment

    def close(self) -> None:
        with self._lock:
            for name in list(self._segments):
                self._drop(name)

    def __len__(self) -> int:
        return len(self._segments)

    def _map(self, path: Path, name: str, size: int) -> Segment:
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:
            raise SharedMemoryUnavailable(
                f"shared-memory segment {name} cannot be opened by the storage service "
                f"({error.strerror})"
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidArgument(f"shared-memory segment {name} is not a regular file")
            if info.st_size < max(size, 1):
                raise InvalidArgument(
                    f"shared-memory segment {name} holds {info.st_size} bytes, fewer than "
                    f"shm_size {size}"
                )
            if info.st_blocks * 512 < info.st_size:
                # Writing into a hole of a full /dev/shm raises SIGBUS, killing the server.
                raise InvalidArgument(
                    f"shared-memory segment {name} is sparse: allocate it (posix_fallocate) "
                    "before naming it"
                )
            mapping = mmap.mmap(fd, info.st_size, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            raise
        logger.debug("mapped shared-memory segment %s (%d bytes)", name, info.st_size)
        return Segment(fd, info.st_dev, info.st_ino, mapping)

    def _sweep(self) -> None:
        """Forget segments whose file is gone (their client closed or died)."""
        for name in [n for n, s in self._segments.items() if s.unlinked()]:
            self._drop(name)

    def _drop(self, name: str) -> None:
        self._segments.pop(name).close()
