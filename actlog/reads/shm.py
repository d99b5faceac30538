"""Shared-memory arenas a same-host client hands to StreamActivations (see storage.proto).

An arena is a segment of the same-host read protocol (actlog_common/same_host.py): a
file in this user's private directory, mapped here and by the storage service, and reused
for every read of the thread that owns it: first-touching fresh pages costs far more than
copying into warm ones, on virtual machines especially.
Its pages are allocated when it is created, so a full /dev/shm fails here rather than in
the storage service. It grows (a new file) when a read needs more, up to a cap past
which reads are split.

The creating process holds an exclusive flock on each of its arenas and unlinks them on
close, on garbage collection or at exit; a process killed before that leaves its files
unlocked, and the next pool to start removes them. A forked child neither uses nor
unlinks its parent's arenas.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import logging
import mmap
import os
import queue
import secrets
import threading
import weakref
from pathlib import Path

from actlog_common.same_host import SHM_DIR, private_directory, segment_name

logger = logging.getLogger(__name__)

MIN_ARENA_BYTES = 16 << 20
# The largest arena a client maps; bigger selections are read in several calls.
MAX_ARENA_BYTES = 1 << 30
# Arrays handed out backed by arenas, at most; past it reads copy into private memory.
MAX_LEASED_BYTES = 4 << 30
# Arenas kept for reuse when no read uses them (the most recent one always is).
MAX_IDLE_BYTES = 1 << 30


class ArenaError(OSError):
    """No arena can be set up here (no private directory, /dev/shm full...)."""


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


def _unlink_if_mine(path: Path, pid: int) -> None:
    if os.getpid() == pid:  # not from a forked child: the file is its parent's
        path.unlink(missing_ok=True)


class Arena:
    """One mapped shared-memory file; `name` is what the server opens."""

    def __init__(self, size: int, directory: Path) -> None:
        self.pid = os.getpid()
        self.path, self._fd = _create_locked(directory)
        self.name = segment_name(directory, self.path.name)
        try:
            os.posix_fallocate(self._fd, 0, size)
            self._mapping = mmap.mmap(self._fd, size, flags=mmap.MAP_SHARED)
        except BaseException:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            raise
        self.size = size
        self.tainted = False  # leased at a fork: a child may hold views of it
        self._finalizer = weakref.finalize(self, _unlink_if_mine, self.path, self.pid)

    @property
    def buffer(self) -> mmap.mmap:
        return self._mapping

    def close(self) -> None:
        self._finalizer()  # unlink; the mapping goes when its last view does
        with contextlib.suppress(BufferError):  # a view still uses it: it goes with the view
            self._mapping.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)


CREATE_ATTEMPTS = 8


def _create_locked(directory: Path) -> tuple[Path, int]:
    """A new arena file, flocked ("my creator lives"). Another pool's `remove_orphans` may
    open a file in the instant between its creation and its lock, take the lock and unlink
    it: the lock then fails, or succeeds on a file no longer there. Either way, a new name."""
    for _ in range(CREATE_ATTEMPTS):
        path = directory / secrets.token_hex(16)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return path, fd
        except BlockingIOError:
            pass
        except FileNotFoundError:
            pass  # unlinked by a sweeper after our lock was taken
        except BaseException:
            path.unlink(missing_ok=True)
            os.close(fd)
            raise
        os.close(fd)
    raise BlockingIOError(f"no shared-memory arena could be created in {directory}")


def remove_orphans(directory: Path) -> list[str]:
    """Unlink arenas in `directory` that no living process holds (killed before cleanup)."""
    removed: list[str] = []
    for path in directory.iterdir():
        if path.suffix == ".sock":
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its creator (or a child of it) still runs
        else:
            path.unlink(missing_ok=True)
            removed.append(path.name)
        finally:
            os.close(fd)
    if removed:
        logger.info("removed %d shared-memory arenas left by killed clients", len(removed))
    return removed


class Lease:
    """Arrays backed by an arena: the arena returns to its pool once none of them is alive.

    The arrays (and any view of them) keep a ctypes buffer over the selection alive; its
    finalizer hands the arena back, so the storage service never overwrites rows someone
    still holds.
    """

    def __init__(self, pool: ArenaPool, arena: Arena, nbytes: int) -> None:
        self.buffer = (ctypes.c_uint8 * max(nbytes, 1)).from_buffer(arena.buffer)
        # The garbage collector may run this while the same thread holds the pool's lock:
        # it only queues the arena; the pool takes it back at its next call.
        returned = weakref.finalize(self.buffer, pool.returned.put, arena)
        returned.atexit = False


class ArenaPool:
    """Arenas for reads, each used by one read at a time; thread-safe.

    `acquire` lends an idle arena big enough (or makes one), `release` takes it back,
    `lease` ties its return to the arrays handed to the caller instead (taken back at
    the pool's next call after they are gone; a closed pool closes it then). Arenas leased
    when the process forks are never reused (a child may still read them), and a child
    never uses its parent's. Idle arenas beyond `max_idle_bytes` are closed. The first
    arena sweeps away arenas of clients that were killed.
    """

    def __init__(
        self,
        root: Path = SHM_DIR,
        max_bytes: int = MAX_ARENA_BYTES,
        max_leased_bytes: int = MAX_LEASED_BYTES,
        max_idle_bytes: int = MAX_IDLE_BYTES,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_leased_bytes = max_leased_bytes
        self.max_idle_bytes = max_idle_bytes
        self._idle: list[Arena] = []
        self._leased: set[Arena] = set()
        self._lock = threading.Lock()
        self.returned: queue.SimpleQueue[Arena] = queue.SimpleQueue()  # by leases' arrays
        self._directory: Path | None = None
        self._closed = False
        _POOLS.add(self)

    def acquire(self, size: int) -> Arena:
        """An arena of at least `size` (<= max_bytes) bytes for one read.

        Raises ArenaError when none can be made, ValueError beyond the cap or once closed.
        """
        if size > self.max_bytes:
            raise ValueError(f"{size} bytes exceed the arena cap of {self.max_bytes}")
        self._take_back()
        with self._lock:
            if self._closed:
                raise ValueError("the client is closed")
            self._idle = [a for a in self._idle if a.pid == os.getpid()]  # not a parent's
            fitting = [a for a in self._idle if a.size >= size]
            if fitting:
                arena = min(fitting, key=lambda a: a.size)
                self._idle.remove(arena)
                return arena
        grown = min(self.max_bytes, max(size, MIN_ARENA_BYTES))
        try:
            arena = Arena(grown, self._private_directory())
        except OSError as error:
            raise ArenaError(f"no shared-memory arena of {grown} bytes: {error}") from None
        logger.debug("shared-memory arena %s of %d bytes", arena.name, grown)
        return arena

    def can_lease(self, nbytes: int) -> bool:
        self._take_back()
        with self._lock:
            return sum(a.size for a in self._leased) + nbytes <= self.max_leased_bytes

    def lease(self, arena: Arena, nbytes: int) -> Lease:
        """Lend `arena` to the arrays built on the returned lease's buffer."""
        with self._lock:
            self._leased.add(arena)
        return Lease(self, arena, nbytes)

    def release(self, arena: Arena) -> None:
        """Take `arena` back for later reads (closed instead when it must not be reused)."""
        surplus = [arena]
        with self._lock:
            self._leased.discard(arena)
            if not (self._closed or arena.tainted or arena.pid != os.getpid()):
                surplus.pop()
                self._idle.append(arena)
                while len(self._idle) > 1 and sum(a.size for a in self._idle) > self.max_idle_bytes:
                    surplus.append(self._idle.pop(0))
        for extra in surplus:
            self._close(extra)

    def discard(self, arena: Arena) -> None:
        """Close `arena` for good (a read cut short may still be writing into it)."""
        with self._lock:
            self._leased.discard(arena)
        self._close(arena)

    def close(self) -> None:
        """Close idle arenas now; leased ones when their arrays are gone."""
        self._take_back()
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for arena in idle:
            self._close(arena)

    def _take_back(self) -> None:
        """Release the arenas whose leased arrays are gone."""
        while True:
            try:
                arena = self.returned.get_nowait()
            except queue.Empty:
                return
            self.release(arena)

    def taint_leased(self) -> None:
        with self._lock:
            for arena in self._leased:
                arena.tainted = True

    @staticmethod
    def _close(arena: Arena) -> None:
        if arena.pid == os.getpid():
            arena.close()

    def _private_directory(self) -> Path:
        with self._lock:
            if self._directory is None:
                directory = private_directory(self.root)
                remove_orphans(directory)
                self._directory = directory
            return self._directory


_POOLS: weakref.WeakSet[ArenaPool] = weakref.WeakSet()


def _before_fork() -> None:
    for pool in list(_POOLS):
        pool.taint_leased()


os.register_at_fork(before=_before_fork)
