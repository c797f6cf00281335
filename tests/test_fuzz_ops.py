"""Seeded fuzzing of the nine ``torch.ops.lmgnn`` operators with mutated arguments.

Every op runs a few hundred calls in a subprocess of its own (so that a crash or a hang is
observed, not suffered): each call starts from small random valid inputs, applies one
mutation (ids or slots out of range, negative values, wrong dtypes and shapes, empty
tensors, inconsistent layouts, garbage hash maps, ...) and must then either

- raise a clean exception (``RuntimeError``, ``ValueError``, ``IndexError``, ``TypeError``),
  never for a mutation that keeps the input valid, or
- return what the pure-torch reference returns for the same inputs (exact for indices and
  cache rows, ``allclose`` in float64 for the aggregation), or
- for a cache state made garbage on purpose (a corrupt hash map or slot table given to an
  admission, whose result is then undefined), simply return.

The parent fails on a subprocess killed by a signal or running past its time limit, naming
the op and the mutation of the last call begun, and on any wrong output or refused valid
input. ``LMGNN_FUZZ_REPORT=<file>`` appends the per-op counts as JSON lines (the numbers in
``benchmarks/results/fuzz.md``). Run one worker by hand with
``python tests/test_fuzz_ops.py <op> <seed> <calls>``.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

OPS = ["coo_to_csc", "hetero_neighbor_sample", "rgcn_aggregate", "rgcn_aggregate_backward",
       "cache_lookup", "cache_gather", "cache_update", "cache_admit", "cache_admit_lfu"]
CALLS = 400  # per op
SEED = 20261128
TIME_LIMIT_S = 150  # per op (one subprocess); the calls take a few seconds

CLEAN = (RuntimeError, ValueError, IndexError, TypeError)


# ================================================================================ parent
def _run_worker(op: str):
    """(summary, None) from the op's worker, or (None, why) for a crash, hang or failure."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.Popen([sys.executable, __file__, op, str(SEED), str(CALLS)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    hang = False
    try:
        out, err = proc.communicate(timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        hang = True
    begun, summary = None, None
    for line in out.splitlines():
        if line.startswith("BEGIN "):
            begun = line[len("BEGIN "):]
        elif line.startswith("END "):
            begun = None
        elif line.startswith("SUMMARY "):
            summary = json.loads(line[len("SUMMARY "):])
    where = f"{op}, call {begun}" if begun else f"{op} (outside a call)"
    if hang:
        return None, f"hang: {where} ran past {TIME_LIMIT_S} s"
    if proc.returncode < 0:
        return None, f"crash: {where} killed by signal {-proc.returncode}\n{err[-2000:]}"
    if proc.returncode != 0 or summary is None:
        return None, f"worker for {op} failed:\n{err[-4000:]}"
    return summary, None


@pytest.fixture(scope="module")
def fuzz_results():
    """Every op's worker, two at a time (CI has two cores)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(OPS, pool.map(_run_worker, OPS)))


@pytest.mark.parametrize("op", OPS)
def test_fuzz_op(op, fuzz_results):
    summary, failure = fuzz_results[op]
    assert failure is None, failure
    report = os.environ.get("LMGNN_FUZZ_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps(summary) + "\n")
    assert summary["calls"] == CALLS
    assert not summary["wrong"], f"{op}: wrong outputs or refused valid inputs:\n" + "\n".join(summary["wrong"][:20])
    # Both kinds of outcome were exercised: the mutations reach the checks and the valid
    # cases reach the kernels.
    assert summary["errors"] > 0 and summary["equal"] > 0, summary


# ================================================================================ worker
def _probe(keys: list, vals: list, x: int) -> int:
    """The documented lookup: linear probing from mix64(id) & (H - 1), at most H positions,
    stopping at an empty key (-1); tombstones (-2) and other ids are passed over."""
    from lmgnn_fast.ops.random import mix64
    h = len(keys)
    p = mix64(x & ((1 << 64) - 1)) & (h - 1)
    for _ in range(h):
        if keys[p] == x:
            return vals[p]
        if keys[p] == -1:
            return -1
        p = (p + 1) & (h - 1)
    return -1


class Refuse(Exception):
    """The reference's verdict that the input is invalid."""


def _same(a, b, close=False) -> bool:
    import torch
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y, close) for x, y in zip(a, b))
    if a is None or b is None:
        return a is None and b is None
    if not isinstance(a, torch.Tensor):
        return a == b
    if a.shape != b.shape:
        return False
    if close:
        return torch.allclose(a.double(), b.double(), rtol=1e-7, atol=1e-9)
    return a.dtype == b.dtype and torch.equal(a, b)


def _pick(rng, valid, invalid, garbage=()):
    """(mutation, kind) with kind 'valid', 'invalid' or 'garbage'; valid ones a third of the time."""
    r = rng.random()
    if garbage and r < 0.2:
        return rng.choice(garbage), "garbage"
    if r < 0.45:
        return rng.choice(valid), "valid"
    return rng.choice(invalid), "invalid"


