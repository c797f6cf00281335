"""A 2-layer R-GCN over one batch of sampled blocks, forward + backward, side by side.

What the trainer runs per batch: ``NeighborSampler`` draws the blocks of one batch of seeds
(full: 1,024 ``paper`` seeds, fanouts [10, 10]) from a synthetic heterogeneous power-law
graph (``bench_sampling.make_graph``: 3 node types, R = 8 relations; full: 1M nodes, 10M
edges); the encoder runs 2 R-GCN layers (128 -> 128 -> 128, mean per relation, root
weight and bias, ReLU on the input and between the layers) over them, and the sum of its
outputs is back-propagated (gradients for every weight and for the input features). Rows,
every one built from the same weights and checked against ours (``assert_close``) first:

* ``ours`` — ``lmgnn_fast.nn.RGCN`` over the blocks (one row numbering for all layers,
  ``ops.layouts_from_blocks``, built once per block sequence and cached in the block).
  The encoder's per-type input projections are identities here: they cost the same in
  every row and would only dilute the ratios.
* ``ours, layouts per call`` — the same with the blocks' cached layouts dropped before
  each call: what a fresh batch costs, layout building included.
* ``ours, per-layer dict`` — ``RGCNConv(h_dict, None, block)`` per layer: concatenates
  the per-type features and splits the output in every call.
* ``raw op`` — two ``ops.rgcn_aggregate`` calls on pre-built layouts and an input already
  concatenated in the shared row numbering: the floor the block path is measured against.
* ``PyG HeteroConv(GraphConv)`` / ``PyG HeteroConv(SAGEConv)`` — one mean-aggregating
  conv per relation on the typed tensors, summed per destination type: the fastest hetero
  layer built from PyG parts. Given R-GCN's weights (``W_r`` as the neighbour weight;
  ``W_root`` and the bias on one relation per destination type, zeros on the others) they
  compute the same function; with bases ``W_r`` is formed outside the timed call (no basis
  gradient), so those rows do a little less work than ours.
* ``PyG RGCNConv`` (default and forced ``segment_matmul`` paths) — on the homogeneous form
  of the blocks: the same shared row numbering, ``edge_index`` and ``edge_type`` per layer.

Timing: ``common.time_interleaved`` (all rows of a setting in interleaved rounds, median),
at each thread count in ``LMGNN_BENCH_THREADS`` (``torch.set_num_threads``; full: 1,2;
quick: 1). ``peak MB``: ``common.tracked_peak_memory`` of one fwd+bwd. A second table
times the loader (``NodeLoader``) per batch: sampling alone, and sampling + feature gather
+ ``ours`` fwd+bwd with the batches built in the caller's thread (``prefetch=0``) and in
the loader's background thread (``prefetch=2``).

pytest: ``pytest benchmarks/bench_encoder.py --benchmark-json=out.json``
table:  ``python benchmarks/bench_encoder.py [--write [PATH]]`` (``LMGNN_BENCH=full`` for
full sizes; ``--write`` saves the Markdown report, default ``benchmarks/results/encoder.md``)
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from torch import nn

import lmgnn_fast  # noqa: F401
from bench_sampling import NODE_TYPES, make_graph
from common import QUICK, Table, bench_devices, device_name, results_dir, time_interleaved, tracked_peak_memory
from lmgnn_fast.graph import CSC, HeteroGraph
from lmgnn_fast.nn import RGCN
from lmgnn_fast.ops import csc_to_coo, layouts_from_blocks, rgcn_aggregate
from lmgnn_fast.sampling import NeighborSampler, NodeLoader

try:
    import torch_geometric
    import torch_geometric.nn as pyg_nn
except ImportError:  # pragma: no cover
    torch_geometric = pyg_nn = None

DEVICES = bench_devices()
R = int(os.environ.get("LMGNN_BENCH_R", "8"))
DIM = 128
FANOUTS = [10, 10]
SEED_TYPE = "paper"
if QUICK:
    GRAPH = dict(num_nodes=20_000, num_edges=200_000, batch=64)
    THREADS = [int(v) for v in os.environ.get("LMGNN_BENCH_THREADS", "1").split(",") if v]
    LOADER_BATCHES = 3
else:
    GRAPH = dict(num_nodes=1_000_000, num_edges=10_000_000, batch=1024)
    THREADS = [int(v) for v in os.environ.get("LMGNN_BENCH_THREADS", "1,2").split(",") if v]
    LOADER_BATCHES = 10
BASES = [None, 4]
TOL = dict(rtol=1e-4, atol=1e-4)


@lru_cache(maxsize=1)
def _graph():
    """(HeteroGraph, sampler): the synthetic power-law graph of ``bench_sampling``."""
    n, edge_types, _, csc = make_graph(GRAPH["num_nodes"], GRAPH["num_edges"], R)
    graph = HeteroGraph(node_types=list(NODE_TYPES), edge_types=edge_types, num_nodes=n,
                        csc={et: CSC(*csc[et]) for et in edge_types})
    return graph, NeighborSampler(graph, FANOUTS, seed=0)


@lru_cache(maxsize=2)
def _batch(device: str):
    """One batch: (blocks on ``device``, input features {type: [num_src, DIM]})."""
    graph, sampler = _graph()
    g = torch.Generator().manual_seed(1)
    seeds = torch.randperm(graph.num_nodes[SEED_TYPE], generator=g)[:GRAPH["batch"]]
    blocks = [b.to(device) for b in sampler.sample({SEED_TYPE: seeds}, seed=0)]
    x = {t: torch.randn(blocks[0].num_src(t), DIM, generator=g).to(device) for t in NODE_TYPES}
    return blocks, x


def _stacked_coo(blocks):
    """Per block, (edge_index [2, E], edge_type [E]) in ``layouts_from_blocks``'s shared row
    numbering: the homogeneous form of the blocks."""
    stack = layouts_from_blocks(blocks)
    device = blocks[0].device
    pos = {t: torch.empty(blocks[0].num_src(t), dtype=torch.long, device=device) for t in NODE_TYPES}
    start = 0
    for t, lo, hi in stack.input_slices:
        pos[t][lo:hi] = torch.arange(start, start + hi - lo, device=device)
        start += hi - lo
    out = []
    for b in blocks:
        src_l, dst_l, et_l = [], [], []
        for r, (s, _, d) in enumerate(b.edge_types):
            src, dst = csc_to_coo(b.indptr[r], b.indices[r])
            src_l.append(pos[s][src])
            dst_l.append(pos[d][dst])
            et_l.append(torch.full((src.numel(),), r, dtype=torch.long, device=device))
        out.append((torch.stack([torch.cat(src_l), torch.cat(dst_l)]), torch.cat(et_l)))
    return out


class _IdentityProjection(nn.Identity):
    """An input projection that passes the features through (``weight`` only gives RGCN the
    width and dtype it reads from its first projection)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("weight", torch.empty(dim, 0))


