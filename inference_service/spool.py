"""On-disk spool of captures: rows land here as the engine computes them, and finished records
wait here until storage has acknowledged them.

Layout: one directory per record. While rows arrive it is `<record_id>.partial/` holding one
file per layer, written at offset `position * row_bytes` (a recomputed position overwrites its
row). When the request finishes, its header is written and the directory renamed to
`<record_id>/`: from then on it survives a restart of the service and is replayed to storage
in record-id (= time) order. Memory stays bounded by what is in flight, not by capture size.

The header file, `header.json`, is {"row_bytes": <bytes per row of the layer files>,
"header": <the RecordHeader sent to storage, in protobuf's JSON mapping with the .proto's
field names>}. Spools written before it had this shape hold one flat object: the header's
fields and row_bytes side by side; they are read too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from actlog_common.ids import is_record_id, record_id_timestamp_ms
from actlog_common.v1 import storage_pb2
from inference_service.errors import InferenceError

logger = logging.getLogger(__name__)

DEFAULT_SHARE_OF_FREE = 0.9
PARTIAL_SUFFIX = ".partial"
HEADER_FILE = "header.json"
DEAD_LETTER_DIR = "dead-letter"
REASON_FILE = "reason.txt"


def layer_file(directory: Path, layer: int) -> Path:
    return directory / f"layer_{layer}.bin"


class SpoolWriter:
    """Rows of one capture in flight; `reserved` bytes of the spool are set aside for it."""

    def __init__(
        self, directory: Path, layers: list[int], row_bytes: int, reserved: int = 0
    ) -> None:
        self.directory = directory
        self.row_bytes = row_bytes
        self.reserved = reserved
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
    header: storage_pb2.RecordHeader
    row_bytes: int

    def layer_path(self, layer: int) -> Path:
        return layer_file(self.directory, layer)


def encode_header(header: storage_pb2.RecordHeader, row_bytes: int) -> str:
    """The text of a record's header file."""
    fields = json_format.MessageToDict(header, preserving_proto_field_name=True)
    return json.dumps({"row_bytes": row_bytes, "header": fields})


def decode_header(text: str) -> tuple[storage_pb2.RecordHeader, int]:
    """A record's header and its layer files' bytes per row, from its header file."""
    document: dict[str, Any] = json.loads(text)
    if "header" not in document:  # the flat shape of spools written before
        document = {"row_bytes": document.pop("row_bytes"), "header": document}
    header = json_format.ParseDict(
        document["header"], storage_pb2.RecordHeader(), ignore_unknown_fields=True
    )
    return header, int(document["row_bytes"])


class SpoolFull(InferenceError):
    """A capture cannot be spooled: refused before generation (UNAVAILABLE, so 503)."""


