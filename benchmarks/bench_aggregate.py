"""rgcn_aggregate: one R-GCN layer, forward + backward, side by side.

ours (``lmgnn_fast.nn.RGCNConv``, one fused op) vs the pure-torch per-relation reference vs
PyG ``RGCNConv`` (default path and forced ``segment_matmul`` path) vs PyG ``FastRGCNConv``
(only where its ``[E, F_in, F_out]`` gather fits the memory budget), on a uniform random
block (``E`` edges, ``N_src`` sources, ``N_dst`` destinations, uniform relation ids).
Every row prints the forward FLOPs of our chosen order and of PyG's order, and our achieved
rate (fwd+bwd taken as 3x the forward FLOPs) against a measured dense matmul rate.

pytest: ``pytest benchmarks/bench_aggregate.py --benchmark-json=out.json``
table:  ``python benchmarks/bench_aggregate.py`` (``LMGNN_BENCH=full`` for full sizes)
"""
from __future__ import annotations

import itertools
import os

import pytest
import torch

import lmgnn_fast  # noqa: F401
from common import QUICK, Table, device_name, peak_memory, results_dir, time_fn
from lmgnn_fast.nn import RGCNConv, layout_from_coo
from lmgnn_fast.ops.aggregate import choose_order, order_flops, pyg_flops, rgcn_aggregate_ref

try:
    import torch_geometric
    import torch_geometric.nn as pyg_nn
except ImportError:  # pragma: no cover
    torch_geometric = pyg_nn = None

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
if QUICK:
    GRAPH = dict(E=5_000, N_src=2_000, N_dst=500)
    GRID = list(itertools.product([64], [32], [4, 16], [None, 4]))
else:
    GRAPH = dict(E=100_000, N_src=50_000, N_dst=10_000)
    fin = [int(v) for v in os.environ.get("LMGNN_BENCH_FIN", "128,384,768").split(",")]
    fout = [int(v) for v in os.environ.get("LMGNN_BENCH_FOUT", "128,256").split(",")]
    rels = [int(v) for v in os.environ.get("LMGNN_BENCH_R", "4,16,64").split(",")]
    GRID = list(itertools.product(fin, fout, rels, [None, 4]))
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


def _step(fn, params, x_src, x_dst):
    def run():
        for p in params:
            p.grad = None
        xs, xd = x_src.detach().requires_grad_(), x_dst.detach().requires_grad_()
        fn(xs, xd).sum().backward()
    return run


def _impls(f_in, f_out, R, bases, x_src, x_dst, edge_index, edge_type, device):
    """name -> fwd+bwd closure (None where it does not apply)."""
    ours = RGCNConv(f_in, f_out, R, num_bases=bases).to(device)
    layout = layout_from_coo(edge_index, edge_type, x_src.shape[0], x_dst.shape[0], R)
    out = {"ours": _step(lambda xs, xd: ours._fused(xs, xd, layout), list(ours.parameters()), x_src, x_dst)}
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


def main():
    cols = ["F_in", "F_out", "R", "bases", "P", "order", "impl", "ms fwd+bwd", "peak MB", "x vs ours",
            "our GFLOP (fwd)", "PyG GFLOP (fwd)", "GFLOP/s", "% dense mm"]
    dev_tables = []
    for device in DEVICES:
        table = Table(f"rgcn_aggregate fwd+bwd, uniform block E={GRAPH['E']:,} N_src={GRAPH['N_src']:,} "
                      f"N_dst={GRAPH['N_dst']:,} — {device_name(device)}, torch {torch.__version__}", cols)
        for f_in, f_out, R, bases in GRID:
            x_src, x_dst, ei, et = _inputs(R, f_in, device)
            impls, layout = _impls(f_in, f_out, R, bases, x_src, x_dst, ei, et, device)
            P = layout.num_pairs
            order = choose_order(num_pairs=P, num_dst=layout.num_dst, num_relations=R, num_bases=bases,
                                 in_channels=f_in, out_channels=f_out)
            kw = dict(num_edges=GRAPH["E"], num_dst=layout.num_dst, num_relations=R, num_bases=bases,
                      in_channels=f_in, out_channels=f_out)
            ours_fl = order_flops(order, num_pairs=P, **kw)
            pyg_fl = pyg_flops(**{k: v for k, v in kw.items()})
            rate = dense_rate(f_in, f_out, device)
            t_ours = None
            for name, fn in impls.items():
                if fn is None:
                    table.add(f_in, f_out, R, bases or "-", P, order, name, "skip (E*F_in*F_out too big)",
                              "", "", "", "", "", "")
                    continue
                slow = not QUICK and name != "ours"
                t = time_fn(fn, device, warmup=0 if slow else 1, rounds=1 if slow else None,
                            min_time=0.0 if slow else 0.5)
                mem = peak_memory(fn, device)
                if name == "ours":
                    t_ours = t
                gfs = 3 * ours_fl / t / 1e9 if name == "ours" else ""
                table.add(f_in, f_out, R, bases or "-", P, order, name, t * 1e3,
                          "n/a" if mem is None else mem / 2**20, t / t_ours,
                          ours_fl / 1e9, pyg_fl / 1e9, gfs, (gfs / rate * 100) if gfs else "")
            print(f"F_in={f_in} F_out={f_out} R={R} bases={bases} done (dense mm {rate:.0f} GFLOP/s)", flush=True)
        table.print()
        table.save(results_dir() / f"aggregate_{device}.json")
        dev_tables.append(table)
    return dev_tables


if __name__ == "__main__":
    main()
