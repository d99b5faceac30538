"""Service-side half of capture: receives rows from the worker and files them in the spool.

The worker (worker.py) sends frames over a Unix socket as steps run. Each pending
capture writes its rows straight into its spool files and keeps only a mask of the positions
received per layer, so memory does not grow with the length of a generation. Positions may
arrive more than once (preemption recomputes them) and simply overwrite. A capture is complete
when every layer holds every position of the record: prompt length + generated - 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actlog_common.dtypes import BY_CODE, DTYPES
from inference_service.capture.frames import HEADER, LAYER, MAGIC, SLOT
from inference_service.capture.spool import Spool, SpoolWriter
from inference_service.errors import CaptureFailed, CaptureIncomplete

logger = logging.getLogger(__name__)


@dataclass
class PendingCapture:
    record_id: str
    layers: list[int]
    dtype: str
    row_bytes: int
    writer: SpoolWriter
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # The first write that failed (a disk error): the capture can no longer be whole.
    error: OSError | None = None

    def put(self, layer: int, position: int, n_rows: int, data: bytes) -> int:
        """File rows; return how many of them were already held (recomputed)."""
        mask = self.masks.get(layer)
        if mask is None:
            mask = self.masks[layer] = np.zeros(0, dtype=bool)
        end = position + n_rows
        if end > len(mask):
            grown = np.zeros(max(end, 2 * len(mask)), dtype=bool)
            grown[: len(mask)] = mask
            mask = self.masks[layer] = grown
        self.writer.write(layer, position, data)
        again = int(mask[position:end].sum())
        mask[position:end] = True
        return again

    def missing(self, n_rows: int) -> dict[int, int]:
        out = {}
        for layer in self.layers:
            mask = self.masks.get(layer, np.zeros(0, dtype=bool))[:n_rows]
            if int(mask.sum()) < n_rows:
                out[layer] = n_rows - int(mask.sum())
        return out


class CaptureCollector:
    """A Unix-socket server that files incoming rows under their capture key."""

    def __init__(self, spool: Spool, socket_dir: str | None = None) -> None:
        self._spool = spool
        self._dir = Path(socket_dir) if socket_dir else Path(tempfile.mkdtemp(prefix="actlog-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        self.path = str(self._dir / f"capture-{os.getpid()}.sock")
        self._pending: dict[str, PendingCapture] = {}
        self._server: asyncio.AbstractServer | None = None
        self.recomputed_rows = 0
        self.captured_rows = 0
        # A request's rows of one step not filed, by reason: "finished" (steps computed after
        # it ended, e.g. past a stop string: harmless) or "malformed" (a bug worth a look).
        self.dropped_frames = {"finished": 0, "malformed": 0}

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for key in list(self._pending):
            self.discard(key)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def register(
        self,
        key: str,
        record_id: str,
        layers: list[int],
        hidden_size: int,
        dtype: str,
        max_rows: int = 0,
        header_bytes: int = 4096,
    ) -> None:
        """Expect rows for `key`; its spool space (`max_rows` of every layer and a header of
        up to `header_bytes`) is reserved and allocated now, or SpoolFull is raised."""
        row_bytes = _row_bytes(hidden_size, dtype)
        writer = self._spool.open(record_id, layers, row_bytes, max_rows, header_bytes)
        self._pending[key] = PendingCapture(record_id, layers, dtype, row_bytes, writer)

    def check_room(
        self,
        captures: int,
        layers: list[int],
        hidden_size: int,
        dtype: str,
        max_rows: int,
        header_bytes: int,
    ) -> None:
        """SpoolFull unless `captures` captures as `register` takes them would fit now."""
        row_bytes = _row_bytes(hidden_size, dtype)
        reserve = self._spool.reservation(len(layers), row_bytes, max_rows, header_bytes)
        self._spool.check_room(captures * reserve)

    def discard(self, key: str) -> None:
        capture = self._pending.pop(key, None)
        if capture is not None:
            self._spool.abandon(capture.writer)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def failure(self, key: str) -> OSError | None:
        """The write error that broke `key`'s capture, if one did."""
        capture = self._pending.get(key)
        return capture.error if capture is not None else None

    async def wait_complete(self, key: str, n_rows: int, timeout: float) -> SpoolWriter:
        """Wait until every layer of `key` holds rows [0, n_rows); hand over its spool writer.

        Raises CaptureIncomplete when rows are still missing at the deadline, and
        CaptureFailed when a write failed; either way the capture is dropped.
        """
        capture = self._pending[key]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while missing := capture.missing(n_rows):
            if capture.error is not None:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.discard(key)
                raise CaptureIncomplete(f"capture {key}: rows missing per layer {missing}")
            capture.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(capture.changed.wait(), remaining)
        if capture.error is not None:
            self.discard(key)
            raise CaptureFailed.writing(capture.record_id, capture.error)
        del self._pending[key]
        return capture.writer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(HEADER.size)
                magic, n_slots, n_layers, hidden, code, rows, n_bytes = HEADER.unpack(head)
                if magic != MAGIC:
                    logger.error("capture stream out of sync; closing it")
                    return
                raw_layers = await reader.readexactly(LAYER.size * n_layers)
                layers = [LAYER.unpack_from(raw_layers, i * LAYER.size)[0] for i in range(n_layers)]
                slots = []
                for _ in range(n_slots):
                    position, n_rows, key_len = SLOT.unpack(await reader.readexactly(SLOT.size))
                    slots.append(((await reader.readexactly(key_len)).decode(), position, n_rows))
                data = memoryview(await reader.readexactly(n_bytes))
                self._file(layers, hidden, code, rows, slots, data)
        except asyncio.IncompleteReadError:
            return
        finally:
            writer.close()

    def _file(
        self,
        layers: list[int],
        hidden: int,
        code: int,
        rows: int,
        slots: list[tuple[str, int, int]],
        data: memoryview,
    ) -> None:
        """File one frame's rows: a block [layers, rows, hidden], requests one after another."""
        dtype = BY_CODE[code].name if code in BY_CODE else None
        offset = 0
        for key, position, n_rows in slots:
            start, offset = offset, offset + n_rows
            capture = self._pending.get(key)
            if capture is None:
                # Finished or abandoned: e.g. steps computed after a stop string matched.
                self.dropped_frames["finished"] += 1
                continue
            if dtype != capture.dtype or not set(layers) <= set(capture.layers):
                logger.error("capture %s: unexpected layers %s or dtype %d", key, layers, code)
                self.dropped_frames["malformed"] += 1
                continue
            row_bytes = capture.row_bytes
            if (
                hidden * DTYPES[dtype].itemsize != row_bytes
                or len(data) != len(layers) * rows * row_bytes
            ):
                logger.error("capture %s: frame of %d bytes for %d rows", key, len(data), rows)
                self.dropped_frames["malformed"] += 1
                continue
            if capture.error is not None:
                continue
            try:
                for i, layer in enumerate(layers):
                    base = (i * rows + start) * row_bytes
                    chunk = data[base : base + n_rows * row_bytes]
                    self.recomputed_rows += capture.put(layer, position, n_rows, chunk)
            except OSError as exc:
                logger.error("capture %s: writing its rows failed: %s", key, exc)
                capture.error = exc
            else:
                self.captured_rows += n_rows * len(layers)
            capture.changed.set()


def _row_bytes(hidden_size: int, dtype: str) -> int:
    return hidden_size * DTYPES[dtype].itemsize