def _model(bases, device):
    """Our encoder, its input projections made identities (see the module docstring)."""
    graph, _ = _graph()
    torch.manual_seed(0)
    model = RGCN(DIM, DIM, DIM, node_types=NODE_TYPES, edge_types=graph.edge_types, num_layers=len(FANOUTS),
                 num_bases=bases)
    model.proj = nn.ModuleDict({t: _IdentityProjection(DIM) for t in NODE_TYPES})
    return model.to(device)


def _hetero_pyg(model, blocks, kind):
    """PyG ``HeteroConv`` layers (one ``kind`` conv per relation, mean) computing ``model``'s
    function: -> forward(x_dict) -> {type: [num_dst, DIM]}."""
    layers = []
    for conv, block in zip(model.convs, blocks):
        w = conv.relation_weights().detach()
        convs, rooted = {}, set()
        for r, (s, rel, d) in enumerate(block.edge_types):
            c = (pyg_nn.GraphConv(DIM, DIM, aggr="mean") if kind == "GraphConv"
                 else pyg_nn.SAGEConv(DIM, DIM, aggr="mean"))
            nbr, root = (c.lin_rel, c.lin_root) if kind == "GraphConv" else (c.lin_l, c.lin_r)
            with torch.no_grad():
                nbr.weight.copy_(w[r].T)
                if d in rooted:  # W_root and the bias once per destination type
                    root.weight.zero_()
                    nbr.bias.zero_()
                else:
                    root.weight.copy_(conv.root.detach().T)
                    nbr.bias.copy_(conv.bias.detach())
                    rooted.add(d)
            convs[(s, rel, d)] = c
        layers.append(pyg_nn.HeteroConv(convs, aggr="sum").to(w.device))
    edge_index = [{et: torch.stack(csc_to_coo(b.indptr[r], b.indices[r])) for r, et in enumerate(b.edge_types)}
                  for b in blocks]
    params = [p for m in layers for p in m.parameters()]

    def forward(x):
        h = {t: torch.relu(v) for t, v in x.items()}
        for i, (layer, block, ei) in enumerate(zip(layers, blocks, edge_index)):
            pairs = {et: (h[et[0]][:block.num_src(et[0])], h[et[2]][:block.num_dst[et[2]]])
                     for et in block.edge_types if et[0] in h and et[2] in h}
            h = layer(pairs, ei)
            if i < len(layers) - 1:
                h = {t: torch.relu(v) for t, v in h.items()}
        return h
    return forward, params


