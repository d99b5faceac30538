"""Service-side half of capture: receives rows from the worker and assembles records.

The worker (capture_worker.py) sends frames over a Unix socket as steps run. Each pending
capture keeps one growable buffer per layer plus a mask of the positions received; positions
may arrive more than once (preemption recomputes them) and simply overwrite. A capture is
complete when every layer holds every position of the record: prompt length + generated - 1.
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

from inference_service.capture_frames import DTYPE_NAMES, DTYPE_SIZES, HEADER, MAGIC
from inference_service.errors import CaptureIncomplete

logger = logging.getLogger(__name__)


@dataclass
class _LayerRows:
    row_bytes: int
    buf: bytearray = field(default_factory=bytearray)
    mask: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def put(self, pos_start: int, n_rows: int, data: bytes) -> None:
        end = pos_start + n_rows
        if end > len(self.mask):
            grow = max(end, 2 * len(self.mask))
            self.mask = np.concatenate([self.mask, np.zeros(grow - len(self.mask), dtype=bool)])
            self.buf.extend(bytes((grow * self.row_bytes) - len(self.buf)))
        self.buf[pos_start * self.row_bytes : end * self.row_bytes] = data
        self.mask[pos_start:end] = True

    def has(self, n_rows: int) -> bool:
        return len(self.mask) >= n_rows and bool(self.mask[:n_rows].all())


@dataclass
class PendingCapture:
    layers: list[int]
    hidden_size: int
    dtype: str
    rows: dict[int, _LayerRows] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        row_bytes = self.hidden_size * DTYPE_SIZES[self.dtype]
        self.rows = {layer: _LayerRows(row_bytes) for layer in self.layers}

    def complete(self, n_rows: int) -> bool:
        return all(rows.has(n_rows) for rows in self.rows.values())

    def take(self, n_rows: int) -> dict[int, bytes]:
        return {
            layer: bytes(rows.buf[: n_rows * rows.row_bytes]) for layer, rows in self.rows.items()
        }


class CaptureCollector:
    """A Unix-socket server that files incoming rows under their capture key."""

    def __init__(self, socket_dir: str | None = None) -> None:
        self._dir = Path(socket_dir) if socket_dir else Path(tempfile.mkdtemp(prefix="actlog-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        self.path = str(self._dir / f"capture-{os.getpid()}.sock")
        self._pending: dict[str, PendingCapture] = {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def register(self, key: str, layers: list[int], hidden_size: int, dtype: str) -> None:
        self._pending[key] = PendingCapture(layers, hidden_size, dtype)

    def discard(self, key: str) -> None:
        self._pending.pop(key, None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def collect(self, key: str, n_rows: int, timeout: float) -> dict[int, bytes]:
        """Wait until every layer of `key` holds rows [0, n_rows); return them and forget it."""
        capture = self._pending[key]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while not capture.complete(n_rows):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    missing = {
                        layer: int(n_rows - rows.mask[:n_rows].sum())
                        for layer, rows in capture.rows.items()
                    }
                    raise CaptureIncomplete(f"capture {key}: rows missing per layer {missing}")
                capture.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(capture.changed.wait(), remaining)
            return capture.take(n_rows)
        finally:
            self._pending.pop(key, None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(HEADER.size)
                magic, key_len, layer, pos, n_rows, hidden, code, n_bytes = HEADER.unpack(head)
                if magic != MAGIC:
                    logger.error("capture stream out of sync; closing it")
                    return
                key = (await reader.readexactly(key_len)).decode()
                data = await reader.readexactly(n_bytes)
                capture = self._pending.get(key)
                if capture is None:
                    # Finished or abandoned: e.g. steps computed after a stop string matched.
                    continue
                rows = capture.rows.get(layer)
                if rows is None or DTYPE_NAMES.get(code) != capture.dtype:
                    logger.error("capture %s: unexpected layer %d or dtype %d", key, layer, code)
                    continue
                rows.put(pos, n_rows, data)
                capture.changed.set()
        except asyncio.IncompleteReadError:
            return
        finally:
            writer.close()
