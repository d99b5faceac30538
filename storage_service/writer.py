"""One LMDB writer thread with group commit, and the guard that lets the map grow.

Every write of the process is a function of a write transaction, handed to `Writer`.
Its thread takes whatever is queued (up to a size budget), runs each function in a
nested transaction of one write transaction and commits once, so one fsync covers the
writes of many concurrent callers; then it resolves each caller's future. A function
that raises rolls back only its own nested transaction: the others still commit.

When the map is full the batch is rolled back, the map doubled (once no transaction of
this process is open, as LMDB requires) and the batch run again, so callers never see
`lmdb.MapFullError`. Functions may therefore run more than once: they must only act on
the transaction they are given. Transactions yield zero-copy buffers, valid only until
the next write in the same transaction.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import lmdb

logger = logging.getLogger(__name__)

T = TypeVar("T")
WriteFn = Callable[[lmdb.Transaction], Any]

# One write transaction takes queued writes up to this many payload bytes or writes.
BATCH_BYTES = 64 << 20
BATCH_WRITES = 256


class TxnGuard:
    """Lets transactions run in parallel, but a map resize only when none is open.

    LMDB requires that no transaction of this process is active during `set_mapsize`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._resizing = False

    @contextmanager
    def txn(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


@dataclass
class _Write:
    fn: WriteFn
    size: int
    future: Future[Any] = field(default_factory=Future)


class WriterClosed(RuntimeError):
    """The writer was closed (the service is stopping)."""


class Writer:
    """Runs write functions on one thread, many per committed transaction."""

    def __init__(
        self,
        env: lmdb.Environment,
        guard: TxnGuard,
        *,
        batch_bytes: int = BATCH_BYTES,
        batch_writes: int = BATCH_WRITES,
    ) -> None:
        self._env = env
        self._guard = guard
        self._batch_bytes = batch_bytes
        self._batch_writes = batch_writes
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        # Observability for tests and logs: transactions committed, writes in them.
        self.commits = 0
        self.writes = 0
        self._thread = threading.Thread(target=self._run, name="lmdb-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: WriteFn, size: int = 0) -> Future[Any]:
        """Queue `fn`; its future resolves (result or exception) once committed.

        `size` is the payload in bytes, for batching.
        """
        write = _Write(fn, size)
        with self._close_lock:
            if self._closed:
                raise WriterClosed("storage is shutting down")
            self._queue.put(write)
        return write.future

    def run(self, fn: Callable[[lmdb.Transaction], T], size: int = 0) -> T:
        """`fn` committed; its result, or what it raised."""
        return self.submit(fn, size).result()

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    # -- the writer thread ----------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch, size = [first], first.size
            while size < self._batch_bytes and len(batch) < self._batch_writes:
                try:
                    write = self._queue.get_nowait()
                except queue.Empty:
                    break
                if write is None:
                    stopping = True
                    break
                batch.append(write)
                size += write.size
            self._commit(batch)

    def _commit(self, batch: list[_Write]) -> None:
        while True:
            outcomes: list[tuple[bool, Any]] = []
            try:
                with self._guard.txn(), self._env.begin(write=True, buffers=True) as txn:
                    for write in batch:
                        outcomes.append(self._apply(txn, write))
                break
            except lmdb.MapFullError:
                try:
                    self._grow()
                except Exception as error:
                    self._fail(batch, error)
                    return
            except Exception as error:  # the commit itself failed: nothing was written
                self._fail(batch, error)
                return
        self.commits += 1
        self.writes += len(batch)
        for write, (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                write.future.set_result(value)
            else:
                write.future.set_exception(value)

    def _fail(self, batch: list[_Write], error: Exception) -> None:
        logger.error("LMDB write transaction failed", exc_info=error)
        for write in batch:
            write.future.set_exception(error)

    def _apply(self, txn: lmdb.Transaction, write: _Write) -> tuple[bool, Any]:
        try:
            with self._env.begin(write=True, parent=txn, buffers=True) as child:
                return True, write.fn(child)
        except lmdb.MapFullError:
            raise
        except Exception as error:  # this write is rolled back, the rest of the batch stays
            return False, error

    def _grow(self) -> None:
        with self._guard.exclusive():
            old = self._env.info()["map_size"]
            self._env.set_mapsize(old * 2)
            new = self._env.info()["map_size"]
        logger.info("LMDB map full: grew map from %d to %d bytes", old, new)
