"""EmbeddingCache: hit rate per policy against Belady's optimum, and gather throughput.

The access trace comes from the project's ``NeighborSampler`` (fanout [15, 10], batch 1024,
without replacement) on a ``datasets.synthetic`` graph with one node type and one relation
(1M nodes, 10M power-law edges, no text, no reverse relation, no held-out edges in full
mode): one access = one input node of a mini-batch (``blocks[0].src_nodes``), in batch
order. Seeds are drawn from a random permutation of the nodes.

Hit rates: ``clock``, ``lru`` and ``lfu`` (dynamic, warmed up on the warm-up batches),
``static`` filled by degree and by pre-sampled frequency (the warm-up batches), and two
reference points that are not online policies: ``static`` by the frequencies of 10x more
independent pre-sampled batches (close to the best a policy that only learns frequencies can
do on this trace, whose batches are independent draws) and ``static`` by the frequencies of
the measured batches themselves (in-sample oracle). Belady's offline optimum (evict the row
whose next use is farthest; rows never used again are not admitted) runs on the same trace
with the same warm-up prefix, at capacity 1, 5, 10, 20 and 50% of the nodes.
Throughput: ``cache.gather(ids)`` against ``table[ids].to(device)`` on a ``[N, 384]`` table.

pytest: ``pytest benchmarks/bench_cache.py`` · table: ``python benchmarks/bench_cache.py``
(``LMGNN_BENCH=full`` for 1M nodes, 1M x 384 table).
"""
from __future__ import annotations

import heapq
import os
import time

import numpy as np
import pytest
import torch

import lmgnn_fast  # noqa: F401
from common import QUICK, Table, bench_devices, device_name, results_dir
from lmgnn_fast.cache import EmbeddingCache
from lmgnn_fast.datasets.synthetic import synthetic_tables
from lmgnn_fast.graph import HeteroGraph
from lmgnn_fast.io import build_graph
from lmgnn_fast.sampling import NeighborSampler

NUM_NODES = 50_000 if QUICK else 1_000_000
NUM_EDGES = 10 * NUM_NODES
BATCH = 256 if QUICK else 1024
FANOUTS = [15, 10]
NUM_BATCHES = 10 if QUICK else 40
NUM_LONG_PRESAMPLE = 10 * NUM_BATCHES
DIM = 64 if QUICK else 384
CAPACITIES = [0.01, 0.05, 0.10, 0.20, 0.50]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NODE_TYPE = "t0"


# --------------------------------------------------------------------------- trace
def synthetic_graph(num_nodes: int, num_edges: int, seed: int = 0) -> HeteroGraph:
    """One node type, one relation of power-law (Chung-Lu) edges, every edge in the graph."""
    md, nodes, edges = synthetic_tables(num_nodes=num_nodes, num_edges=num_edges, num_node_types=1,
                                        num_relations=1, with_text=False, seed=seed)
    md["tasks"] = [t for t in md["tasks"] if t["type"] != "link_prediction"]
    edges = {et: t.drop_columns([c for c in t.column_names if c == "split"]) for et, t in edges.items()}
    return build_graph(md, nodes, edges, add_reverse_edges=False)


def sample_batches(graph: HeteroGraph, num_batches: int, batch: int, fanouts, seed: int):
    """Input node ids (``blocks[0].src_nodes``) of ``num_batches`` sampled mini-batches."""
    sampler = NeighborSampler(graph, fanouts, seed=seed)
    n = graph.num_nodes[NODE_TYPE]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    out = []
    for b in range(num_batches):
        start = (b * batch) % n
        if start + batch > n:
            perm = torch.randperm(n, generator=g)
            start = 0
        blocks = sampler.sample({NODE_TYPE: perm[start:start + batch]})
        out.append(blocks[0].src_nodes[NODE_TYPE].numpy().astype(np.int64))
    return out


# --------------------------------------------------------------------------- Belady
def belady_hits(trace: np.ndarray, capacity: int, start: int = 0) -> int:
    """Hits of Belady's MIN (with bypass) on ``trace`` with ``capacity`` rows, counted from
    position ``start`` on (the prefix warms the cache up)."""
    n = trace.size
    if capacity == 0 or n == 0:
        return 0
    order = np.argsort(trace, kind="stable")
    nxt = np.full(n, n, dtype=np.int64)  # n = never used again
    same = trace[order[1:]] == trace[order[:-1]]
    nxt[order[:-1][same]] = order[1:][same]
    nxt_l, trace_l = nxt.tolist(), trace.tolist()
    cur: dict[int, int] = {}  # cached id -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, id), lazily invalidated
    hits = 0
    for i in range(n):
        x, nu = trace_l[i], nxt_l[i]
        if x in cur:
            hits += i >= start
            if nu == n:
                del cur[x]  # never used again: free its row now
            else:
                cur[x] = nu
                heapq.heappush(heap, (-nu, x))
            continue
        if nu == n:
            continue  # bypass: never reused
        if len(cur) < capacity:
            cur[x] = nu
            heapq.heappush(heap, (-nu, x))
            continue
        while cur.get(heap[0][1]) != -heap[0][0]:
            heapq.heappop(heap)
        far, y = heap[0]
        if -far > nu:
            heapq.heappop(heap)
            del cur[y]
            cur[x] = nu
            heapq.heappush(heap, (-nu, x))
    return hits


