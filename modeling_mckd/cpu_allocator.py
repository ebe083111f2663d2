"""Make glibc's malloc keep freed memory for reuse, which makes CPU training and encoding much faster.

By default glibc serves every allocation above 128 KiB (raised dynamically up to 32 MiB) with a
fresh ``mmap`` and returns it to the kernel on ``free``. A conv video tower allocates activations of
tens of MiB at every layer, so each forward and backward pass page-faults its way through freshly
zeroed pages again. Raising the mmap threshold and the trim threshold keeps that memory in the
heap, where the next batch reuses it. Measured on the 2-core machine with
``benchmarks/bench_cpu_allocator.py`` (docs/results.md, History, "The CPU allocator"): the default teacher's video encoding
2.15x faster and its training step 1.72x faster, for 134 MB more peak memory per process; the small
student, whose allocations glibc already reuses, is unchanged.

It is what ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` do, set from inside the process;
it only changes how memory is recycled, never a computed value. On a C library other than glibc
(macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

DEFAULT_MMAP_THRESHOLD = 256 << 20  # allocations below this come from the reusable heap
DEFAULT_TRIM_THRESHOLD = 512 << 20  # free heap above this at the top is given back to the kernel


def _glibc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # mallopt and gnu_get_libc_version are glibc's; musl has no gnu_get_libc_version
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def tune_cpu_allocator(mmap_threshold: int = DEFAULT_MMAP_THRESHOLD, trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds (bytes) for this process. Returns whether they were set:
    False on a C library other than glibc, or when glibc refuses a value."""
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value >= 2**31:
            raise ValueError(f"{name}: expected a positive number of bytes below 2 GiB, got {value!r}")
    libc = _glibc()
    if libc is None:
        logger.info("tune_cpu_allocator: not glibc, allocator left as it is")
        return False
    applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    if not applied:
        logger.warning("tune_cpu_allocator: glibc refused mmap_threshold=%d / trim_threshold=%d", mmap_threshold,
                       trim_threshold)
    return applied


def release_free_memory() -> bool:
    """Collect Python's garbage and give the heap's free pages back to the kernel (glibc's ``malloc_trim``).

    The tuned allocator keeps freed memory for reuse, which is what a process that goes on computing wants,
    but not one about to fork workers: a forked child that reuses the free memory it inherited writes to it,
    so each child gets a private copy of pages that, in the parent, hold nothing. Returns whether memory
    was given back (False on a C library other than glibc, or when there was nothing to give)."""
    import gc

    gc.collect()
    libc = _glibc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    return bool(libc.malloc_trim(0))


__all__ = ["DEFAULT_MMAP_THRESHOLD", "DEFAULT_TRIM_THRESHOLD", "release_free_memory", "tune_cpu_allocator"]
