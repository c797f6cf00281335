import os
import subprocess
import sys

import pytest
import torch

import lmgnn_fast  # noqa: F401
from lmgnn_fast.ops import choose_order, layout_from_coo, rgcn_aggregate, rgcn_aggregate_ref
from lmgnn_fast.testing import only_cuda, with_devices

ORDERS = [(0, False), (1, True), (2, True), (3, False)]  # (order, uses bases)


def _graph(num_src=40, num_dst=15, num_rel=5, num_edges=150, seed=0, empty_rel=True,
           isolated_dst=True, device="cpu", index_dtype=None):
    """Random COO graph: the last relation has no edges, some destinations have none."""
    g = torch.Generator().manual_seed(seed)
    hi_rel = num_rel - 1 if (empty_rel and num_rel > 1) else num_rel
    hi_dst = max(1, num_dst - 3) if isolated_dst else num_dst
    src = torch.randint(0, max(1, num_src // 2), (num_edges,), generator=g)  # upper half isolated
    dst = torch.randint(0, hi_dst, (num_edges,), generator=g)
    et = torch.randint(0, hi_rel, (num_edges,), generator=g)
    layout = layout_from_coo(torch.stack([src, dst]).to(device), et.to(device), num_src, num_dst,
                             num_rel, index_dtype=index_dtype)
    return layout, g


def _params(layout, f_in, f_out, bases, dtype, device, g, root=True, bias=True):
    R = layout.num_relations
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device, dtype)  # noqa: E731
    x = rnd(layout.num_src, f_in)
    if bases:
        weight, comp = rnd(bases, f_in, f_out), rnd(R, bases)
    else:
        weight, comp = rnd(R, f_in, f_out), None
    x_root = rnd(layout.num_dst, f_in) if root else None
    w_root = rnd(f_in, f_out) if root else None
    b = rnd(f_out) if bias else None
    return x, weight, comp, x_root, w_root, b


@with_devices
@pytest.mark.parametrize("order,bases", ORDERS)
@pytest.mark.parametrize("aggr", ["mean", "sum"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_matches_reference(device, order, bases, aggr, index_dtype):
    layout, g = _graph(device=device, index_dtype=index_dtype)
    assert layout.col.dtype == index_dtype
    args = _params(layout, 12, 7, 3 if bases else None, torch.float32, device, g)
    got = rgcn_aggregate(args[0], layout, *args[1:], aggr=aggr, order=order)
    want = rgcn_aggregate_ref(args[0], layout, *args[1:], aggr=aggr)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("order,bases", [(0, False), (1, True)])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_large_block_matches_reference_with_gradients(order, bases, index_dtype):
    # pairs x width above 2^20: the CPU kernel goes relation by relation (a parallel region
    # each) instead of the small-block path every other test here takes
    layout, g = _graph(num_src=20000, num_dst=8000, num_rel=4, num_edges=60000, index_dtype=index_dtype)
    assert layout.num_pairs * 128 > 1 << 20
    args = [None if t is None else t.requires_grad_() for t in _params(layout, 128, 16, 2 if bases else None,
                                                                       torch.float32, "cpu", g)]
    got = rgcn_aggregate(args[0], layout, *args[1:], aggr="mean", order=order)
    want = rgcn_aggregate_ref(args[0], layout, *args[1:], aggr="mean")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    grad = torch.randn(got.shape, generator=g)
    gots = torch.autograd.grad(got, [t for t in args if t is not None], grad)
    wants = torch.autograd.grad(want, [t for t in args if t is not None], grad)
    for a, b in zip(gots, wants):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


@with_devices
@pytest.mark.parametrize("case", ["single_relation", "no_edges", "no_dst", "no_root_no_bias", "bias_only",
                                  "many_relations", "one_edge"])
@pytest.mark.parametrize("order,bases", ORDERS)
def test_edge_cases(device, case, order, bases):
    kw = dict(device=device)
    root = bias = True
    if case == "single_relation":
        kw.update(num_rel=1, empty_rel=False)
    elif case == "no_edges":
        kw.update(num_edges=0)
    elif case == "no_dst":
        kw.update(num_dst=0, num_edges=0)
    elif case == "no_root_no_bias":
        root = bias = False
    elif case == "bias_only":
        root = False
    elif case == "many_relations":
        kw.update(num_rel=40, num_edges=60)
    elif case == "one_edge":
        kw.update(num_edges=1)
    layout, g = _graph(**kw)
    args = _params(layout, 6, 5, 2 if bases else None, torch.float64, device, g, root=root, bias=bias)
    got = rgcn_aggregate(args[0], layout, *args[1:], order=order)
    want = rgcn_aggregate_ref(args[0], layout, *args[1:])
    assert got.shape == (layout.num_dst, 5)
    torch.testing.assert_close(got, want)
    if case == "single_relation":
        assert layout.num_relations == 1
    # Destinations without neighbours get exactly the root term + bias.
    deg = layout.dst_ptr.diff()
    lonely = (deg == 0).nonzero().flatten()
    if lonely.numel():
        x, _, _, x_root, w_root, b = args
        expect = torch.zeros(lonely.numel(), 5, dtype=x.dtype, device=x.device)
        if x_root is not None:
            expect = expect + x_root[lonely] @ w_root
        if b is not None:
            expect = expect + b
        torch.testing.assert_close(got[lonely], expect)


@pytest.mark.parametrize("order,bases", ORDERS)
@pytest.mark.parametrize("aggr", ["mean", "sum"])
def test_gradcheck_every_input(order, bases, aggr):
    layout, g = _graph(num_src=14, num_dst=7, num_rel=4, num_edges=30)
    args = [t.requires_grad_() if t is not None else None
            for t in _params(layout, 4, 3, 2 if bases else None, torch.float64, "cpu", g)]
    x, weight, comp, x_root, w_root, b = args
    inputs = [t for t in args if t is not None]

    def f(*ts):
        it = iter(ts)
        vals = [next(it) if t is not None else None for t in args]
        return rgcn_aggregate(vals[0], layout, vals[1], vals[2], vals[3], vals[4], vals[5], aggr, order=order)

    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("order,bases", ORDERS)
def test_grad_only_where_needed(order, bases):
    layout, g = _graph()
    full = _params(layout, 8, 6, 3 if bases else None, torch.float64, "cpu", g)
    names = ["x", "weight", "comp", "x_root", "root_weight", "bias"]
    for i, name in enumerate(names):
        if full[i] is None:
            continue
        args = [t.detach().clone() if t is not None else None for t in full]
        args[i].requires_grad_()
        rgcn_aggregate(args[0], layout, *args[1:], order=order).square().sum().backward()
        ref = [t.detach().clone() if t is not None else None for t in full]
        ref[i].requires_grad_()
        rgcn_aggregate_ref(ref[0], layout, *ref[1:]).square().sum().backward()
        torch.testing.assert_close(args[i].grad, ref[i].grad, msg=name)
        assert all(t.grad is None for j, t in enumerate(args) if j != i and t is not None)


@with_devices
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
@pytest.mark.parametrize("order,bases", ORDERS)
def test_low_precision_against_float64(device, dtype, tol, order, bases):
    # Tolerance relative to the output scale: bf16 keeps 8 mantissa bits (one rounding of the
    # per-pair aggregate, the GEMM operands and the result), fp16 keeps 11.
    layout, g = _graph(num_src=200, num_dst=60, num_rel=6, num_edges=800, device=device)
    args64 = _params(layout, 32, 16, 3 if bases else None, torch.float64, device, g)
    args = [t.to(dtype).requires_grad_() if t is not None else None for t in args64]
    want_args = [t.to(dtype).double().requires_grad_() if t is not None else None for t in args64]
    out = rgcn_aggregate(args[0], layout, *args[1:], order=order)
    want = rgcn_aggregate_ref(want_args[0], layout, *want_args[1:])
    assert out.dtype == dtype
    scale = want.abs().max().item()
    assert (out.double() - want).abs().max().item() <= tol * scale
    gout = torch.randn(out.shape, generator=g, dtype=torch.float64).to(device)
    out.backward(gout.to(dtype))
    want.backward(gout)
    for a, w in zip(args, want_args):
        if a is None:
            continue
        s = w.grad.abs().max().item()
        assert (a.grad.double() - w.grad).abs().max().item() <= 2 * tol * s


def test_opcheck():
    for order, bases in ORDERS:
        layout, g = _graph(num_src=20, num_dst=8, num_edges=40, seed=order)
        args = [t.requires_grad_() if t is not None else None
                for t in _params(layout, 5, 4, 2 if bases else None, torch.float32, "cpu", g)]
        x, w, comp, xr, wr, b = args
        lay = (layout.col, layout.pair_ptr, layout.pair_dst, layout.rel_ptr, layout.dst_ptr,
               layout.dst_pairs, layout.src_ptr, layout.src_pairs)
        torch.library.opcheck(torch.ops.lmgnn.rgcn_aggregate.default,
                              (x, *lay, w, comp, xr, wr, b, True, order))
        out, agg, basis_in = torch.ops.lmgnn.rgcn_aggregate(x, *lay, w, comp, xr, wr, b, True, order)
        needs = [True, True, bases, True, True, True]
        torch.library.opcheck(torch.ops.lmgnn.rgcn_aggregate_backward.default,
                              (torch.randn_like(out), x.detach(), *lay, w.detach(),
                               None if comp is None else comp.detach(), xr.detach(), wr.detach(),
                               agg.detach(), basis_in.detach(), True, order, needs))


def test_torch_compile_fullgraph():
    layout, g = _graph()
    x, w, comp, xr, wr, b = _params(layout, 8, 4, 2, torch.float32, "cpu", g)
    w.requires_grad_()

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(x, w, comp, xr, wr, b):
        return rgcn_aggregate(x, layout, w, comp, xr, wr, b, order=2).relu().sum()

    loss = f(x, w, comp, xr, wr, b)
    loss.backward()
    w2 = w.detach().clone().requires_grad_()
    rgcn_aggregate_ref(x, layout, w2, comp, xr, wr, b).relu().sum().backward()
    torch.testing.assert_close(w.grad, w2.grad, rtol=1e-4, atol=1e-4)


def test_non_contiguous_and_thread_count():
    layout, g = _graph(num_src=300, num_dst=100, num_edges=3000)
    x, w, comp, xr, wr, b = _params(layout, 16, 8, None, torch.float32, "cpu", g)
    xt = x.t().contiguous().t()
    assert not xt.is_contiguous()
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = rgcn_aggregate(xt, layout, w, comp, xr, wr, b)
        torch.set_num_threads(max(2, old))
        many = rgcn_aggregate(x, layout, w, comp, xr, wr, b)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, many)


def test_choose_order_cost_model():
    # Bases on a GPU, by FLOPs: combining wins when the pairs outnumber N_dst * B (many
    # relations per destination). On the CPU its extra [N_dst, B * F_in] passes are counted
    # and forming W (streamed relation by relation) wins there.
    kw = dict(num_dst=10_000, in_channels=768, out_channels=128)
    assert choose_order(num_pairs=10_000, num_relations=4, num_bases=None, **kw) == 0
    assert choose_order(num_pairs=100_000, num_relations=64, num_bases=4, device="cuda", **kw) == 2
    assert choose_order(num_pairs=100_000, num_relations=64, num_bases=4, device="cpu", **kw) == 1
    assert choose_order(num_pairs=10_000, num_relations=2, num_bases=4, device="cuda", **kw) == 1
    # Full weights: dense pairs (order 3) where nearly every (dst, relation) pair has edges,
    # per-pair GEMMs (order 0) where most pairs are empty.
    kw = dict(num_dst=10_000, in_channels=128, out_channels=128)
    assert choose_order(num_pairs=36_000, num_relations=4, num_bases=None, **kw) == 3
    assert choose_order(num_pairs=90_000, num_relations=64, num_bases=None, **kw) == 0
    # Near the tie the device decides: order 0 moves fewer elements on the CPU (products
    # added onto their rows while in cache) than on CUDA (a [P, F_out] buffer and a reduction).
    kw = dict(num_pairs=28_206, num_dst=9_259, num_relations=4, num_bases=None, in_channels=128,
              out_channels=128)
    assert choose_order(device="cpu", **kw) == 0
    assert choose_order(device="cuda", **kw) == 3
    # On a GPU order 0's grouped GEMM is weighted 3x against cuBLAS (measured), so order 3
    # also takes wide inputs at R = 4; never where z outgrows order 0's buffers (R = 16).
    kw = dict(num_pairs=36_762, num_dst=10_000, num_bases=None, in_channels=768, out_channels=256)
    assert choose_order(num_relations=4, device="cpu", **kw) == 0
    assert choose_order(num_relations=4, device="cuda", **kw) == 3
    assert choose_order(num_relations=16, device="cuda", **dict(kw, num_pairs=74_427)) == 0


def test_dense_order_saves_aggregate_and_skips_pairs():
    layout, g = _graph()
    x, w, comp, xr, wr, b = _params(layout, 6, 4, None, torch.float32, "cpu", g)
    lay = [layout.col, layout.pair_ptr, layout.pair_dst, layout.rel_ptr, layout.dst_ptr,
           layout.dst_pairs, layout.src_ptr, layout.src_pairs]
    out, agg, z = torch.ops.lmgnn.rgcn_aggregate(x, *lay, w, None, xr, wr, b, True, 3)
    R, n_dst = layout.num_relations, layout.num_dst
    assert agg.shape == (0, 6) and z.shape == (n_dst, R * 6)
    # z holds the per-relation means; the last relation has no edges and isolated
    # destinations have none: those slots are exact zeros.
    zr = z.view(n_dst, R, 6)
    assert torch.equal(zr[:, R - 1], torch.zeros(n_dst, 6))
    assert torch.equal(zr[n_dst - 3:], torch.zeros(3, R, 6))
    torch.testing.assert_close(out, zr.reshape(n_dst, -1) @ w.reshape(-1, 4) + xr @ wr + b)
    # dst_pairs out of relation order within a destination is rejected (order 3 fills slots)
    bad = [t.clone() for t in lay]
    dp, dptr = bad[5], layout.dst_ptr
    i = next(i for i in range(n_dst) if int(dptr[i + 1] - dptr[i]) >= 2)
    lo = int(dptr[i])
    dp[lo], dp[lo + 1] = int(dp[lo + 1]), int(dp[lo])
    with pytest.raises(RuntimeError,
                       match=r"rgcn_aggregate: dst_pairs of destination \d+ are not in increasing relation order"):
        torch.ops.lmgnn.rgcn_aggregate(x, *bad, w, None, xr, wr, b, True, 3)


def test_bad_inputs():
    layout, g = _graph()
    x, w, comp, xr, wr, b = _params(layout, 6, 4, None, torch.float32, "cpu", g)
    lay = [layout.col, layout.pair_ptr, layout.pair_dst, layout.rel_ptr, layout.dst_ptr,
           layout.dst_pairs, layout.src_ptr, layout.src_pairs]
    op = torch.ops.lmgnn.rgcn_aggregate
    with pytest.raises(IndexError, match=r"rgcn_aggregate: col holds id 40 out of range for x rows \(N_src\) \(40\)"):
        bad = lay.copy()
        bad[0] = lay[0].clone()
        bad[0][3] = 40
        op(x, *bad, w, None, xr, wr, b, True, 0)
    with pytest.raises(RuntimeError, match=r"weight must be \[R = 5, F_in, F_out\]"):
        op(x, *lay, w[:3], None, xr, wr, b, True, 0)
    with pytest.raises(RuntimeError, match=r"order must be 0 .* got 7"):
        op(x, *lay, w, None, xr, wr, b, True, 7)
    with pytest.raises(RuntimeError, match=r"needs comp"):
        op(x, *lay, w, None, xr, wr, b, True, 2)
    with pytest.raises(RuntimeError, match=r"x_root must be \[N_dst = 15"):
        op(x, *lay, w, None, xr[:3], wr, b, True, 0)
    with pytest.raises(RuntimeError, match=r"pair_ptr decreases"):
        bad = lay.copy()
        bad[1] = lay[1].clone()
        bad[1][2] = int(bad[1][3]) + 1
        op(x, *bad, w, None, xr, wr, b, True, 0)
    with pytest.raises(RuntimeError, match=r"is Double but x is Float|weight is Double"):
        op(x, *lay, w.double(), None, xr, wr, b, True, 0)
    # Two pairs of one relation naming the same destination (a malformed layout) are
    # refused on the CPU, whatever the order, rather than summed with a race.
    rp = layout.rel_ptr
    r = next(r for r in range(len(rp) - 1) if int(rp[r + 1] - rp[r]) >= 2)
    bad = lay.copy()
    bad[2] = lay[2].clone()
    bad[2][int(rp[r]) + 1] = bad[2][int(rp[r])]
    for order in (0, 3):
        with pytest.raises(RuntimeError, match=rf"pair_dst must increase strictly within a relation; relation {r}"):
            op(x, *bad, w, None, xr, wr, b, True, order)
    with pytest.raises(ValueError, match=r"aggr must be 'mean' or 'sum'"):
        rgcn_aggregate(x, layout, w, aggr="max")
    with pytest.raises(IndexError, match=r"layout: edge_type id 3 out of range \(3\)"):
        layout_from_coo(torch.tensor([[0], [0]]), torch.tensor([3]), 2, 2, 3)


def test_layout_without_kernels_is_the_same(monkeypatch):
    # On a device without lmgnn kernels the layout builders sort with coo_to_csc_ref.
    want, _ = _graph(seed=4)
    import lmgnn_fast.ops.layout as layout_mod

    monkeypatch.setattr(layout_mod, "kernel_available", lambda device: False)
    got, _ = _graph(seed=4)
    for name in ("col", "pair_ptr", "pair_dst", "rel_ptr", "dst_ptr", "dst_pairs", "src_ptr", "src_pairs"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name


def _layout_list(layout):
    return [layout.col, layout.pair_ptr, layout.pair_dst, layout.rel_ptr, layout.dst_ptr,
            layout.dst_pairs, layout.src_ptr, layout.src_pairs]


def test_inconsistent_destination_pairs_are_refused():
    # In range, but dst_ptr/dst_pairs and pair_dst disagree: orders 2 and 3 reduce through
    # dst_pairs (order 3 would leave a slot of z unwritten), so every order raises.
    layout, g = _graph()
    x, w, comp, xr, wr, b = _params(layout, 6, 4, None, torch.float32, "cpu", g)
    _, vb, cb, _, _, _ = _params(layout, 6, 4, 2, torch.float32, "cpu", g)
    lay = _layout_list(layout)
    op = torch.ops.lmgnn.rgcn_aggregate
    pd, rp = layout.pair_dst.tolist(), layout.rel_ptr.tolist()
    # a pair whose destination can move up by one and stay strictly increasing in its relation
    p = next(p for p in range(len(pd)) if (p + 1 not in rp and pd[p] + 1 < pd[p + 1])
             or (p + 1 in rp and pd[p] + 1 < layout.num_dst))
    bad = [t.clone() for t in lay]
    bad[2][p] += 1
    for order, (ww, cc) in zip(range(4), [(w, None), (vb, cb), (vb, cb), (w, None)]):
        with pytest.raises(RuntimeError, match=rf"rgcn_aggregate: dst_pairs\[\d+\] lists pair {p} under destination "
                                               rf"{pd[p]} but pair_dst\[{p}\] = {pd[p] + 1}"):
            op(x, *bad, ww, cc, xr, wr, b, True, order)
    # two destinations' pairs swapped inside dst_pairs
    dptr = layout.dst_ptr.tolist()
    i, j = [i for i in range(layout.num_dst) if dptr[i + 1] > dptr[i]][:2]
    bad = [t.clone() for t in lay]
    bad[5][dptr[i]], bad[5][dptr[j]] = lay[5][dptr[j]], lay[5][dptr[i]]
    with pytest.raises(RuntimeError,
                       match=rf"rgcn_aggregate: dst_pairs\[{dptr[i]}\] lists pair \d+ under destination {i}"):
        op(x, *bad, w, None, xr, wr, b, True, 3)


def test_inconsistent_source_pairs_are_refused():
    # src_ptr/src_pairs must hold the pair of every edge of each source row: the gradient
    # w.r.t. x is summed through them. Swapped entries or shifted pointers raise.
    layout, g = _graph()
    x, w, comp, xr, wr, b = _params(layout, 6, 4, None, torch.float32, "cpu", g)
    lay = _layout_list(layout)
    bwd = torch.ops.lmgnn.rgcn_aggregate_backward
    for order in (0, 3):
        out, agg, basis = torch.ops.lmgnn.rgcn_aggregate(x, *lay, w, None, xr, wr, b, True, order)
        grad = torch.randn_like(out)
        sp, spairs = layout.src_ptr.tolist(), layout.src_pairs.tolist()
        # two entries of different pairs in different source rows
        k1 = 0
        k2 = next(k for k in range(len(spairs)) if spairs[k] != spairs[k1] and k >= sp[1])
        bad = [t.clone() for t in lay]
        bad[7][k1], bad[7][k2] = lay[7][k2], lay[7][k1]
        with pytest.raises(RuntimeError, match=r"rgcn_aggregate_backward: src_pairs\[\d+\] = \d+ but edge \d+ "
                                               r"\(source row \d+\) belongs to pair \d+"):
            bwd(grad, x, *bad, w, None, xr, wr, agg, basis, True, order, [True] + [False] * 5)
        # a source row given one edge too many (and its neighbour one too few)
        j = next(j for j in range(layout.num_src - 1) if sp[j + 2] > sp[j + 1])
        bad = [t.clone() for t in lay]
        bad[6][j + 1] += 1
        with pytest.raises(RuntimeError, match=r"rgcn_aggregate_backward: (src_ptr gives source row|src_pairs\[)"):
            bwd(grad, x, *bad, w, None, xr, wr, agg, basis, True, order, [True] + [False] * 5)
        # the weight gradient alone does not read src_ptr/src_pairs: no check, same result
        good = bwd(grad, x, *lay, w, None, xr, wr, agg, basis, True, order, [False, True] + [False] * 4)
        other = bwd(grad, x, *bad, w, None, xr, wr, agg, basis, True, order, [False, True] + [False] * 4)
        torch.testing.assert_close(good[1], other[1], rtol=0, atol=0)


_BUFFER_SCRIPT = """
import sys, torch, lmgnn_fast
from lmgnn_fast.ops import layout_from_coo
from lmgnn_fast.ops import rgcn_aggregate
g = torch.Generator().manual_seed(0)
E, ns, nd, R, F = 40_000, 20_000, 5_000, 4, 128  # agg, z and dx buffers of 8-20 MiB
ei = torch.stack([torch.randint(0, ns, (E,), generator=g), torch.randint(0, nd, (E,), generator=g)])
layout = layout_from_coo(ei, torch.randint(0, R, (E,), generator=g), ns, nd, R)
x = torch.randn(ns, F, generator=g, requires_grad=True)
w = torch.randn(R, F, 64, generator=g, requires_grad=True)
outs = []
for order in (0, 3):
    out = rgcn_aggregate(x, layout, w, order=order)
    dx, dw = torch.autograd.grad(out.square().sum(), (x, w))
    outs += [out, dx, dw]
outs.append(lmgnn_fast.ops.cpu_buffer_cache_info())
torch.save(outs, sys.argv[1])
"""


@pytest.mark.parametrize("env", [{"LMGNN_CPU_HUGE_PAGES": "1"}, {"LMGNN_CPU_BUFFER_CACHE_MB": "0"}],
                         ids=["huge_pages", "no_buffer_cache"])
def test_cpu_buffer_settings_leave_results_unchanged(tmp_path, env):
    # LMGNN_CPU_HUGE_PAGES=1 madvises the cached blocks for huge pages; LMGNN_CPU_BUFFER_CACHE_MB=0
    # serves every buffer with at::empty instead of the block cache. Neither may change a value.
    results = []
    for setting in (env, {}):
        path = tmp_path / f"out{len(results)}.pt"
        run_env = dict(os.environ, OMP_NUM_THREADS="1", **setting)
        for k in ("LMGNN_CPU_HUGE_PAGES", "LMGNN_CPU_BUFFER_CACHE_MB"):
            if k not in setting:
                run_env.pop(k, None)
        subprocess.run([sys.executable, "-c", _BUFFER_SCRIPT, str(path)], env=run_env, check=True, timeout=300)
        results.append(torch.load(path))
    assert len(results[0]) == 7
    *outs_a, info_a = results[0]
    *outs_b, info_b = results[1]
    for a, b in zip(outs_a, outs_b):
        assert a.abs().sum() > 0
        assert torch.equal(a, b)
    assert info_b["hits"] > 0  # the default run reused blocks
    if env.get("LMGNN_CPU_BUFFER_CACHE_MB") == "0":
        assert info_a["limit_bytes"] == 0 and info_a["hits"] == info_a["misses"] == 0


def test_cpu_buffer_cache_reuses_blocks_and_reports_them():
    from lmgnn_fast.ops import cpu_buffer_cache_info, empty_cpu_buffer_cache

    g = torch.Generator().manual_seed(1)
    E, ns, nd, R, F = 20_000, 8_000, 2_000, 4, 64  # dx 2 MiB, agg several MiB
    ei = torch.stack([torch.randint(0, ns, (E,), generator=g), torch.randint(0, nd, (E,), generator=g)])
    layout = layout_from_coo(ei, torch.randint(0, R, (E,), generator=g), ns, nd, R)
    x = torch.randn(ns, F, generator=g, requires_grad=True)
    w = torch.randn(R, F, 32, generator=g, requires_grad=True)

    def step():
        out = rgcn_aggregate(x, layout, w, order=0)
        return torch.autograd.grad(out.square().sum(), (x, w))

    first = step()
    before = cpu_buffer_cache_info()
    second = step()
    after = cpu_buffer_cache_info()
    assert after["hits"] > before["hits"]  # the second call reused the first call's blocks
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    # dx (8000 x 64 float32 = 2 MiB) lives in a cached block while we hold it
    assert after["in_use_bytes"] >= x.numel() * 4
    # an ordinary tensor: its storage resizes (a new block, the values kept)
    dx = second[0].clone()
    grown = second[0].resize_(2 * ns, F)
    assert torch.equal(grown[:ns], dx)
    del dx, grown
    del first, second
    assert cpu_buffer_cache_info()["in_use_bytes"] < after["in_use_bytes"]
    assert cpu_buffer_cache_info()["cached_bytes"] > 0
    empty_cpu_buffer_cache()
    assert cpu_buffer_cache_info()["cached_bytes"] == 0

    # the profiler sees the cached blocks as allocations (memory profiles stay honest)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        dx, _ = step()
    sizes = [e.nbytes() for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    # one of our blocks (a whole number of 2 MiB, torch's allocator reports exact sizes)
    assert any(n >= dx.numel() * 4 and n % (2 << 20) == 0 for n in sizes)
    assert sum(n for n in sizes if n < 0) < 0  # and frees


def test_cpu_buffer_cache_limit_must_be_a_number():
    env = dict(os.environ, LMGNN_CPU_BUFFER_CACHE_MB="lots")
    script = _BUFFER_SCRIPT.replace("sys.argv[1]", "'/dev/null'")
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "LMGNN_CPU_BUFFER_CACHE_MB must be a whole number of MiB >= 0, got 'lots'" in res.stderr


_FULL_CHECKS_SCRIPT = """
import torch, lmgnn_fast
from lmgnn_fast.ops import layout_from_coo
g = torch.Generator().manual_seed(0)
ei = torch.stack([torch.randint(0, 20, (80,), generator=g), torch.randint(0, 10, (80,), generator=g)])
layout = layout_from_coo(ei, torch.randint(0, 3, (80,), generator=g), 20, 10, 3).to("cuda")
lay = [layout.col, layout.pair_ptr, layout.pair_dst, layout.rel_ptr, layout.dst_ptr,
       layout.dst_pairs, layout.src_ptr, layout.src_pairs]
x, w = torch.randn(20, 4, device="cuda"), torch.randn(3, 4, 2, device="cuda")
out, agg, basis = torch.ops.lmgnn.rgcn_aggregate(x, *lay, w, None, None, None, None, True, 0)
sp = lay[7].clone()
k = next(k for k in range(1, sp.numel()) if int(sp[k]) != int(sp[0]))
sp[0], sp[k] = lay[7][k], lay[7][0]
try:
    torch.ops.lmgnn.rgcn_aggregate_backward(torch.ones_like(out), x, *lay[:7], sp, w, None, None, None, agg,
                                            basis, True, 0, [True] + [False] * 5)
except RuntimeError as e:
    print(e)
"""


@only_cuda
def test_full_input_checks_on_cuda():
    # LMGNN_CHECK_INPUTS=full: the CUDA kernels run the CPU kernels' layout checks (a
    # swapped src_pairs entry, which no in-kernel assert can see) and raise the same error.
    env = dict(os.environ, LMGNN_CHECK_INPUTS="full")
    res = subprocess.run([sys.executable, "-c", _FULL_CHECKS_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "rgcn_aggregate_backward: src_pairs[" in res.stdout, res.stdout