class Spool:
    """The spool directory, within a byte budget (`max_bytes`; 0 = 90% of the free space of
    its disk at start). A capture reserves its worst case (every row of every layer) when it
    opens, before generation starts, so a response never promises a record the spool cannot
    hold; the reservation becomes the record's real size when it finishes, and is freed when
    storage has it."""

    def __init__(self, root: Path, max_bytes: int = 0) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # Rows of requests that were in flight when a previous process died cannot be
        # completed: their request is gone.
        for stale in root.glob(f"*{PARTIAL_SUFFIX}"):
            logger.warning("dropping unfinished capture %s from a previous run", stale.name)
            shutil.rmtree(stale, ignore_errors=True)
        self.max_bytes = max_bytes or int(shutil.disk_usage(root).free * DEFAULT_SHARE_OF_FREE)
        self.held_bytes = self.usage()[1]  # finished records, waiting for storage
        self.reserved_bytes = 0  # captures in flight, at their worst case
        self.refused = 0
        self._lock = threading.Lock()  # the sender removes records from another task

    def open(
        self, record_id: str, layers: list[int], row_bytes: int, reserve: int = 0
    ) -> SpoolWriter:
        """A writer for a new capture, once `reserve` bytes are set aside (SpoolFull if not)."""
        with self._lock:
            used = self.held_bytes + self.reserved_bytes
            free_disk = shutil.disk_usage(self.root).free - self.reserved_bytes
            if used + reserve > self.max_bytes or reserve > free_disk:
                self.refused += 1
                raise SpoolFull(
                    f"the capture spool cannot take this request's capture ({reserve} bytes): "
                    f"{used} of its {self.max_bytes} bytes (CAPTURE_SPOOL_MAX_BYTES) are in use "
                    f"and {max(free_disk, 0)} bytes are free on its disk, while storage takes "
                    "the records it holds; retry later, or send capture: false"
                )
            self.reserved_bytes += reserve
        return SpoolWriter(self.root / f"{record_id}{PARTIAL_SUFFIX}", layers, row_bytes, reserve)

    def finish(self, writer: SpoolWriter, header: storage_pb2.RecordHeader) -> None:
        """Make a capture durable, under its header, and visible to the sender."""
        writer.close()
        path = writer.directory / HEADER_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(encode_header(header, writer.row_bytes))
        os.replace(tmp, path)
        size = _directory_bytes(writer.directory)
        os.replace(writer.directory, self.root / header.record_id)
        with self._lock:
            self.reserved_bytes -= writer.reserved
            self.held_bytes += size
        writer.reserved = 0

    def abandon(self, writer: SpoolWriter) -> None:
        writer.close()
        shutil.rmtree(writer.directory, ignore_errors=True)
        with self._lock:
            self.reserved_bytes -= writer.reserved
        writer.reserved = 0

    def ready(self) -> list[str]:
        """Finished records not yet acknowledged by storage, oldest first."""
        return sorted(
            p.name
            for p in self.root.iterdir()
            if is_record_id(p.name) and (p / HEADER_FILE).is_file()
        )

    def load(self, record_id: str) -> SpooledRecord:
        directory = self.root / record_id
        header, row_bytes = decode_header((directory / HEADER_FILE).read_text())
        return SpooledRecord(record_id, directory, header, row_bytes)

    def remove(self, record_id: str) -> None:
        directory = self.root / record_id
        size = _directory_bytes(directory)
        shutil.rmtree(directory, ignore_errors=True)
        with self._lock:
            self.held_bytes = max(self.held_bytes - size, 0)

    def oldest_age_s(self) -> float:
        """Seconds since the oldest finished record still here was created (0 when none)."""
        ready = self.ready()
        if not ready:
            return 0.0
        return max(time.time() - record_id_timestamp_ms(ready[0]) / 1000, 0.0)

    def usage(self) -> tuple[int, int]:
        """(finished records, bytes on disk) of the whole spool, dead letters included in
        the bytes (they hold disk space until retried or removed)."""
        records = 0
        size = 0
        for directory in self.root.iterdir():
            if not directory.is_dir():
                continue
            if directory.name == DEAD_LETTER_DIR:
                size += sum(_directory_bytes(d) for d in directory.iterdir() if d.is_dir())
                continue
            if is_record_id(directory.name):
                records += 1
            size += _directory_bytes(directory)
        return records, size

    # -- dead letters: records storage would not take after every attempt ------------

    @property
    def dead_letter_root(self) -> Path:
        return self.root / DEAD_LETTER_DIR

    def dead_letter(self, record_id: str, reason: str) -> Path:
        """Move a record aside, with why, so the records behind it are delivered."""
        target = self.dead_letter_root / record_id
        target.parent.mkdir(exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(self.root / record_id, target)
        (target / REASON_FILE).write_text(reason + "\n")
        return target

    def _dead_letter_dirs(self) -> list[Path]:
        if not self.dead_letter_root.is_dir():
            return []
        return sorted(
            d
            for d in self.dead_letter_root.iterdir()
            if is_record_id(d.name) and (d / HEADER_FILE).is_file()
        )

    def dead_letter_count(self) -> int:
        return len(self._dead_letter_dirs())

    def dead_letters(self) -> list[tuple[str, str]]:
        """(record id, reason) of every dead letter, oldest first."""
        found = []
        for directory in self._dead_letter_dirs():
            reason = directory / REASON_FILE
            found.append((directory.name, reason.read_text().strip() if reason.is_file() else ""))
        return found

    def revive(self, record_id: str) -> bool:
        """Put a dead letter back in line for delivery; False if there is no such one."""
        source = self.dead_letter_root / record_id
        if not is_record_id(record_id) or not (source / HEADER_FILE).is_file():
            return False
        with contextlib.suppress(FileNotFoundError):
            (source / REASON_FILE).unlink()
        os.replace(source, self.root / record_id)
        return True


def _directory_bytes(directory: Path) -> int:
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for f in directory.iterdir():
            with contextlib.suppress(FileNotFoundError):
                total += f.stat().st_size
    return total