# ----------------------------------------------------------------------------- coo_to_csc
def _case_coo_to_csc(rng, g):
    import torch

    from lmgnn_fast.ops import coo_to_csc_ref
    m, kind = _pick(rng, ["base", "int32", "empty", "noncontig", "one_dst"],
                    ["dst_high", "dst_negative", "num_dst_negative", "length", "float", "mixed_dtype", "two_d",
                     "num_dst_zero", "src_negative"])
    e, nd = rng.randint(1, 30), rng.randint(1, 10)
    src, dst = torch.randint(0, 50, (e,), generator=g), torch.randint(0, nd, (e,), generator=g)
    if m == "int32":
        src, dst = src.int(), dst.int()
    elif m == "empty":
        src, dst = src[:0], dst[:0]
    elif m == "noncontig":
        src, dst = torch.stack([src, src]).t()[:, 0], torch.stack([dst, dst]).t()[:, 1]
    elif m == "one_dst":
        dst = torch.full_like(dst, nd - 1)
    elif m == "dst_high":
        dst[rng.randrange(e)] = nd + rng.randint(0, 5)
    elif m == "dst_negative":
        dst[rng.randrange(e)] = -rng.randint(1, 5)
    elif m == "num_dst_negative":
        nd = -rng.randint(1, 3)
    elif m == "length":
        dst = dst[:-1]
    elif m == "float":
        src = src.float()
    elif m == "mixed_dtype":
        src = src.int()
    elif m == "two_d":
        src, dst = src.view(-1, 1), dst.view(-1, 1)
    elif m == "num_dst_zero":
        nd = 0
    elif m == "src_negative":  # sources are copied, never dereferenced: valid
        src[rng.randrange(e)] = -7

    def ref():
        if nd < 0 or src.dim() != 1 or dst.dim() != 1 or src.numel() != dst.numel() or src.dtype != dst.dtype \
                or src.is_floating_point():
            raise Refuse
        if dst.numel() and (int(dst.min()) < 0 or int(dst.max()) >= nd):
            raise Refuse
        return coo_to_csc_ref(src, dst, nd)

    return m, kind if m != "src_negative" else "valid", lambda: torch.ops.lmgnn.coo_to_csc(src, dst, nd), ref, False


# ------------------------------------------------------------------ hetero_neighbor_sample
def _case_hetero_neighbor_sample(rng, g):
    import torch

    from lmgnn_fast.ops import coo_to_csc, hetero_neighbor_sample_ref
    m, kind = _pick(rng, ["base", "int32", "empty_seeds", "huge_fanout", "replace", "exclude", "all_fanouts"],
                    ["seed_high", "seed_negative", "indptr_decreasing", "indptr_end", "indptr_length",
                     "indices_high", "indices_negative", "eid_length", "fanouts_count", "src_type",
                     "num_nodes_negative", "exclude_unsorted", "exclude_high", "float_indices", "dup_seeds"])
    nn = [rng.randint(1, 8), rng.randint(1, 8)]
    src_type, dst_type = [0, 1, 0], [1, 0, 0]
    indptr, indices, eid = [], [], []
    for s, d in zip(src_type, dst_type):
        e = rng.randint(0, 25)
        csc = coo_to_csc(torch.randint(0, nn[s], (e,), generator=g), torch.randint(0, nn[d], (e,), generator=g), nn[d])
        indptr.append(csc[0])
        indices.append(csc[1])
        eid.append(torch.randperm(e, generator=g))
    seeds = [torch.randperm(n, generator=g)[: rng.randint(0, n)] for n in nn]
    hops = rng.randint(1, 2)
    fanouts = [rng.choice([-1, 0, 1, 2, 3, 5]) for _ in range(3 * hops)]
    replace, seed, exclude = rng.random() < 0.3, rng.randint(0, 2**40), None
    if m == "int32":
        indices = [i.int() for i in indices]
        seeds = [s.int() for s in seeds]
    elif m == "empty_seeds":
        seeds = [s[:0] for s in seeds]
    elif m == "huge_fanout":
        fanouts, replace = [rng.choice([64, 10**4])] * len(fanouts), False  # above every degree
    elif m == "replace":
        replace = True
    elif m == "exclude":
        exclude = [torch.unique(torch.randint(0, max(1, i.numel()), (3,), generator=g))[: i.numel()] for i in indices]
    elif m == "all_fanouts":
        fanouts = [-1] * len(fanouts)
    elif m == "seed_high":
        seeds[0] = torch.cat([seeds[0], torch.tensor([nn[0] + rng.randint(0, 3)])])
    elif m == "seed_negative":
        seeds[1] = torch.cat([seeds[1], torch.tensor([-1])])
    elif m == "indptr_decreasing":
        r = rng.randrange(3)
        indptr[r] = indptr[r].clone()
        indptr[r][rng.randrange(1, indptr[r].numel())] = -3 if rng.random() < 0.5 else 10**6
    elif m == "indptr_end":
        indptr[0] = indptr[0].clone()
        indptr[0][-1] += rng.choice([-1, 1, 100])
    elif m == "indptr_length":
        indptr[1] = indptr[1][:-1]
    elif m == "indices_high":
        r = rng.randrange(3)
        if indices[r].numel():
            indices[r] = indices[r].clone()
            indices[r][rng.randrange(indices[r].numel())] = nn[src_type[r]] + rng.randint(0, 9)
        else:
            seeds[0] = torch.tensor([nn[0]])
    elif m == "indices_negative":
        r = rng.randrange(3)
        if indices[r].numel():
            indices[r] = indices[r].clone()
            indices[r][rng.randrange(indices[r].numel())] = -rng.randint(1, 9)
        else:
            seeds[1] = torch.tensor([-1])
    elif m == "eid_length":
        eid[2] = torch.cat([eid[2], torch.tensor([100])])
    elif m == "fanouts_count":
        fanouts = fanouts + [1]
    elif m == "src_type":
        src_type = [0, 2, 0]
    elif m == "num_nodes_negative":
        nn = [nn[0], -1]
    elif m == "exclude_unsorted":
        exclude = [torch.tensor([1, 0]) for _ in indices]
    elif m == "exclude_high":
        exclude = [torch.tensor([i.numel() + 2]) for i in indices]
    elif m == "float_indices":
        indices[0] = indices[0].float()
    elif m == "dup_seeds":
        seeds[0] = torch.cat([seeds[0], seeds[0][:1]]) if seeds[0].numel() else torch.tensor([0, 0])

    args = (indptr, indices, eid, src_type, dst_type, nn, seeds, fanouts)
    if m in ("indices_high", "indices_negative", "indptr_decreasing"):
        # The sampler checks the CSC where it reads it (the neighbourhoods of the nodes it
        # visits; a full scan per call would cost O(E)): a corrupt entry elsewhere is never
        # read, and the output must then be the reference's.
        kind = "any"

    def ref():
        if kind == "invalid":  # the reference does not validate: any output is suspect
            raise Refuse
        try:
            return hetero_neighbor_sample_ref(*args, replace=replace, seed=seed, exclude=exclude)
        except Exception as e:  # noqa: BLE001  (the reference read the corrupt entry)
            raise Refuse from e

    def call():
        return torch.ops.lmgnn.hetero_neighbor_sample(indptr, indices, eid, src_type, dst_type, nn, seeds, fanouts,
                                                      replace, seed, exclude, None)

    return m, kind, call, ref, False


