"""Seeds of the trainer: one derivation for every seeded choice of a run.

Every random draw of training and evaluation (batch order, sampling, negatives, weight
initialization, evaluation candidates) is seeded by :func:`derive_seed` from ``run.seed``
and a tag naming the draw, so a run is reproducible and two draws never share a stream by
accident. (Not to be confused with :func:`lmgnn_fast.sampling.mix_seed`, the SplitMix64
chain the loaders use for their per-batch seeds.)
"""
from __future__ import annotations

import zlib

__all__ = ["derive_seed"]


def derive_seed(*parts) -> int:
    """A deterministic 31-bit seed from ``parts`` (ints and strings).

    Args:
        *parts: e.g. ``(run_seed, "stage2", epoch)``; order and types matter.

    Returns:
        ``crc32(repr(parts)) & 0x7FFFFFFF``, stable across processes and Python versions.
    """
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF
