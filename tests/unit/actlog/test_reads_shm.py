"""Shared-memory segments: the client's arenas and the server's cache of their mappings."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from actlog.errors import (
    ActlogError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    from_status,
)
from actlog.reads.shm import MIN_ARENA_BYTES, ArenaError, ArenaPool, is_local_address
from storage_service.errors import InvalidRequest
from storage_service.shm import SegmentCache, SharedMemoryUnavailable

UID = os.getuid()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A stand-in for /dev/shm (both sides take the directory)."""
    return tmp_path


def private(root: Path) -> Path:
    return root / f"actlog-u{UID}"


def test_arenas_are_private_reused_and_sized_to_the_read(root) -> None:
    pool = ArenaPool(root, max_bytes=64 << 20)
    first = pool.acquire(1000)
    assert first.size == MIN_ARENA_BYTES and first.name.startswith(f"actlog-u{UID}/")
    assert private(root).stat().st_mode & 0o777 == 0o700
    assert (root / first.name).stat().st_mode & 0o777 == 0o600
    second = pool.acquire(10)
    assert second is not first, "an arena serves one read at a time"
    pool.release(first)
    assert pool.acquire(MIN_ARENA_BYTES) is first, "released, it serves the next read"
    big = pool.acquire(MIN_ARENA_BYTES + 1)
    assert big.size == MIN_ARENA_BYTES + 1
    with pytest.raises(ValueError, match="arena cap"):
        pool.acquire((64 << 20) + 1)
    for arena in (first, second, big):
        pool.release(arena)
    pool.close()
    assert list(private(root).iterdir()) == []
    with pytest.raises(ValueError, match="closed"):
        pool.acquire(10)


def test_leased_arenas_return_when_their_arrays_are_gone(root) -> None:
    pool = ArenaPool(root)
    arena = pool.acquire(4096)
    lease = pool.lease(arena, 4096)
    arrays = [np.frombuffer(lease.buffer, np.uint16, 100, 200 * i) for i in range(3)]
    view = arrays[2][10:20]
    del lease, arrays
    gc.collect()
    assert pool.acquire(10) is not arena, "a view is still alive: the arena stays lent"
    del view
    gc.collect()
    assert pool.acquire(10) is arena
    assert not pool.can_lease(pool.max_leased_bytes + 1)
    pool.close()


def test_a_discarded_arena_is_removed_and_never_handed_out_again(root) -> None:
    pool = ArenaPool(root)
    first = pool.acquire(10)
    pool.discard(first)  # what a read cut short does: the server may still be writing into it
    assert not (root / first.name).exists()
    assert pool.acquire(10) is not first
    pool.close()


def test_idle_arenas_beyond_the_budget_are_closed(root) -> None:
    pool = ArenaPool(root, max_idle_bytes=MIN_ARENA_BYTES)
    arenas = [pool.acquire(10) for _ in range(3)]
    for arena in arenas:
        pool.release(arena)
    kept = [arena for arena in arenas if (root / arena.name).exists()]
    assert kept == [arenas[-1]]
    pool.close()


def test_an_unsafe_private_directory_is_refused(root) -> None:
    private(root).mkdir(mode=0o755)
    os.chmod(private(root), 0o755)  # others could list the arena names
    with pytest.raises(ArenaError, match="private directory"):
        ArenaPool(root).acquire(10)


