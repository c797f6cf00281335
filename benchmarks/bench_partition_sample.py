"""Partitioned training's data path at 1/2/4 CPU processes (gloo): the edge cut and balance of
each partition method, what a rank holds, and the bytes and time of a sampled step when
the structure and the rows are both partitioned.

Part 1 (one process): ``partition_graph`` with ``contiguous``, ``random`` and ``metis`` for
2 and 4 parts — time, edge cut (``partition_stats``: CSC entries whose ends have different
owners) and balance (largest part / mean part, per node type and over all nodes).

Part 2 (``torch.distributed.run``, one thread per process): every rank keeps only its part
(``local_graph``: the in-edges of the nodes it owns) and, per node type, a
``PartitionedTable`` of float32 rows of width ``--dim`` holding the rows it owns. Per step:
the seeds of a global batch of 1024 random ``t0`` nodes that this rank owns (as a
partitioned trainer would take its seeds; ``--split strided`` takes items ``rank::W``
instead, ignoring the owner), two hops
(fanouts [15, 10]) sampled by ``DistNeighborSampler`` (frontiers exchanged with the owners),
then the rows of every sampled node fetched twice — without a cache and through a cache of
hot remote rows (``--cache`` x the node type's count per rank, clock policy). The first step
warms up (and fills the cache) and is not counted. Reported per rank and step (mean over
ranks and the counted steps): the bytes each part moves (sent + received), the share of the
fetched rows owned elsewhere, the cache's hit rate on them, the times, and whether the
blocks equal the single-process ``NeighborSampler``'s on the whole graph (checked at the
first step) and the fetched rows the full table's (every step).

``python benchmarks/bench_partition_sample.py`` (quick, the default and CI's: a 20k-node /
200k-edge synthetic graph, 1 and 2 processes, 2 steps); ``LMGNN_BENCH=full``: 1M nodes /
10M edges, 1/2/4 processes, 5 steps, width 384. ``--nodes/--edges/--procs/--steps`` override.
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

FANOUTS = [15, 10]
BATCH = 1024


def _have_metis() -> bool:
    try:
        import pymetis  # noqa: F401
    except ImportError:
        return False
    return True


def _part_bytes(g, parts) -> int:
    """Bytes of a part's structure: its CSC (indptr kept whole) and the partition maps
    (``NodePartition``: owner, row in the owner's table and the owned-ids order, int64 each)."""
    csc = sum(t.numel() * t.element_size() for c in g.csc.values() for t in c)
    return csc + sum(3 * 8 * p.num_nodes for p in parts.values())


def worker(a) -> None:
    from lmgnn_fast.distributed import init_distributed
    from lmgnn_fast.io import load_binary
    from lmgnn_fast.partition import NodePartition, PartitionedTable, local_graph
    from lmgnn_fast.sampling import NeighborSampler
    from lmgnn_fast.sampling.distributed import DistNeighborSampler

    torch.set_num_threads(1)
    ctx = init_distributed("cpu", timeout_s=1800)
    W, me = ctx.world_size, ctx.rank
    g = load_binary(a.graph)
    owners = torch.load(a.parts)
    parts = {t: NodePartition(owners[t], W) for t in g.node_types}
    mine = local_graph(g, parts, me)
    part_bytes = _part_bytes(mine, parts)
    full_sampler = NeighborSampler(g, FANOUTS)
    sampler = DistNeighborSampler(mine, parts, FANOUTS, ctx)
    plain, cached = {}, {}
    for t in g.node_types:
        plain[t] = PartitionedTable(parts[t], a.dim, ctx)
        plain[t].rows.copy_(plain[t].ids[:, None].float().expand(-1, a.dim))  # row i holds i
        cached[t] = PartitionedTable(parts[t], a.dim, ctx, cache_capacity=int(a.cache * g.num_nodes[t]))
        cached[t].rows = plain[t].rows  # the same rows, one copy
    table_bytes = sum(p.rows.numel() * 4 for p in plain.values())
    cache_bytes = sum(c.cache_capacity * a.dim * 4 for c in cached.values())
    n0 = g.num_nodes[g.node_types[0]]
    equal, rows_ok = None, True
    times = {"sample": 0.0, "fetch": 0.0, "fetch_cached": 0.0}
    measured = a.steps - 1  # step 0 warms up (and fills the cache); the means are over the rest

    def counters() -> dict:
        out = {"sampler": sampler.stats()}
        for name, tabs in (("plain", plain), ("cached", cached)):
            st = [x.stats() for x in tabs.values()]
            out[name] = {k: sum(x[k] for x in st) for k in st[0]}
        return out

    for step in range(a.steps):
        if step == 1:
            base = counters()
            times = dict.fromkeys(times, 0.0)
        batch = torch.randperm(n0, generator=torch.Generator().manual_seed(step))[:BATCH]
        if a.split == "owner":
            seeds = {g.node_types[0]: batch[parts[g.node_types[0]].owner[batch] == me]}
        else:
            seeds = {g.node_types[0]: batch[me::W]}
        t0 = time.time()
        blocks = sampler.sample(seeds, seed=step)
        t1 = time.time()
        got = {t: plain[t].fetch(blocks[0].src_nodes[t]) for t in g.node_types}
        t2 = time.time()
        got_c = {t: cached[t].fetch(blocks[0].src_nodes[t]) for t in g.node_types}
        t3 = time.time()
        times["sample"] += t1 - t0
        times["fetch"] += t2 - t1
        times["fetch_cached"] += t3 - t2
        for t in g.node_types:
            ids = blocks[0].src_nodes[t].float()
            rows_ok &= bool(torch.equal(got[t][:, 0], ids) and torch.equal(got_c[t], got[t]))
        if step == 0:
            want = full_sampler.sample(seeds, seed=step)
            equal = all(all(torch.equal(x.src_nodes[t], y.src_nodes[t]) for t in x.node_types)
                        and all(torch.equal(p, q) for p, q in zip(x.indptr + x.indices + x.eid,
                                                                  y.indptr + y.indices + y.eid))
                        for x, y in zip(blocks, want))
    end = counters()
    d = {k: {c: (end[k][c] - base[k][c]) / measured for c in end[k]} for k in end}
    res = {"rank": me, "part_bytes": part_bytes, "table_bytes": table_bytes, "cache_bytes": cache_bytes,
           "sampler_bytes": d["sampler"]["bytes_sent"] + d["sampler"]["bytes_received"],
           "rows_bytes": d["plain"]["bytes_sent"] + d["plain"]["bytes_received"],
           "rows_bytes_cached": d["cached"]["bytes_sent"] + d["cached"]["bytes_received"],
           "rows": d["cached"]["rows_local"] + d["cached"]["rows_remote"], "remote": d["cached"]["rows_remote"],
           "hit_rate": d["cached"]["hits"] / d["cached"]["rows_remote"] if d["cached"]["rows_remote"] else 0.0,
           "equal": equal, "rows_ok": rows_ok, **{k + "_ms": 1000 * v / measured for k, v in times.items()}}
    finish_worker(res, ctx, a.out)


def main() -> None:
    ap, quick = worker_parser()
    ap.add_argument("--nodes", type=int, default=20_000 if quick else 1_000_000)
    ap.add_argument("--edges", type=int, default=200_000 if quick else 10_000_000)
    ap.add_argument("--dim", type=int, default=64 if quick else 384)
    ap.add_argument("--steps", type=int, default=2 if quick else 5)  # >= 2: the first warms up
    ap.add_argument("--cache", type=float, default=0.05)
    ap.add_argument("--procs", default="1,2" if quick else "1,2,4")
    ap.add_argument("--split", choices=("owner", "strided"), default="owner")
    ap.add_argument("--methods", default="contiguous,random,metis")
    a = ap.parse_args()
    if a.steps < 2:
        ap.error("--steps must be >= 2 (the first step warms up and is not counted)")
    if a.worker:
        worker(a)
        return
    from lmgnn_fast.datasets import load_dataset
    from lmgnn_fast.io import save_binary
    from lmgnn_fast.partition import partition_graph, partition_stats

    procs = [int(x) for x in a.procs.split(",")]
    methods = [m for m in a.methods.split(",") if m != "metis" or _have_metis()]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        g = load_dataset("synthetic", num_nodes=a.nodes, num_edges=a.edges, with_text=False)
        graph = os.path.join(tmp, "graph")
        save_binary(g, graph)
        methods_note = "" if "metis" in methods or "metis" not in a.methods else "; metis skipped: no pymetis"
        print(f"synthetic graph: {a.nodes:,} nodes, {g.num_edges():,} CSC entries ({len(g.edge_types)} relations "
              f"incl. reverses), built in {time.time() - t:.1f} s"
              + methods_note)
        print("\n| method | parts | partition (s) | edge cut | cut fraction | balance per type (max) | balance all |")
        print("|---|---|---|---|---|---|---|")
        files = {}
        for p in sorted({x for x in procs if x > 1}):
            for m in methods:
                t = time.time()
                parts = partition_graph(g, p, method=m, seed=0)
                dt = time.time() - t
                s = partition_stats(g, parts)
                bal = max(v for k, v in s["balance"].items() if k != "all")
                print(f"| {m} | {p} | {dt:.1f} | {s['cut']:,} | {s['cut_fraction']:.3f} | {bal:.3f} | "
                      f"{s['balance']['all']:.3f} |", flush=True)
                files[(m, p)] = os.path.join(tmp, f"{m}-{p}.pt")
                torch.save({t: parts[t].owner for t in g.node_types}, files[(m, p)])
        one = partition_graph(g, 1)
        files[("one", 1)] = os.path.join(tmp, "one.pt")
        torch.save({t: one[t].owner for t in g.node_types}, files[("one", 1)])
        del g, one
        print(f"\nper rank and step (mean over ranks), d={a.dim} float32, global batch {BATCH}, fanouts {FANOUTS}, "
              f"{a.steps - 1} steps after 1 warm-up, cache {a.cache:.0%} of each type's rows, seeds split {a.split}")
        print("| method | processes | graph part (MB) | table part (MB) | cache (MB) | sampler MB/step | rows/step | "
              "owned elsewhere | rows MB/step no cache | rows MB/step cache | hit rate | sample (ms) | "
              "fetch (ms) no cache / cache | = 1 process |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for p in procs:
            for m in (["one"] if p == 1 else methods):
                out = os.path.join(tmp, f"res-{m}-{p}.json")
                cmd = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={p}"]
                                          if p > 1 else []) + [
                    __file__, "--worker", "--graph", graph, "--parts", files[(m, p)], "--out", out,
                    "--dim", str(a.dim), "--steps", str(a.steps), "--cache", str(a.cache), "--split", a.split]
                r = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError(f"bench_partition_sample: {m} x {p} failed:\n{r.stderr[-3000:]}")
                rs = json.load(open(out))

                def mean(k, rs=rs):
                    return sum(x[k] for x in rs) / len(rs)

                ok = all(x["equal"] and x["rows_ok"] for x in rs)
                print(f"| {'-' if m == 'one' else m} | {p} | {mean('part_bytes') / 1e6:.1f} | "
                      f"{mean('table_bytes') / 1e6:.1f} | {mean('cache_bytes') / 1e6:.1f} | "
                      f"{mean('sampler_bytes') / 1e6:.2f} | {mean('rows'):,.0f} | "
                      f"{mean('remote') / max(mean('rows'), 1):.0%} | {mean('rows_bytes') / 1e6:.1f} | "
                      f"{mean('rows_bytes_cached') / 1e6:.1f} | {mean('hit_rate'):.0%} | {mean('sample_ms'):.0f} | "
                      f"{mean('fetch_ms'):.0f} / {mean('fetch_cached_ms'):.0f} | {'yes' if ok else 'NO'} |", flush=True)
                if not ok:
                    raise RuntimeError(f"bench_partition_sample: {m} x {p}: blocks or rows differ from one process")


if __name__ == "__main__":
    main()
