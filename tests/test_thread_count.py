"""The same inputs give the same bits at 1 and 2 threads: the fused R-GCN op (every output
and gradient, every evaluation order) and a whole stage-2 training run."""
from __future__ import annotations

import pytest
import torch

from lmgnn_fast.ops.aggregate import rgcn_aggregate
from lmgnn_fast.ops.layout import layout_from_coo

# (num_src, num_dst, num_edges, relations, F_in, F_out, bases): a narrow output over long
# reductions (the weight gradients sum over up to ~20k pairs, cut into several chunks),
# one relation with a handful of pairs, bases with a long dcomp reduction (F_in * F_out);
# orders 0 and 1 on small blocks (every relation's GEMMs in one parallel region) and above.
SHAPES = [
    (2000, 1024, 8000, 6, 128, 10, None),
    (20000, 8000, 60000, 3, 32, 3, None),
    (2000, 1024, 20000, 6, 128, 10, 4),
    (5000, 3000, 30000, 5, 64, 64, 2),
    (300, 100, 3000, 4, 16, 8, None),
    # above the small-block size (pairs x width > 2^20): relation by relation, a region each
    (20000, 8000, 60000, 4, 128, 16, None),
    (20000, 8000, 60000, 4, 128, 16, 2),
]


def _graph(shape, seed=0):
    ns, nd, e, r = shape[:4]
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, ns, (e,), generator=g)
    dst = torch.randint(0, nd, (e,), generator=g)
    et = torch.randint(0, r, (e,), generator=g)
    et[:5] = r - 1  # relation r-1 keeps few pairs
    et[5:] = torch.where(et[5:] == r - 1, 0, et[5:])
    return layout_from_coo(torch.stack([src, dst]), et, num_src=ns, num_dst=nd, num_relations=r), g


def _run(shape, order, threads):
    ns, nd, _, r, fi, fo, nb = shape
    layout, g = _graph(shape)
    ts = [torch.randn(ns, fi, generator=g), torch.randn(r if nb is None else nb, fi, fo, generator=g),
          None if nb is None else torch.randn(r, nb, generator=g), torch.randn(nd, fi, generator=g),
          torch.randn(fi, fo, generator=g), torch.randn(fo, generator=g)]
    grad = torch.randn(nd, fo, generator=g)
    ts = [None if t is None else t.requires_grad_() for t in ts]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = rgcn_aggregate(ts[0], layout, ts[1], ts[2], ts[3], ts[4], ts[5], order=order)
        out.backward(grad)
    finally:
        torch.set_num_threads(old)
    return [out.detach()] + [None if t is None else t.grad for t in ts]


@pytest.mark.parametrize("shape", SHAPES)
def test_rgcn_aggregate_same_bits_for_any_thread_count(shape):
    names = ("out", "dx", "dweight", "dcomp", "dx_root", "droot_weight", "dbias")
    for order in ((0, 3) if shape[-1] is None else (1, 2)):
        one, two = _run(shape, order, 1), _run(shape, order, 2)
        for a, b, name in zip(one, two, names):
            if a is None:
                assert b is None
                continue
            assert torch.equal(a, b), f"order {order}: {name} differs between 1 and 2 threads"
