"""Relation-wise dot-product attention with an edge softmax per destination.

``lmgnn::hetero_attention`` computes, for destination ``i``, relation ``r`` and head ``h``,
over the in-edges ``e = (j -> i)`` of relation ``r`` in a :class:`~lmgnn_fast.ops.layout.RelLayout`::

    logit_e = scale * <q[i, r, h], k[j, h]>
    alpha_e = softmax of logit over the scope of e
    out[i, r, h] = sum_{e in N_r(i)} alpha_e * v[j, h]

with the scope ``"per_dst"`` (all in-edges of ``i`` across relations: HGT) or
``"per_dst_rel"`` (the in-edges of ``i`` of relation ``r``: relation-wise GAT). The caller
folds relation-specific key transforms into ``q`` (one query per destination and relation)
and applies relation-specific output transforms to ``out`` afterwards, so ``k`` and ``v`` are
computed once per source row. See ``csrc/ops/hetero_attention.cpp`` for the kernels' math.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from lmgnn_fast.ops.convert import csc_to_coo
from lmgnn_fast.ops.layout import RelLayout

SCOPES = ("per_dst", "per_dst_rel")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_scope(op: str, scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"{op}: scope must be 'per_dst' or 'per_dst_rel', got {scope!r}")


# --------------------------------------------------------------------------- fake kernels
@torch.library.register_fake("lmgnn::hetero_attention")
def _hetero_attention_fake(q, k, v, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs,
                           rel_slot, scale, scope):
    torch._check(q.dim() == 4, lambda: "hetero_attention: q must be 4-D [N_dst, R, H, D]")
    torch._check(k.dim() == 3 and v.dim() == 3, lambda: "hetero_attention: k and v must be 3-D [N_src, H, D]")
    torch._check(q.shape[0] == dst_ptr.shape[0] - 1, lambda: "hetero_attention: q must have N_dst rows")
    torch._check(rel_slot is not None or q.shape[1] == rel_ptr.shape[0] - 1,
                 lambda: "hetero_attention: q must have R relation slots without rel_slot")
    out = q.new_empty((q.shape[0], q.shape[1], q.shape[2], v.shape[2]))
    alpha = q.new_empty((col.shape[0], q.shape[2]), dtype=_acc_dtype(q.dtype))
    return out, alpha


@torch.library.register_fake("lmgnn::hetero_attention_backward")
def _hetero_attention_backward_fake(grad_out, q, k, v, alpha, col, pair_ptr, pair_dst, rel_ptr, dst_ptr,
                                    dst_pairs, src_ptr, src_pairs, rel_slot, scale, scope, needs, kv_shared=False):
    def maybe(flag, like):
        return torch.empty_like(like, memory_format=torch.contiguous_format) if flag else q.new_empty((0,))

    if kv_shared:
        return maybe(needs[0], q), maybe(needs[1] or needs[2], k), q.new_empty((0,))
    return maybe(needs[0], q), maybe(needs[1], k), maybe(needs[2], v)


# --------------------------------------------------------------------------- autograd
def _setup_context(ctx, inputs, output):
    q, k, v, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs, rel_slot, scale, scope = inputs
    _, alpha = output
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(alpha)
    ctx.scale, ctx.scope = scale, scope
    ctx.kv_shared = k is v  # one tensor: the backward returns one gradient for both
    ctx.save_for_backward(q, k, v, alpha, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs,
                          rel_slot)


def _backward(ctx, grad_out, _grad_alpha):
    n_inputs = 14
    if grad_out is None:
        return (None,) * n_inputs
    q, k, v, alpha, *layout = ctx.saved_tensors
    needs = [bool(ctx.needs_input_grad[i]) for i in range(3)]
    if not any(needs):
        return (None,) * n_inputs
    dq, dk, dv = torch.ops.lmgnn.hetero_attention_backward(grad_out, q, k, v, alpha, *layout, ctx.scale,
                                                           ctx.scope, needs, ctx.kv_shared)
    if ctx.kv_shared:  # grad_k + grad_v, once: autograd adds k's and v's gradients into the one tensor
        return ((dq if needs[0] else None), dk, None) + (None,) * 11
    return ((dq if needs[0] else None), (dk if needs[1] else None), (dv if needs[2] else None)) + (None,) * 11


torch.library.register_autograd("lmgnn::hetero_attention", _backward, setup_context=_setup_context)


# --------------------------------------------------------------------------- public API
def _layout_args(layout: RelLayout) -> tuple[Tensor, ...]:
    return (layout.col, layout.pair_ptr, layout.pair_dst, layout.rel_ptr, layout.dst_ptr, layout.dst_pairs,
            layout.src_ptr, layout.src_pairs)


def hetero_attention(q: Tensor, k: Tensor, v: Tensor, layout: RelLayout, scale: Optional[float] = None,
                     scope: str = "per_dst", rel_slot: Optional[Tensor] = None, return_alpha: bool = False):
    """Relation-wise attention: softmax of ``scale * <q[i, r], k[j]>`` per scope, weighted sum
    of ``v[j]`` per ``(destination, relation)``.

    Args:
        q: Tensor  # [N_dst, S, H, D] one query per destination row and relation slot (the
            relation's key transform folded in; slots without edges are not read)
        k: Tensor  # [N_src, H, D] keys of the source rows
        v: Tensor  # [N_src, H, Dv] values of the source rows
        layout: the block's :class:`~lmgnn_fast.ops.layout.RelLayout` (R relations, N_dst
            destination rows, N_src source rows).
        scale: multiplies the dot products; ``None``: ``1 / sqrt(D)``.
        scope: ``"per_dst"`` (one softmax over all in-edges of a destination, across
            relations: HGT) or ``"per_dst_rel"`` (one per destination and relation).
        rel_slot: Tensor  # [R] int64, the slot (column of q and out) of every relation;
            ``None``: slot r for relation r (S = R). Relations into one destination need
            distinct slots; relations into different node types can share one, so S can be
            the most relations into one type.
        return_alpha: also return the attention weights.

    Returns:
        out: Tensor  # [N_dst, S, H, Dv] zeros where a destination has no edge of a slot's relation
        alpha: Tensor  # [E, H] per edge in layout order (``layout.col``'s), float32
            (float64 for float64 inputs); only with ``return_alpha``

    Example:
        >>> layout = layout_from_coo(edge_index, edge_type, num_src=4, num_dst=3, num_relations=2)
        >>> out = hetero_attention(torch.randn(3, 2, 4, 8), torch.randn(4, 4, 8), torch.randn(4, 4, 8), layout)
        >>> out.shape
        torch.Size([3, 2, 4, 8])
    """
    _check_scope("hetero_attention", scope)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    out, alpha = torch.ops.lmgnn.hetero_attention(q, k, v, *_layout_args(layout), rel_slot, float(scale), scope)
    return (out, alpha) if return_alpha else out


def hetero_attention_ref(q: Tensor, k: Tensor, v: Tensor, layout: RelLayout, scale: Optional[float] = None,
                         scope: str = "per_dst", rel_slot: Optional[Tensor] = None, return_alpha: bool = False):
    """Pure-torch reference of :func:`hetero_attention` (same arguments): per-edge gathers, a
    scatter softmax and a scatter sum. Runs on any device and is differentiable by autograd;
    the attention encoders fall back to it where the extension has no kernel."""
    _check_scope("hetero_attention_ref", scope)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    n_dst, S, H = q.shape[0], q.shape[1], q.shape[2]
    R = layout.num_relations
    src, pair = csc_to_coo(layout.pair_ptr, layout.col)
    src = src.long()
    pair_rel = torch.repeat_interleave(torch.arange(R, device=q.device), layout.rel_ptr.diff())
    dst, rel = layout.pair_dst.long()[pair], pair_rel[pair]
    if rel_slot is not None:
        rel = rel_slot.to(q.device)[rel]
    slot = dst * S + rel  # the (destination, slot) row of every edge
    logit = scale * (q.reshape(n_dst * S, H, q.shape[-1])[slot] * k[src]).sum(-1).to(_acc_dtype(q.dtype))  # [E, H]
    group, n_groups = (dst, n_dst) if scope == "per_dst" else (slot, n_dst * S)
    idx = group[:, None].expand_as(logit)
    top = logit.new_full((n_groups, H), -math.inf).scatter_reduce(0, idx, logit.detach(), "amax")
    w = torch.exp(logit - top[group])
    alpha = w / w.new_zeros((n_groups, H)).index_add(0, group, w)[group]
    out = v.new_zeros((n_dst * S, H, v.shape[-1])).index_add(0, slot, alpha.to(v.dtype)[..., None] * v[src])
    out = out.view(n_dst, S, H, v.shape[-1])
    return (out, alpha) if return_alpha else out


__all__ = ["SCOPES", "hetero_attention", "hetero_attention_ref"]
