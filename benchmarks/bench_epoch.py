"""One stage-2 training epoch, end to end: ours vs the same model built from PyG parts.

What a user feels is the epoch, not a kernel. Both sides train the default stage-2 graph
model (``GNNConfig`` defaults: 2 R-GCN layers, hidden 128, mean per relation, dropout 0.2,
per-type LayerNorm on the LM rows, fanouts [10, 10]) for node classification of ``paper``
nodes on frozen "LM embeddings" (a fixed random table, ``EMB`` wide), with Adam (stage-2
lr 3e-3), the same batch size, the same training nodes and the same number of steps:

* ``ours`` — ``NeighborSampler`` + ``NodeLoader`` (batches built in the loader's
  background thread, ``prefetch=2``), feature fetch ``table[t][src_nodes]``,
  ``lmgnn_fast.nn.GraphModel`` (``RGCN`` on the fused ``rgcn_aggregate`` op) + ``NodeHead``.
* ``PyG`` — ``torch_geometric.loader.NeighborLoader`` over a ``HeteroData`` holding the
  same edges and the same feature table (its default: batches built in the caller's
  thread), per-type ``LayerNorm`` + ``Linear``, two ``HeteroConv`` layers of one
  ``SAGEConv(aggr="mean")`` per relation summed per destination type (R-GCN's function:
  a mean-aggregated ``W_r`` per relation plus root weights), dropout, and a ``Linear`` head
  on the seed rows.

Graph: ``bench_sampling.make_graph`` (3 node types, power-law edges, R relations; full:
1M nodes / 10M edges, R = 8). Labels: ``argmax(emb_paper @ W)`` for a fixed random ``W``
over ``CLASSES`` classes (learnable from a node's own row, so both models can fit them).

Timing: per thread count (``torch.set_num_threads``; ``LMGNN_BENCH_THREADS``, full: 1,2;
quick: 1), the two epochs run in alternation (``ROUNDS`` times each, from the same initial
state), the median epoch time is kept; ``x vs PyG`` is PyG's time over ours, from the same
run. The per-step breakdown of ours (sample wait, fetch, forward, backward, optimizer) is
measured in an extra, separately timed epoch. Quality check: the mean training loss of
the last half of the steps of each side (and their ratio) is printed, and the run fails
when ours is more than ``LOSS_TOL`` worse than PyG's.

pytest: ``pytest benchmarks/bench_epoch.py --benchmark-json=out.json``
table:  ``python benchmarks/bench_epoch.py [--write [PATH]]`` (``LMGNN_BENCH=full`` for full
sizes; ``--write`` saves the Markdown report, default ``benchmarks/results/epoch.md``)
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
from torch.nn import functional as F

import lmgnn_fast  # noqa: F401
from bench_sampling import NODE_TYPES, make_graph, pyg_backend
from common import QUICK, Table, gc_paused, results_dir
from lmgnn_fast.graph import CSC, HeteroGraph
from lmgnn_fast.nn.heads import NodeHead
from lmgnn_fast.nn.model import GraphModel
from lmgnn_fast.sampling import NeighborSampler, NodeLoader

try:
    import torch_geometric
    from torch_geometric.data import HeteroData
    from torch_geometric.loader import NeighborLoader
    from torch_geometric.nn import HeteroConv, SAGEConv
except ImportError:  # pragma: no cover
    torch_geometric = None
# PyG's NeighborLoader needs pyg-lib or torch-sparse besides torch_geometric (the test extra has
# neither; the bench extra brings torch-sparse): without them the PyG side is skipped, as in
# bench_sampling
PYG_SAMPLING = torch_geometric is not None and pyg_backend() not in ("absent", "none")

SEED_TYPE = "paper"
HIDDEN, LAYERS, FANOUTS, DROPOUT, LR = 128, 2, [10, 10], 0.2, 3e-3
CLASSES = 16
LOSS_TOL = 1.25  # ours' late-epoch loss may be at most this many times PyG's
if QUICK:
    GRAPH = dict(num_nodes=20_000, num_edges=200_000, relations=4)
    EMB, BATCH, STEPS, ROUNDS = 64, 64, 8, 1
    THREADS = [int(v) for v in os.environ.get("LMGNN_BENCH_THREADS", "1").split(",") if v]
else:
    GRAPH = dict(num_nodes=1_000_000, num_edges=10_000_000, relations=8)
    EMB, BATCH, STEPS, ROUNDS = 384, 1024, 30, 3
    THREADS = [int(v) for v in os.environ.get("LMGNN_BENCH_THREADS", "1,2").split(",") if v]


@lru_cache(maxsize=1)
def setup():
    """(HeteroGraph, features {type: [N_t, EMB]}, labels [N_paper], training seeds [STEPS * BATCH])."""
    n, edge_types, coo, csc = make_graph(GRAPH["num_nodes"], GRAPH["num_edges"], GRAPH["relations"])
    graph = HeteroGraph(node_types=list(NODE_TYPES), edge_types=edge_types, num_nodes=n,
                        csc={et: CSC(*csc[et]) for et in edge_types})
    g = torch.Generator().manual_seed(7)
    feats = {t: torch.randn(n[t], EMB, generator=g) for t in NODE_TYPES}
    w = torch.randn(EMB, CLASSES, generator=g)
    labels = (feats[SEED_TYPE] @ w).argmax(1)
    train = torch.randperm(n[SEED_TYPE], generator=g)[:STEPS * BATCH]
    return graph, coo, feats, labels, train


# ---- ours -------------------------------------------------------------------------------

class Ours(nn.Module):
    def __init__(self, graph):
        super().__init__()
        self.gnn = GraphModel(graph.node_types, graph.edge_types, graph.num_nodes, "node_classification", CLASSES,
                              False, lm_dim=EMB, text_types=graph.node_types, hidden=HIDDEN, num_layers=LAYERS,
                              dropout=DROPOUT)

    def forward(self, x, blocks):
        return self.gnn.head(self.gnn(x, blocks)[SEED_TYPE])


def ours_epoch(breakdown: dict | None = None) -> list[float]:
    """One epoch of ours; -> per-step losses. ``breakdown`` (when given) gets seconds per phase."""
    graph, _, feats, labels, train = setup()
    torch.manual_seed(0)
    model = Ours(graph)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sampler = NeighborSampler(graph, FANOUTS, seed=0)
    loader = NodeLoader(graph, sampler, SEED_TYPE, seeds=train, batch_size=BATCH, shuffle=True, seed=0, prefetch=2)
    losses = []
    clock = time.perf_counter
    t = clock()
    for batch in loader:
        t0 = clock()
        x = {k: feats[k][v] for k, v in batch.input_nodes.items()}
        y = labels[batch.seeds[SEED_TYPE]]
        t1 = clock()
        loss = F.cross_entropy(model(x, batch.blocks), y)
        t2 = clock()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = clock()
        opt.step()
        t4 = clock()
        losses.append(float(loss.detach()))
        if breakdown is not None:
            for k, v in (("sample (wait)", t0 - t), ("fetch", t1 - t0), ("forward", t2 - t1), ("backward", t3 - t2),
                         ("optimizer", t4 - t3)):
                breakdown[k] = breakdown.get(k, 0.0) + v
        t = clock()
    return losses


# ---- PyG --------------------------------------------------------------------------------

class PygModel(nn.Module):
    def __init__(self, edge_types):
        super().__init__()
        self.norm = nn.ModuleDict({t: nn.LayerNorm(EMB) for t in NODE_TYPES})
        self.proj = nn.ModuleDict({t: nn.Linear(EMB, HIDDEN) for t in NODE_TYPES})
        self.convs = nn.ModuleList(HeteroConv({et: SAGEConv(HIDDEN, HIDDEN, aggr="mean") for et in edge_types},
                                              aggr="sum") for _ in range(LAYERS))
        self.drop = nn.Dropout(DROPOUT)
        self.head = NodeHead(HIDDEN, CLASSES, dropout=DROPOUT)

    def forward(self, x, edge_index, batch_size):
        h = {t: self.drop(torch.relu(self.proj[t](self.norm[t](v)))) for t, v in x.items()}
        for i, conv in enumerate(self.convs):
            out = conv(h, edge_index)
            h = {**h, **out} if i < len(self.convs) - 1 else out
            if i < len(self.convs) - 1:
                h = {t: self.drop(torch.relu(v)) for t, v in h.items()}
        return self.head(h[SEED_TYPE][:batch_size])


@lru_cache(maxsize=1)
def pyg_data():
    graph, coo, feats, labels, _ = setup()
    data = HeteroData()
    for t in NODE_TYPES:
        data[t].x = feats[t]
        data[t].num_nodes = graph.num_nodes[t]
    data[SEED_TYPE].y = labels
    for et in graph.edge_types:
        data[et].edge_index = torch.stack(coo[et])
    return data


def pyg_epoch() -> list[float]:
    graph, _, _, _, train = setup()
    data = pyg_data()
    torch.manual_seed(0)
    model = PygModel(graph.edge_types)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loader = NeighborLoader(data, num_neighbors={et: list(FANOUTS) for et in graph.edge_types},
                            input_nodes=(SEED_TYPE, train), batch_size=BATCH, shuffle=True)
    losses = []
    for batch in loader:
        b = batch[SEED_TYPE].batch_size
        loss = F.cross_entropy(model(batch.x_dict, batch.edge_index_dict, b), batch[SEED_TYPE].y[:b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


# ---- measurement --------------------------------------------------------------------------

def late_loss(losses: list[float]) -> float:
    half = losses[len(losses) // 2:]
    return sum(half) / len(half)


def measure(threads: int) -> dict:
    """Both epochs in alternation at ``threads`` threads; -> times, losses, breakdown."""
    torch.set_num_threads(threads)
    impls = {"ours": ours_epoch}
    if PYG_SAMPLING:
        impls["PyG"] = pyg_epoch
    for fn in impls.values():  # warm-up (PyG builds its CSC here; our loader's buffers)
        fn()
    times: dict[str, list[float]] = {k: [] for k in impls}
    losses: dict[str, list[float]] = {}
    with gc_paused():
        for _ in range(ROUNDS):
            for name, fn in impls.items():
                t0 = time.perf_counter()
                losses[name] = fn()
                times[name].append(time.perf_counter() - t0)
    breakdown: dict[str, float] = {}
    ours_epoch(breakdown)
    return {"time": {k: sorted(v)[len(v) // 2] for k, v in times.items()}, "losses": losses,
            "breakdown": breakdown}


def epoch_tables() -> list[Table]:
    graph = setup()[0]
    where = f"{platform.machine()} CPU"
    table = Table(f"One stage-2 epoch ({STEPS} steps of {BATCH} `{SEED_TYPE}` seeds, fanouts {FANOUTS}, "
                  f"{sum(graph.num_nodes.values()):,} "
                  f"nodes, R={GRAPH['relations']}) — {where}",
                  ["threads", "impl", "epoch s", "ms / step", "x vs PyG", "late loss", "loss vs PyG", "load (1 min)"])
    parts = Table(f"Ours, one stage-2 epoch broken down (ms / step) — {where}",
                  ["threads", "sample (wait)", "fetch", "forward", "backward", "optimizer", "total"])
    for n in THREADS:
        m = measure(n)
        load = os.getloadavg()[0]
        base = m["time"].get("PyG")
        base_loss = late_loss(m["losses"]["PyG"]) if "PyG" in m["losses"] else None
        for name, t in m["time"].items():
            ll = late_loss(m["losses"][name])
            table.add(n, name, t, t / len(m["losses"][name]) * 1e3, base / t if base else float("nan"), ll,
                      ll / base_loss if base_loss else float("nan"), load)
        b = m["breakdown"]
        parts.add(n, *(b[k] / STEPS * 1e3 for k in ("sample (wait)", "fetch", "forward", "backward", "optimizer")),
                  sum(b.values()) / STEPS * 1e3)
        if base_loss is not None:
            ours_loss = late_loss(m["losses"]["ours"])
            assert ours_loss <= LOSS_TOL * base_loss, \
                f"bench_epoch: ours' late-epoch loss {ours_loss:.4f} is more than {LOSS_TOL}x PyG's {base_loss:.4f}"
        print(f"threads={n} done (load {load:.2f}): {table.rows[-len(m['time']):]}; breakdown {parts.rows[-1]}",
              flush=True)
    return [table, parts]


@pytest.mark.parametrize("impl", ["ours", "PyG"])
def test_epoch(benchmark, impl):
    if impl == "PyG" and not PYG_SAMPLING:
        pytest.skip("PyG sampling backend (pyg-lib or torch-sparse) not installed")
    fn = ours_epoch if impl == "ours" else pyg_epoch
    losses = fn()  # warm-up
    assert len(losses) == STEPS and all(v == v for v in losses)
    benchmark.extra_info.update(steps=STEPS, batch=BATCH, fanouts=FANOUTS, emb=EMB, **GRAPH)
    benchmark.pedantic(fn, rounds=1, iterations=1)


def _report(tables, load_before, load_after, command) -> str:
    pyg = torch_geometric.__version__ if torch_geometric is not None else "not installed"
    lines = ["# One stage-2 training epoch: ours vs PyG parts — benchmark figures", "",
             "## How it is measured", "", "```", command, "```", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}); "
             f"torch {torch.__version__}, torch_geometric {pyg}, Python {platform.python_version()}; "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; mode {'quick' if QUICK else 'full'}.",
             f"Load average (1, 5, 15 min): before {load_before[0]:.2f} / {load_before[1]:.2f} / "
             f"{load_before[2]:.2f}, after {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}.", "",
             f"Graph: {GRAPH['num_nodes']:,} nodes, {GRAPH['num_edges']:,} edges, {GRAPH['relations']} relations "
             f"(`bench_sampling.make_graph`); features {EMB} wide; {CLASSES} classes. Model, loaders and timing: "
             "see the docstring of `benchmarks/bench_epoch.py`. `x vs PyG` = PyG's epoch time over ours (above "
             "1: ours faster), both from the same run; `late loss` = mean training loss over the second half of "
             "the epoch's steps.", ""]
    lines += [t.markdown() for t in tables]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", nargs="?", const="benchmarks/results/epoch.md", default=None, metavar="PATH",
                    help="save the Markdown report (default path: benchmarks/results/epoch.md)")
    args = ap.parse_args(argv)
    old = torch.get_num_threads()
    load_before = os.getloadavg()
    print(f"load average before: {load_before}", flush=True)
    tables = epoch_tables()
    torch.set_num_threads(old)
    load_after = os.getloadavg()
    for i, t in enumerate(tables):
        t.print()
        t.save(results_dir() / f"epoch_{i}.json")
    if args.write:
        env = " ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ) if k.startswith("LMGNN_BENCH"))
        cmd = " ".join(filter(None, [env, "python benchmarks/bench_epoch.py", f"--write {args.write}"]))
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(_report(tables, load_before, load_after, cmd))
        print(f"wrote {args.write}")
    return tables


if __name__ == "__main__":
    main()
