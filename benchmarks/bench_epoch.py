"""One training epoch, end to end: ours vs the same model built from PyG parts.

What a user feels is the epoch, not a kernel. Both sides train the default graph model
(``GNNConfig`` defaults: 2 R-GCN layers, hidden 128, mean per relation, dropout 0.2,
per-type LayerNorm on the LM rows, fanouts [10, 10]) for node classification of one node
type, with the same batch size, the same training nodes and the same number of steps:

* **stage 2** — the graph model on frozen "LM rows" (a fixed random table, ``EMB`` = 384
  wide, the packaged MiniLM's width), Adam at stage 2's lr 3e-3.
* **stage 3** — the LM and the graph model together, as the trainer's stage 3 does it:
  the first ``LM_NODES`` = 16 seeds of each batch (``stage3.lm_train_nodes``) go through the
  packaged all-MiniLM-L6-v2 with gradients (``MAX_LEN`` = 32 tokens, ``lm.max_length``), the
  other input rows come from the stored rows, and the fresh LM rows are written back after
  the step; AdamW 2e-5 on the LM (gradients clipped to norm 1), Adam 1e-3 on the graph model,
  64 seeds per step (``stage3.batch_size``). Both sides run the same LM from the same weights
  on the same texts, so the LM's share of the step is common to both.

Sides:

* ``ours`` — ``NeighborSampler`` + ``NodeLoader`` (batches built in the loader's
  background thread, ``prefetch=2``), rows from the table (stage 2, read in the loader's
  thread through ``loader.transform``, as the trainer's stage 2 does) or from the trainer's
  ``EmbeddingCache`` (stage 3, ``builders.make_cache``, write-back with ``update``),
  ``lmgnn_fast.nn.GraphModel`` (``RGCN`` on the fused ``rgcn_aggregate`` op) + ``NodeHead``.
* ``PyG`` — ``torch_geometric.loader.NeighborLoader`` over a ``HeteroData`` holding the
  same edges and the same rows (its default: batches built in the caller's thread; stage 3
  writes the LM rows back into ``HeteroData``), per-type ``LayerNorm`` + ``Linear``, two
  ``HeteroConv`` layers of one ``SAGEConv(aggr="mean")`` per relation summed per
  destination type (R-GCN's function: a mean-aggregated ``W_r`` per relation plus root
  weights), dropout, and a ``Linear`` head on the seed rows.

Graphs (``LMGNN_BENCH_GRAPHS``): ``synthetic`` — ``bench_sampling.make_graph`` (3 node
types, power-law edges; full: 1M nodes / 10M edges, R = 8; quick: 20k / 200k, R = 4),
seeds of type ``paper``, made-up texts of 12-40 words for stage 3; ``attack`` — the
built-in MITRE ATT&CK graph (its real relations and texts), seeds of the ``tactic`` task's
node type. Labels: ``argmax(rows @ W)`` for a fixed random ``W`` over ``CLASSES`` classes
(learnable from a node's own row, so both models can fit them).

Timing: per graph, stage (``LMGNN_BENCH_STAGES``, default 2,3) and thread count
(``torch.set_num_threads``; ``LMGNN_BENCH_THREADS``, full: 1,2; quick: 1), the two epochs
run in alternation (``ROUNDS`` times each, stage-3 LM reset to the same weights each time),
the median epoch time is kept; ``x vs PyG`` is PyG's time over ours, from the same run.
The per-step breakdown of ours (sample wait, fetch, forward, backward + optimizer) is
measured in an extra epoch. Quality check: the mean training loss of the last half of the
steps of each side (and their ratio) is printed, and the run fails when ours is more than
``LOSS_TOL`` worse than PyG's.

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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import lmgnn_fast  # noqa: F401
from bench_sampling import NODE_TYPES, make_graph, pyg_backend
from common import QUICK, Table, gc_paused, results_dir
from lmgnn_fast.graph import CSC, HeteroGraph
from lmgnn_fast.nn.heads import NodeHead
from lmgnn_fast.nn.model import GraphModel
from lmgnn_fast.sampling import NeighborSampler, NodeLoader
from lmgnn_fast.train import builders

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

HIDDEN, LAYERS, FANOUTS, DROPOUT = 128, 2, [10, 10], 0.2
LR2, LR3_LM, LR3_GNN = 3e-3, 2e-5, 1e-3  # stage-2 lr; stage-3 LM / graph lr (the trainer's defaults)
CLASSES = 16
LOSS_TOL = 1.25  # ours' late-epoch loss may be at most this many times PyG's
EMB = 384  # the packaged MiniLM's width: stage-3 LM rows replace table rows
LM_NODES, MAX_LEN = 16, 32  # stage 3: seeds per batch through the LM (stage3.lm_train_nodes), tokens per text
ATTACK_TASK = "tactic"
if QUICK:
    SYNTH = dict(num_nodes=20_000, num_edges=200_000, relations=4)
    STEPS = {2: 8, 3: 3}
    ROUNDS = 1
    GRAPHS = [g for g in os.environ.get("LMGNN_BENCH_GRAPHS", "synthetic").split(",") if g]
    THREADS = [int(v) for v in os.environ.get("LMGNN_BENCH_THREADS", "1").split(",") if v]
else:
    SYNTH = dict(num_nodes=1_000_000, num_edges=10_000_000, relations=8)
    STEPS = {2: 30, 3: 10}
    ROUNDS = 3
    GRAPHS = [g for g in os.environ.get("LMGNN_BENCH_GRAPHS", "synthetic,attack").split(",") if g]
    THREADS = [int(v) for v in os.environ.get("LMGNN_BENCH_THREADS", "1,2").split(",") if v]
STAGES = [int(s) for s in os.environ.get("LMGNN_BENCH_STAGES", "2,3").split(",") if s]
# seeds per step: stage 2 on the synthetic graph as the sizes; on attack the trainer's
# auto batch (the largest power of two <= training items / 20); stage 3: stage3.batch_size
BATCH = {("synthetic", 2): 64 if QUICK else 1024, ("attack", 2): 32, ("synthetic", 3): 64, ("attack", 3): 64}


@dataclass
class Setup:
    name: str
    graph: HeteroGraph
    coo: dict  # relation -> (src [E], dst [E])
    feats: dict  # node type -> [N_t, EMB] "LM rows" (a fixed random table)
    labels: Tensor  # [N_seed_type] class ids
    seed_type: str
    texts: list  # text of every seed-type node (only the training seeds' are tokenized)
    train: Tensor  # seed-type node ids, shuffled; the first steps * batch are used

    def steps(self, stage: int) -> int:
        """Steps of the epoch: ``STEPS[stage]``, fewer when the graph has not that many
        batches of distinct training nodes (attack's ``tactic`` node type at full size)."""
        return max(1, min(STEPS[stage], self.train.numel() // BATCH[(self.name, stage)]))

    def seeds(self, stage: int) -> Tensor:
        """The epoch's seeds: distinct nodes (a loader refuses repeated seeds)."""
        return self.train[:self.steps(stage) * BATCH[(self.name, stage)]]


def _words(n: int, seed: int) -> list[str]:
    """``n`` made-up texts of 12-40 words (pronounceable syllables), seeded."""
    rng = np.random.default_rng(seed)
    syl = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    vocab = ["".join(rng.choice(syl, size=k)) for k in rng.integers(1, 4, size=2000)]
    lens = rng.integers(12, 41, size=n)
    return [" ".join(rng.choice(vocab, size=k)) for k in lens]


@lru_cache(maxsize=2)
def setup(name: str) -> Setup:
    g = torch.Generator().manual_seed(7)
    if name == "synthetic":
        n, edge_types, coo, csc = make_graph(SYNTH["num_nodes"], SYNTH["num_edges"], SYNTH["relations"])
        graph = HeteroGraph(node_types=list(NODE_TYPES), edge_types=edge_types, num_nodes=n,
                            csc={et: CSC(*csc[et]) for et in edge_types})
        seed_type = "paper"
        train = torch.randperm(n[seed_type], generator=g)[:max(STEPS.values()) * max(BATCH.values())]
        texts = [""] * n[seed_type]
        for i, t in zip(train.tolist(), _words(train.numel(), 7)):
            texts[i] = t
    elif name == "attack":
        from lmgnn_fast.datasets import load_dataset

        graph = load_dataset("attack")
        seed_type = graph.task(ATTACK_TASK).node_type
        coo = {et: graph.all_edges(et) for et in graph.edge_types}
        train = torch.randperm(graph.num_nodes[seed_type], generator=g)
        texts = [t or " " for t in graph.text[seed_type]]
    else:
        raise ValueError(f"bench_epoch: unknown graph {name!r} (synthetic or attack)")
    feats = {t: torch.randn(graph.num_nodes[t], EMB, generator=g) for t in graph.node_types}
    w = torch.randn(EMB, CLASSES, generator=g)
    labels = (feats[seed_type] @ w).argmax(1)
    return Setup(name, graph, coo, feats, labels, seed_type, texts, train)


@lru_cache(maxsize=1)
def lm_parts():
    """(LM, its initial weights): every stage-3 epoch starts from the same weights."""
    from lmgnn_fast.lm import LMEncoder

    lm = LMEncoder.from_pretrained(None)
    return lm, {k: v.clone() for k, v in lm.state_dict().items()}


@lru_cache(maxsize=2)
def tokens(name: str):
    """Token ids of the seed type's texts (``MAX_LEN`` tokens) and a map node id -> row."""
    s = setup(name)
    ids = torch.unique(s.train)
    pos = torch.full((s.graph.num_nodes[s.seed_type],), -1, dtype=torch.long)
    pos[ids] = torch.arange(ids.numel())
    tok = lm_parts()[0].tokenize([s.texts[i] for i in ids.tolist()], MAX_LEN)
    return tok, pos


def _lm(stage: int):
    """The LM (reset to its initial weights) and its optimizer for a stage-3 epoch; None for 2."""
    if stage != 3:
        return None, None
    lm, init = lm_parts()
    lm.load_state_dict(init)
    lm.train()
    return lm, torch.optim.AdamW(lm.parameters(), lr=LR3_LM)


def _step(loss, lm, opts) -> None:
    for o in opts:
        o.zero_grad(set_to_none=True)
    loss.backward()
    if lm is not None:
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
    for o in opts:
        o.step()


# ---- ours -------------------------------------------------------------------------------

class Ours(nn.Module):
    def __init__(self, graph, seed_type):
        super().__init__()
        self.seed_type = seed_type
        self.gnn = GraphModel(graph.node_types, graph.edge_types, graph.num_nodes, "node_classification", CLASSES,
                              False, lm_dim=EMB, text_types=graph.node_types, hidden=HIDDEN, num_layers=LAYERS,
                              dropout=DROPOUT)

    def forward(self, x, blocks):
        return self.gnn.head(self.gnn(x, blocks)[self.seed_type])


@lru_cache(maxsize=2)
def _caches(name: str) -> dict:
    """Our stage-3 embedding caches (``EmbeddingCache``, as the trainer builds them),
    holding the same rows as the stage-2 table."""
    s = setup(name)
    caches = {}
    for t, v in s.feats.items():
        caches[t] = builders.make_cache(v.shape[0], EMB, "cpu")
        caches[t].update(torch.arange(v.shape[0]), v, step=0)
    return caches


def ours_epoch(name: str, stage: int, breakdown: dict | None = None) -> tuple[list[float], float]:
    """One epoch of ours -> (per-step losses, seconds). Stage 2: rows from the table; stage 3:
    rows from the caches, the first ``LM_NODES`` seeds' rows from the LM (with gradients)
    and written back. ``breakdown`` (when given) gets seconds per phase."""
    s = setup(name)
    lm, opt_lm = _lm(stage)
    tok, pos = tokens(name) if stage == 3 else (None, None)
    caches = _caches(name) if stage == 3 else None
    clock = time.perf_counter
    start = clock()
    torch.manual_seed(0)
    model = Ours(s.graph, s.seed_type)
    opts = [torch.optim.Adam(model.parameters(), lr=LR2 if stage == 2 else LR3_GNN)] + ([opt_lm] if lm else [])
    sampler = NeighborSampler(s.graph, FANOUTS, seed=0)
    loader = NodeLoader(s.graph, sampler, s.seed_type, seeds=s.seeds(stage), batch_size=BATCH[(name, stage)],
                        shuffle=True, seed=0, prefetch=2)
    if stage == 2:  # as the trainer's stage 2: rows read in the loader's thread (they do not change)
        loader.transform = lambda b: setattr(b, "x", {k: s.feats[k][v] for k, v in b.input_nodes.items()}) or b
    losses = []
    t = clock()
    for batch in loader:
        t0 = clock()
        seeds = batch.seeds[s.seed_type]
        if stage == 2:
            x = batch.x
        else:
            x = {k: caches[k].gather(v) for k, v in batch.input_nodes.items()}
        y = s.labels[seeds]
        t1 = clock()
        if lm is not None:  # seeds come first among the seed type's input rows
            ids = seeds[:LM_NODES]
            rows = lm(*tok.batch(pos[ids]))
            x[s.seed_type] = torch.cat([rows, x[s.seed_type][ids.numel():]])
        loss = F.cross_entropy(model(x, batch.blocks), y)
        t2 = clock()
        _step(loss, lm, opts)
        if lm is not None:
            caches[s.seed_type].update(ids, rows.detach())
        t3 = clock()
        losses.append(float(loss.detach()))
        if breakdown is not None:
            for k, v in (("sample (wait)", t0 - t), ("fetch", t1 - t0), ("forward", t2 - t1),
                         ("backward + optimizer", t3 - t2)):
                breakdown[k] = breakdown.get(k, 0.0) + v
        t = clock()
    return losses, clock() - start


# ---- PyG --------------------------------------------------------------------------------

class PygModel(nn.Module):
    def __init__(self, node_types, edge_types, seed_type):
        super().__init__()
        self.seed_type = seed_type
        self.norm = nn.ModuleDict({t: nn.LayerNorm(EMB) for t in node_types})
        self.proj = nn.ModuleDict({t: nn.Linear(EMB, HIDDEN) for t in node_types})
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
        return self.head(h[self.seed_type][:batch_size])


@lru_cache(maxsize=2)
def pyg_data(name: str):
    """A ``HeteroData`` with the same edges and a copy of the same rows (stage 3 writes into it)."""
    s = setup(name)
    data = HeteroData()
    for t in s.graph.node_types:
        data[t].x = s.feats[t].clone()
        data[t].num_nodes = s.graph.num_nodes[t]
    data[s.seed_type].y = s.labels
    for et in s.graph.edge_types:
        data[et].edge_index = torch.stack(s.coo[et])
    return data


def pyg_epoch(name: str, stage: int) -> tuple[list[float], float]:
    """The same epoch from PyG parts -> (per-step losses, seconds). Stage 3: the loader's rows,
    the first ``LM_NODES`` seeds' rows from the same LM, written back into the ``HeteroData``."""
    s = setup(name)
    data = pyg_data(name)
    lm, opt_lm = _lm(stage)
    tok, pos = tokens(name) if stage == 3 else (None, None)
    start = time.perf_counter()
    torch.manual_seed(0)
    model = PygModel(s.graph.node_types, s.graph.edge_types, s.seed_type)
    opts = [torch.optim.Adam(model.parameters(), lr=LR2 if stage == 2 else LR3_GNN)] + ([opt_lm] if lm else [])
    loader = NeighborLoader(data, num_neighbors={et: list(FANOUTS) for et in s.graph.edge_types},
                            input_nodes=(s.seed_type, s.seeds(stage)), batch_size=BATCH[(name, stage)], shuffle=True)
    losses = []
    for batch in loader:
        b = batch[s.seed_type].batch_size
        x = dict(batch.x_dict)
        if lm is not None:
            ids = batch[s.seed_type].n_id[:min(LM_NODES, b)]
            rows = lm(*tok.batch(pos[ids]))
            x[s.seed_type] = torch.cat([rows, x[s.seed_type][ids.numel():]])
        loss = F.cross_entropy(model(x, batch.edge_index_dict, b), batch[s.seed_type].y[:b])
        _step(loss, lm, opts)
        if lm is not None:
            data[s.seed_type].x[ids] = rows.detach()
        losses.append(float(loss.detach()))
    return losses, time.perf_counter() - start


# ---- measurement --------------------------------------------------------------------------

def late_loss(losses: list[float]) -> float:
    half = losses[len(losses) // 2:]
    return sum(half) / len(half)


def measure(name: str, stage: int, threads: int) -> dict:
    """Both epochs in alternation at ``threads`` threads; -> times, losses, breakdown."""
    torch.set_num_threads(threads)
    impls = {"ours": lambda: ours_epoch(name, stage)}
    if PYG_SAMPLING:
        impls["PyG"] = lambda: pyg_epoch(name, stage)
    for fn in impls.values():  # warm-up (PyG builds its CSC here; our loader's buffers)
        fn()
    times: dict[str, list[float]] = {k: [] for k in impls}
    losses: dict[str, list[float]] = {}
    with gc_paused():
        for _ in range(ROUNDS):
            for k, fn in impls.items():
                losses[k], sec = fn()
                times[k].append(sec)
    breakdown: dict[str, float] = {}
    ours_epoch(name, stage, breakdown)
    return {"time": {k: sorted(v)[len(v) // 2] for k, v in times.items()}, "losses": losses,
            "breakdown": breakdown}


def _graph_desc(name: str) -> str:
    s = setup(name)
    nodes, edges = sum(s.graph.num_nodes.values()), sum(v[0].numel() for v in s.coo.values())
    return f"{name} ({nodes:,} nodes, {edges:,} edges, R={len(s.graph.edge_types)})"


def epoch_tables() -> list[Table]:
    where = f"{platform.machine()} CPU"
    table = Table(f"One training epoch, ours vs PyG parts (fanouts {FANOUTS}; stage 3: {LM_NODES} seeds per "
                  f"step through MiniLM, {MAX_LEN} tokens) — {where}",
                  ["graph", "stage", "threads", "steps x seeds", "impl", "epoch s", "ms / step", "x vs PyG",
                   "late loss", "loss vs PyG", "load (1 min)"])
    parts = Table(f"Ours, one epoch broken down (ms / step) — {where}",
                  ["graph", "stage", "threads", "sample (wait)", "fetch", "forward", "backward + optimizer", "total"])
    for name in GRAPHS:
        for stage in STAGES:
            steps, batch = setup(name).steps(stage), BATCH[(name, stage)]
            for n in THREADS:
                m = measure(name, stage, n)
                load = os.getloadavg()[0]
                base = m["time"].get("PyG")
                base_loss = late_loss(m["losses"]["PyG"]) if "PyG" in m["losses"] else None
                for impl, t in m["time"].items():
                    ll = late_loss(m["losses"][impl])
                    table.add(_graph_desc(name), stage, n, f"{steps} x {batch}", impl, t, t / steps * 1e3,
                              base / t if base else float("nan"), ll,
                              ll / base_loss if base_loss else float("nan"), load)
                b = m["breakdown"]
                parts.add(name, stage, n, *(b[k] / steps * 1e3 for k in ("sample (wait)", "fetch", "forward",
                                                                         "backward + optimizer")),
                          sum(b.values()) / steps * 1e3)
                if base_loss is not None:
                    ours_loss = late_loss(m["losses"]["ours"])
                    assert ours_loss <= LOSS_TOL * base_loss, \
                        (f"bench_epoch: {name} stage {stage}: ours' late-epoch loss {ours_loss:.4f} is more than "
                         f"{LOSS_TOL}x PyG's {base_loss:.4f}")
                print(f"{name} stage {stage} threads={n} done (load {load:.2f}): "
                      f"{table.rows[-len(m['time']):]}; breakdown {parts.rows[-1]}", flush=True)
    return [table, parts]


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("impl", ["ours", "PyG"])
def test_epoch(benchmark, impl, stage):
    if impl == "PyG" and not PYG_SAMPLING:
        pytest.skip("PyG sampling backend (pyg-lib or torch-sparse) not installed")
    name = GRAPHS[0]
    fn = (lambda: ours_epoch(name, stage)) if impl == "ours" else (lambda: pyg_epoch(name, stage))
    losses, _ = fn()  # warm-up
    assert len(losses) == setup(name).steps(stage) and all(v == v for v in losses)
    benchmark.extra_info.update(graph=name, stage=stage, steps=setup(name).steps(stage), batch=BATCH[(name, stage)],
                                fanouts=FANOUTS, emb=EMB)
    benchmark.pedantic(fn, rounds=1, iterations=1)


def _report(tables, load_before, load_after, command) -> str:
    pyg = torch_geometric.__version__ if torch_geometric is not None else "not installed"
    lines = ["# One training epoch (stages 2 and 3): ours vs PyG parts — benchmark figures", "",
             "## How it is measured", "", "```", command, "```", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}); "
             f"torch {torch.__version__}, torch_geometric {pyg}, Python {platform.python_version()}; "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; mode {'quick' if QUICK else 'full'}.",
             f"Load average (1, 5, 15 min): before {load_before[0]:.2f} / {load_before[1]:.2f} / "
             f"{load_before[2]:.2f}, after {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}.", "",
             f"Graphs: {', '.join(_graph_desc(g) for g in GRAPHS)}; rows {EMB} wide; {CLASSES} classes. "
             "Model, loaders, stage 3's LM step and timing: "
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
