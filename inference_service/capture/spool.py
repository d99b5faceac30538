"""On-disk spool of captures: rows land here as the engine computes them, and finished records
wait here until storage has acknowledged them.

Layout: one directory per record. While rows arrive it is `<record_id>.partial/` holding one
file per layer, written at offset `position * row_bytes` (a recomputed position overwrites its
row), and the header file to be. Every block of these files is allocated when the capture
opens, before generation (posix_fallocate), so a disk that fills meanwhile cannot fail a
write: a capture is refused up front (503) or it is spooled whole. When the request finishes,
its header is written, everything is flushed to disk and the directory renamed to
`<record_id>/`: from then on it survives a restart of the service and is replayed to storage
in record-id (= time) order. Memory stays bounded by what is in flight, not by capture size.

The header file, `header.json`, is {"row_bytes": <bytes per row of the layer files>,
"header": <the RecordHeader sent to storage, in protobuf's JSON mapping with the .proto's
field names>}. Spools written before it had this shape hold one flat object: the header's
fields and row_bytes side by side; they are read too.
"""

from __future__ import annotations

import contextlib
import errno
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
from inference_service.errors import CaptureFailed, InferenceError

logger = logging.getLogger(__name__)

DEFAULT_SHARE_OF_FREE = 0.9
PARTIAL_SUFFIX = ".partial"
HEADER_FILE = "header.json"
HEADER_TMP = "header.json.tmp"
DEAD_LETTER_DIR = "dead-letter"
REASON_FILE = "reason.txt"


def layer_file(directory: Path, layer: int) -> Path:
    return directory / f"layer_{layer}.bin"


