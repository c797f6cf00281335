"""rgcn_aggregate: one R-GCN layer, forward + backward, side by side.

ours (``lmgnn_fast.nn.RGCNConv``, one fused op) vs the pure-torch per-relation reference vs
PyG ``RGCNConv`` (default path and forced ``segment_matmul`` path) vs PyG ``FastRGCNConv``
(only where its ``[E, F_in, F_out]`` gather fits the memory budget), on a uniform random
block (``E`` edges, ``N_src`` sources, ``N_dst`` destinations, uniform relation ids).
Every row prints the forward FLOPs of our chosen order and of PyG's order (root term left
out: the same for both), and our achieved rate against a measured dense matmul rate: the
FLOPs we do -- our order's plus the root term's matmul ``2 * N_dst * F_in * F_out`` -- times
3 for forward + backward, over the measured time.

Two kinds of block: ``uniform`` (above) and ``sampled`` — the outermost block that
``NeighborSampler`` draws for a batch of seeds (full: batch 1024, fanout [15, 10]) from a
synthetic power-law graph with one node type and R relations (full: 1M nodes, 10M edges),
seen by PyG as a homogeneous graph (``edge_index`` of local ids, ``edge_type``).
``peak MB`` is the peak of tensor memory allocated during one fwd+bwd above what was live
before (CUDA: allocator peak; CPU: ``torch.profiler`` with ``profile_memory=True``, the
running sum of every allocation and free).

pytest: ``pytest benchmarks/bench_aggregate.py --benchmark-json=out.json``
table:  ``python benchmarks/bench_aggregate.py`` (``LMGNN_BENCH=full`` for full sizes;
``LMGNN_BENCH_FIN``, ``LMGNN_BENCH_FOUT``, ``LMGNN_BENCH_R``, ``LMGNN_BENCH_BASES`` (``none,4``),
``LMGNN_BENCH_BLOCKS`` (``uniform,sampled``) narrow the grid)
"""
from __future__ import annotations

import itertools
import os
from functools import lru_cache

import numpy as np
import pytest
import torch

import lmgnn_fast  # noqa: F401
from common import QUICK, Table, bench_devices, device_name, results_dir, time_fn, time_interleaved, tracked_peak_memory
from lmgnn_fast.graph import CSC, HeteroGraph
from lmgnn_fast.nn import RGCNConv
from lmgnn_fast.ops import coo_to_csc, csc_to_coo, layout_from_block, layout_from_coo
from lmgnn_fast.ops.aggregate import choose_order, order_flops, pyg_flops, rgcn_aggregate, rgcn_aggregate_ref
from lmgnn_fast.sampling import NeighborSampler

try:
    import torch_geometric
    import torch_geometric.nn as pyg_nn
except ImportError:  # pragma: no cover
    torch_geometric = pyg_nn = None

DEVICES = bench_devices()
# Intra-op threads: LMGNN_BENCH_THREADS, else 1 in quick mode (a smoke run; on a shared,
# oversubscribed machine every parallel region of a 2-thread run can stall on a
# descheduled thread, which made the quick sizes 50-100x slower) and torch's default in full.
if "LMGNN_BENCH_THREADS" in os.environ or QUICK:
    torch.set_num_threads(int(os.environ.get("LMGNN_BENCH_THREADS", "1")))


def _env_list(name, default, conv=int):
    return [conv(v) for v in os.environ.get(name, default).split(",") if v]


_bases = _env_list("LMGNN_BENCH_BASES", "none,4", lambda v: None if v == "none" else int(v))
BLOCKS = _env_list("LMGNN_BENCH_BLOCKS", "uniform,sampled", str)
if QUICK:
    GRAPH = dict(E=5_000, N_src=2_000, N_dst=500)
    GRID = list(itertools.product([64], [32], [4, 16], [None, 4]))
    SAMPLED = dict(num_nodes=10_000, num_edges=100_000, batch=64, fanouts=[15, 10])
    SAMPLED_GRID = list(itertools.product([64], [32], [4, 16], [None]))