# --------------------------------------------------------------------------- measurements
def policy_hit_rate(batches, num_nodes, capacity, policy, priority=None, warmup=()) -> float:
    """Hit rate over ``batches`` after gathering ``warmup`` (static: filled by ``priority``)."""
    c = EmbeddingCache(num_nodes, 1, device=DEVICE, capacity=capacity,
                       policy="static" if priority is not None else policy)
    if priority is not None:
        c.fill_static(priority)
    for ids in warmup:
        c.gather(torch.from_numpy(ids))
    c.reset_stats()
    for ids in batches:
        c.gather(torch.from_numpy(ids))
    return c.stats()["hit_rate"]


def hit_rate_table(batches, presample, long_presample, graph) -> Table:
    n = NUM_NODES
    trace = np.concatenate(batches)
    warm = np.concatenate(presample)
    csc = graph.csc[graph.edge_types[0]]
    degree = torch.from_numpy(np.bincount(csc.indices.numpy(), minlength=n).astype(np.float64))
    freq = torch.from_numpy(np.bincount(warm, minlength=n).astype(np.float64))
    freq_long = torch.from_numpy(np.bincount(np.concatenate(long_presample), minlength=n).astype(np.float64))
    freq_oracle = torch.from_numpy(np.bincount(trace, minlength=n).astype(np.float64))
    table = Table(f"Hit rate vs Belady ({n:,} nodes, {graph.num_edges():,} edges, fanout {FANOUTS}, "
                  f"batch {BATCH}, {len(batches)} batches, {trace.size:,} accesses, after "
                  f"{len(presample)} warm-up batches)",
                  ["capacity", "rows", "belady", "clock", "lru", "lfu", "static (degree)",
                   "static (pre-sampled freq)", "best online / belady",
                   f"ref: static ({len(long_presample)}-batch freq) / belady",
                   "ref: static (in-sample freq) / belady"])
    for frac in CAPACITIES:
        cap = int(frac * n)
        t0 = time.perf_counter()
        opt = belady_hits(np.concatenate([warm, trace]), cap, start=warm.size) / trace.size
        t_opt = time.perf_counter() - t0
        rates = [policy_hit_rate(batches, n, cap, "clock", warmup=presample),
                 policy_hit_rate(batches, n, cap, "lru", warmup=presample),
                 policy_hit_rate(batches, n, cap, "lfu", warmup=presample),
                 policy_hit_rate(batches, n, cap, "static", degree),
                 policy_hit_rate(batches, n, cap, "static", freq)]
        refs = [policy_hit_rate(batches, n, cap, "static", freq_long),
                policy_hit_rate(batches, n, cap, "static", freq_oracle)]
        def ratio(r, opt=opt):
            return r / opt if opt else 1.0

        table.add(f"{frac:.0%}", cap, opt, *rates, ratio(max(rates)), *map(ratio, refs))
        print(f"  capacity {frac:.0%}: belady {opt:.3f} ({t_opt:.1f}s), clock/lru/lfu/static-deg/"
              "static-freq " + " ".join(f"{r:.3f}" for r in rates)
              + " refs " + " ".join(f"{r:.3f}" for r in refs), flush=True)
    return table


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _pass_seconds(fn, batches) -> float:
    """Seconds of one pass of ``fn`` over ``batches`` (best of two passes for the reference)."""
    _sync()
    t0 = time.perf_counter()
    for b in batches:
        fn(b)
    _sync()
    return time.perf_counter() - t0


