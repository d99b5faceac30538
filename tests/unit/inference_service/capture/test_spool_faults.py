"""A capture that cannot be spooled whole fails loudly and leaves nothing: no partial folder,
no reservation. The faults (ENOSPC at allocation, EIO on a write or on the header) are
injected, as a real disk gives them only rarely; tests/e2e/test_spool_full_disk.py fills a
real one."""

from __future__ import annotations

import asyncio
import errno
import os
from unittest import mock

import numpy as np
import pytest

from actlog_common.ids import new_record_id
from actlog_common.v1 import storage_pb2
from inference_service.capture.collector import CaptureCollector
from inference_service.capture.spool import Spool, SpoolFull, header_bound
from inference_service.errors import CaptureFailed
from tests.unit.inference_service.capture.frames import HIDDEN, frame, send

ROW_BYTES = HIDDEN * 4


def assert_nothing_left(spool: Spool) -> None:
    assert spool.reserved_bytes == 0
    assert not list(spool.root.glob("*.partial")) and spool.ready() == []


def test_the_reservation_counts_every_block_the_capture_can_take(tmp_path) -> None:
    spool = Spool(tmp_path)
    block = spool.block_bytes
    # 3 layers of 10 rows of 16 bytes: each file one block; the header's; the directory's.
    assert spool.reservation(3, ROW_BYTES, 10, 100) == 3 * block + block + block
    writer = spool.open(new_record_id(), [0, 1, 2], ROW_BYTES, max_rows=10, header_bytes=100)
    allocated = sum(f.stat().st_blocks * 512 for f in writer.directory.iterdir())
    assert allocated <= spool.reserved_bytes == spool.reservation(3, ROW_BYTES, 10, 100)
    spool.abandon(writer)
    assert_nothing_left(spool)


def test_the_header_bound_holds_for_the_worst_text(tmp_path) -> None:
    worst = '\U0001f600\x01"\\'  # astral, control, quote, backslash: all escaped
    tokens = [worst * 4] * 10
    header = storage_pb2.RecordHeader(
        record_id=new_record_id(), prompt=worst * 50, response="".join(tokens[:5]),
        token_ids=[2**31] * 10, token_strings=tokens, layers=[0], num_positions=9,
    )  # fmt: skip
    from inference_service.capture.spool import encode_header

    assert len(encode_header(header, ROW_BYTES).encode()) <= header_bound(worst * 50, 10, 5, 16)


def test_a_disk_without_room_for_the_allocation_refuses_before_generation(tmp_path) -> None:
    spool = Spool(tmp_path)
    no_space = OSError(errno.ENOSPC, "No space left on device")
    with (
        mock.patch("os.posix_fallocate", side_effect=no_space),
        pytest.raises(SpoolFull, match="capture spool cannot take"),
    ):
        spool.open(new_record_id(), [0, 1], ROW_BYTES, max_rows=8)
    assert spool.refused == 1
    assert_nothing_left(spool)


def test_a_failed_header_write_abandons_the_capture(tmp_path) -> None:
    spool = Spool(tmp_path)
    record_id = new_record_id()
    writer = spool.open(record_id, [0], ROW_BYTES, max_rows=2)
    writer.write(0, 0, b"\x01" * 2 * ROW_BYTES)
    header = storage_pb2.RecordHeader(record_id=record_id, layers=[0], num_positions=2)
    with (
        mock.patch("os.fdatasync", side_effect=OSError(errno.EIO, "Input/output error")),
        pytest.raises(CaptureFailed, match="Input/output error"),
    ):
        spool.seal(writer, header)
    assert_nothing_left(spool)


def test_a_short_write_is_completed_not_left_as_a_hole(tmp_path) -> None:
    spool = Spool(tmp_path)
    writer = spool.open(new_record_id(), [0], ROW_BYTES, max_rows=4)
    real = os.pwrite
    with mock.patch("os.pwrite", side_effect=lambda fd, data, at: real(fd, data[:5], at)):
        writer.write(0, 1, bytes(range(3 * ROW_BYTES)))
    writer.close()
    data = (writer.directory / "layer_0.bin").read_bytes()
    assert data[ROW_BYTES : 4 * ROW_BYTES] == bytes(range(3 * ROW_BYTES))
    spool.abandon(writer)


def test_a_write_error_while_rows_arrive_fails_the_capture(tmp_path) -> None:
    async def main():
        spool = Spool(tmp_path / "spool")
        collector = CaptureCollector(spool, str(tmp_path))
        await collector.start()
        collector.register("a", new_record_id(), [0], HIDDEN, "float32", max_rows=4)
        with mock.patch("os.pwrite", side_effect=OSError(errno.EIO, "Input/output error")):
            await send(collector.path, frame([("a", 0, 2)], [0], np.ones((1, 2, HIDDEN))))
            for _ in range(100):
                if collector.failure("a") is not None:
                    break
                await asyncio.sleep(0.01)
        assert collector.failure("a") is not None
        with pytest.raises(CaptureFailed, match="could not be written"):
            await collector.wait_complete("a", 3, timeout=10)
        assert collector.pending == 0
        assert_nothing_left(spool)
        await collector.close()

    asyncio.run(main())
