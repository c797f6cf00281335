"""Negative samplers for link prediction: corrupt the destination of each positive edge.

Every sampler maps a batch of positives ``(src, dst)`` (global ids) to negative
destinations ``neg_dst: [B, K]`` (global ids of the destination type) drawn from a
``torch.Generator``, so a loader seeded per batch gets reproducible negatives.
"""
from __future__ import annotations

import torch
from torch import Tensor


class NegativeSampler:
    """Base class. ``mode`` names the strategy; ``__call__`` returns ``neg_dst [B, K]``."""

    mode = "none"

    def __init__(self, num_negatives: int):
        if num_negatives < 1:
            raise ValueError(f"{type(self).__name__}: num_negatives must be >= 1, got {num_negatives}")
        self.num_negatives = int(num_negatives)

    def __call__(self, src: Tensor, dst: Tensor, num_dst_nodes: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError


class UniformNegativeSampler(NegativeSampler):
    """``K`` destinations per positive, independently uniform over the destination type."""

    mode = "uniform"

    def __call__(self, src, dst, num_dst_nodes, generator):
        return torch.randint(0, num_dst_nodes, (src.numel(), self.num_negatives), generator=generator)


class JointNegativeSampler(NegativeSampler):
    """``K`` uniform destinations shared by the whole batch (returned expanded to ``[B, K]``)."""

    mode = "joint"

    def __call__(self, src, dst, num_dst_nodes, generator):
        shared = torch.randint(0, num_dst_nodes, (self.num_negatives,), generator=generator)
        return shared.expand(src.numel(), -1)


class InBatchNegativeSampler(NegativeSampler):
    """The other positives' destinations: ``K = B - 1`` negatives for positive ``i``
    (every ``dst[j]``, ``j != i``); no random draws."""

    mode = "in_batch"

    def __init__(self, num_negatives: int = 1):
        self.num_negatives = 0

    def __call__(self, src, dst, num_dst_nodes, generator):
        B = dst.numel()
        if B < 2:
            return dst.new_empty((B, 0))
        j = torch.arange(B - 1).expand(B, -1)
        j = j + (j >= torch.arange(B)[:, None]).long()  # skip the diagonal
        return dst[j]


def make_negative_sampler(kind: str | NegativeSampler, num_negatives: int = 1) -> NegativeSampler:
    """``"uniform"``, ``"joint"`` or ``"in_batch"`` (or a sampler instance, returned as is)."""
    if isinstance(kind, NegativeSampler):
        return kind
    table = {"uniform": UniformNegativeSampler, "joint": JointNegativeSampler, "in_batch": InBatchNegativeSampler}
    if kind not in table:
        raise ValueError(f"negative sampler must be one of {sorted(table)}, got {kind!r}")
    return table[kind](num_negatives)
