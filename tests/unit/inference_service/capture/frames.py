"""Capture frames as the worker sends them, for the collector's tests."""

from __future__ import annotations

import asyncio
import socket

import numpy as np

from inference_service.capture.frames import encode_frame_header

HIDDEN = 4


def frame(slots, layers, block: np.ndarray) -> bytes:
    payload = block.astype(np.float32).tobytes()
    return encode_frame_header(slots, layers, HIDDEN, "float32", len(payload)) + payload


async def send(path: str, *frames: bytes) -> None:
    def blocking():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            for f in frames:
                sock.sendall(f)

    await asyncio.to_thread(blocking)