# --------------------------------------------------------------------------- rgcn_aggregate
_LAYOUT_FIELDS = ("col", "pair_ptr", "pair_dst", "rel_ptr", "dst_ptr", "dst_pairs", "src_ptr", "src_pairs")
_RGCN_VALID = ["base", "int32", "no_edges", "noncontig_x", "sum", "no_root", "one_relation"]
_RGCN_INVALID = ["swap_pair_dst", "shift_pair_dst", "swap_dst_pairs", "swap_col", "swap_src_pairs", "shift_src_ptr",
                 "col_high", "col_negative", "pair_ptr_decreasing", "rel_ptr_end", "dst_ptr_shift", "pair_dst_high",
                 "dst_pairs_high", "src_pairs_high", "weight_r", "x_int", "weight_dtype", "order_bad", "comp_missing",
                 "x_root_shape", "bias_shape", "pair_ptr_int32", "mixed_index_dtypes", "col_2d", "src_ptr_length"]


def _rgcn_inputs(rng, g, m):
    import torch

    from lmgnn_fast.ops.layout import layout_from_coo
    ns, nd = rng.randint(1, 12), rng.randint(1, 8)
    R = 1 if m == "one_relation" else rng.randint(1, 4)
    e = 0 if m == "no_edges" else rng.randint(1, 40)
    ei = torch.stack([torch.randint(0, ns, (e,), generator=g), torch.randint(0, nd, (e,), generator=g)])
    layout = layout_from_coo(ei, torch.randint(0, R, (e,), generator=g), ns, nd, R,
                             index_dtype=torch.int32 if m == "int32" else torch.int64)
    order = rng.randrange(4)
    f_in, f_out, nb = rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 3)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    x = rnd(ns, f_in)
    if m == "noncontig_x":
        x = rnd(f_in, ns).t()
    bases = order in (1, 2)
    w, comp = (rnd(nb, f_in, f_out), rnd(R, nb)) if bases else (rnd(R, f_in, f_out), None)
    root = m != "no_root" and rng.random() < 0.7
    xr, wr = (rnd(nd, f_in), rnd(f_in, f_out)) if root else (None, None)
    b = rnd(f_out) if rng.random() < 0.6 else None
    lay = {k: getattr(layout, k).clone() for k in _LAYOUT_FIELDS}
    p = dict(x=x, w=w, comp=comp, xr=xr, wr=wr, b=b, mean=m != "sum" and rng.random() < 0.7, order=order)
    return lay, p, ns, nd


def _swap(rng, t):
    if t.numel() >= 2:
        i, j = rng.sample(range(t.numel()), 2)
        t[i], t[j] = t[j].clone(), t[i].clone()


