"""The broker process's memory allocator: large buffers reused, not mapped afresh each time.

A broker receives a large produce request into a buffer of the frame's size and frees it once
the batch is written; every read from a socket is a fresh ``bytes`` of up to 256 KiB. glibc's
``malloc`` serves blocks that large with ``mmap`` (above a threshold that starts at 128 KiB)
and gives freed memory at the top of its heap back to the kernel (above a trim threshold), so
each such buffer costs fresh pages: a page fault and a zeroed page per 4 KiB, more than the
copy into it. Measured with 1 MiB batches at acks=leader (docs/BENCHMARKS.md, "Large
records"): the broker spent 2.1 s of CPU per GB received, a quarter of it in allocating the
frame's buffer; with the thresholds below, 0.8 s.

:func:`keep_large_allocations` raises both thresholds for the process (``tidelog serve`` and
``python -m tidelog.server`` call it at start; an embedded broker leaves its host process
alone). Nothing is lost: memory freed stays in the heap for the next request, up to
:data:`TRIM_THRESHOLD` bytes beyond what is in use, and the request budget
(``max_queued_request_bytes``) still bounds what requests hold. An operator who sets glibc's
own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (or ``GLIBC_TUNABLES``) keeps
those; other C libraries are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from typing import Final

log = logging.getLogger("tidelog.server")

MMAP_THRESHOLD: Final = 32 * 1024 * 1024
"""Blocks below this come from the heap (glibc's largest accepted value on 64-bit): every
frame up to 32 MiB, every socket read."""
TRIM_THRESHOLD: Final = 128 * 1024 * 1024
"""Free memory at the top of the heap beyond this goes back to the kernel."""
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_OPERATOR_SETTINGS: Final = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_large_allocations() -> bool:
    """Set glibc's mmap and trim thresholds for this process (see the module doc); whether
    they were set (False with another C library, or when the operator set them)."""
    if any(name in os.environ for name in _OPERATOR_SETTINGS):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt)
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not done:
        log.warning("could not set the allocator's thresholds: large requests cost more CPU")
    return done