def throughput_table(batches, presample) -> Table:
    n, d = NUM_NODES, DIM
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, d, generator=g)
    freq = torch.from_numpy(np.bincount(np.concatenate(presample), minlength=n).astype(np.float64))
    ids_h = [torch.from_numpy(b) for b in batches]
    ids_d = [b.to(DEVICE) for b in ids_h]
    rows = sum(b.numel() for b in ids_h)
    nbytes = rows * d * 4
    table = Table(f"Gather throughput ({n:,} x {d} float32 table, {len(batches)} batches, "
                  f"{rows:,} rows, {device_name(DEVICE)})",
                  ["impl", "capacity", "hit rate", "ms / batch", "rows/s", "GB/s", "speed-up"])
    t_ref = min(_pass_seconds(lambda b: base[b].to(DEVICE), ids_h) for _ in range(2))
    table.add("table[ids].to(device)", "-", "-", t_ref / len(batches) * 1e3, rows / t_ref,
              nbytes / t_ref / 1e9, 1.0)
    for frac, policy in [(0.0, "static"), (0.10, "static"), (0.10, "clock"), (0.10, "lru"),
                         (0.10, "lfu"), (0.50, "static"), (0.50, "clock"), (0.50, "lfu"),
                         (1.0, "static")]:
        c = EmbeddingCache(n, d, device=DEVICE, capacity=int(frac * n), policy=policy, table=base)
        if policy == "static":
            c.fill_static(freq)
        for b in presample:
            c.gather(torch.from_numpy(b).to(DEVICE))
        c.reset_stats()
        t = _pass_seconds(c.gather, ids_d)
        hr = c.stats()["hit_rate"]
        table.add(f"EmbeddingCache ({policy})", f"{frac:.0%}", hr, t / len(batches) * 1e3, rows / t,
                  nbytes / t / 1e9, t_ref / t)
        del c
    return table


# --------------------------------------------------------------------------- pytest
@pytest.fixture(scope="module")
def small_trace():
    graph = synthetic_graph(20_000, 200_000, seed=1)
    return sample_batches(graph, 4, 128, FANOUTS, seed=2)


@pytest.mark.parametrize("impl", ["cache_clock", "cache_lfu", "cache_static", "reference"])
def test_gather(benchmark, impl, small_trace):
    n, d = 20_000, 64
    base = torch.randn(n, d)
    ids = torch.from_numpy(small_trace[-1]).to(DEVICE)
    if impl == "reference":
        fn = lambda: base[ids.cpu()].to(DEVICE)  # noqa: E731
    else:
        c = EmbeddingCache(n, d, device=DEVICE, capacity=n // 10, policy=impl.split("_")[1], table=base)
        if impl == "cache_static":
            c.fill_static(torch.from_numpy(np.bincount(np.concatenate(small_trace), minlength=n)))
        fn = lambda: c.gather(ids)  # noqa: E731
    benchmark.extra_info.update(rows=ids.numel(), dim=d, device=device_name(DEVICE))
    out = benchmark(fn)
    assert torch.equal(out.cpu(), base[ids.cpu()])


@pytest.mark.parametrize("policy", ["clock", "lru", "lfu"])
def test_belady_is_an_upper_bound(small_trace, policy):
    trace = np.concatenate(small_trace)
    opt = belady_hits(trace, 2000) / trace.size
    assert opt >= policy_hit_rate(small_trace, 20_000, 2000, policy) - 1e-9


def main():
    # The hit-rate simulation replays host-side traces and does not depend on the device, so
    # a GPU-only run (LMGNN_BENCH_DEVICES=cuda) measures the gather throughput alone.
    with_hits = "cpu" in bench_devices()
    t0 = time.perf_counter()
    graph = synthetic_graph(NUM_NODES, NUM_EDGES)
    t_graph = time.perf_counter() - t0
    batches = sample_batches(graph, NUM_BATCHES, BATCH, FANOUTS, seed=1)
    presample = sample_batches(graph, NUM_BATCHES, BATCH, FANOUTS, seed=2)
    print(f"graph {NUM_NODES:,} nodes, {graph.num_edges():,} edges ({t_graph:.1f}s); trace "
          f"{sum(b.size for b in batches):,} accesses in {NUM_BATCHES} batches "
          f"({time.perf_counter() - t0:.1f}s)", flush=True)
    tables = []
    out = results_dir()
    if with_hits:
        long_presample = sample_batches(graph, NUM_LONG_PRESAMPLE, BATCH, FANOUTS, seed=3)
        hits = hit_rate_table(batches, presample, long_presample, graph)
        hits.print()
        hits.save(out / "cache_hit_rate.json")
        tables.append(hits)
        del long_presample
    thr = throughput_table(batches, presample)
    thr.print()
    thr.save(out / f"cache_throughput_{DEVICE}.json")
    tables.append(thr)
    md = out / f"cache_{DEVICE}.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text("\n".join(t.markdown() for t in tables))
    os.replace(tmp, md)


if __name__ == "__main__":
    main()