def _pyg_rgcn(model, blocks, segment):
    """PyG ``RGCNConv`` per layer on the homogeneous form (same weights, shared numbering)."""
    convs = []
    for conv in model.convs:
        c = pyg_nn.RGCNConv(DIM, DIM, R, num_bases=conv.num_bases, aggr="mean")
        c.load_state_dict(conv.state_dict())
        convs.append(c.to(conv.weight.device))
    coo = _stacked_coo(blocks)
    layouts = layouts_from_blocks(blocks).layouts

    def forward(x_cat):
        h = torch.relu(x_cat)
        old = torch_geometric.backend.use_segment_matmul
        torch_geometric.backend.use_segment_matmul = segment
        try:
            for i, (c, (ei, et), lay) in enumerate(zip(convs, coo, layouts)):
                h = c((h[:lay.num_src], h[:lay.num_dst]), ei, et)
                if i < len(convs) - 1:
                    h = torch.relu(h)
        finally:
            torch_geometric.backend.use_segment_matmul = old
        return h
    return forward, [p for c in convs for p in c.parameters()]


def _step(forward, params, inputs):
    """fwd + bwd closure: fresh leaf inputs requiring grad, sum of the outputs backward."""
    def run():
        for p in params:
            p.grad = None
        xs = {k: v.detach().requires_grad_() for k, v in inputs.items()} if isinstance(inputs, dict) \
            else inputs.detach().requires_grad_()
        out = forward(xs)
        loss = sum(v.sum() for v in out.values()) if isinstance(out, dict) else out.sum()
        loss.backward()
    return run


@lru_cache(maxsize=4)
def implementations(bases, device):
    """name -> (math note, fwd+bwd closure, forward -> {type: out}) for one batch."""
    blocks, x = _batch(device)
    model = _model(bases, device)
    params = list(model.parameters())
    stack = layouts_from_blocks(blocks)
    x_cat = torch.cat([x[t][lo:hi] for t, lo, hi in stack.input_slices], 0)

    def split(h):
        return {t: h[o:o + n] for t, (o, n) in stack.output_slices.items()}

    def ours(xs):
        return model(xs, blocks)

    fresh = [b.to(device) for b in blocks]  # the same tensors, their own layout caches

    def ours_fresh(xs):
        for b in fresh:
            b.derived.clear()
        return model(xs, fresh)

    def per_layer(xs):
        h = {t: torch.relu(v) for t, v in xs.items()}
        for i, (conv, block) in enumerate(zip(model.convs, blocks)):
            h = conv(h, None, block)
            if i < len(blocks) - 1:
                h = {t: torch.relu(v) for t, v in h.items()}
        return h

    def raw(xc):
        h = torch.relu(xc)
        for i, (conv, lay) in enumerate(zip(model.convs, stack.layouts)):
            h = rgcn_aggregate(h[:lay.num_src], lay, conv.weight, conv.comp, h[:lay.num_dst], conv.root,
                               conv.bias, "mean")
            if i < len(stack.layouts) - 1:
                h = torch.relu(h)
        return h

    same = "same"
    out = {"ours": (same, _step(ours, params, x), lambda: ours(x)),
           "ours, layouts per call": (same, _step(ours_fresh, params, x), lambda: ours_fresh(x)),
           "ours, per-layer dict": (same, _step(per_layer, params, x), lambda: per_layer(x)),
           "raw op": (same, _step(raw, params, x_cat), lambda: split(raw(x_cat)))}
    if pyg_nn is not None:
        note = same if bases is None else "same output; W_r formed outside (no basis grad)"
        for kind in ("GraphConv", "SAGEConv"):
            fwd, ps = _hetero_pyg(model, blocks, kind)
            out[f"PyG HeteroConv({kind})"] = (note, _step(fwd, ps, x), lambda fwd=fwd: fwd(x))
        for name, seg in (("PyG RGCNConv", None), ("PyG RGCNConv segment", True)):
            fwd, ps = _pyg_rgcn(model, blocks, seg)
            out[name] = (same, _step(fwd, ps, x_cat), lambda fwd=fwd: split(fwd(x_cat)))
    return out