else:
    GRAPH = dict(E=100_000, N_src=50_000, N_dst=10_000)
    fin = _env_list("LMGNN_BENCH_FIN", "128,384,768")
    fout = _env_list("LMGNN_BENCH_FOUT", "128,256")
    rels = _env_list("LMGNN_BENCH_R", "4,16,64")
    GRID = list(itertools.product(fin, fout, rels, _bases))
    SAMPLED = dict(num_nodes=1_000_000, num_edges=10_000_000, batch=1024, fanouts=[15, 10])
    SAMPLED_GRID = list(itertools.product(fin, fout, [r for r in rels if r <= 16] or [4], _bases))
FAST_RGCN_BUDGET = 2 << 30  # bytes for FastRGCNConv's [E, F_in, F_out] weight gather


def _inputs(R, f_in, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    E, ns, nd = GRAPH["E"], GRAPH["N_src"], GRAPH["N_dst"]
    src = torch.randint(0, ns, (E,), generator=g)
    dst = torch.randint(0, nd, (E,), generator=g)
    et = torch.randint(0, R, (E,), generator=g)
    x_src = torch.randn(ns, f_in, generator=g).to(device)
    x_dst = torch.randn(nd, f_in, generator=g).to(device)
    return x_src, x_dst, torch.stack([src, dst]).to(device), et.to(device)


@lru_cache(maxsize=2)
def _sampled_edges(R, seed=0):
    """The outermost sampler block over a synthetic power-law graph -> (N_src, N_dst,
    edge_index [2, E] local ids, edge_type [E])."""
    n, m = SAMPLED["num_nodes"], SAMPLED["num_edges"]
    rng = np.random.default_rng(seed)
    # Chung-Lu style: expected degree of node v ~ (v + 1)^(-1 / (gamma - 1)), gamma = 2.5,
    # independently shuffled for sources and destinations.
    w = np.arange(1, n + 1, dtype=np.float64) ** (-1 / 1.5)
    cum = np.cumsum(w) / w.sum()
    src = rng.permutation(n)[np.minimum(np.searchsorted(cum, rng.random(m)), n - 1)]
    dst = rng.permutation(n)[np.minimum(np.searchsorted(cum, rng.random(m)), n - 1)]
    rel = rng.integers(0, R, m)
    node = "node"
    edge_types, csc = [], {}
    for r in range(R):
        sel = rel == r
        s_r = torch.from_numpy(src[sel]).to(torch.int32)
        d_r = torch.from_numpy(dst[sel]).to(torch.int32)
        indptr, indices, perm = coo_to_csc(s_r, d_r, n)
        et = (node, f"r{r}", node)
        edge_types.append(et)
        csc[et] = CSC(indptr, indices, perm)
    graph = HeteroGraph(node_types=[node], edge_types=edge_types, num_nodes={node: n}, csc=csc)
    sampler = NeighborSampler(graph, SAMPLED["fanouts"], seed=seed)
    seeds = torch.from_numpy(rng.choice(n, SAMPLED["batch"], replace=False))
    block = sampler.sample({node: seeds})[0]  # outermost: hop-2 sources -> hop-1 frontier
    src_l, dst_l, et_l = [], [], []
    for r in range(R):
        src, dst = csc_to_coo(block.indptr[r], block.indices[r])
        src_l.append(src)
        dst_l.append(dst)
        et_l.append(torch.full((src.numel(),), r, dtype=torch.long))
    ei = torch.stack([torch.cat(src_l), torch.cat(dst_l)])
    layout = layout_from_block(block)
    return block.num_src(node), block.num_dst[node], ei, torch.cat(et_l), layout


def _sampled_inputs(R, f_in, device, seed=0):
    n_src, n_dst, ei, et, layout = _sampled_edges(R)
    g = torch.Generator().manual_seed(seed)
    x_src = torch.randn(n_src, f_in, generator=g).to(device)
    return x_src, x_src[:n_dst].clone(), ei.to(device), et.to(device), layout.to(device)


def _step(fn, params, x_src, x_dst):
    def run():
        for p in params:
            p.grad = None
        xs, xd = x_src.detach().requires_grad_(), x_dst.detach().requires_grad_()
        fn(xs, xd).sum().backward()
    return run


def _impls(f_in, f_out, R, bases, x_src, x_dst, edge_index, edge_type, device, layout=None):
    """name -> fwd+bwd closure (None where it does not apply)."""
    ours = RGCNConv(f_in, f_out, R, num_bases=bases).to(device)
    if layout is None:
        layout = layout_from_coo(edge_index, edge_type, x_src.shape[0], x_dst.shape[0], R)
    out = {"ours": _step(
        lambda xs, xd: rgcn_aggregate(xs, layout, ours.weight, ours.comp, xd, ours.root, ours.bias),
        list(ours.parameters()), x_src, x_dst)}
    out["reference"] = _step(
        lambda xs, xd: rgcn_aggregate_ref(xs, layout, ours.weight, ours.comp, xd, ours.root, ours.bias),
        list(ours.parameters()), x_src, x_dst)
    if pyg_nn is not None:
        pyg = pyg_nn.RGCNConv(f_in, f_out, R, num_bases=bases, aggr="mean").to(device)

        def pyg_default(xs, xd, seg=None):
            old = torch_geometric.backend.use_segment_matmul
            torch_geometric.backend.use_segment_matmul = seg
            try:
                return pyg((xs, xd), edge_index, edge_type)
            finally:
                torch_geometric.backend.use_segment_matmul = old

        out["pyg RGCNConv"] = _step(pyg_default, list(pyg.parameters()), x_src, x_dst)
        out["pyg RGCNConv segment"] = _step(lambda xs, xd: pyg_default(xs, xd, True), list(pyg.parameters()),
                                            x_src, x_dst)
        if edge_index.shape[1] * f_in * f_out * 4 * 3 <= FAST_RGCN_BUDGET:
            fast = pyg_nn.FastRGCNConv(f_in, f_out, R, num_bases=bases, aggr="mean").to(device)
            out["pyg FastRGCNConv"] = _step(lambda xs, xd: fast((xs, xd), edge_index, edge_type),
                                            list(fast.parameters()), x_src, x_dst)
        else:
            out["pyg FastRGCNConv"] = None
    return out, layout


def dense_rate(f_in, f_out, device, rows=10_000) -> float:
    a = torch.randn(rows, f_in, device=device)
    b = torch.randn(f_in, f_out, device=device)
    t = time_fn(lambda: a @ b, device, rounds=5)
    return 2 * rows * f_in * f_out / t / 1e9


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["ours", "reference", "pyg RGCNConv"])
@pytest.mark.parametrize("f_in,f_out,R,bases", GRID[:4])
def test_rgcn_aggregate(benchmark, impl, f_in, f_out, R, bases, device):
    if impl.startswith("pyg") and pyg_nn is None:
        pytest.skip("torch_geometric not installed")
    x_src, x_dst, ei, et = _inputs(R, f_in, device)
    impls, _ = _impls(f_in, f_out, R, bases, x_src, x_dst, ei, et, device)
    benchmark.extra_info.update(f_in=f_in, f_out=f_out, R=R, bases=bases, device=device_name(device), **GRAPH)
    benchmark(impls[impl])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["ours", "pyg RGCNConv"])
