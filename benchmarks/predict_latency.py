"""Per-node latency of ``lmgnn_fast.predict`` on CPU: single-node requests to a loaded run.

``python benchmarks/predict_latency.py RUN_DIR [--requests 50] [--stage K] [--threads 1]``

Each request is one new node of the task's node type: the text and in/out edges of a node
of the run's graph, under a fresh id (so the LM encodes its text and the graph model reads
a realistic neighbourhood). Also times requests for known nodes (``ids=``). Prints the
load time (``load_run``: config, graph, checkpoint, the stored LM rows; the texts encoded
again are counted), the LM's load (on first use; ``warm_up``) and median / p90 per request
as a markdown table, with the machine's load. Both
the CPU time of the process (``time.process_time``: what a request costs, unaffected by
other jobs taking the cores) and the wall time are given; on a shared machine, or under
``nice``, the wall time also counts the waits for a core.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lmgnn_fast.inference import LoadedRun, load_run


def new_node_request(p: LoadedRun, t: str, i: int) -> tuple[dict, dict]:
    g, raw = p.graph, p.graph.raw_ids[p.task.node_type]
    new_id = f"new-{raw[i]}"
    edges = {}
    for et in g.edge_types:
        if et in g.reverse_of and et[1].startswith("rev-"):
            continue  # the forward relation's edges are given; the reverse ones follow
        c = g.csc[et]
        if et[2] == t:  # in-edges of node i
            s = c.indices[c.indptr[i]:c.indptr[i + 1]].tolist()
            edges.setdefault(et, ([], []))
            edges[et][0].extend(g.raw_ids[et[0]][k] for k in s)
            edges[et][1].extend([new_id] * len(s))
        if et[0] == t:  # out-edges of node i: columns whose indices hold i
            dst = torch.repeat_interleave(torch.arange(c.indptr.numel() - 1), c.indptr.diff())
            d = dst[c.indices.long() == i].tolist()
            edges.setdefault(et, ([], []))
            edges[et][0].extend([new_id] * len(d))
            edges[et][1].extend(g.raw_ids[et[2]][k] for k in d)
    return {t: {"id": [new_id], "text": [g.text[t][i]]}}, {et: e for et, e in edges.items() if e[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--stage", type=int)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (run.num_threads)")
    args = ap.parse_args()
    t0, c0 = time.perf_counter(), time.process_time()
    p = load_run(args.run_dir, stage=args.stage,
                 overrides=["--run.device", "cpu", "--run.num_threads", str(args.threads)])
    load_s, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    p.warm_up()
    lm_s, lm_cpu = time.perf_counter() - t0, time.process_time() - c0
    encoded = sum(r["encoded"] for r in p.load_report.values() if isinstance(r, dict))
    rows = sum(r["rows"] for r in p.load_report.values() if isinstance(r, dict))
    t = p.task.node_type
    n = p.graph.num_nodes[t]
    picks = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:args.requests].tolist()
    reqs = [new_node_request(p, t, i) for i in picks]
    p.predict(*reqs[0])  # warm-up (first-call allocations)
    new_ms, known_ms, new_cpu, known_cpu, n_edges = [], [], [], [], []
    for (nodes, edges), i in zip(reqs, picks):
        t1, c1 = time.perf_counter(), time.process_time()
        p.predict(nodes, edges)
        new_ms.append(1e3 * (time.perf_counter() - t1))
        new_cpu.append(1e3 * (time.process_time() - c1))
        n_edges.append(sum(len(e[0]) for e in edges.values()))
        t1, c1 = time.perf_counter(), time.process_time()
        p.predict(ids={t: [p.graph.raw_ids[t][i]]})
        known_ms.append(1e3 * (time.perf_counter() - t1))
        known_cpu.append(1e3 * (time.process_time() - c1))

    def q(xs, f):
        return sorted(xs)[min(len(xs) - 1, int(f * len(xs)))]

    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"run: stage {p.stage} model, task {p.task.name} ({p.task.type}), LM {p.lm.name.split(os.sep)[-1]}, "
          f"fanouts {p.fanouts}, torch threads {torch.get_num_threads()}, load average {load}")
    print(f"load_run (config, graph, checkpoint, stored LM rows; {encoded} of {rows} texts encoded): "
          f"{load_cpu:.2f} s CPU, {load_s:.2f} s wall; LM on first use (warm_up): {lm_cpu:.2f} s CPU, "
          f"{lm_s:.2f} s wall; {n} {t} nodes; {len(reqs)} single-node requests, edges per new node median "
          f"{statistics.median(n_edges):.0f}")
    print("| request | CPU ms median | CPU ms p90 | wall ms median | wall ms p90 |")
    print("|---|---|---|---|---|")
    for name, cpu, wall in (("new node (text + edges)", new_cpu, new_ms), ("known node (ids=)", known_cpu, known_ms)):
        print(f"| {name} | {statistics.median(cpu):.1f} | {q(cpu, 0.9):.1f} | {statistics.median(wall):.1f} "
              f"| {q(wall, 0.9):.1f} |")


if __name__ == "__main__":
    main()
