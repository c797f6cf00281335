"""Fused relation-wise aggregation (one R-GCN layer per op call).

``lmgnn::rgcn_aggregate`` computes, for every destination row ``i``::

    out[i] = x_root[i] @ W_root + b + sum_r norm_{i,r} * sum_{j in N_r(i)} x[j] @ W_r

over the relation-sorted layout :class:`lmgnn_fast.ops.layout.RelLayout` (non-empty
``(relation, destination)`` pairs only; see ``csrc/ops/rgcn_aggregate.cpp`` for the layout,
the evaluation orders and the cost model). ``W_r`` is ``weight[r]`` or, with bases,
``sum_b comp[r, b] * weight[b]``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from lmgnn_fast.ops.convert import csc_to_coo
from lmgnn_fast.ops.layout import RelLayout

ORDER_FULL, ORDER_BASES_FORM_W, ORDER_BASES_COMBINE, ORDER_FULL_DENSE = 0, 1, 2, 3

# Cost of one element read or written by a memory-bound pass, in FLOP-equivalents at the
# dense matmul rate (a matmul runs ~2 FLOPs per element-op at ~100x the rate a random-row
# pass moves elements on a CPU core / an SM; the constant only decides near-ties).
PASS_COST = 32


def order_flops(order: int, *, num_edges, num_pairs, num_dst, num_relations, num_bases,
                in_channels, out_channels):
    """Forward FLOPs of one evaluation order (the cost model of the op file).

    Counts multiply-adds as 2 FLOPs, the per-pair sums as ``E * F_in``; the root term and
    the bias are the same for every order and left out.
    """
    E, P, N, R, B = num_edges, num_pairs, num_dst, num_relations, num_bases or 1
    fi, fo = in_channels, out_channels
    agg = E * fi
    if order == ORDER_FULL:
        return agg + 2 * P * fi * fo
    if order == ORDER_BASES_FORM_W:
        return agg + 2 * R * B * fi * fo + 2 * P * fi * fo
    if order == ORDER_FULL_DENSE:
        return agg + 2 * R * N * fi * fo
    return agg + 2 * P * B * fi + 2 * N * B * fi * fo


# Element passes of order 0 (and 1) per pair and output channel, by device. CPU: each
# relation's products go to a buffer the size of the largest relation and are added onto
# their destination rows while still in cache (1), and the backward gathers grad_out at the
# pairs' destinations relation by relation (1). CUDA: the products y [P, F_out] are written,
# read back by the per-destination reduction, and grad_out is gathered per pair (3).
ORDER0_PASSES = {"cpu": 2, "cuda": 3}
# Cost of one FLOP of order 0's per-relation GEMMs relative to order 3's single GEMM, by
# device. CPU: both are MKL GEMMs (1). CUDA: order 0 runs a grouped GEMM kernel of ours over
# the relation segments (their sizes stay on the device: no sync), order 3 runs cuBLAS; on
# the H200 full grid (benchmarks/results/gpu/aggregate_full.md) order 0 reached 13-21% of
# the dense matmul rate and order 3 38-61%, hence 3.
ORDER0_GEMM_COST = {"cpu": 1.0, "cuda": 3.0}


def order_cost(order: int, *, num_pairs, num_dst, num_relations, num_bases, in_channels,
               out_channels, device: str = "cpu") -> float:
    """Modelled forward cost (FLOPs + ``PASS_COST`` x elements of the passes that differ
    between orders), used by :func:`choose_order`. Order 0's FLOPs are weighted by
    ``ORDER0_GEMM_COST[device]``.

    Order 0 moves ``ORDER0_PASSES[device] * P * F_out`` elements for its per-pair products
    and the backward's per-pair gather of ``grad_out``. Order 3 writes zeros for the empty
    pairs of ``[N_dst, R * F_in]``: ``(R * N_dst - P) * F_in`` elements. The gather of the
    edges (``E * F_in``) is the same for both and left out.
    """
    kw = dict(num_edges=0, num_pairs=num_pairs, num_dst=num_dst, num_relations=num_relations,
              num_bases=num_bases, in_channels=in_channels, out_channels=out_channels)
    flops = order_flops(order, **kw)
    P, N, R, fi, fo = num_pairs, num_dst, num_relations, in_channels, out_channels
    if order == ORDER_FULL:
        flops *= ORDER0_GEMM_COST.get(device, 1.0)
    if order in (ORDER_FULL, ORDER_BASES_FORM_W):
        return flops + PASS_COST * ORDER0_PASSES.get(device, 3) * P * fo
    if order == ORDER_FULL_DENSE:
        return flops + PASS_COST * max(R * N - P, 0) * fi
    if device == "cpu":
        # Order 2 on the CPU: basis_in and its gradient [N_dst, B * F_in] are written and
        # read once each, and every pair reads and writes B rows of them (combine, backward).
        B = num_bases or 1
        return flops + PASS_COST * (2 * N * B * fi + 2 * P * B * fi)
    return flops


def pyg_flops(*, num_edges, num_dst, num_relations, num_bases, in_channels, out_channels):
    """FLOPs of PyG's ``RGCNConv`` order: every destination row times every relation's ``W_r``
    (empty pairs included), plus ``W_r`` formed from the bases."""
    R, B, fi, fo = num_relations, num_bases or 0, in_channels, out_channels
    return num_edges * fi + 2 * R * num_dst * fi * fo + 2 * R * B * fi * fo


def choose_order(*, num_pairs, num_dst, num_relations, num_bases: Optional[int], in_channels,
                 out_channels, device: str = "cpu") -> int:
    """Pick the cheaper order from shapes alone (no host sync). Full weights: order 0 (one
    GEMM per relation over the non-empty pairs, the products then summed per destination) or order 3
    (aggregate into ``[N_dst, R * F_in]`` with zeros for the empty pairs, one GEMM straight
    into the output) by :func:`order_cost` — order 3 wins where most pairs are non-empty
    (few relations). Bases: order 1 (form ``W``, one GEMM per relation segment) or order 2
    (combine into ``[N_dst, B * F_in]``, one GEMM with ``V``), by FLOP count on a GPU and by
    :func:`order_cost` on the CPU. ``device`` is the device type the op runs on (``"cpu"``,
    ``"cuda"``)."""
    if num_bases is None:
        kw = dict(num_pairs=num_pairs, num_dst=num_dst, num_relations=num_relations, num_bases=None,
                  in_channels=in_channels, out_channels=out_channels, device=device)
        dense = order_cost(ORDER_FULL_DENSE, **kw)
        z_elems = num_relations * num_dst * in_channels
        if device != "cpu" and z_elems > num_pairs * (in_channels + out_channels):
            # On a GPU order 3 is only taken where z [N_dst, R * F_in] is no larger than
            # order 0's agg [P, F_in] and y [P, F_out] together, so that the cheaper GEMMs
            # never cost device memory (z and its gradient live through the backward).
            return ORDER_FULL
        return ORDER_FULL_DENSE if dense <= order_cost(ORDER_FULL, **kw) else ORDER_FULL
    kw = dict(num_pairs=num_pairs, num_dst=num_dst, num_relations=num_relations, num_bases=num_bases,
              in_channels=in_channels, out_channels=out_channels)
    if device == "cpu":
        # Passes counted (order_cost): order 1 streams relation by relation on the CPU, while
        # order 2 adds [N_dst, B * F_in] buffers; measured on the benchmark blocks (R 4-64,
        # F_in 128 and 768), order 1 was as fast or faster everywhere (up to 2.3x).
        form_w = order_cost(ORDER_BASES_FORM_W, device=device, **kw)
        combine = order_cost(ORDER_BASES_COMBINE, device=device, **kw)
    else:
        # CUDA: by FLOPs (order 2's combine-then-one-GEMM measured 3.4-30x PyG on the H200).
        form_w = order_flops(ORDER_BASES_FORM_W, num_edges=0, **kw)
        combine = order_flops(ORDER_BASES_COMBINE, num_edges=0, **kw)
    return ORDER_BASES_FORM_W if form_w < combine else ORDER_BASES_COMBINE


# --------------------------------------------------------------------------- fake kernels
@torch.library.register_fake("lmgnn::rgcn_aggregate")
def _rgcn_aggregate_fake(x, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr,
                         src_pairs, weight, comp, x_root, root_weight, bias, mean, order):
    torch._check(x.dim() == 2, lambda: "rgcn_aggregate: x must be 2-D")
    torch._check(weight.dim() == 3, lambda: "rgcn_aggregate: weight must be 3-D")
    torch._check(pair_ptr.shape[0] == pair_dst.shape[0] + 1,
                 lambda: "rgcn_aggregate: pair_ptr must have P + 1 entries")
    num_dst = dst_ptr.shape[0] - 1
    num_pairs = pair_dst.shape[0]
    f_in, f_out = x.shape[1], weight.shape[2]
    b = 1 if order == ORDER_FULL else weight.shape[0]
    out = x.new_empty((num_dst, f_out))
    agg = x.new_empty((0 if order == ORDER_FULL_DENSE else num_pairs, f_in))
    dense_z = order in (ORDER_BASES_COMBINE, ORDER_FULL_DENSE)
    basis_in = x.new_empty((num_dst if dense_z else 0, b * f_in))
    return out, agg, basis_in


@torch.library.register_fake("lmgnn::rgcn_aggregate_backward")
def _rgcn_aggregate_backward_fake(grad_out, x, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs,
                                  src_ptr, src_pairs, weight, comp, x_root, root_weight, agg,
                                  basis_in, mean, order, needs):
    def maybe(flag, like):
        return torch.empty_like(like) if flag else x.new_empty((0,))

    return (maybe(needs[0], x), maybe(needs[1], weight),
            maybe(needs[2], comp) if comp is not None else x.new_empty((0,)),
            maybe(needs[3], x_root) if x_root is not None else x.new_empty((0,)),
            maybe(needs[4], root_weight) if root_weight is not None else x.new_empty((0,)),
            x.new_empty((weight.shape[2],)) if needs[5] else x.new_empty((0,)))


# --------------------------------------------------------------------------- autograd
_LAYOUT_ARGS = 8  # col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs
_IDX_X, _IDX_W, _IDX_COMP, _IDX_XR, _IDX_WR, _IDX_B = 0, 9, 10, 11, 12, 13


def _setup_context(ctx, inputs, output):
    (x, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs, weight, comp,
     x_root, root_weight, bias, mean, order) = inputs
    _, agg, basis_in = output
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(agg, basis_in)
    ctx.mean, ctx.order = mean, order
    ctx.has = (comp is not None, x_root is not None)
    ctx.save_for_backward(x, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr,
                          src_pairs, weight, comp, x_root, root_weight, agg, basis_in)


def _backward(ctx, grad_out, _grad_agg, _grad_basis):
    n_inputs = 16
    if grad_out is None:
        return (None,) * n_inputs
    (x, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs, weight, comp,
     x_root, root_weight, agg, basis_in) = ctx.saved_tensors
    nig = ctx.needs_input_grad
    needs = [bool(nig[_IDX_X]), bool(nig[_IDX_W]), bool(nig[_IDX_COMP]) and ctx.has[0],
             bool(nig[_IDX_XR]) and ctx.has[1], bool(nig[_IDX_WR]) and ctx.has[1], bool(nig[_IDX_B])]
    grads = [None] * n_inputs
    if not any(needs):
        return tuple(grads)
    dx, dw, dcomp, dxr, dwr, db = torch.ops.lmgnn.rgcn_aggregate_backward(
        grad_out, x, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs,
        weight, comp, x_root, root_weight, agg, basis_in, ctx.mean, ctx.order, needs)
    for flag, idx, g in zip(needs, (_IDX_X, _IDX_W, _IDX_COMP, _IDX_XR, _IDX_WR, _IDX_B),
                            (dx, dw, dcomp, dxr, dwr, db)):
        if flag:
            grads[idx] = g
    return tuple(grads)


torch.library.register_autograd("lmgnn::rgcn_aggregate", _backward, setup_context=_setup_context)


# --------------------------------------------------------------------------- public API
def _layout_args(layout: RelLayout) -> tuple[Tensor, ...]:
    return (layout.col, layout.pair_ptr, layout.pair_dst, layout.rel_ptr, layout.dst_ptr,
            layout.dst_pairs, layout.src_ptr, layout.src_pairs)


def rgcn_aggregate(x: Tensor, layout: RelLayout, weight: Tensor, comp: Optional[Tensor] = None,
                   x_root: Optional[Tensor] = None, root_weight: Optional[Tensor] = None,
                   bias: Optional[Tensor] = None, aggr: str = "mean",
                   order: Optional[int] = None) -> Tensor:
    """One fused R-GCN layer: relation-wise aggregation, transform, root term and bias.

    Args:
        x: Tensor  # [N_src, F_in] source features (node types concatenated, see layout)
        layout: the block's :class:`~lmgnn_fast.ops.layout.RelLayout` (R relations,
            N_dst destination rows).
        weight: Tensor  # [R, F_in, F_out] per-relation weights, or [B, F_in, F_out] bases
        comp: Tensor  # [R, B] basis coefficients (bases only)
        x_root: Tensor  # [N_dst, F_in] destination features for the root term (optional)
        root_weight: Tensor  # [F_in, F_out] (with ``x_root``)
        bias: Tensor  # [F_out] (optional)
        aggr: ``"mean"`` (``1 / |N_r(i)|`` per relation) or ``"sum"``.
        order: evaluation order (0, 3 full weights; 1, 2 bases; see the op file); ``None``
            picks the cheaper by
            :func:`choose_order`.

    Returns:
        Tensor  # [N_dst, F_out]

    Example:
        >>> layout = layout_from_coo(edge_index, edge_type, num_src=4, num_dst=3, num_relations=2)
        >>> out = rgcn_aggregate(x, layout, torch.randn(2, 8, 16))  # x: [4, 8]
    """
    if aggr not in ("mean", "sum"):
        raise ValueError(f"rgcn_aggregate: aggr must be 'mean' or 'sum', got {aggr!r}")
    if order is None:
        order = choose_order(num_pairs=layout.pair_dst.shape[0], num_dst=layout.dst_ptr.shape[0] - 1,
                             num_relations=layout.rel_ptr.shape[0] - 1,
                             num_bases=None if comp is None else weight.shape[0],
                             in_channels=x.shape[1], out_channels=weight.shape[2],
                             device=x.device.type)
    out, _, _ = torch.ops.lmgnn.rgcn_aggregate(x, *_layout_args(layout), weight, comp, x_root,
                                               root_weight, bias, aggr == "mean", order)
    return out


def rgcn_aggregate_ref(x: Tensor, layout: RelLayout, weight: Tensor, comp: Optional[Tensor] = None,
                       x_root: Optional[Tensor] = None, root_weight: Optional[Tensor] = None,
                       bias: Optional[Tensor] = None, aggr: str = "mean") -> Tensor:
    """Pure-torch reference of :func:`rgcn_aggregate` (same arguments, no ``order``): a loop
    over relations, transforming every edge's message (``[E_r, F_out]``) and summing it into
    its destination. Runs on any device and is differentiable by autograd; ``nn.RGCNConv``
    falls back to it where the extension has no kernel.
    """
    if aggr not in ("mean", "sum"):
        raise ValueError(f"rgcn_aggregate_ref: aggr must be 'mean' or 'sum', got {aggr!r}")
    num_dst = layout.dst_ptr.shape[0] - 1
    w = weight if comp is None else torch.einsum("rb,bio->rio", comp, weight)
    out = x.new_zeros((num_dst, w.shape[2]))
    src, pair = csc_to_coo(layout.pair_ptr, layout.col)
    edge_dst = layout.pair_dst.long()[pair]
    rel_ptr = layout.rel_ptr.tolist()
    pair_ptr = layout.pair_ptr.tolist()
    for r in range(layout.rel_ptr.shape[0] - 1):
        lo, hi = pair_ptr[rel_ptr[r]], pair_ptr[rel_ptr[r + 1]]
        dst = edge_dst[lo:hi]
        summed = x.new_zeros((num_dst, w.shape[2])).index_add(0, dst, x[src[lo:hi]] @ w[r])
        if aggr == "mean":
            deg = torch.bincount(dst, minlength=num_dst).clamp(min=1).to(x.dtype)
            summed = summed / deg[:, None]
        out = out + summed
    if x_root is not None:
        out = out + x_root @ root_weight
    if bias is not None:
        out = out + bias
    return out