def check_equal(impls) -> dict[str, float]:
    """Every row's output against ours (``assert_close``); -> name -> max |difference|."""
    with torch.no_grad():
        want = impls["ours"][2]()
        diffs = {}
        for name, (_, _, forward) in impls.items():
            got = forward()
            diff = 0.0
            for t, w in want.items():
                if w.shape[0] == 0 and t not in got:
                    continue  # a type with no destinations (HeteroConv leaves it out)
                torch.testing.assert_close(got[t], w, **TOL, msg=lambda m, name=name, t=t: f"{name}, type {t}: {m}")
                if w.numel():
                    diff = max(diff, float((got[t] - w).abs().max()))
            diffs[name] = diff
    return diffs


def _block_summary(blocks) -> str:
    parts = []
    for i, b in enumerate(blocks):
        src = sum(b.num_src(t) for t in b.node_types)
        dst = sum(b.num_dst[t] for t in b.node_types)
        parts.append(f"layer {i}: E={b.num_edges():,} src={src:,} dst={dst:,}")
    return "; ".join(parts)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["ours", "ours, per-layer dict", "raw op", "PyG HeteroConv(SAGEConv)",
                                  "PyG RGCNConv"])
@pytest.mark.parametrize("bases", BASES, ids=lambda b: f"bases={b}")
def test_encoder(benchmark, impl, bases, device):
    if impl.startswith("PyG") and pyg_nn is None:
        pytest.skip("torch_geometric not installed")
    impls = implementations(bases, device)
    check_equal({k: impls[k] for k in ("ours", impl)})  # raises where the outputs differ
    blocks, _ = _batch(device)
    benchmark.extra_info.update(R=R, bases=bases, dim=DIM, fanouts=FANOUTS, device=device_name(device),
                                blocks=_block_summary(blocks), **GRAPH)
    benchmark(impls[impl][1])


def encoder_table(device) -> Table:
    cols = ["threads", "bases", "impl", "math vs ours", "ms fwd+bwd", "x vs ours", "peak MB", "max |diff|"]
    where = device_name(device) if torch.device(device).type == "cuda" else f"{platform.machine()} CPU"
    table = Table(f"2-layer R-GCN fwd+bwd over one sampled batch — {where}", cols)
    threads = THREADS if torch.device(device).type == "cpu" else [torch.get_num_threads()]
    for bases in BASES:
        impls = implementations(bases, device)
        diffs = check_equal(impls)
        for n in threads:
            torch.set_num_threads(n)
            times = time_interleaved({k: v[1] for k, v in impls.items()}, device)
            for name, (note, fn, _) in impls.items():
                mem = tracked_peak_memory(fn, device)
                table.add(n, bases or "-", name, note, times[name] * 1e3, times[name] / times["ours"],
                          mem / 2**20, diffs[name])
            print(f"bases={bases} threads={n} done (load {os.getloadavg()[0]:.2f})", flush=True)
    return table