KILLED = """
import os, signal, sys
from pathlib import Path
from actlog.reads.shm import ArenaPool
arena = ArenaPool(Path(sys.argv[1])).acquire(10)
print(arena.name, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_arenas_of_killed_clients_are_swept_by_the_next_pool(root) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILLED, str(root)], capture_output=True, text=True, timeout=60
    )
    orphan = root / killed.stdout.strip()
    assert orphan.exists(), killed.stderr
    living = ArenaPool(root)
    alive = living.acquire(10)  # also sweeps: the orphan goes, its own arena stays
    assert not orphan.exists() and (root / alive.name).exists()
    other = ArenaPool(root)
    other.acquire(10)
    assert (root / alive.name).exists(), "a live client's arena is never swept"
    living.release(alive)
    living.close()
    other.close()


def test_a_forked_child_neither_uses_nor_removes_its_parents_arenas(root) -> None:
    pool = ArenaPool(root)
    idle, lent = pool.acquire(10), pool.acquire(10)
    pool.release(idle)
    lease = pool.lease(lent, 10)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own arena, and the parent's left alone at exit
        try:
            mine = pool.acquire(10)
            os.write(write, f"{mine not in (idle, lent)} {mine.name}".encode())
            pool.release(mine)
            pool.close()
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    answer = os.read(read, 200).decode().split()
    os.close(read)
    assert answer[0] == "True" and answer[1] not in (idle.name, lent.name)
    assert (root / idle.name).exists() and (root / lent.name).exists()
    # Lent when the process forked: a child may still read it, so it is never reused.
    del lease
    gc.collect()
    assert pool.acquire(10) is idle  # the pool's next call takes the lent one back...
    assert not (root / lent.name).exists()  # ...and closes it
    pool.close()


def test_the_server_writes_into_the_clients_arena_and_keeps_the_mapping(root) -> None:
    pool, cache = ArenaPool(root), SegmentCache(directory=root)
    arena = pool.acquire(100)
    segment = cache.open(arena.name, 100)
    segment.mapping[10:15] = b"hello"
    assert arena.buffer[10:15] == b"hello"
    assert cache.open(arena.name, 100) is segment, "a second read maps nothing new"
    pool.release(arena)
    pool.close()
    cache.sweep()
    assert len(cache) == 0, "the closed client's segment was dropped"
    cache.close()


def test_a_segment_that_shrank_is_refused_before_any_write(root) -> None:
    pool, cache = ArenaPool(root), SegmentCache(directory=root)
    arena = pool.acquire(100)
    cache.open(arena.name, 100)
    os.truncate(root / arena.name, 4096)  # writing past the end now would be a SIGBUS
    with pytest.raises(InvalidRequest, match="shrank or is sparse"):
        cache.open(arena.name, 100)
    pool.discard(arena)
    pool.close()
    cache.close()


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "actlog-u0/../../x",
        f"actlog-u{UID}/" + "AB" * 16,
        f"actlog-u{UID}/" + "ab" * 8,
        "actlog-" + "0" * 32,
        f"actlog-u{UID}/sub/" + "0" * 32,
    ],
)
def test_names_outside_the_pattern_are_invalid(root, name: str) -> None:
    with pytest.raises(InvalidRequest, match="32 lowercase hex"):
        SegmentCache(directory=root).open(name, 10)


def test_missing_short_sparse_linked_or_disabled_segments_are_refused(root) -> None:
    cache = SegmentCache(directory=root)
    name = f"actlog-u{UID}/" + "0" * 32
    with pytest.raises(SharedMemoryUnavailable, match="not reachable"):
        cache.open(name, 10)  # no private directory at all
    private(root).mkdir(mode=0o700)
    with pytest.raises(SharedMemoryUnavailable, match="not reachable"):
        cache.open(name, 10)

    def segment(digit: str, content: bytes = b"\0" * 10, sparse: int = 0) -> str:
        path = private(root) / (digit * 32)
        with path.open("wb") as file:
            file.write(content)
            if sparse:
                file.truncate(sparse)  # a hole: written on a full /dev/shm, a SIGBUS
        return f"actlog-u{UID}/{digit * 32}"

    with pytest.raises(InvalidRequest, match="fewer than shm_size 11"):
        cache.open(segment("1"), 11)
    with pytest.raises(InvalidRequest, match="shrank or is sparse"):
        cache.open(segment("2", b"", sparse=1 << 20), 10)
    target = root / "target"
    target.write_bytes(b"\0" * 100)
    os.symlink(target, private(root) / ("3" * 32))
    with pytest.raises(SharedMemoryUnavailable, match="not reachable"):
        cache.open(f"actlog-u{UID}/" + "3" * 32, 10)
    with pytest.raises(SharedMemoryUnavailable, match="turned off"):
        SegmentCache(enabled=False, directory=root).open(segment("4"), 10)
    os.chmod(private(root), 0o755)
    with pytest.raises(InvalidRequest, match="private"):
        cache.open(segment("5"), 10)
    assert len(cache) == 0


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1:50052", True),
        ("localhost:50052", True),
        ("[::1]:50052", True),
        ("127.0.0.2:1", True),
        ("unix:/tmp/storage.sock", True),
        ("storage:50052", False),
        ("10.0.0.5:50052", False),
        ("[2001:db8::1]:50052", False),
    ],
)
def test_shared_memory_is_tried_only_for_addresses_on_this_host(address: str, local: bool) -> None:
    assert is_local_address(address) is local


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("INVALID_ARGUMENT", InvalidArgumentError),
        ("NOT_FOUND", NotFoundError),
        ("FAILED_PRECONDITION", FailedPreconditionError),
        ("INTERNAL", InternalError),
        ("NO_SUCH_CODE", ActlogError),
    ],
)
def test_local_socket_statuses_become_the_typed_errors_grpc_gives(code: str, cls) -> None:
    error = from_status(code, "what went wrong", "PartialRecord")
    assert type(error) is cls and error.details == "what went wrong"
    assert error.error_type == "PartialRecord"


def test_arrays_dying_while_the_pool_is_busy_never_deadlock_it(root) -> None:
    """The garbage collector may free leased arrays at any point, even inside the pool."""
    pool = ArenaPool(root)
    arena = pool.acquire(64)
    arrays = np.frombuffer(pool.lease(arena, 64).buffer, np.uint8)
    cycle: list[object] = [arrays]
    cycle.append(cycle)  # only the collector frees it
    del arrays, cycle

    def collect_inside_the_pool() -> None:
        with pool._lock:  # as if the collector ran during acquire or can_lease
            gc.collect()

    thread = threading.Thread(target=collect_inside_the_pool, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the pool deadlocked on its own lock"
    assert pool.acquire(10) is arena
    pool.close()
