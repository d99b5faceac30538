"""The LMDB writer thread: group commit, per-write rollback, map growth."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from storage_service.writer import TxnGuard, Writer, WriterClosed


@pytest.fixture
def env(tmp_path: Path) -> Iterator[lmdb.Environment]:
    env = lmdb.open(str(tmp_path / "lmdb"), map_size=1 << 20, max_dbs=2)
    yield env
    env.close()


@pytest.fixture
def writer(env: lmdb.Environment) -> Iterator[Writer]:
    writer = Writer(env, TxnGuard())
    yield writer
    writer.close()


def put(key: bytes, value: bytes):
    def write(txn: lmdb.Transaction) -> bytes:
        txn.put(key, value)
        return key

    return write


def test_writes_queued_meanwhile_share_one_commit(env, writer) -> None:
    release = threading.Event()

    def blocker(txn: lmdb.Transaction) -> None:
        release.wait()

    first = writer.submit(blocker)
    futures = [writer.submit(put(b"k%02d" % i, b"v"), size=1) for i in range(20)]
    commits_before = writer.commits
    release.set()
    assert [f.result() for f in futures] == [b"k%02d" % i for i in range(20)]
    first.result()
    assert writer.commits - commits_before <= 2  # the blocker's batch, then one for all 20
    with env.begin() as txn:
        assert txn.stat()["entries"] == 20


def test_a_failing_write_rolls_back_alone(env, writer) -> None:
    release = threading.Event()
    writer.submit(lambda txn: release.wait())

    def half_then_fail(txn: lmdb.Transaction) -> None:
        txn.put(b"half", b"written")
        raise ValueError("refused")

    good = writer.submit(put(b"good", b"1"))
    bad = writer.submit(half_then_fail)
    also_good = writer.submit(put(b"also", b"2"))
    release.set()
    assert good.result() == b"good" and also_good.result() == b"also"
    with pytest.raises(ValueError, match="refused"):
        bad.result()
    with env.begin() as txn:
        assert txn.get(b"good") == b"1" and txn.get(b"also") == b"2"
        assert txn.get(b"half") is None


def test_a_full_map_grows_and_the_batch_is_retried(env, writer) -> None:
    values = [bytes([i]) * (300 << 10) for i in range(8)]  # 2.4 MiB into a 1 MiB map
    futures = [writer.submit(put(b"big%d" % i, v), size=len(v)) for i, v in enumerate(values)]
    for future in futures:
        future.result()
    assert env.info()["map_size"] >= 4 << 20
    with env.begin() as txn:
        assert [txn.get(b"big%d" % i) for i in range(8)] == values


def test_close_commits_queued_writes_then_refuses(env) -> None:
    writer = Writer(env, TxnGuard())
    futures = [writer.submit(put(b"q%d" % i, b"v")) for i in range(5)]
    writer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(WriterClosed):
        writer.submit(put(b"late", b"v"))
