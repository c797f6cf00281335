"""2-layer attention encoders (HGT, RGAT) over one batch of sampled blocks, fwd + bwd, side by side.

The batch of ``bench_encoder.py``: ``NeighborSampler`` draws the blocks of one batch of
``paper`` seeds (full: 1,024 seeds, fanouts [10, 10]) from the synthetic power-law graph of
``bench_sampling.make_graph`` (3 node types, R = 8 relations; full: 1M nodes, 10M edges);
the encoder runs 2 layers 128 -> 128 -> 128 with 4 heads over them, and the sum of its
outputs is back-propagated (gradients for every weight and for the input features). Rows:

* ``HGT ours`` — two ``lmgnn_fast.nn.HGTConv`` (one ``hetero_attention`` call per layer).
* ``HGT ours, reference op`` — the same modules with ``use_kernel=False``: the op's
  pure-torch reference (per-edge gathers, scatter softmax, scatter sum).
* ``HGT PyG HGTConv`` — two ``torch_geometric.nn.HGTConv`` with our weights
  (``HGTConv.load_pyg_state``: the same function, outputs checked with ``assert_close``).
  PyG's layer has no bipartite form: it computes keys, queries, values and outputs for every
  source row of a block (the next layer reads the rows it needs), as it does on PyG's own
  sampled subgraphs.
* ``HGT PyG HGTConv, segment matmul`` — the same with its two ``HeteroLinear``s (the
  per-(head, relation) ``k_rel`` / ``v_rel``) running one matmul per type on ``split`` row
  blocks: a stand-in for pyg-lib's ``segment_matmul``, which PyG uses where pyg-lib is
  installed (it is not here: no wheel for this torch). PyG's own fallback assigns every
  type's product into a slice of the output, and the backward of each slice fills a zero
  gradient of all rows (64 fills of [875,876, 32] per fwd+bwd on the full batch), so the
  plain ``PyG HGTConv`` row is what PyG does on this install, the stand-in row what it
  would do with pyg-lib (approximately).
* ``RGAT ours`` / ``RGAT ours, reference op`` — two ``lmgnn_fast.nn.RGATConv`` (ReLU between).
* ``RGAT PyG HeteroConv(GATConv)`` — one ``GATConv((128, 128), 32, heads=4,
  add_self_loops=False)`` per relation, summed per destination type (ReLU between): equal
  sizes, not the same function (GAT's additive scores vs our dot products; no weights shared).

Timing: ``common.time_interleaved`` (the rows of one encoder in interleaved rounds, median),
at each thread count in ``LMGNN_BENCH_THREADS`` (``torch.set_num_threads``; full: 1,2;
quick: 1). ``peak MB``: ``common.tracked_peak_memory`` of one fwd+bwd. The load average is
printed before and after and written into the report.

pytest: ``pytest benchmarks/bench_attention.py --benchmark-json=out.json``
table:  ``python benchmarks/bench_attention.py [--write [PATH]]`` (``LMGNN_BENCH=full`` for
full sizes; ``--write`` saves the Markdown report, default ``benchmarks/results/attention.md``)
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
from functools import lru_cache
from pathlib import Path

import pytest
import torch

import lmgnn_fast  # noqa: F401
from bench_sampling import NODE_TYPES, make_graph
from common import QUICK, Table, bench_devices, device_name, results_dir, time_interleaved, tracked_peak_memory
from lmgnn_fast.graph import CSC, HeteroGraph
from lmgnn_fast.nn import HGTConv, RGATConv
from lmgnn_fast.ops import csc_to_coo
from lmgnn_fast.sampling import NeighborSampler

try:
    import torch_geometric
    import torch_geometric.nn as pyg_nn
except ImportError:  # pragma: no cover
    torch_geometric = pyg_nn = None

DEVICES = bench_devices()
R = int(os.environ.get("LMGNN_BENCH_R", "8"))
DIM = 128
HEADS = 4
FANOUTS = [10, 10]
SEED_TYPE = "paper"
if QUICK:
    GRAPH = dict(num_nodes=20_000, num_edges=200_000, batch=64)
    THREADS = [int(v) for v in os.environ.get("LMGNN_BENCH_THREADS", "1").split(",") if v]
else:
    GRAPH = dict(num_nodes=1_000_000, num_edges=10_000_000, batch=1024)
    THREADS = [int(v) for v in os.environ.get("LMGNN_BENCH_THREADS", "1,2").split(",") if v]
TOL = dict(rtol=1e-4, atol=1e-4)
ENCODERS = ("HGT", "RGAT")


@lru_cache(maxsize=1)
def _graph():
    """(HeteroGraph, sampler): the synthetic power-law graph of ``bench_sampling``."""
    n, edge_types, _, csc = make_graph(GRAPH["num_nodes"], GRAPH["num_edges"], R)
    graph = HeteroGraph(node_types=list(NODE_TYPES), edge_types=edge_types, num_nodes=n,
                        csc={et: CSC(*csc[et]) for et in edge_types})
    return graph, NeighborSampler(graph, FANOUTS, seed=0)


@lru_cache(maxsize=2)
def _batch(device: str):
    """One batch (the one ``bench_encoder.py`` draws): (blocks on ``device``, input
    features {type: [num_src, DIM]})."""
    graph, sampler = _graph()
    g = torch.Generator().manual_seed(1)
    seeds = torch.randperm(graph.num_nodes[SEED_TYPE], generator=g)[:GRAPH["batch"]]
    blocks = [b.to(device) for b in sampler.sample({SEED_TYPE: seeds}, seed=0)]
    x = {t: torch.randn(blocks[0].num_src(t), DIM, generator=g).to(device) for t in NODE_TYPES}
    return blocks, x


def _edge_index(blocks):
    return [{et: torch.stack(csc_to_coo(b.indptr[r], b.indices[r])) for r, et in enumerate(b.edge_types)}
            for b in blocks]


def _ours(cls, device, use_kernel):
    graph, _ = _graph()
    torch.manual_seed(0)
    return torch.nn.ModuleList(cls(DIM, DIM, graph.node_types, graph.edge_types, heads=HEADS, use_kernel=use_kernel)
                               for _ in FANOUTS).to(device)


def _run_ours(convs, blocks, relu):
    def forward(x):
        h = x
        for i, (conv, block) in enumerate(zip(convs, blocks)):
            h = conv(h, block)
            if relu and i < len(convs) - 1:
                h = {t: torch.relu(v) for t, v in h.items()}
        return h
    return forward


def _split_matmul(self, x, type_ptr):
    """Stand-in for pyg-lib's ``segment_matmul`` in ``HeteroLinear`` (pyg-lib is not installed
    here): one matmul per type on ``split`` row blocks, concatenated — no per-type slice
    assignment, whose backward fills a zero gradient of all rows for every type."""
    sizes = type_ptr.diff().tolist()
    return torch.cat([xs @ self.weight[i] for i, xs in enumerate(x.split(sizes))])


def _pyg_hgt(ours, blocks, segment=False):
    """PyG HGTConv layers with ``ours``' weights: -> forward(x_dict) -> {type: [num_dst, DIM]}.
    ``segment``: their ``HeteroLinear``s run :func:`_split_matmul`."""
    graph, _ = _graph()
    layers = []
    for conv in ours:
        p = pyg_nn.HGTConv(DIM, DIM, (graph.node_types, graph.edge_types), heads=HEADS)
        _copy_hgt_to_pyg(conv, p)
        if segment:
            for lin in (p.k_rel, p.v_rel):
                lin.forward_naive = _split_matmul.__get__(lin)
        layers.append(p.to(conv.w_att.device))
    edge_index = _edge_index(blocks)

    def forward(x):
        h = x
        for layer, block, ei in zip(layers, blocks, edge_index):
            h = layer({t: v[:block.num_src(t)] for t, v in h.items()}, ei)
        return {t: v[:blocks[-1].num_dst[t]] for t, v in h.items()}
    return forward, [p for m in layers for p in m.parameters()]


@torch.no_grad()
def _copy_hgt_to_pyg(ours, theirs):
    """Our HGTConv's weights into a PyG HGTConv (the inverse of ``HGTConv.load_pyg_state``)."""
    F, Rr, H = ours.out_channels, ours.num_relations, ours.heads
    for t in ours.node_types:
        lin = theirs.kqv_lin.lins[t]
        lin.weight.copy_(torch.cat([ours.k_lin[t].weight, ours.q_lin[t].weight, ours.v_lin[t].weight]))
        lin.bias.copy_(torch.cat([ours.k_lin[t].bias, ours.q_lin[t].bias, ours.v_lin[t].bias]))
        theirs.out_lin.lins[t].weight.copy_(ours.a_lin[t].weight)
        theirs.out_lin.lins[t].bias.copy_(ours.a_lin[t].bias)
        theirs.skip[t].copy_(ours.skip[ours.node_types.index(t)].reshape(1))
    theirs.k_rel.weight.copy_(ours.w_att.transpose(0, 1).reshape(H * Rr, F // H, F // H))
    theirs.v_rel.weight.copy_(ours.w_msg.transpose(0, 1).reshape(H * Rr, F // H, F // H))
    for r, e in enumerate(ours.edge_types):
        theirs.p_rel["__".join(e)].copy_(ours.mu[r].reshape(1, H))


def _pyg_gat(blocks, device):
    """PyG HeteroConv(GATConv) per layer, equal sizes (not the same function)."""
    graph, _ = _graph()
    torch.manual_seed(0)
    layers = [pyg_nn.HeteroConv({et: pyg_nn.GATConv((DIM, DIM), DIM // HEADS, heads=HEADS, add_self_loops=False)
                                 for et in graph.edge_types}, aggr="sum").to(device) for _ in FANOUTS]
    edge_index = _edge_index(blocks)

    def forward(x):
        h = x
        for i, (layer, block, ei) in enumerate(zip(layers, blocks, edge_index)):
            pairs = {et: (h[et[0]][:block.num_src(et[0])], h[et[2]][:block.num_dst[et[2]]]) for et in block.edge_types}
            h = layer(pairs, ei)  # edge-level (source rows, destination rows) per relation
            if i < len(layers) - 1:
                h = {t: torch.relu(v) for t, v in h.items()}
        return h
    return forward, [p for m in layers for p in m.parameters()]


def _step(forward, params, inputs):
    """fwd + bwd closure: fresh leaf inputs requiring grad, sum of the outputs backward."""
    def run():
        for p in params:
            p.grad = None
        xs = {k: v.detach().requires_grad_() for k, v in inputs.items()}
        out = forward(xs)
        sum(v.sum() for v in out.values()).backward()
    return run


@lru_cache(maxsize=4)
def implementations(encoder, device):
    """name -> (math note, fwd+bwd closure, forward -> {type: out}) for one batch."""
    blocks, x = _batch(device)
    cls = HGTConv if encoder == "HGT" else RGATConv
    relu = encoder == "RGAT"
    ours, ref = _ours(cls, device, None), _ours(cls, device, False)
    ref.load_state_dict(ours.state_dict())
    out = {}
    for name, convs in ((f"{encoder} ours", ours), (f"{encoder} ours, reference op", ref)):
        fwd = _run_ours(convs, blocks, relu)
        out[name] = ("same", _step(fwd, list(convs.parameters()), x), lambda fwd=fwd: fwd(x))
    if pyg_nn is not None:
        if encoder == "HGT":
            fwd, ps = _pyg_hgt(ours, blocks)
            out["HGT PyG HGTConv"] = ("same", _step(fwd, ps, x), lambda: fwd(x))
            fwd2, ps2 = _pyg_hgt(ours, blocks, segment=True)
            out["HGT PyG HGTConv, segment matmul"] = ("same", _step(fwd2, ps2, x), lambda: fwd2(x))
        else:
            fwd, ps = _pyg_gat(blocks, device)
            out["RGAT PyG HeteroConv(GATConv)"] = ("equal sizes; additive scores", _step(fwd, ps, x), lambda: fwd(x))
    return out


def check_equal(impls) -> dict[str, float | None]:
    """Rows computing ours' function against ours (``assert_close``); -> name -> max |diff|
    (``None`` for rows of equal sizes only)."""
    with torch.no_grad():
        first = next(iter(impls))
        want = impls[first][2]()
        diffs = {}
        for name, (note, _, forward) in impls.items():
            if note != "same":
                diffs[name] = None
                continue
            got = forward()
            diff = 0.0
            for t, w in want.items():
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


IMPLS = ["HGT ours", "HGT ours, reference op", "HGT PyG HGTConv", "HGT PyG HGTConv, segment matmul",
         "RGAT ours", "RGAT ours, reference op", "RGAT PyG HeteroConv(GATConv)"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS)
def test_attention_encoder(benchmark, impl, device):
    if "PyG" in impl and pyg_nn is None:
        pytest.skip("torch_geometric not installed")
    encoder = impl.split()[0]
    impls = implementations(encoder, device)
    check_equal({k: impls[k] for k in (f"{encoder} ours", impl)})  # raises where the outputs differ
    blocks, _ = _batch(device)
    benchmark.extra_info.update(R=R, dim=DIM, heads=HEADS, fanouts=FANOUTS, device=device_name(device),
                                blocks=_block_summary(blocks), **GRAPH)
    benchmark(impls[impl][1])


def attention_table(device) -> Table:
    cols = ["threads", "encoder", "impl", "math vs ours", "ms fwd+bwd", "x vs ours", "peak MB", "max |diff|"]
    where = device_name(device) if torch.device(device).type == "cuda" else f"{platform.machine()} CPU"
    table = Table(f"2-layer attention encoders fwd+bwd over one sampled batch — {where}", cols)
    threads = THREADS if torch.device(device).type == "cpu" else [torch.get_num_threads()]
    for n in threads:
        torch.set_num_threads(n)
        for encoder in ENCODERS:
            impls = implementations(encoder, device)
            diffs = check_equal(impls)
            times = time_interleaved({k: v[1] for k, v in impls.items()}, device)
            ours = times[f"{encoder} ours"]
            for name, (note, fn, _) in impls.items():
                mem = tracked_peak_memory(fn, device)
                table.add(n, encoder, name, note, times[name] * 1e3, times[name] / ours,
                          mem / 2**20 if mem is not None else "-", "-" if diffs[name] is None else diffs[name])
            print(f"{encoder} threads={n} done (load {os.getloadavg()[0]:.2f})", flush=True)
    return table


def _report(tables, load_before, load_after, command) -> str:
    blocks, _ = _batch(DEVICES[0])
    pyg = torch_geometric.__version__ if torch_geometric is not None else "not installed"
    lines = ["# Attention encoders (HGT, RGAT) over sampled blocks — benchmark figures", "",
             "## How it is measured", "", "```", command, "```", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}); "
             f"torch {torch.__version__}, torch_geometric {pyg}, Python {platform.python_version()}; "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; mode {'quick' if QUICK else 'full'}.",
             f"Load average (1, 5, 15 min): before {load_before[0]:.2f} / {load_before[1]:.2f} / "
             f"{load_before[2]:.2f}, after {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}.", "",
             f"Graph: {GRAPH['num_nodes']:,} nodes, {GRAPH['num_edges']:,} edges, {R} relations, node types "
             f"{NODE_TYPES} (power law, `bench_sampling.make_graph`); batch {GRAPH['batch']} `{SEED_TYPE}` seeds, "
             f"fanouts {FANOUTS}; {_block_summary(blocks)}. Encoders: 2 layers {DIM} -> {DIM} -> {DIM}, "
             f"{HEADS} heads. Rows and timing: see the docstring of `benchmarks/bench_attention.py`. "
             "`x vs ours` = time over ours of the same encoder (above 1: slower than ours); `max |diff|` = largest "
             "difference of the row's output from ours (rows computing the same function passed `assert_close`, "
             "rtol = atol = 1e-4, before timing; `-`: equal sizes, another function).", ""]
    lines += [t.markdown() for t in tables]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", nargs="?", const="benchmarks/results/attention.md", default=None, metavar="PATH",
                    help="save the Markdown report (default path: benchmarks/results/attention.md)")
    args = ap.parse_args(argv)
    old = torch.get_num_threads()
    load_before = os.getloadavg()
    print(f"load average before: {load_before}", flush=True)
    tables = []
    for device in DEVICES:
        table = attention_table(device)
        table.print()
        table.save(results_dir() / f"attention_{device}.json")
        tables.append(table)
    torch.set_num_threads(old)
    load_after = os.getloadavg()
    print(f"load average after: {load_after}; {_block_summary(_batch(DEVICES[0])[0])}", flush=True)
    if args.write:
        env = " ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ) if k.startswith("LMGNN_BENCH"))
        cmd = " ".join(filter(None, [env, "python benchmarks/bench_attention.py", f"--write {args.write}"]))
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(_report(tables, load_before, load_after, cmd))
        print(f"wrote {args.write}")
    return tables


if __name__ == "__main__":
    main()
