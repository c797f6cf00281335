"""The cache of large CPU buffers behind the CPU aggregation kernels.

The kernels' large per-call buffers (pair aggregates, gradients, outputs) come from a cache
of freed blocks instead of fresh pages from the operating system, as torch's CUDA caching
allocator does on the GPU: a fresh buffer costs one page fault per 4 KiB the first time it is
written. Tensors returned from the cache are ordinary CPU tensors; their memory goes back to
the cache when they are freed, and the torch profiler sees every allocation and free.

The cache keeps at most ``LMGNN_CPU_BUFFER_CACHE_MB`` MiB of free blocks (default 1024;
``0`` turns it off), least recently freed released first.
"""
from __future__ import annotations

from lmgnn_fast._loader import extension


def cpu_buffer_cache_info() -> dict:
    """State of the CPU buffer cache.

    Returns:
        dict with ``in_use_bytes`` (held by live tensors), ``cached_bytes`` (free blocks kept
        for reuse), ``limit_bytes``, ``hits`` and ``misses`` (requests served from the cache,
        and those that mapped new memory).
    """
    return dict(extension().cpu_buffer_cache_info())


def empty_cpu_buffer_cache() -> None:
    """Return the free blocks of the CPU buffer cache to the operating system (as
    ``torch.cuda.empty_cache``); memory held by live tensors is unaffected."""
    extension().empty_cpu_buffer_cache()
