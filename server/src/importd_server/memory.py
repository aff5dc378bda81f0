"""How the server process allocates memory: set once at start-up, before any thread runs.

Staging frees most of what it allocates block by block (Arrow arrays, COPY payloads, a few
MB each), in the upload's thread. By default that memory stays with the process: Arrow's
mimalloc pool keeps it for reuse, and glibc's malloc gives each thread an arena of its own
and raises its threshold for returning memory after large frees. Measured, peak RSS of a
server staging one 1M-row file (workers 0): 262 MB by default, 220 MB with two arenas,
189 MB with two arenas and a fixed 1 MiB trim threshold (BENCHMARKS.md). An operator's own
ARROW_DEFAULT_MEMORY_POOL, MALLOC_ARENA_MAX or MALLOC_TRIM_THRESHOLD_ wins.
"""

from __future__ import annotations

import ctypes
import os
import sys

import pyarrow as pa

# mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_ARENA_MAX = -8
ARENAS = 2
TRIM_THRESHOLD_BYTES = 1 << 20


def configure_allocators() -> None:
    """Arrow allocates with the system allocator, and glibc's malloc (where it is the C
    library) keeps two arenas and returns freed memory above 1 MiB."""
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        pa.set_memory_pool(pa.system_memory_pool())
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc (e.g. musl): its own defaults
    if "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(_M_ARENA_MAX, ARENAS)
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
