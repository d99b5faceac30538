"""Keep glibc from handing megabyte buffers back to the kernel after every message.

Each ingested or streamed chunk passes through several ~1 MiB buffers (gRPC slices,
Python bytes, LMDB pages). glibc serves blocks that large with a fresh mmap and unmaps
them on free, so every chunk costs hundreds of page faults and zeroed pages: *measured*
on 2 cores, that kernel time was most of the service's CPU while ingesting. Serving them
from the heap and keeping freed memory for reuse cut it by about two thirds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # blocks below this come from the heap (glibc's maximum)
TRIM_THRESHOLD = 256 << 20  # free heap kept before it is returned to the kernel
TOP_PAD = 64 << 20  # extra grown at once when the heap must grow


def tune_for_large_buffers() -> bool:
    """Set glibc's malloc thresholds for this process; False where that is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = all(
        mallopt(param, value)
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_TOP_PAD, TOP_PAD),
        )
    )
    logger.debug("malloc tuned for large buffers: %s", done)
    return done