def _mutate_layout(rng, m, lay, p, nd):
    import torch
    pick = lambda t: rng.randrange(t.numel()) if t.numel() else None  # noqa: E731
    if m == "swap_pair_dst":
        _swap(rng, lay["pair_dst"])
    elif m == "shift_pair_dst" and lay["pair_dst"].numel():
        i = pick(lay["pair_dst"])
        lay["pair_dst"][i] = (int(lay["pair_dst"][i]) + 1) % nd
    elif m == "swap_dst_pairs":
        _swap(rng, lay["dst_pairs"])
    elif m == "swap_col":
        _swap(rng, lay["col"])
    elif m == "swap_src_pairs":
        _swap(rng, lay["src_pairs"])
    elif m == "shift_src_ptr" and lay["src_ptr"].numel() > 2:
        lay["src_ptr"][rng.randrange(1, lay["src_ptr"].numel() - 1)] += rng.choice([-1, 1])
    elif m == "col_high" and lay["col"].numel():
        lay["col"][pick(lay["col"])] = p["x"].shape[0] + rng.randint(0, 4)
    elif m == "col_negative" and lay["col"].numel():
        lay["col"][pick(lay["col"])] = -1
    elif m == "pair_ptr_decreasing" and lay["pair_ptr"].numel() > 2:
        lay["pair_ptr"][1] = int(lay["pair_ptr"][-1]) + 1
    elif m == "rel_ptr_end":
        lay["rel_ptr"][-1] += 1
    elif m == "dst_ptr_shift" and lay["dst_ptr"].numel() > 2:
        lay["dst_ptr"][rng.randrange(1, lay["dst_ptr"].numel() - 1)] += rng.choice([-1, 1])
    elif m == "pair_dst_high" and lay["pair_dst"].numel():
        lay["pair_dst"][pick(lay["pair_dst"])] = nd + rng.randint(0, 3)
    elif m == "dst_pairs_high" and lay["dst_pairs"].numel():
        lay["dst_pairs"][pick(lay["dst_pairs"])] = lay["dst_pairs"].numel() + rng.randint(0, 3)
    elif m == "src_pairs_high" and lay["src_pairs"].numel():
        lay["src_pairs"][pick(lay["src_pairs"])] = -2
    elif m == "weight_r":
        p["w"] = p["w"][:-1] if p["comp"] is None else p["w"]
        if p["comp"] is not None:
            p["comp"] = p["comp"][:-1]
    elif m == "x_int":
        p["x"] = p["x"].long()
    elif m == "weight_dtype":
        p["w"] = p["w"].float()
    elif m == "order_bad":
        p["order"] = rng.choice([-1, 4, 7])
    elif m == "comp_missing":
        p["comp"] = None if p["comp"] is not None else torch.ones(lay["rel_ptr"].numel() - 1, 1, dtype=torch.float64)
    elif m == "x_root_shape":
        p["xr"], p["wr"] = torch.zeros(nd + 1, p["x"].shape[1], dtype=torch.float64), torch.zeros(
            p["x"].shape[1], p["w"].shape[2], dtype=torch.float64)
    elif m == "bias_shape":
        p["b"] = torch.zeros(p["w"].shape[2] + 1, dtype=torch.float64)
    elif m == "pair_ptr_int32":
        lay["pair_ptr"] = lay["pair_ptr"].int()
    elif m == "mixed_index_dtypes":
        lay["col"] = lay["col"].int() if lay["col"].dtype == torch.int64 else lay["col"].long()
    elif m == "col_2d":
        lay["col"] = lay["col"].view(-1, 1)
    elif m == "src_ptr_length":
        lay["src_ptr"] = lay["src_ptr"][:-1]


def _rgcn_ref(lay, p, ns, nd, grads=None):
    """rgcn_aggregate_ref on the (possibly mutated) layout; Refuse where it cannot run."""
    import torch

    from lmgnn_fast.ops import rgcn_aggregate_ref
    from lmgnn_fast.ops.layout import RelLayout
    t = lay
    ok = (all(v.dim() == 1 for v in t.values()) and t["pair_ptr"].dtype == torch.int64
          and p["x"].is_floating_point() and p["w"].dtype == p["x"].dtype and p["order"] in (0, 1, 2, 3))
    if not ok:
        raise Refuse
    R = t["rel_ptr"].numel() - 1
    bases = p["order"] in (1, 2)
    if bases != (p["comp"] is not None) or (not bases and p["w"].shape[0] != R):
        raise Refuse
    if bases and (p["comp"].shape[0] != R or p["comp"].shape[1] != p["w"].shape[0]):
        raise Refuse
    if p["xr"] is not None and p["xr"].shape[0] != nd:
        raise Refuse
    if p["b"] is not None and p["b"].shape[0] != p["w"].shape[2]:
        raise Refuse
    pp, rp = t["pair_ptr"], t["rel_ptr"]
    E, P = t["col"].numel(), t["pair_dst"].numel()
    if pp.numel() != P + 1 or int(pp[0]) != 0 or int(pp[-1]) != E or bool((pp.diff() < 0).any()):
        raise Refuse
    if int(rp[0]) != 0 or int(rp[-1]) != P or bool((rp.diff() < 0).any()):
        raise Refuse
    if E and (int(t["col"].min()) < 0 or int(t["col"].max()) >= ns):
        raise Refuse
    if P and (int(t["pair_dst"].min()) < 0 or int(t["pair_dst"].max()) >= nd):
        raise Refuse
    if len({t[k].dtype for k in ("col", "pair_dst", "dst_pairs", "src_pairs")}) != 1:
        raise Refuse
    layout = RelLayout(**t, num_src=ns, num_dst=nd)
    return rgcn_aggregate_ref(p["x"], layout, p["w"], p["comp"], p["xr"], p["wr"], p["b"],
                              "mean" if p["mean"] else "sum")


