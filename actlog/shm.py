"""Shared-memory arenas a same-host client hands to StreamActivations (see storage.proto).

An arena is a file in /dev/shm, readable and writable by its owner only, mapped here
and by the storage service, and reused for every read of the thread that owns it:
first-touching fresh pages costs far more than copying into warm ones, on virtual
machines especially. Its pages are allocated when it is created (storage refuses sparse
segments). It grows (a new file) when a read needs more, up to a cap past which reads
are split. The file is unlinked when the arena is closed, when the client
closes, or at the latest when the interpreter exits.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import mmap
import os
import secrets
import threading
import weakref
from pathlib import Path

logger = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
PREFIX = "actlog-"
MIN_ARENA_BYTES = 16 << 20
# The largest arena a client maps; bigger selections are read in several calls.
MAX_ARENA_BYTES = 1 << 30


def shm_supported(directory: Path = SHM_DIR) -> bool:
    return directory.is_dir() and os.access(directory, os.W_OK)


def is_local_address(address: str) -> bool:
    """Whether a gRPC target names this host (loopback or a Unix socket)."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    if host.startswith("[") and "]" in host:
        host = host[1 : host.index("]")]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


class Arena:
    """One mapped shared-memory file; `view` spans it, `name` is what the server opens."""

    def __init__(self, size: int, directory: Path = SHM_DIR) -> None:
        # The creator's pid leads the name, so that `remove_orphans` can tell whose it is.
        self.name = f"{PREFIX}{os.getpid() & 0xFFFFFFFF:08x}{secrets.token_hex(12)}"
        self.path = directory / self.name
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            # Allocated up front: a full /dev/shm then fails here, as an OSError, rather
            # than as a SIGBUS in the storage service when it writes into a hole.
            os.posix_fallocate(fd, 0, size)
            self._mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        except BaseException:
            _unlink(self.path)
            raise
        finally:
            os.close(fd)
        self.size = size
        self._finalizer = weakref.finalize(self, _unlink, self.path)

    @property
    def buffer(self) -> mmap.mmap:
        return self._mapping

    def close(self) -> None:
        self._finalizer()  # unlink; the mapping goes when its last view does
        with contextlib.suppress(BufferError):  # a view still uses it: it goes with the view
            self._mapping.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(directory: Path = SHM_DIR) -> list[str]:
    """Unlink this user's arenas whose creating process is gone (killed before cleanup).

    Returns their names. Only files of this user whose name carries a pid (see `Arena`)
    that no longer runs are touched.
    """
    removed: list[str] = []
    uid = os.getuid()
    for path in directory.glob(f"{PREFIX}*"):
        hex_part = path.name[len(PREFIX) :]
        if len(hex_part) != 32:
            continue
        try:
            pid = int(hex_part[:8], 16)
            if pid == os.getpid() or path.lstat().st_uid != uid or _alive(pid):
                continue
            path.unlink()
        except (ValueError, OSError):
            continue
        removed.append(path.name)
    if removed:
        logger.info("removed %d shared-memory arenas left by killed clients", len(removed))
    return removed


class ArenaPool:
    """An arena per thread, grown on demand; `close` releases every one.

    The first arena of a pool first sweeps away arenas of clients that were killed
    (SIGKILL leaves no chance to unlink them).
    """

    def __init__(self, directory: Path = SHM_DIR, max_bytes: int = MAX_ARENA_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._local = threading.local()
        self._arenas: weakref.WeakSet[Arena] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._swept = False

    def get(self, size: int) -> Arena:
        """This thread's arena, at least `size` (<= max_bytes) bytes long."""
        if size > self.max_bytes:
            raise ValueError(f"{size} bytes exceed the arena cap of {self.max_bytes}")
        arena: Arena | None = getattr(self._local, "arena", None)
        if arena is not None and arena.size >= size:
            return arena
        grown = min(self.max_bytes, max(size, MIN_ARENA_BYTES, 2 * arena.size if arena else 0))
        if arena is not None:
            arena.close()
        if not self._swept:
            self._swept = True
            remove_orphans(self.directory)
        arena = Arena(grown, self.directory)
        logger.debug("shared-memory arena %s of %d bytes", arena.name, grown)
        self._local.arena = arena
        with self._lock:
            self._arenas.add(arena)
        return arena

    def discard(self) -> None:
        """Close this thread's arena; its next read gets a new one."""
        arena: Arena | None = getattr(self._local, "arena", None)
        self._local.arena = None
        if arena is not None:
            arena.close()

    def close(self) -> None:
        with self._lock:
            arenas = list(self._arenas)
            self._arenas.clear()
        for arena in arenas:
            arena.close()
        self._local = threading.local()
