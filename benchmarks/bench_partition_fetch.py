"""Bytes moved per step when the embedding rows are partitioned over the ranks
(``lmgnn_fast.partition.PartitionedTable``), 1/2/4 CPU processes (gloo).

Each rank holds only the rows of the nodes it owns (float32, width ``--dim``, one table per
node type, partition ``--method``). Per step: this rank's share of a global batch of 1024
seeds, two hops sampled (fanouts [15, 10]) on the whole graph (only the rows are
partitioned here; ``bench_partition_sample.py`` partitions the structure too), and the
rows of every sampled node fetched from their owners. Reported per rank and step: rows
fetched, the share owned by another rank, bytes sent + received (ids and rows), time of
the fetch alone and of the step.

``python benchmarks/bench_partition_fetch.py --graph DIR`` (a binary graph written by
``bench_shared_memory.py`` or ``lmgnn_fast.io.save_binary``); without ``--graph`` a synthetic
graph is built (``LMGNN_BENCH=full``: 1M nodes / 10M edges; quick, the default and CI's: 20k /
200k, 1 and 2 processes, 2 steps).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from common import finish_worker, worker_parser


def worker(a) -> None:
    from lmgnn_fast.distributed import init_distributed
    from lmgnn_fast.io import load_binary
    from lmgnn_fast.partition import PartitionedTable, partition_graph
    from lmgnn_fast.train import builders, data_parallel

    torch.set_num_threads(1)
    ctx = init_distributed("cpu", timeout_s=600)
    g = load_binary(a.graph)
    parts = partition_graph(g, ctx.world_size, method=a.method, seed=0)
    tables = {}
    for t in g.node_types:
        tab = PartitionedTable(parts[t], a.dim, ctx)
        gen = torch.Generator().manual_seed(1)
        tab.rows.copy_(torch.rand(tab.rows.shape, generator=gen))
        tables[t] = tab
    sampler = builders.make_sampler(g, [15, 10], seed=0)
    n0 = g.num_nodes[g.node_types[0]]
    fetch_s = step_s = 0.0
    for step in range(a.steps):
        t0 = time.time()
        batch = torch.randperm(n0, generator=torch.Generator().manual_seed(step))[:1024]
        blocks = sampler.sample({g.node_types[0]: data_parallel.rank_slice(batch, ctx)}, seed=step)
        t1 = time.time()
        for t in g.node_types:
            tables[t].fetch(blocks[0].src_nodes[t])
        fetch_s += time.time() - t1
        step_s += time.time() - t0
    st = [tab.stats() for tab in tables.values()]
    mine = {k: sum(s[k] for s in st) / a.steps for k in ("rows_local", "rows_remote", "bytes_sent", "bytes_received")}
    mine.update(fetch_ms=1000 * fetch_s / a.steps, step_ms=1000 * step_s / a.steps)
    finish_worker(mine, ctx, a.out)


def main() -> None:
    ap, quick = worker_parser(with_parts=False)
    ap.add_argument("--dim", type=int, default=64 if quick else 384)
    ap.add_argument("--steps", type=int, default=2 if quick else 10)
    ap.add_argument("--method", default="random")
    ap.add_argument("--procs", default="1,2" if quick else "1,2,4")
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if a.graph is None:
            from lmgnn_fast.datasets import load_dataset
            from lmgnn_fast.io import save_binary

            nodes, edges = (20_000, 200_000) if quick else (1_000_000, 10_000_000)
            a.graph = os.path.join(tmp, "graph")
            save_binary(load_dataset("synthetic", num_nodes=nodes, num_edges=edges, with_text=False), a.graph)
        _compare(a)


def _compare(a) -> None:
    print(f"graph {a.graph}, d={a.dim} float32, partition {a.method}, {a.steps} steps of a global batch of "
          "1024 seeds, fanouts [15, 10]; per rank and step (mean over ranks)")
    print("| processes | rows fetched | owned elsewhere | MB sent + received | fetch (ms) | step (ms) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in a.procs.split(",")):
            out = os.path.join(tmp, f"{n}.json")
            cmd = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]
                                      if n > 1 else []) + [__file__, "--worker", "--graph", a.graph, "--out", out,
                                                           "--dim", str(a.dim), "--steps", str(a.steps),
                                                           "--method", a.method]
            p = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"bench_partition_fetch: {n} processes failed:\n{p.stderr[-3000:]}")
            rs = json.load(open(out))

            def mean(k, rs=rs):
                return sum(r[k] for r in rs) / len(rs)

            rows = mean("rows_local") + mean("rows_remote")
            print(f"| {n} | {rows:,.0f} | {mean('rows_remote') / max(rows, 1):.0%} | "
                  f"{(mean('bytes_sent') + mean('bytes_received')) / 1e6:.1f} | {mean('fetch_ms'):.0f} | "
                  f"{mean('step_ms'):.0f} |", flush=True)


if __name__ == "__main__":
    main()
