"""Frames from the worker reach the right spool rows: one frame carries every request of a step
that captures the same layers, as a [layers, rows, hidden] block; the collector files each
request's rows of each layer at its positions, and counts what it cannot file."""

from __future__ import annotations

import asyncio

import numpy as np

from inference_service.capture.collector import CaptureCollector
from inference_service.capture.spool import Spool, layer_file
from tests.unit.inference_service.capture.frames import HIDDEN, frame, send


def rows_of(writer, layer: int, n: int) -> np.ndarray:
    data = layer_file(writer.directory, layer).read_bytes()
    return np.frombuffer(data, dtype=np.float32).reshape(-1, HIDDEN)[:n]


def test_one_frame_fills_every_request_and_layer(tmp_path):
    async def main():
        collector = CaptureCollector(Spool(tmp_path / "spool"), str(tmp_path))
        await collector.start()
        for key in ("a", "b"):
            collector.register(key, f"rec-{key}", [0, 5], HIDDEN, "float32", max_rows=8)
        rng = np.random.default_rng(0)
        # Step 1: a's prompt (3 rows) and b's (2 rows) in one batch; step 2: one row each,
        # b first this time, and a again at position 3.
        step1 = rng.standard_normal((2, 5, HIDDEN)).astype(np.float32)
        step2 = rng.standard_normal((2, 2, HIDDEN)).astype(np.float32)
        await send(
            collector.path,
            frame([("a", 0, 3), ("b", 0, 2)], [0, 5], step1),
            frame([("b", 2, 1), ("a", 3, 1)], [0, 5], step2),
        )
        a = await collector.wait_complete("a", 4, timeout=10)
        b = await collector.wait_complete("b", 3, timeout=10)
        for i, layer in enumerate((0, 5)):
            np.testing.assert_array_equal(
                rows_of(a, layer, 4), np.concatenate([step1[i, :3], step2[i, 1:]])
            )
            np.testing.assert_array_equal(
                rows_of(b, layer, 3), np.concatenate([step1[i, 3:], step2[i, :1]])
            )
        assert collector.captured_rows == 7 * 2  # rows x layers
        await collector.close()

    asyncio.run(main())


def test_rows_it_cannot_file_are_counted_and_the_rest_arrive(tmp_path):
    async def main():
        collector = CaptureCollector(Spool(tmp_path / "spool"), str(tmp_path))
        await collector.start()
        collector.register("a", "rec-a", [3], HIDDEN, "float32", max_rows=4)
        block = np.ones((1, 3, HIDDEN))
        await send(
            collector.path,
            # "gone" finished already; "a" is in the same frame and still gets its rows
            frame([("gone", 0, 1), ("a", 0, 2)], [3], block),
            # a layer "a" did not ask for
            frame([("a", 2, 1)], [7], np.ones((1, 1, HIDDEN))),
            frame([("a", 2, 1)], [3], np.full((1, 1, HIDDEN), 2.0)),
        )
        a = await collector.wait_complete("a", 3, timeout=10)
        assert rows_of(a, 3, 3)[:, 0].tolist() == [1.0, 1.0, 2.0]
        assert collector.dropped_frames == {"finished": 1, "malformed": 1}
        await collector.close()

    asyncio.run(main())


def test_a_recomputed_position_overwrites_and_is_counted(tmp_path):
    async def main():
        collector = CaptureCollector(Spool(tmp_path / "spool"), str(tmp_path))
        await collector.start()
        collector.register("a", "rec-a", [1], HIDDEN, "float32", max_rows=4)
        await send(
            collector.path,
            frame([("a", 0, 2)], [1], np.zeros((1, 2, HIDDEN))),
            # preempted and recomputed from position 0
            frame([("a", 0, 3)], [1], np.arange(3 * HIDDEN).reshape(1, 3, HIDDEN)),
        )
        a = await collector.wait_complete("a", 3, timeout=10)
        assert rows_of(a, 1, 3)[:, 0].tolist() == [0.0, 4.0, 8.0]
        assert collector.recomputed_rows == 2
        await collector.close()

    asyncio.run(main())
