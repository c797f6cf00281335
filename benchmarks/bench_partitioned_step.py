"""A partitioned stage-2 training step at 1/2/4 CPU processes (gloo): time, bytes, memory.

What ``run.partitioned`` runs per step of stage 2, outside the trainer so that each phase
is timed and counted: every rank holds its part of the synthetic graph (``local_graph`` of
a METIS partition when ``pymetis`` is installed, else ``random``; one part with 1 process)
and, per node type, a ``PartitionedTable`` of float32 "LM rows" of width ``--dim`` (the
rows it owns plus a cache of ``--cache`` x the type's rows). A step takes the seeds of a
global batch of 1024 random ``t0`` nodes that the rank owns (``shard="owner"``), samples
two hops (fanouts [15, 10]) with ``DistNeighborSampler``, fetches the rows of every sampled
node, runs the R-GCN (hidden 128, 2 layers) and a classification head forward and backward
under ``DistributedDataParallel`` with the loss weighted by the rank's share of the batch
(the trainer's ``GNNTask.batch_loss``), and an AdamW step.

Reported per process count (mean over ranks of the counted steps; the first step warms up
the cache and is not counted): the slowest rank's step time and its phases (sample, fetch,
forward + backward + all-reduce, optimizer), the bytes each rank moves per step for
sampling and for rows (sent + received; the DDP gradient all-reduce is listed separately as
the ring estimate ``2 (W - 1) / W x`` the gradient bytes), what a rank holds (graph part,
table part) and its peak RSS. The machine is shared: the load average is printed with the
figures, which are indicative only.

``python benchmarks/bench_partitioned_step.py`` (quick: 20k nodes / 200k edges, 1 and 2
processes, 3 steps); ``LMGNN_BENCH=full``: 200k nodes / 2M edges, 1/2/4 processes, 5 steps,
width 384. ``--nodes/--edges/--procs/--steps/--dim`` override.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

from common import finish_worker, worker_parser

FANOUTS = [15, 10]
BATCH = 1024
CLASSES = 8


def worker(a) -> None:
    from lmgnn_fast.distributed import init_distributed
    from lmgnn_fast.io import load_binary
    from lmgnn_fast.nn import GraphModel
    from lmgnn_fast.partition import NodePartition, PartitionedTable, local_graph
    from lmgnn_fast.sampling.distributed import DistNeighborSampler
    from lmgnn_fast.train.data_parallel import wrap_modules

    torch.set_num_threads(1)
    ctx = init_distributed("cpu", timeout_s=1800)
    W, me = ctx.world_size, ctx.rank
    g = load_binary(a.graph)
    owners = torch.load(a.parts)
    parts = {t: NodePartition(owners[t], W) for t in g.node_types}
    mine = local_graph(g, parts, me)
    part_bytes = sum(t.numel() * t.element_size() for c in mine.csc.values() for t in c) \
        + sum(3 * 8 * p.num_nodes for p in parts.values())
    sampler = DistNeighborSampler(mine, parts, FANOUTS, ctx)
    tables = {}
    for i, t in enumerate(g.node_types):
        tables[t] = PartitionedTable(parts[t], a.dim, ctx, cache_capacity=int(a.cache * g.num_nodes[t]))
        gen = torch.Generator().manual_seed(i)
        tables[t].rows.copy_(torch.randn(g.num_nodes[t], a.dim, generator=gen)[tables[t].ids])
    table_bytes = sum(x.rows.numel() * 4 + x.cache_capacity * a.dim * 4 for x in tables.values())
    t0_type = g.node_types[0]
    labels = torch.randint(0, CLASSES, (g.num_nodes[t0_type],), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    model = GraphModel(g.node_types, g.edge_types, g.num_nodes, "node_classification", CLASSES, False, a.dim,
                       g.node_types, 128, 2)
    forward = wrap_modules(model, ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    grad_bytes = sum(p.numel() * 4 for p in model.parameters())
    times = dict.fromkeys(("sample", "fetch", "compute", "optimizer", "step"), 0.0)
    measured = a.steps - 1

    def counters() -> dict:
        st = [x.stats() for x in tables.values()]
        return {"sampler": sampler.stats(), "rows": {k: sum(x[k] for x in st) for k in st[0]}}

    base = None
    for step in range(a.steps):
        if step == 1:
            base, times = counters(), dict.fromkeys(times, 0.0)
        batch = torch.randperm(g.num_nodes[t0_type], generator=torch.Generator().manual_seed(step))[:BATCH]
        seeds = batch[parts[t0_type].owner[batch] == me]
        share = seeds.numel() / batch.numel()
        c0 = time.perf_counter()
        blocks = sampler.sample({t0_type: seeds}, seed=step)
        c1 = time.perf_counter()
        x = {t: tables[t].fetch(blocks[0].src_nodes[t]) for t in g.node_types}
        c2 = time.perf_counter()

        def loss_fn():
            if seeds.numel() == 0:
                return sum(p.sum() for p in model.parameters()) * 0.0
            h = model(x, blocks)[t0_type]
            return model.head.loss(model.head(h), labels[seeds]) * (share * W)

        loss = forward(loss_fn)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        c3 = time.perf_counter()
        opt.step()
        c4 = time.perf_counter()
        for k, v in (("sample", c1 - c0), ("fetch", c2 - c1), ("compute", c3 - c2), ("optimizer", c4 - c3),
                     ("step", c4 - c0)):
            times[k] += v
    end = counters()
    d = {k: {c: (end[k][c] - base[k][c]) / measured for c in end[k]} for k in end}
    res = {"rank": me, "part_bytes": part_bytes, "table_bytes": table_bytes, "grad_bytes": grad_bytes,
           "sampler_bytes": d["sampler"]["bytes_sent"] + d["sampler"]["bytes_received"],
           "rows_bytes": d["rows"]["bytes_sent"] + d["rows"]["bytes_received"],
           "rows": d["rows"]["rows_local"] + d["rows"]["rows_remote"], "remote": d["rows"]["rows_remote"],
           "hit_rate": d["rows"]["hits"] / d["rows"]["rows_remote"] if d["rows"]["rows_remote"] else 0.0,
           "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           **{k + "_ms": 1000 * v / measured for k, v in times.items()}}
    finish_worker(res, ctx, a.out)


def main() -> None:
    ap, quick = worker_parser()
    ap.add_argument("--nodes", type=int, default=20_000 if quick else 200_000)
    ap.add_argument("--edges", type=int, default=200_000 if quick else 2_000_000)
    ap.add_argument("--dim", type=int, default=64 if quick else 384)
    ap.add_argument("--steps", type=int, default=3 if quick else 5)  # >= 2: the first warms up
    ap.add_argument("--cache", type=float, default=0.1)
    ap.add_argument("--procs", default="1,2" if quick else "1,2,4")
    a = ap.parse_args()
    if a.steps < 2:
        ap.error("--steps must be >= 2 (the first step warms up and is not counted)")
    if a.worker:
        worker(a)
        return
    from lmgnn_fast.datasets import load_dataset
    from lmgnn_fast.io import save_binary
    from lmgnn_fast.partition import partition_graph, partition_stats
    from lmgnn_fast.train.partitioned import resolve_method

    procs = [int(x) for x in a.procs.split(",")]
    method = resolve_method("auto")
    with tempfile.TemporaryDirectory() as tmp:
        g = load_dataset("synthetic", num_nodes=a.nodes, num_edges=a.edges, with_text=False)
        graph = os.path.join(tmp, "graph")
        save_binary(g, graph)
        files, cuts = {}, {}
        for p in procs:
            parts = partition_graph(g, p, method=method if p > 1 else "contiguous", seed=0)
            cuts[p] = partition_stats(g, parts)["cut_fraction"]
            files[p] = os.path.join(tmp, f"parts-{p}.pt")
            torch.save({t: parts[t].owner for t in g.node_types}, files[p])
        print(f"synthetic graph: {a.nodes:,} nodes, {g.num_edges():,} CSC entries; partition {method}; d={a.dim} "
              f"float32, global batch {BATCH}, fanouts {FANOUTS}, R-GCN hidden 128 x 2 layers, cache "
              f"{a.cache:.0%} of each type's rows, {a.steps - 1} steps after 1 warm-up; torch {torch.__version__}, "
              f"{os.cpu_count()} CPUs")
        del g
        print("| processes | edge cut | load avg (1 min) | step (ms, slowest rank) | sample / fetch / "
              "fwd+bwd+allreduce / optimizer (ms) | sampler MB/step | rows MB/step | "
              "rows/step (owned elsewhere, cache hits) | "
              "grad all-reduce MB/step (est.) | graph part (MB) | table part + cache (MB) | peak RSS per rank (MB) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for p in procs:
            out = os.path.join(tmp, f"res-{p}.json")
            cmd = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={p}"]
                                      if p > 1 else []) + [
                __file__, "--worker", "--graph", graph, "--parts", files[p], "--out", out, "--dim", str(a.dim),
                "--steps", str(a.steps), "--cache", str(a.cache)]
            load = os.getloadavg()[0]
            r = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"bench_partitioned_step: {p} processes failed:\n{r.stderr[-3000:]}")
            with open(out) as f:
                rs = json.load(f)

            def mean(k, rs=rs):
                return sum(x[k] for x in rs) / len(rs)

            slow = max(rs, key=lambda x: x["step_ms"])
            ring = 2 * (p - 1) / p * mean("grad_bytes")
            print(f"| {p} | {cuts[p]:.3f} | {load:.1f} | {slow['step_ms']:.0f} | {slow['sample_ms']:.0f} / "
                  f"{slow['fetch_ms']:.0f} / {slow['compute_ms']:.0f} / {slow['optimizer_ms']:.0f} | "
                  f"{mean('sampler_bytes') / 1e6:.2f} | {mean('rows_bytes') / 1e6:.1f} | {mean('rows'):,.0f} "
                  f"({mean('remote') / max(mean('rows'), 1):.0%}, {mean('hit_rate'):.0%}) | {ring / 1e6:.2f} | "
                  f"{mean('part_bytes') / 1e6:.1f} | {mean('table_bytes') / 1e6:.1f} | "
                  + " / ".join(f"{x['peak_rss'] / 1e6:.0f}" for x in rs) + " |", flush=True)


if __name__ == "__main__":
    main()
