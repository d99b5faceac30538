"""Shared-memory segments named by same-host readers of StreamActivations.

Python gRPC moves about 1 GB/s through one process pair here, while LMDB serves a
record at memory speed; a reader on the same host names a segment it created in
/dev/shm and the server copies the selection straight from LMDB's map into it (one
copy, as a raw LMDB read makes), streaming only where each layer landed.

Segments live in their owner's private directory, ``/dev/shm/actlog-u<uid>`` (mode
0700): other users can neither list the names nor open the files, so they cannot have
the server write into someone else's segment. The server opens the directory and the
file without following links and checks that both belong to the uid the name gives.

Segments are mapped once and the mapping kept (a client reuses its segment for every
read): mapping fresh pages costs a page fault per 4 KiB, several times the copy
itself. Before every use the file is checked again to be at least as large as the
mapping and fully allocated, since writing past its end or into a hole of a full
/dev/shm is a SIGBUS (only the owner, who could as well kill the service, can change a
file between that check and the copy). Mappings of unlinked files are dropped by a
sweeper every `SWEEP_INTERVAL_S`, and the least recently used beyond `MAX_CACHED`
segments or `MAX_CACHED_BYTES`, so a departed client pins its memory only briefly.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from actlog_common.same_host import (
    SEGMENT_NAME,
    SEGMENT_NAME_RULE,
    SHM_DIR,
    private_directory_name,
)
from storage_service.errors import ConflictingState, InvalidRequest, OutOfResources

logger = logging.getLogger(__name__)

MAX_CACHED = 64
MAX_CACHED_BYTES = 8 << 30
SWEEP_INTERVAL_S = 5.0
# Errors that mean this server can never use the client's segments.
_UNREACHABLE = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENOTDIR}


class SharedMemoryUnavailable(ConflictingState):
    """The named segment cannot be opened here: the reader should use the byte stream."""


class SharedMemoryBusy(OutOfResources):
    """The segment could not be used this time (out of file descriptors, memory...)."""


@dataclass
class Segment:
    """An open, mapped segment; `mapping` is writable and spans the whole file."""

    fd: int
    device: int
    inode: int
    mapping: mmap.mmap

    @property
    def size(self) -> int:
        return len(self.mapping)

    def unlinked(self) -> bool:
        return os.fstat(self.fd).st_nlink == 0

    def check(self, name: str, size: int) -> None:
        """Raise unless the file still spans the mapping, fully allocated, and holds `size`."""
        info = os.fstat(self.fd)
        if info.st_size < max(size, 1):
            raise InvalidRequest(
                f"shared-memory segment {name} holds {info.st_size} bytes, fewer than "
                f"shm_size {size}"
            )
        if info.st_size < self.size or info.st_blocks * 512 < info.st_size:
            raise InvalidRequest(
                f"shared-memory segment {name} shrank or is sparse: allocate it in full "
                "(posix_fallocate) and never shrink it"
            )

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
        self._closed = threading.Event()
        self._sweeper: threading.Thread | None = None

    def open(self, name: str, size: int) -> Segment:
        """The segment `name`, mapped, checked to hold at least `size` bytes.

        Raises InvalidRequest for a malformed name or an unfit file,
        SharedMemoryUnavailable when shared-memory reads are off or the file cannot be
        reached from here, SharedMemoryBusy when it cannot be opened this time.
        """
        match = SEGMENT_NAME.fullmatch(name)
        if not match:
            raise InvalidRequest(f"shm_name {name!r} is not {SEGMENT_NAME_RULE}")
        if not self.enabled:
            raise SharedMemoryUnavailable(
                "shared-memory reads are turned off on this storage service (STORAGE_SHM_READS)"
            )
        with self._lock:
            self._start_sweeper()
            cached = self._segments.get(name)
            if cached is not None and not cached.unlinked():
                self._segments.move_to_end(name)
                cached.check(name, size)
                return cached
            if cached is not None:
                self._drop(name)
            segment = self._map(name, int(match["uid"]), match["file"], size)
            self._segments[name] = segment
            self._evict()
            return segment

    def sweep(self) -> None:
        """Forget segments whose file is gone (their client closed or died)."""
        with self._lock:
            for name in [n for n, s in self._segments.items() if s.unlinked()]:
                self._drop(name)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            for name in list(self._segments):
                self._drop(name)

    def __len__(self) -> int:
        return len(self._segments)

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = threading.Thread(
                target=self._sweep_forever, name="shm-sweeper", daemon=True
            )
            self._sweeper.start()

    def _sweep_forever(self) -> None:
        while not self._closed.wait(SWEEP_INTERVAL_S):
            self.sweep()

    def _map(self, name: str, uid: int, file: str, size: int) -> Segment:
        directory = self._dir / private_directory_name(uid)
        dir_fd = fd = -1
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            dir_info = os.fstat(dir_fd)
            if dir_info.st_uid != uid or dir_info.st_mode & 0o077:
                raise InvalidRequest(
                    f"{directory} must belong to uid {uid} and be private (mode 0700)"
                )
            fd = os.open(file, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
                raise InvalidRequest(
                    f"shared-memory segment {name} is not a regular file of uid {uid}"
                )
            segment = Segment(fd, info.st_dev, info.st_ino, _mmap(name, fd, info.st_size))
            segment.check(name, size)
        except OSError as error:
            if fd >= 0:
                os.close(fd)
            if error.errno in _UNREACHABLE:
                raise SharedMemoryUnavailable(
                    f"shared-memory segment {name} is not reachable from the storage service "
                    f"({error.strerror}): it runs on another host, in another container or "
                    "as another user"
                ) from None
            raise SharedMemoryBusy(
                f"shared-memory segment {name} cannot be used now ({error.strerror})"
            ) from None
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        finally:
            if dir_fd >= 0:
                os.close(dir_fd)
        logger.debug("mapped shared-memory segment %s (%d bytes)", name, segment.size)
        return segment

    def _evict(self) -> None:
        total = sum(segment.size for segment in self._segments.values())
        while len(self._segments) > 1 and (
            len(self._segments) > MAX_CACHED or total > MAX_CACHED_BYTES
        ):
            oldest = next(iter(self._segments))
            total -= self._segments[oldest].size
            self._drop(oldest)

    def _drop(self, name: str) -> None:
        self._segments.pop(name).close()


def _mmap(name: str, fd: int, size: int) -> mmap.mmap:
    if size == 0:
        raise InvalidRequest(f"shared-memory segment {name} is empty")
    try:
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
    except (OSError, ValueError) as error:
        raise SharedMemoryBusy(f"shared-memory segment {name} cannot be mapped ({error})") from None
