"""Python port of ``csrc/utils/random.h``, the kernels' counter-based random numbers.

Every Python place that must draw the same numbers as the C++ kernels (the pure-torch
references, the cache's sketch hash) or derive seeds the same way (:func:`mix_seed`) uses
these functions. Each works on Python ints (uint64 values, any size in, ``[0, 2**64)`` out)
and on int64 tensors holding uint64 words (adds and multiplies wrap the same way; right
shifts are made logical with a mask), elementwise with broadcasting.
"""
from __future__ import annotations

from typing import TypeVar, Union

from torch import Tensor

U64_MASK = (1 << 64) - 1

_GOLDEN = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_STREAM = 0xD1B54A32D192ED03
_MIX_SEED_INIT = 0x243F6A8885A308D3

Word = TypeVar("Word", int, Tensor)


def as_int64(x: int) -> int:
    """Two's-complement int64 value of the low 64 bits of ``x`` (how a uint64 word, e.g. a
    seed of any size, is passed to an op's ``int`` argument or stored in an int64 tensor)."""
    x = int(x) & U64_MASK
    return x - (1 << 64) if x >= (1 << 63) else x


def _const(c: int, like: Union[int, Tensor]) -> int:
    return as_int64(c) if isinstance(like, Tensor) else c


def _shr(z: Word, n: int) -> Word:
    if isinstance(z, Tensor):
        return (z >> n) & ((1 << (64 - n)) - 1)
    return z >> n


def _wrap(z: Word) -> Word:
    return z if isinstance(z, Tensor) else z & U64_MASK


def mix64(z: Word) -> Word:
    """``mix64``: the SplitMix64 finaliser (a bijective 64-bit mixer with full avalanche).

    Args:
        z: an int, or Tensor  # [...] int64 holding uint64 words

    Returns:
        the mixed word(s), of the same kind as ``z``.

    Example:
        >>> mix64(0) == mix64(torch.tensor([0])).item() % 2**64
        True
    """
    z = _wrap(z + _const(_GOLDEN, z))
    z = _wrap((z ^ _shr(z, 30)) * _const(_MUL1, z))
    z = _wrap((z ^ _shr(z, 27)) * _const(_MUL2, z))
    return z ^ _shr(z, 31)


def philox_like(seed: Word, a: Word, b: Word, c: Word) -> Word:
    """``philox_like``: the 64-bit random word for ``(seed, a, b, c)`` (int64 tensors
    broadcast together; with ints, all four are ints)."""
    return mix64(_wrap(mix64(mix64(seed ^ mix64(a)) ^ b) + mix64(c ^ _const(_STREAM, c))))


def uniform_below(word: Word, n: Word) -> Word:
    """``uniform_below``: uniform integer in ``[0, n)`` from a random word, the high 64 bits
    of ``word * n`` (Lemire's multiply-shift). On tensors ``n`` must be below ``2**31``."""
    if not isinstance(word, Tensor):
        return ((word & U64_MASK) * int(n)) >> 64
    hi, lo = _shr(word, 32), word & 0xFFFFFFFF
    return (hi * n + ((lo * n) >> 32)) >> 32


def mix_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers by a chain of :func:`mix64` (e.g. per-batch
    sampling seeds ``mix_seed(seed, epoch, i)``); a pure function of ``parts``."""
    z = _MIX_SEED_INIT
    for p in parts:
        z = mix64(z ^ (int(p) & U64_MASK))
    return z >> 1


__all__ = ["U64_MASK", "as_int64", "mix64", "mix_seed", "philox_like", "uniform_below"]
