"""Optional compression of activation chunks (no LMDB, no gRPC).

Storage compresses each chunk's data on write with the codec of its
``STORAGE_COMPRESSION`` setting, records the codec in the record's header and
decompresses on read, so clients only ever see the raw values. The codec libraries are
imported on first use: ``pip install 'actlog[storage]'`` brings both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from storage_service.errors import InvalidRequest

Codec = Callable[[bytes | memoryview], bytes]

# zstd level 1: activations are close to random mantissas, so higher levels buy little.
ZSTD_LEVEL = 1


class Compression(StrEnum):
    NONE = "none"
    ZSTD = "zstd"
    LZ4 = "lz4"


_local = threading.local()  # zstandard (de)compressor objects are not thread-safe


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise RuntimeError("STORAGE_COMPRESSION=zstd needs the `zstandard` package") from error
    return zstandard


def _lz4() -> Any:
    try:
        import lz4.frame
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise RuntimeError("STORAGE_COMPRESSION=lz4 needs the `lz4` package") from error
    return lz4.frame


def _zstd_compress(data: bytes | memoryview) -> bytes:
    compressor = getattr(_local, "zstd_c", None)
    if compressor is None:
        compressor = _local.zstd_c = _zstd().ZstdCompressor(level=ZSTD_LEVEL)
    return compressor.compress(data)


def _zstd_decompress(data: bytes | memoryview) -> bytes:
    decompressor = getattr(_local, "zstd_d", None)
    if decompressor is None:
        decompressor = _local.zstd_d = _zstd().ZstdDecompressor()
    return decompressor.decompress(data)


def _lz4_compress(data: bytes | memoryview) -> bytes:
    return _lz4().compress(data, store_size=True)


def _lz4_decompress(data: bytes | memoryview) -> bytes:
    return _lz4().decompress(data)


def parse(name: str) -> Compression:
    """The codec a header names ("" = none, for records written before compression)."""
    try:
        return Compression(name or Compression.NONE.value)
    except ValueError:
        raise InvalidRequest(
            f"unknown compression {name!r}: expected one of {[c.value for c in Compression]}"
        ) from None


def check_available(compression: Compression) -> None:
    """Import the codec's library now, so a missing package fails at start-up."""
    if compression is Compression.ZSTD:
        _zstd()
    elif compression is Compression.LZ4:
        _lz4()


def compressor(compression: Compression) -> Codec | None:
    """Function compressing one chunk's data; None for no compression."""
    return {Compression.ZSTD: _zstd_compress, Compression.LZ4: _lz4_compress}.get(compression)


def decompressor(compression: Compression) -> Codec | None:
    """Function restoring one chunk's data; None for no compression."""
    return {Compression.ZSTD: _zstd_decompress, Compression.LZ4: _lz4_decompress}.get(compression)
