"""Shared-memory segments: the client's arenas and the server's cache of their mappings."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from actlog.shm import MIN_ARENA_BYTES, ArenaPool, is_local_address
from storage_service.errors import InvalidArgument
from storage_service.shm import SegmentCache, SharedMemoryUnavailable


@pytest.fixture
def shm_dir(tmp_path: Path) -> Path:
    """A stand-in for /dev/shm (both sides take the directory)."""
    return tmp_path


def test_a_thread_reuses_its_arena_and_grows_it_when_a_read_needs_more(shm_dir) -> None:
    pool = ArenaPool(shm_dir, max_bytes=64 << 20)
    first = pool.get(1000)
    assert first.size == MIN_ARENA_BYTES and pool.get(MIN_ARENA_BYTES) is first
    assert (shm_dir / first.name).stat().st_mode & 0o777 == 0o600
    grown = pool.get(MIN_ARENA_BYTES + 1)
    assert grown.size == 2 * MIN_ARENA_BYTES
    assert not (shm_dir / first.name).exists(), "the outgrown arena is unlinked"
    with pytest.raises(ValueError, match="arena cap"):
        pool.get((64 << 20) + 1)
    pool.close()
    assert list(shm_dir.iterdir()) == []


def test_threads_get_arenas_of_their_own(shm_dir) -> None:
    pool = ArenaPool(shm_dir)
    names: list[str] = []
    threads = [threading.Thread(target=lambda: names.append(pool.get(10).name)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 3
    pool.close()
    assert list(shm_dir.iterdir()) == []


def test_the_server_writes_into_the_clients_arena_and_keeps_the_mapping(shm_dir) -> None:
    pool, cache = ArenaPool(shm_dir), SegmentCache(directory=shm_dir)
    arena = pool.get(100)
    segment = cache.open(arena.name, 100)
    segment.mapping[10:15] = b"hello"
    assert arena.buffer[10:15] == b"hello"
    assert cache.open(arena.name, 100) is segment, "a second read maps nothing new"
    pool.close()
    other = ArenaPool(shm_dir).get(100)
    cache.open(other.name, 100)
    assert len(cache) == 1, "the closed client's segment was dropped"
    cache.close()


def test_a_replaced_file_of_the_same_name_is_mapped_afresh(shm_dir) -> None:
    cache = SegmentCache(directory=shm_dir)
    name = "actlog-" + "ab" * 16
    (shm_dir / name).write_bytes(b"\0" * 4096)
    first = cache.open(name, 4096)
    (shm_dir / name).unlink()
    (shm_dir / name).write_bytes(b"\0" * 8192)
    second = cache.open(name, 8192)
    assert second is not first and second.size == 8192
    cache.close()


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "actlog-../../x", "actlog-ABCDEF0123456789", "actlog-12", "x-" + "0" * 32],
)
def test_names_outside_the_pattern_are_invalid(shm_dir, name: str) -> None:
    with pytest.raises(InvalidArgument, match="16 to 64 lowercase hex"):
        SegmentCache(directory=shm_dir).open(name, 10)


def test_missing_short_linked_or_disabled_segments_are_refused(shm_dir) -> None:
    cache = SegmentCache(directory=shm_dir)
    missing = "actlog-" + "0" * 32
    with pytest.raises(SharedMemoryUnavailable, match="not visible"):
        cache.open(missing, 10)
    short = "actlog-" + "1" * 32
    (shm_dir / short).write_bytes(b"\0" * 10)
    with pytest.raises(InvalidArgument, match="fewer than shm_size 11"):
        cache.open(short, 11)
    target = shm_dir / "target"
    target.write_bytes(b"\0" * 100)
    linked = "actlog-" + "2" * 32
    os.symlink(target, shm_dir / linked)
    with pytest.raises(SharedMemoryUnavailable, match="cannot be opened"):
        cache.open(linked, 10)
    sparse = "actlog-" + "3" * 32
    with (shm_dir / sparse).open("wb") as file:
        file.truncate(1 << 20)  # a hole: writing there on a full /dev/shm would be a SIGBUS
    with pytest.raises(InvalidArgument, match="sparse"):
        cache.open(sparse, 10)
    with pytest.raises(SharedMemoryUnavailable, match="turned off"):
        SegmentCache(enabled=False, directory=shm_dir).open(short, 10)
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


def test_a_discarded_arena_is_removed_and_never_handed_out_again(shm_dir) -> None:
    pool = ArenaPool(shm_dir)
    first = pool.get(10)
    pool.discard()  # what a read cut short does: the server may still be writing into it
    assert not (shm_dir / first.name).exists()
    assert pool.get(10).name != first.name
    pool.close()


def test_arenas_of_killed_clients_are_swept_by_the_next_pool(shm_dir) -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()  # its pid now names no process (reuse within the test is unlikely)
    orphan = shm_dir / f"actlog-{finished.pid:08x}{'a' * 24}"
    living = shm_dir / f"actlog-{os.getppid():08x}{'b' * 24}"
    other = shm_dir / ("actlog-" + "c" * 20)  # not a name this client writes: left alone
    for path in (orphan, living, other):
        path.write_bytes(b"\0")
    pool = ArenaPool(shm_dir)
    arena = pool.get(10)
    assert not orphan.exists() and living.exists() and other.exists()
    assert arena.name.startswith(f"actlog-{os.getpid():08x}")
    pool.close()