def header_bound(known_text: str, tokens: int, generated: int, max_token_chars: int) -> int:
    """Bytes a record's header file can take at most, known before generation: the text
    known now (prompt, sampling), `tokens` token ids and strings (prompt and generated) and
    a response of `generated` tokens, each at most `max_token_chars` long.

    json.dumps escapes a control or non-ASCII character as \\uXXXX, twice for a character
    outside the BMP: 12 bytes per character at most."""
    per_token_string = 12 * max_token_chars + 4
    return (
        4096  # the fixed fields and their names
        + 12 * len(known_text)
        + tokens * (12 + per_token_string)
        + generated * 12 * max_token_chars
    )


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """pwrite until every byte is written: a short write is not an error, but its rest is
    (ENOSPC, EIO), and that must reach the request instead of leaving a hole."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "pwrite wrote nothing")
        view, offset = view[n:], offset + n


class SpoolWriter:
    """Rows of one capture in flight, in files whose every block was allocated when it
    opened (so no write can find the disk full); `reserved` bytes of the spool's budget are
    set aside for it."""

    def __init__(
        self,
        directory: Path,
        layers: list[int],
        row_bytes: int,
        max_rows: int,
        header_bytes: int,
        reserved: int,
        fsync: bool = True,
    ) -> None:
        self.directory = directory
        self.row_bytes = row_bytes
        self.reserved = reserved
        self._fsync = fsync
        self._fds: dict[int, int] = {}
        self._header_fd = -1
        self._header_room = header_bytes
        directory.mkdir(parents=True, exist_ok=True)
        try:
            for layer in layers:
                fd = os.open(layer_file(directory, layer), os.O_RDWR | os.O_CREAT, 0o600)
                self._fds[layer] = fd
                if max_rows:
                    os.posix_fallocate(fd, 0, max_rows * row_bytes)
            self._header_fd = os.open(
                directory / HEADER_TMP, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600
            )
            os.posix_fallocate(self._header_fd, 0, header_bytes)
        except BaseException:
            self.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def write(self, layer: int, position: int, data: bytes | memoryview) -> None:
        _write_all(self._fds[layer], data, position * self.row_bytes)

    def seal(self, header: storage_pb2.RecordHeader) -> None:
        """Cut the layer files to the record's rows, write its header beside them and flush
        both to disk; OSError if any of it fails (the record is then not whole)."""
        used = header.num_positions * self.row_bytes
        for fd in self._fds.values():
            os.ftruncate(fd, used)
            if self._fsync:
                os.fdatasync(fd)
        text = encode_header(header, self.row_bytes).encode()
        if len(text) > self._header_room:  # above the bound: only if the disk has room
            os.posix_fallocate(self._header_fd, 0, len(text))
        _write_all(self._header_fd, text, 0)
        os.ftruncate(self._header_fd, len(text))
        if self._fsync:
            os.fdatasync(self._header_fd)
        self.close()
        os.replace(self.directory / HEADER_TMP, self.directory / HEADER_FILE)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._header_fd >= 0:
            os.close(self._header_fd)
            self._header_fd = -1


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

    def __init__(self, root: Path, max_bytes: int = 0, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        root.mkdir(parents=True, exist_ok=True)
        # Rows of requests that were in flight when a previous process died cannot be
        # completed: their request is gone.
        for stale in root.glob(f"*{PARTIAL_SUFFIX}"):
            logger.warning("dropping unfinished capture %s from a previous run", stale.name)
            shutil.rmtree(stale, ignore_errors=True)
        self.max_bytes = max_bytes or int(shutil.disk_usage(root).free * DEFAULT_SHARE_OF_FREE)
        self.held_bytes = self.usage()[1]  # finished records, waiting for storage
        self.reserved_bytes = 0  # captures in flight, at their worst case
        stat = os.statvfs(root)
        self.block_bytes = stat.f_frsize or stat.f_bsize or 4096
        self.refused = 0
        self._lock = threading.Lock()  # the sender removes records from another task

    def reservation(self, layers: int, row_bytes: int, max_rows: int, header_bytes: int) -> int:
        """What a capture takes on disk at its worst case: every file rounded up to the
        filesystem's block, and a block of headroom for its directory."""
        block = self.block_bytes
        return (
            layers * _round_up(max_rows * row_bytes, block) + _round_up(header_bytes, block) + block
        )

    def check_room(self, reserve: int) -> None:
        """SpoolFull unless a capture of `reserve` bytes would be taken now."""
        with self._lock:
            refusal = self._refusal(reserve)
        if refusal is not None:
            raise refusal

    def _refusal(self, reserve: int) -> SpoolFull | None:
        """Why `reserve` more bytes do not fit now: the budget or the disk (under the lock).
        The space of captures in flight is allocated already, so the disk's free space is
        what is left beside them."""
        used = self.held_bytes + self.reserved_bytes
        free_disk = shutil.disk_usage(self.root).free
        if used + reserve > self.max_bytes or reserve > free_disk:
            return self._full(reserve, used, free_disk)
        return None

    def open(
        self,
        record_id: str,
        layers: list[int],
        row_bytes: int,
        max_rows: int,
        header_bytes: int = 4096,
    ) -> SpoolWriter:
        """A writer for a new capture of up to `max_rows` rows per layer and a header file of
        up to `header_bytes`, once its space is set aside: within the budget and allocated on
        disk (SpoolFull if not)."""
        reserve = self.reservation(len(layers), row_bytes, max_rows, header_bytes)
        with self._lock:
            refusal = self._refusal(reserve)
            if refusal is not None:
                self.refused += 1
                raise refusal
            self.reserved_bytes += reserve
        try:
            return SpoolWriter(
                self.root / f"{record_id}{PARTIAL_SUFFIX}",
                layers,
                row_bytes,
                max_rows,
                header_bytes,
                reserve,
                self.fsync,
            )
        except OSError as exc:
            with self._lock:
                self.reserved_bytes -= reserve
                self.refused += 1
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                used = self.held_bytes + self.reserved_bytes
                raise self._full(reserve, used, shutil.disk_usage(self.root).free) from exc
            raise SpoolFull(f"the capture spool cannot take this request's capture: {exc}") from exc

    def _full(self, reserve: int, used: int, free_disk: int) -> SpoolFull:
        return SpoolFull(
            f"the capture spool cannot take this request's capture ({reserve} bytes): "
            f"{used} of its {self.max_bytes} bytes (CAPTURE_SPOOL_MAX_BYTES) are in use "
            f"and {max(free_disk, 0)} bytes are free on its disk, while storage takes "
            "the records it holds; retry later, or send capture: false"
        )

    def seal(self, writer: SpoolWriter, header: storage_pb2.RecordHeader) -> None:
        """Write a capture's header and flush it to disk, still invisible to the sender;
        on any failure the capture is abandoned (nothing left, nothing reserved) and
        CaptureFailed raised."""
        try:
            writer.seal(header)
        except OSError as exc:
            self.abandon(writer)
            raise CaptureFailed.writing(header.record_id, exc) from exc

    def commit(self, writer: SpoolWriter, record_id: str) -> None:
        """Make a sealed capture a finished record, visible to the sender."""
        target = self.root / record_id
        os.replace(writer.directory, target)
        if self.fsync:
            _fsync_directory(self.root)
        size = _directory_bytes(target)
        with self._lock:
            self.reserved_bytes -= writer.reserved
            self.held_bytes += size
        writer.reserved = 0

    def finish(self, writer: SpoolWriter, header: storage_pb2.RecordHeader) -> None:
        """Seal and commit: make a capture durable, under its header, and visible."""
        self.seal(writer, header)
        self.commit(writer, header.record_id)

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


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _directory_bytes(directory: Path) -> int:
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for f in directory.iterdir():
            with contextlib.suppress(FileNotFoundError):
                st = f.stat()
                total += max(st.st_size, st.st_blocks * 512)  # what it holds of the disk
    return total