def _case_rgcn_aggregate(rng, g):
    import torch
    m, kind = _pick(rng, _RGCN_VALID, _RGCN_INVALID)
    lay, p, ns, nd = _rgcn_inputs(rng, g, m)
    _mutate_layout(rng, m, lay, p, nd)
    if m in ("swap_col", "swap_src_pairs"):
        kind = "any"  # the forward reads neither src_pairs nor any order of col but its own

    def call():
        out, _, _ = torch.ops.lmgnn.rgcn_aggregate(p["x"], *[lay[k] for k in _LAYOUT_FIELDS], p["w"], p["comp"],
                                                   p["xr"], p["wr"], p["b"], p["mean"], p["order"])
        return out

    return m, kind, call, lambda: _rgcn_ref(lay, p, ns, nd), True


def _case_rgcn_aggregate_backward(rng, g):
    import torch
    m, kind = _pick(rng, _RGCN_VALID, _RGCN_INVALID + ["needs_none", "grad_shape", "agg_shape"])
    lay, p, ns, nd = _rgcn_inputs(rng, g, m)
    good = {k: v.clone() for k, v in lay.items()}
    _mutate_layout(rng, m, lay, p, nd)
    needs = [rng.random() < 0.6 for _ in range(6)]
    needs[2] = needs[2] and p["comp"] is not None
    needs[3] = needs[4] = needs[3] and p["xr"] is not None
    needs[5] = False  # the bias gradient needs no layout
    if not any(needs) and m != "needs_none":
        needs[0] = True
    if m == "needs_none":
        needs = [False] * 6
        kind = "valid"
    fwd = torch.ops.lmgnn.rgcn_aggregate
    args = lambda L: [L[k] for k in _LAYOUT_FIELDS]  # noqa: E731
    try:  # the saved tensors of the forward on this very layout (else on the unmutated one)
        out, agg, basis = fwd(p["x"], *args(lay), p["w"], p["comp"], p["xr"], p["wr"], None, p["mean"], p["order"])
    except CLEAN:
        try:
            out, agg, basis = fwd(p["x"], *args(good), p["w"], p["comp"], p["xr"], p["wr"], None, p["mean"],
                                  p["order"] if p["order"] in (0, 1, 2, 3) else 0)
        except CLEAN:  # shapes or dtypes the forward cannot take either
            out = torch.zeros(nd, p["w"].shape[-1], dtype=torch.float64)
            agg = basis = torch.zeros(0, 1, dtype=torch.float64)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    if m == "grad_shape":
        grad = grad[:, :-1]
    elif m == "agg_shape":
        agg = torch.zeros(agg.shape[0] + 1, max(1, agg.shape[1]), dtype=torch.float64)
    if m in ("swap_col", "swap_src_pairs", "shift_src_ptr") and not needs[0]:
        kind = "any"  # only dx reads src_ptr/src_pairs

    def call():
        res = torch.ops.lmgnn.rgcn_aggregate_backward(
            grad, p["x"], *args(lay), p["w"], p["comp"], p["xr"], p["wr"], agg, basis, p["mean"], p["order"], needs)
        return [r if n else None for r, n in zip(res, needs)]

    def ref():
        if grad.shape != (nd, p["w"].shape[-1]):
            raise Refuse
        q = {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point()
                 else v) for k, v in p.items()}
        q["b"] = None
        o = _rgcn_ref(lay, q, ns, nd)
        leaves = [q["x"], q["w"], q["comp"], q["xr"], q["wr"], None]
        want = [leaves[i] for i in range(6) if needs[i]]
        if not want:
            return [None] * 6
        got = torch.autograd.grad((o * grad).sum(), want, allow_unused=True)
        res, it = [], iter(got)
        for i in range(6):
            if needs[i]:
                gi = next(it)
                res.append(torch.zeros_like(leaves[i]) if gi is None else gi)
            else:
                res.append(None)
        return res

    return m, kind, call, ref, True


# ------------------------------------------------------------------------------ cache ops
def _cache_state(rng, g, dev_policy="clock"):
    """A cache state filled by the ops themselves (a few gathers and admissions)."""
    import torch
    cap, d, n = rng.choice([0, 1, 3, 4, 8]), rng.randint(1, 4), rng.randint(4, 30)
    h = 2
    while h < 2 * cap:
        h *= 2
    h *= rng.choice([1, 2])
    st = dict(keys=torch.full((h,), -1, dtype=torch.long), vals=torch.zeros(h, dtype=torch.long),
              slot_ids=torch.full((cap,), -1, dtype=torch.long), meta=torch.zeros(cap, dtype=torch.long),
              rows=torch.zeros(cap, d), state=torch.zeros(4, dtype=torch.long))
    table = torch.randn(n, d, generator=g)
    for _ in range(rng.randint(0, 3)):
        ids = torch.randint(0, n, (rng.randint(1, 12),), generator=g)
        out, slots = torch.ops.lmgnn.cache_gather(ids, st["keys"], st["vals"], st["rows"], table)
        torch.ops.lmgnn.cache_admit(ids, slots, out, *st.values(), dev_policy, True)
    return st, table, n


