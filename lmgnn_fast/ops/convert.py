"""Graph format conversion: COO edge lists to CSC over destination nodes, and back."""
from __future__ import annotations

import torch
from torch import Tensor


@torch.library.register_fake("lmgnn::coo_to_csc")
def _coo_to_csc_fake(src: Tensor, dst: Tensor, num_dst: int):
    torch._check(src.dim() == 1 and dst.dim() == 1, lambda: "coo_to_csc: src and dst must be 1-D")
    torch._check(src.numel() == dst.numel(), lambda: "coo_to_csc: src and dst must have the same length")
    indptr = src.new_empty((num_dst + 1,), dtype=torch.long)
    return indptr, src.new_empty(src.shape), src.new_empty(src.shape, dtype=torch.long)


def coo_to_csc(src: Tensor, dst: Tensor, num_dst: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sort a COO edge list by destination into CSC (stable within a destination).

    Args:
        src: Tensor  # [E] int32/int64 source ids
        dst: Tensor  # [E] same dtype and device, ids in [0, num_dst)
        num_dst: number of destination nodes.

    Returns:
        indptr: Tensor  # [num_dst + 1] int64; edges of v are indptr[v]:indptr[v+1]
        indices: Tensor  # [E] src dtype, ``src[perm]``
        perm: Tensor  # [E] int64, original edge positions in CSC order

    Example:
        >>> indptr, indices, perm = coo_to_csc(torch.tensor([0, 1, 2]), torch.tensor([1, 0, 1]), 2)
        >>> indptr.tolist(), indices.tolist(), perm.tolist()
        ([0, 1, 3], [1, 0, 2], [1, 0, 2])
    """
    return torch.ops.lmgnn.coo_to_csc(src, dst, num_dst)


def coo_to_csc_ref(src: Tensor, dst: Tensor, num_dst: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pure-torch reference of :func:`coo_to_csc`."""
    perm = torch.sort(dst.long(), stable=True).indices
    counts = torch.bincount(dst.long(), minlength=num_dst)
    indptr = torch.zeros(num_dst + 1, dtype=torch.long, device=src.device)
    indptr[1:] = torch.cumsum(counts, 0)
    return indptr, src[perm], perm


def csc_to_coo(indptr: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Expand a CSC into its COO edge list, in CSC order (pure torch; autograd-free).

    Edges ``indptr[0]:indptr[-1]`` of ``indices`` are returned, so a CSC whose edges start
    past position 0 of a larger ``indices`` works too.

    Args:
        indptr: Tensor  # [N + 1] int32/int64, non-decreasing; edges of column v are
            ``indptr[v]:indptr[v+1]``
        indices: Tensor  # [>= indptr[-1]] row (source) ids

    Returns:
        src: Tensor  # [E] int64, ``indices[indptr[0]:indptr[-1]]``
        dst: Tensor  # [E] int64 column (destination) of every edge

    Example:
        >>> src, dst = csc_to_coo(torch.tensor([0, 1, 3]), torch.tensor([1, 0, 2]))
        >>> src.tolist(), dst.tolist()
        ([1, 0, 2], [0, 1, 1])
    """
    indptr = indptr.long()
    lo, hi = int(indptr[0]), int(indptr[-1])
    counts = indptr.diff()
    dst = torch.repeat_interleave(torch.arange(counts.numel(), device=indptr.device), counts,
                                  output_size=hi - lo)
    return indices[lo:hi].long(), dst