@pytest.mark.parametrize("f_in,f_out,R,bases", SAMPLED_GRID[:2])
def test_rgcn_aggregate_sampled(benchmark, impl, f_in, f_out, R, bases, device):
    if impl.startswith("pyg") and pyg_nn is None:
        pytest.skip("torch_geometric not installed")
    x_src, x_dst, ei, et, layout = _sampled_inputs(R, f_in, device)
    impls, _ = _impls(f_in, f_out, R, bases, x_src, x_dst, ei, et, device, layout)
    benchmark.extra_info.update(f_in=f_in, f_out=f_out, R=R, bases=bases, device=device_name(device),
                                block_edges=layout.num_edges,
                                **{f"graph_{k}": v for k, v in SAMPLED.items()})
    benchmark(impls[impl])


def _block_rows(table, kind, grid, device, rates):
    for f_in, f_out, R, bases in grid:
        if kind == "uniform":
            x_src, x_dst, ei, et = _inputs(R, f_in, device)
            impls, layout = _impls(f_in, f_out, R, bases, x_src, x_dst, ei, et, device)
        else:
            x_src, x_dst, ei, et, layout = _sampled_inputs(R, f_in, device)
            impls, layout = _impls(f_in, f_out, R, bases, x_src, x_dst, ei, et, device, layout)
        P, E = layout.num_pairs, layout.num_edges
        order = choose_order(num_pairs=P, num_dst=layout.num_dst, num_relations=R, num_bases=bases,
                             in_channels=f_in, out_channels=f_out, device=torch.device(device).type)
        kw = dict(num_edges=E, num_dst=layout.num_dst, num_relations=R, num_bases=bases,
                  in_channels=f_in, out_channels=f_out)
        ours_fl = order_flops(order, num_pairs=P, **kw)
        pyg_fl = pyg_flops(**kw)
        root_fl = 2 * layout.num_dst * f_in * f_out  # the root term's matmul, every order
        if (f_in, f_out) not in rates:
            rates[(f_in, f_out)] = dense_rate(f_in, f_out, device)
        rate = rates[(f_in, f_out)]
        size = f"{kind} E={E:,} src={layout.num_src:,} dst={layout.num_dst:,}"
        # Every implementation of the row timed in interleaved rounds (common.time_interleaved).
        times = time_interleaved({name: fn for name, fn in impls.items() if fn is not None}, device)
        t_ours = times["ours"]
        for name, fn in impls.items():
            if fn is None:
                table.add(size, f_in, f_out, R, bases or "-", P, order, name, "skip (E*F_in*F_out too big)",
                          "", "", "", "", "", "")
                continue
            t = times[name]
            mem = tracked_peak_memory(fn, device)
            gfs = 3 * (ours_fl + root_fl) / t / 1e9 if name == "ours" else ""
            table.add(size, f_in, f_out, R, bases or "-", P, order, name, t * 1e3,
                      "n/a" if mem is None else mem / 2**20, t / t_ours,
                      ours_fl / 1e9, pyg_fl / 1e9, gfs, (gfs / rate * 100) if gfs else "")
        print(f"{kind} F_in={f_in} F_out={f_out} R={R} bases={bases} done (dense mm {rate:.0f} GFLOP/s)",
              flush=True)


def main():
    cols = ["block", "F_in", "F_out", "R", "bases", "P", "order", "impl", "ms fwd+bwd", "peak MB",
            "x vs ours", "our GFLOP (fwd)", "PyG GFLOP (fwd)", "GFLOP/s", "% dense mm"]
    dev_tables = []
    for device in DEVICES:
        rates: dict = {}
        table = Table(f"rgcn_aggregate fwd+bwd — {device_name(device)}, torch {torch.__version__}", cols)
        if "uniform" in BLOCKS:
            _block_rows(table, "uniform", GRID, device, rates)
        if "sampled" in BLOCKS:
            _block_rows(table, "sampled", SAMPLED_GRID, device, rates)
        table.print()
        print("dense matmul rate (10000 x F_in @ F_in x F_out), GFLOP/s: "
              + ", ".join(f"{fi}x{fo}: {r:.0f}" for (fi, fo), r in sorted(rates.items())))
        table.save(results_dir() / f"aggregate_{device}.json")
        dev_tables.append(table)
    return dev_tables


if __name__ == "__main__":
    main()