def loader_table() -> Table:
    """Per batch: sampling alone, and a training step fed by the loader with and without
    background prefetch (CPU)."""
    graph, sampler = _graph()
    g = torch.Generator().manual_seed(2)
    n_seeds = LOADER_BATCHES * GRAPH["batch"]
    seeds = torch.randperm(graph.num_nodes[SEED_TYPE], generator=g)[:n_seeds]
    feats = {t: torch.randn(graph.num_nodes[t], DIM, generator=g) for t in NODE_TYPES}
    model = _model(None, "cpu")
    table = Table(f"NodeLoader per batch ({GRAPH['batch']} seeds, fanouts {FANOUTS}, {LOADER_BATCHES} batches) "
                  f"— {platform.machine()} CPU", ["threads", "work", "prefetch", "ms / batch"])

    def run(prefetch, train):
        loader = NodeLoader(graph, sampler, SEED_TYPE, seeds=seeds, batch_size=GRAPH["batch"], shuffle=False,
                            prefetch=prefetch)
        t0 = time.perf_counter()
        for batch in loader:
            if train:
                for p in model.parameters():
                    p.grad = None
                x = {t: feats[t][batch.blocks[0].src_nodes[t]].requires_grad_() for t in NODE_TYPES}
                out = model(x, batch.blocks)
                sum(v.sum() for v in out.values()).backward()
        return (time.perf_counter() - t0) / len(loader)

    for n in THREADS:
        torch.set_num_threads(n)
        run(0, True)  # warm-up
        for work, prefetch, train in (("sample", 0, False), ("sample + gather + ours fwd+bwd", 0, True),
                                      ("sample + gather + ours fwd+bwd", 2, True)):
            table.add(n, work, prefetch, min(run(prefetch, train) for _ in range(1 if QUICK else 3)) * 1e3)
    return table


def _report(tables, load_before, load_after, command) -> str:
    blocks, _ = _batch(DEVICES[0])
    pyg = torch_geometric.__version__ if torch_geometric is not None else "not installed"
    lines = ["# R-GCN encoder over sampled blocks — benchmark figures", "",
             "## How it is measured", "", "```", command, "```", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}); "
             f"torch {torch.__version__}, torch_geometric {pyg}, Python {platform.python_version()}; "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; mode {'quick' if QUICK else 'full'}.",
             f"Load average (1, 5, 15 min): before {load_before[0]:.2f} / {load_before[1]:.2f} / "
             f"{load_before[2]:.2f}, after {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}.", "",
             f"Graph: {GRAPH['num_nodes']:,} nodes, {GRAPH['num_edges']:,} edges, {R} relations, node types "
             f"{NODE_TYPES} (power law, `bench_sampling.make_graph`); batch {GRAPH['batch']} `{SEED_TYPE}` seeds, "
             f"fanouts {FANOUTS}; {_block_summary(blocks)}. Encoder: 2 layers {DIM} -> {DIM} -> {DIM}, "
             "mean, root weight, bias, ReLU on the input and between layers; input projections left out. "
             "Rows and timing: see the docstring of `benchmarks/bench_encoder.py`. `x vs ours` = time over "
             "ours (above 1: slower than ours); `max |diff|` = largest difference of the row's output from "
             "ours (every row passed `assert_close`, rtol = atol = 1e-4, before timing).", ""]
    lines += [t.markdown() for t in tables]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", nargs="?", const="benchmarks/results/encoder.md", default=None, metavar="PATH",
                    help="save the Markdown report (default path: benchmarks/results/encoder.md)")
    ap.add_argument("--no-loader", action="store_true", help="skip the loader table")
    args = ap.parse_args(argv)
    old = torch.get_num_threads()
    load_before = os.getloadavg()
    print(f"load average before: {load_before}", flush=True)
    tables = []
    for device in DEVICES:
        table = encoder_table(device)
        table.print()
        table.save(results_dir() / f"encoder_{device}.json")
        tables.append(table)
    if "cpu" in DEVICES and not args.no_loader:
        table = loader_table()
        table.print()
        table.save(results_dir() / "encoder_loader.json")
        tables.append(table)
    torch.set_num_threads(old)
    load_after = os.getloadavg()
    print(f"load average after: {load_after}; {_block_summary(_batch(DEVICES[0])[0])}", flush=True)
    if args.write:
        env = " ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ) if k.startswith("LMGNN_BENCH"))
        cmd = " ".join(filter(None, [env, "python benchmarks/bench_encoder.py", f"--write {args.write}"]))
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(_report(tables, load_before, load_after, cmd))
        print(f"wrote {args.write}")
    return tables


if __name__ == "__main__":
    main()