def _garble_map(rng, g, st, m):
    import torch
    h, cap = st["keys"].numel(), st["rows"].shape[0]
    if m == "garbage_map":
        st["keys"].copy_(torch.randint(-2, 40, (h,), generator=g))
        st["vals"].copy_(torch.randint(-3, cap + 3, (h,), generator=g))
    elif m == "full_map":
        st["keys"].copy_(torch.arange(h) + 1000)
    elif m == "vals_out_of_range":
        live = (st["keys"] >= 0).nonzero().flatten().tolist()
        if live:
            st["vals"][rng.choice(live)] = rng.choice([-5, cap, cap + 7, 2**40])
        else:
            st["keys"][0], st["vals"][0] = 0, cap + 1
    elif m == "slot_ids_garbage":
        if cap:
            st["slot_ids"].copy_(torch.randint(-1, 50, (cap,), generator=g))
    elif m == "meta_garbage":
        if cap:
            st["meta"].copy_(torch.randint(-2**40, 2**40, (cap,), generator=g))
    elif m == "hand_garbage":
        st["state"][0] = rng.choice([-1, cap, cap + 5, 2**62])
    elif m == "tombs_garbage":
        st["state"][1] = rng.choice([-10**9, 10**9])


_MAP_GARBAGE = ["garbage_map", "full_map", "vals_out_of_range"]
_STATE_GARBAGE = _MAP_GARBAGE + ["slot_ids_garbage", "meta_garbage", "hand_garbage", "tombs_garbage"]
_ID_INVALID = ["id_high", "id_negative", "ids_float", "ids_2d", "keys_not_pow2", "keys_int32", "vals_length",
               "keys_2d"]


def _mutate_ids(rng, m, ids, st, n):
    import torch
    if m == "int32":
        ids = ids.int()
    elif m == "empty":
        ids = ids[:0]
    elif m == "noncontig":
        ids = torch.stack([ids, ids]).t()[:, 1]
    elif m == "id_high":
        ids = torch.cat([ids, torch.tensor([n + rng.randint(0, 5)])])
    elif m == "id_negative":
        ids = torch.cat([ids, torch.tensor([-rng.randint(1, 3)])])
    elif m == "ids_float":
        ids = ids.float()
    elif m == "ids_2d":
        ids = ids.view(-1, 1)
    elif m == "keys_not_pow2":
        st["keys"], st["vals"] = torch.full((3,), -1), torch.zeros(3, dtype=torch.long)
    elif m == "keys_int32":
        st["keys"] = st["keys"].int()
    elif m == "vals_length":
        st["vals"] = st["vals"][:-1]
    elif m == "keys_2d":
        st["keys"], st["vals"] = st["keys"].view(1, -1), st["vals"].view(1, -1)
    return ids


def _map_ok(st):
    return (st["keys"].dim() == 1 and st["vals"].dim() == 1 and st["keys"].dtype == st["vals"].dtype
            and st["keys"].dtype.is_floating_point is False and st["keys"].dtype.itemsize == 8
            and st["keys"].numel() == st["vals"].numel() and st["keys"].numel() & (st["keys"].numel() - 1) == 0)


def _ids_ok(ids):
    return ids.dim() == 1 and not ids.is_floating_point()


def _case_cache_lookup(rng, g):
    import torch
    m, kind = _pick(rng, ["base", "int32", "empty", "noncontig"], _ID_INVALID + ["num_rows_negative"],
                    _MAP_GARBAGE)
    st, table, n = _cache_state(rng, g)
    ids = torch.randint(0, n, (rng.randint(1, 10),), generator=g)
    _garble_map(rng, g, st, m)
    ids = _mutate_ids(rng, m, ids, st, n)
    num_rows = -1 if m == "num_rows_negative" else n

    def ref():
        if not (_map_ok(st) and _ids_ok(ids)) or num_rows < 0:
            raise Refuse
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_rows):
            raise Refuse
        k, v = st["keys"].tolist(), st["vals"].tolist()
        return torch.tensor([_probe(k, v, x) for x in ids.tolist()], dtype=torch.long)

    kind = "any" if kind == "garbage" else kind  # lookups return the map's values as they are
    return m, kind, lambda: torch.ops.lmgnn.cache_lookup(ids, st["keys"], st["vals"], num_rows), ref, False


def _gather_ref(ids, st, table):
    import torch
    if not (_map_ok(st) and _ids_ok(ids)) or st["rows"].dim() != 2 or table.dim() != 2:
        raise Refuse
    if st["rows"].shape[1] != table.shape[1] or st["rows"].dtype != table.dtype:
        raise Refuse
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= table.shape[0]):
        raise Refuse
    k, v, cap = st["keys"].tolist(), st["vals"].tolist(), st["rows"].shape[0]
    slots = [_probe(k, v, x) for x in ids.tolist()]
    if any(not -1 <= s < cap for s in slots):
        raise Refuse  # a corrupt map: the documented contract is an error
    out = torch.stack([st["rows"][s] if s >= 0 else table[x] for x, s in zip(ids.tolist(), slots)]) \
        if slots else table.new_zeros(0, table.shape[1])
    return out, torch.tensor(slots, dtype=torch.long)


def _case_cache_gather(rng, g):
    import torch
    m, kind = _pick(rng, ["base", "int32", "empty", "noncontig", "table_view"],
                    _ID_INVALID + ["columns", "dtype", "rows_1d", "table_1d", "table_strided"], _MAP_GARBAGE)
    st, table, n = _cache_state(rng, g)
    ids = torch.randint(0, n, (rng.randint(1, 10),), generator=g)
    _garble_map(rng, g, st, m)
    ids = _mutate_ids(rng, m, ids, st, n)
    if m == "table_view":
        table = torch.cat([table, table], 0)[: table.shape[0]]
    elif m == "columns":
        table = torch.randn(n, table.shape[1] + 1, generator=g)
    elif m == "dtype":
        table = table.double()
    elif m == "rows_1d":
        st["rows"] = st["rows"].flatten()
    elif m == "table_1d":
        table = table.flatten()
    elif m == "table_strided":
        table = torch.randn(table.shape[1], n, generator=g).t()
    if kind == "garbage":
        kind = "any"

    def ref():
        if m == "table_strided" and table.shape[1] > 1:
            raise Refuse
        return _gather_ref(ids, st, table)

    return m, kind, lambda: torch.ops.lmgnn.cache_gather(ids, st["keys"], st["vals"], st["rows"], table), ref, False


