"""Shared-memory arenas a same-host client hands to StreamActivations (see storage.proto).

An arena is a file in this user's private directory ``/dev/shm/actlog-u<uid>`` (mode
0700, so other users can neither learn its name nor open it), mapped here and by the
storage service, and reused for every read of the thread that owns it: first-touching
fresh pages costs far more than copying into warm ones, on virtual machines especially.
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
import fcntl
import ipaddress
import logging
import mmap
import os
import secrets
import stat
import threading
import weakref
from pathlib import Path

logger = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
MIN_ARENA_BYTES = 16 << 20
# The largest arena a client maps; bigger selections are read in several calls.
MAX_ARENA_BYTES = 1 << 30


class ArenaError(OSError):
    """No arena can be set up here (no private directory, /dev/shm full...)."""


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


def private_directory(root: Path = SHM_DIR) -> Path:
    """This user's arena directory under `root`, created 0700; ArenaError if unsafe."""
    uid = os.getuid()
    path = root / f"actlog-u{uid}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        raise ArenaError(f"{path} is not a private directory of uid {uid} (mode 0700)")
    return path


def _unlink_if_mine(path: Path, pid: int) -> None:
    if os.getpid() == pid:  # not from a forked child: the file is its parent's
        path.unlink(missing_ok=True)


class Arena:
    """One mapped shared-memory file; `name` is what the server opens."""

    def __init__(self, size: int, directory: Path) -> None:
        self.name = f"{directory.name}/{secrets.token_hex(16)}"
        self.path = directory / self.name.split("/", 1)[1]
        self.pid = os.getpid()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "my creator lives"
            os.posix_fallocate(self._fd, 0, size)
            self._mapping = mmap.mmap(self._fd, size, flags=mmap.MAP_SHARED)
        except BaseException:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            raise
        self.size = size
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


def remove_orphans(directory: Path) -> list[str]:
    """Unlink arenas in `directory` that no living process holds (killed before cleanup)."""
    removed: list[str] = []
    for path in directory.iterdir():
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


class ArenaPool:
    """An arena per thread, grown on demand; `close` releases every one.

    The pool's first arena first sweeps away arenas of clients that were killed.
    """

    def __init__(self, root: Path = SHM_DIR, max_bytes: int = MAX_ARENA_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._local = threading.local()
        self._arenas: weakref.WeakSet[Arena] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._directory: Path | None = None
        self._closed = False

    def get(self, size: int) -> Arena:
        """This thread's arena, at least `size` (<= max_bytes) bytes long.

        Raises ArenaError when none can be made, ValueError beyond the cap or once closed.
        """
        if self._closed:
            raise ValueError("the client is closed")
        if size > self.max_bytes:
            raise ValueError(f"{size} bytes exceed the arena cap of {self.max_bytes}")
        arena: Arena | None = getattr(self._local, "arena", None)
        if arena is not None and arena.pid != os.getpid():
            arena = self._local.arena = None  # inherited across fork: the parent's
        if arena is not None and arena.size >= size:
            return arena
        grown = min(self.max_bytes, max(size, MIN_ARENA_BYTES, 2 * arena.size if arena else 0))
        self.discard()
        try:
            fresh = Arena(grown, self._private_directory())
        except OSError as error:
            raise ArenaError(f"no shared-memory arena of {grown} bytes: {error}") from None
        logger.debug("shared-memory arena %s of %d bytes", fresh.name, grown)
        self._local.arena = fresh
        with self._lock:
            self._arenas.add(fresh)
        return fresh

    def discard(self) -> None:
        """Close this thread's arena; its next read gets a new one."""
        arena: Arena | None = getattr(self._local, "arena", None)
        self._local.arena = None
        if arena is not None and arena.pid == os.getpid():
            arena.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            arenas = list(self._arenas)
            self._arenas.clear()
        for arena in arenas:
            if arena.pid == os.getpid():
                arena.close()

    def _private_directory(self) -> Path:
        with self._lock:
            if self._directory is None:
                directory = private_directory(self.root)
                remove_orphans(directory)
                self._directory = directory
            return self._directory
