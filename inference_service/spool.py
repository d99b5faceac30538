"""On-disk spool of captures: rows land here as the engine computes them, and finished records
wait here until storage has acknowledged them.

Layout: one directory per record. While rows arrive it is `<record_id>.partial/` holding one
file per layer, written at offset `position * row_bytes` (a recomputed position overwrites its
row). When the request finishes, its header is written and the directory renamed to
`<record_id>/`: from then on it survives a restart of the service and is replayed to storage
in record-id (= time) order. Memory stays bounded by what is in flight, not by capture size.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actlog.ids import is_record_id, record_id_timestamp_ms

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
HEADER_FILE = "header.json"


def layer_file(directory: Path, layer: int) -> Path:
    return directory / f"layer_{layer}.bin"


class SpoolWriter:
    """Rows of one capture in flight."""

    def __init__(self, directory: Path, layers: list[int], row_bytes: int) -> None:
        self.directory = directory
        self.row_bytes = row_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._fds = {
            layer: os.open(layer_file(directory, layer), os.O_RDWR | os.O_CREAT, 0o600)
            for layer in layers
        }

    def write(self, layer: int, position: int, data: bytes) -> None:
        os.pwrite(self._fds[layer], data, position * self.row_bytes)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


@dataclass(frozen=True)
class SpooledRecord:
    record_id: str
    directory: Path
    header: dict[str, Any]

    def layer_path(self, layer: int) -> Path:
        return layer_file(self.directory, layer)


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # Rows of requests that were in flight when a previous process died cannot be
        # completed: their request is gone.
        for stale in root.glob(f"*{PARTIAL_SUFFIX}"):
            logger.warning("dropping unfinished capture %s from a previous run", stale.name)
            shutil.rmtree(stale, ignore_errors=True)

    def open(self, record_id: str, layers: list[int], row_bytes: int) -> SpoolWriter:
        return SpoolWriter(self.root / f"{record_id}{PARTIAL_SUFFIX}", layers, row_bytes)

    def finish(self, writer: SpoolWriter, record_id: str, header: dict[str, Any]) -> None:
        """Make a capture durable and visible to the sender."""
        writer.close()
        path = writer.directory / HEADER_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(header))
        os.replace(tmp, path)
        os.replace(writer.directory, self.root / record_id)

    def abandon(self, writer: SpoolWriter) -> None:
        writer.close()
        shutil.rmtree(writer.directory, ignore_errors=True)

    def ready(self) -> list[str]:
        """Finished records not yet acknowledged by storage, oldest first."""
        return sorted(
            p.name
            for p in self.root.iterdir()
            if is_record_id(p.name) and (p / HEADER_FILE).is_file()
        )

    def load(self, record_id: str) -> SpooledRecord:
        directory = self.root / record_id
        header = json.loads((directory / HEADER_FILE).read_text())
        return SpooledRecord(record_id, directory, header)

    def remove(self, record_id: str) -> None:
        shutil.rmtree(self.root / record_id, ignore_errors=True)

    def oldest_age_s(self) -> float:
        """Seconds since the oldest finished record still here was created (0 when none)."""
        ready = self.ready()
        if not ready:
            return 0.0
        return max(time.time() - record_id_timestamp_ms(ready[0]) / 1000, 0.0)

    def usage(self) -> tuple[int, int]:
        """(finished records, bytes on disk) of the whole spool."""
        records = 0
        size = 0
        for directory in self.root.iterdir():
            if not directory.is_dir():
                continue
            if is_record_id(directory.name):
                records += 1
            for f in directory.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    size += f.stat().st_size
        return records, size