def _case_cache_update(rng, g):
    import torch
    m, kind = _pick(rng, ["base", "int32", "empty", "duplicates"],
                    _ID_INVALID + ["values_rows", "values_dtype", "versions_length", "versions_int32", "columns"],
                    _MAP_GARBAGE)
    st, table, n = _cache_state(rng, g)
    d = table.shape[1]
    ids = torch.randint(0, n, (rng.randint(1, 10),), generator=g)
    if m == "duplicates":
        ids = torch.cat([ids, ids.flip(0)])
    _garble_map(rng, g, st, m)
    ids = _mutate_ids(rng, m, ids, st, n)
    values = torch.randn(max(ids.shape[0], 0) if ids.dim() else 0, d, generator=g)
    versions = torch.zeros(n, dtype=torch.long)
    if m == "values_rows":
        values = values[:-1] if values.shape[0] else torch.zeros(1, d)
    elif m == "values_dtype":
        values = values.double()
    elif m == "versions_length":
        versions = versions[:-1]
    elif m == "versions_int32":
        versions = versions.int()
    elif m == "columns":
        values = torch.randn(values.shape[0], d + 1, generator=g)
    if kind == "garbage":
        kind = "any"
    ours = dict(table=table.clone(), versions=versions.clone(), rows=st["rows"].clone())

    def call():
        torch.ops.lmgnn.cache_update(ids, values, 5, ours["table"], ours["versions"], st["keys"], st["vals"],
                                     ours["rows"])
        return [ours["table"], ours["versions"], ours["rows"]]

    def ref():
        if not (_map_ok(st) and _ids_ok(ids)) or values.dim() != 2 or values.shape != (ids.numel(), d):
            raise Refuse
        if values.dtype != table.dtype or versions.dtype != torch.long or versions.numel() != n:
            raise Refuse
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise Refuse
        t, ver, rows = table.clone(), versions.clone(), st["rows"].clone()
        k, v, cap = st["keys"].tolist(), st["vals"].tolist(), rows.shape[0]
        last = {x: i for i, x in enumerate(ids.tolist())}
        if any(not -1 <= _probe(k, v, x) < cap for x in last):
            raise Refuse
        for x, i in last.items():
            t[x], ver[x] = values[i], 5
            s = _probe(k, v, x)
            if s >= 0:
                rows[s] = values[i]
        return [t, ver, rows]

    return m, kind, call, ref, False


def _case_admit(rng, g, lfu):
    import torch

    from lmgnn_fast.ops.cache import cache_admit_lfu_ref, cache_admit_ref
    policy = rng.choice(["clock", "lru"])
    m, kind = _pick(rng, ["base", "int32", "empty", "duplicates", "all_hits", "noncontig"],
                    ["slot_high", "slot_low", "id_negative", "slots_length", "slots_int32", "out_shape", "out_dtype",
                     "map_small", "state_length", "ids_float"]
                    + (["sketch_width", "sketch_rows", "sketch_dtype", "period_zero", "period_huge"] if lfu
                       else ["policy"]),
                    _STATE_GARBAGE + (["sketch_garbage"] if lfu else []))
    st, table, n = _cache_state(rng, g, policy)
    width = rng.choice([16, 64])
    sketch = torch.randint(0, 5, (4, width), generator=g, dtype=torch.int32)
    period = rng.randint(1, 50)
    ids = torch.randint(0, n, (rng.randint(1, 12),), generator=g)
    if m == "duplicates":
        ids = torch.cat([ids, ids])
    elif m == "all_hits":
        cached = st["slot_ids"][st["slot_ids"] >= 0]
        ids = cached if cached.numel() else ids
    out, slots = torch.ops.lmgnn.cache_gather(ids, st["keys"], st["vals"], st["rows"], table)
    if m in _STATE_GARBAGE:
        _garble_map(rng, g, st, m)
    cap = st["rows"].shape[0]
    if m == "int32":
        ids = ids.int()
    elif m == "empty":
        ids, slots, out = ids[:0], slots[:0], out[:0]
    elif m == "noncontig":
        ids = torch.stack([ids, ids]).t()[:, 0]
    elif m == "slot_high":
        slots = slots.clone()
        slots[rng.randrange(slots.numel())] = cap + rng.randint(0, 3)
    elif m == "slot_low":
        slots = slots.clone()
        slots[rng.randrange(slots.numel())] = -rng.randint(2, 9)
    elif m == "id_negative":
        ids, slots = ids.clone(), slots.clone()
        i = rng.randrange(ids.numel())
        ids[i], slots[i] = -rng.randint(1, 5), -1
    elif m == "slots_length":
        slots = slots[:-1]
    elif m == "slots_int32":
        slots = slots.int()
    elif m == "out_shape":
        out = out[:, :-1] if out.shape[1] > 1 else torch.zeros(out.shape[0], 2)
    elif m == "out_dtype":
        out = out.double()
    elif m == "policy":
        policy = "mru"
    elif m == "map_small":
        if cap:
            st["keys"], st["vals"] = torch.full((1,), -1), torch.zeros(1, dtype=torch.long)
        else:
            st["state"] = st["state"][:2]
    elif m == "state_length":
        st["state"] = st["state"][:3]
    elif m == "ids_float":
        ids = ids.float()
    elif m == "sketch_width":
        sketch = torch.zeros(4, 48, dtype=torch.int32)
    elif m == "sketch_rows":
        sketch = torch.zeros(3, 16, dtype=torch.int32)
    elif m == "sketch_dtype":
        sketch = sketch.long()
    elif m == "period_zero":
        period = 0
    elif m == "period_huge":
        period = 2**40
    elif m == "sketch_garbage":
        sketch = torch.randint(-2**31, 2**31 - 1, (4, width), generator=g, dtype=torch.int32)
    ours = {k: v.clone() for k, v in st.items()}
    ours_sketch = sketch.clone()

    def call():
        if lfu:
            res = torch.ops.lmgnn.cache_admit_lfu(ids, slots, out, *ours.values(), ours_sketch, period, True)
        else:
            res = torch.ops.lmgnn.cache_admit(ids, slots, out, *ours.values(), policy, True)
        return _admit_view(res, ours, ours_sketch if lfu else None, n, probing=True)

    def ref():
        if kind != "valid":
            raise Refuse
        mine = {k: v.clone() for k, v in st.items()}
        sk = sketch.clone()
        if lfu:
            res = cache_admit_lfu_ref(ids.long(), slots, out, *mine.values(), sk, period)
        else:
            res = cache_admit_ref(ids.long(), slots, out, *mine.values(), policy=policy)
        return _admit_view(res, mine, sk if lfu else None, n, probing=False)

    if kind == "garbage":
        kind = "returns"
    return m, kind, call, ref, False


def _admit_view(m, st, sketch, n, probing):
    """What two admissions must agree on: the count, the slot table, meta, rows, the hand,
    tick and LFU counter, the sketch, and the id -> slot mapping the hash map holds (the
    reference lays its map out with another hash: read as a plain mapping)."""
    import torch
    k, v = st["keys"].tolist(), st["vals"].tolist()
    if probing:
        mapping = [_probe(k, v, x) for x in range(n)]
    else:
        d = {a: b for a, b in zip(k, v) if a >= 0}
        mapping = [d.get(x, -1) for x in range(n)]
    mapping = torch.tensor(mapping, dtype=torch.long)
    parts = [torch.as_tensor(m).reshape(()).long(), st["slot_ids"], st["meta"], st["rows"],
             st["state"][[0, 2, 3]], mapping]
    return parts + ([sketch] if sketch is not None else [])


CASES = {
    "coo_to_csc": _case_coo_to_csc,
    "hetero_neighbor_sample": _case_hetero_neighbor_sample,
    "rgcn_aggregate": _case_rgcn_aggregate,
    "rgcn_aggregate_backward": _case_rgcn_aggregate_backward,
    "cache_lookup": _case_cache_lookup,
    "cache_gather": _case_cache_gather,
    "cache_update": _case_cache_update,
    "cache_admit": lambda rng, g: _case_admit(rng, g, lfu=False),
    "cache_admit_lfu": lambda rng, g: _case_admit(rng, g, lfu=True),
}


def _worker(op: str, seed: int, calls: int) -> None:
    """Runs `calls` mutated calls of `op`; prints BEGIN/END per call and one SUMMARY line."""
    import torch

    import lmgnn_fast  # noqa: F401  (registers the ops)
    counts = {"op": op, "calls": 0, "equal": 0, "errors": 0, "returned_on_garbage": 0, "wrong": [],
              "named_op": 0, "mutations": {}}
    for i in range(calls):
        rng = random.Random(seed * 1000003 + i)
        g = torch.Generator().manual_seed(rng.randrange(2**31))
        m, kind, call, ref, close = CASES[op](rng, g)
        print(f"BEGIN {i} {m} ({kind})", flush=True)
        counts["calls"] += 1
        counts["mutations"][m] = counts["mutations"].get(m, 0) + 1
        try:
            got = call()
        except CLEAN as e:
            counts["errors"] += 1
            counts["named_op"] += str(e).startswith(op) or f"{op}:" in str(e)
            if kind == "valid":
                counts["wrong"].append(f"call {i} ({m}): valid input refused: {type(e).__name__}: {e}")
        except BaseException as e:  # noqa: BLE001  (anything else is not a clean error)
            counts["wrong"].append(f"call {i} ({m}): unclean exception {type(e).__name__}: {e}")
        else:
            if kind == "returns":
                counts["returned_on_garbage"] += 1
            else:
                try:
                    want = ref()
                except Refuse:
                    counts["wrong"].append(f"call {i} ({m}): returned for an input the reference refuses")
                else:
                    if _same(got, want, close):
                        counts["equal"] += 1
                    else:
                        counts["wrong"].append(f"call {i} ({m}): output differs from the reference")
        print(f"END {i}", flush=True)
    print("SUMMARY " + json.dumps(counts), flush=True)


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
