"""EmbeddingCache: hit rate per policy against Belady's optimum, and gather throughput.

The access trace comes from 2-hop uniform neighbour sampling (fanout [15, 10], batch 1024)
on a synthetic power-law graph (1M nodes in full mode), generated here with numpy: each
node's neighbour count is heavy-tailed and its neighbours are drawn from a Zipf-like
popularity over the nodes, so a few nodes are sampled very often. One access = one distinct
node of a mini-batch (the input nodes of its first block), in batch order.

Hit rates: ``clock`` and ``lru`` (admission on miss), ``static`` filled by degree and by
pre-sampled frequency (from other batches than the measured ones), and Belady's offline
optimum (evict the row whose next use is farthest; rows never used again are not admitted)
on the same trace, at capacity 1, 5, 10, 20 and 50% of the nodes.
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
from common import QUICK, Table, device_name, results_dir
from lmgnn_fast.cache import EmbeddingCache

NUM_NODES = 50_000 if QUICK else 1_000_000
BATCH = 256 if QUICK else 1024
FANOUTS = [15, 10]
NUM_BATCHES = 10 if QUICK else 40
DIM = 64 if QUICK else 384
CAPACITIES = [0.01, 0.05, 0.10, 0.20, 0.50]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------- trace
def power_law_graph(n: int, mean_degree: float = 10.0, zipf: float = 0.9, seed: int = 0):
    """CSC of a random graph: Pareto neighbour counts, Zipf-popular neighbours."""
    rng = np.random.default_rng(seed)
    deg = np.minimum((rng.pareto(2.0, n) + 1) * mean_degree / 2, 5000).astype(np.int64)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(deg, out=indptr[1:])
    weights = 1.0 / np.arange(1, n + 1) ** zipf
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    popular = rng.permutation(n)  # popularity rank -> node id
    indices = popular[np.searchsorted(cdf, rng.random(indptr[-1]))].astype(np.int64)
    return indptr, indices


def sample_batches(indptr, indices, num_batches: int, batch: int, fanouts, seed: int):
    """Distinct nodes of each mini-batch of uniform neighbour sampling (with replacement)."""
    rng = np.random.default_rng(seed)
    n = indptr.size - 1
    perm = rng.permutation(n)
    out = []
    for b in range(num_batches):
        nodes = perm[(b * batch) % n: (b * batch) % n + batch]
        frontier, seen = nodes, [nodes]
        for f in fanouts:
            deg = indptr[frontier + 1] - indptr[frontier]
            rep = np.repeat(frontier[deg > 0], f)
            d = np.repeat(deg[deg > 0], f)
            nbr = indices[indptr[rep] + (rng.random(rep.size) * d).astype(np.int64)]
            frontier = np.unique(nbr)
            seen.append(frontier)
        out.append(np.unique(np.concatenate(seen)))
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


def hit_rate_table(batches, presample, indptr, indices) -> Table:
    n = NUM_NODES
    trace = np.concatenate(batches)
    warm = np.concatenate(presample)
    degree = torch.from_numpy(np.bincount(indices, minlength=n).astype(np.float64))
    freq = torch.from_numpy(np.bincount(np.concatenate(presample), minlength=n).astype(np.float64))
    table = Table(f"Hit rate vs Belady ({n:,} nodes, fanout {FANOUTS}, batch {BATCH}, "
                  f"{len(batches)} batches, {trace.size:,} accesses, after {len(presample)} warm-up "
                  f"batches)",
                  ["capacity", "rows", "belady", "clock", "lru", "static (degree)",
                   "static (pre-sampled freq)", "best / belady"])
    for frac in CAPACITIES:
        cap = int(frac * n)
        t0 = time.perf_counter()
        opt = belady_hits(np.concatenate([warm, trace]), cap, start=warm.size) / trace.size
        t_opt = time.perf_counter() - t0
        rates = [policy_hit_rate(batches, n, cap, "clock", warmup=presample),
                 policy_hit_rate(batches, n, cap, "lru", warmup=presample),
                 policy_hit_rate(batches, n, cap, "static", degree),
                 policy_hit_rate(batches, n, cap, "static", freq)]
        table.add(f"{frac:.0%}", cap, opt, *rates, max(rates) / opt if opt else 1.0)
        print(f"  capacity {frac:.0%}: belady {opt:.3f} ({t_opt:.1f}s), clock/lru/static-deg/static-freq "
              + " ".join(f"{r:.3f}" for r in rates), flush=True)
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
                         (0.50, "static"), (0.50, "clock"), (1.0, "static")]:
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
    indptr, indices = power_law_graph(20_000, seed=1)
    return sample_batches(indptr, indices, 4, 128, FANOUTS, seed=2)


@pytest.mark.parametrize("impl", ["cache_clock", "cache_static", "reference"])
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


def test_belady_is_an_upper_bound(small_trace):
    trace = np.concatenate(small_trace)
    opt = belady_hits(trace, 2000) / trace.size
    assert opt >= policy_hit_rate(small_trace, 20_000, 2000, "clock") - 1e-9


def main():
    t0 = time.perf_counter()
    indptr, indices = power_law_graph(NUM_NODES)
    batches = sample_batches(indptr, indices, NUM_BATCHES, BATCH, FANOUTS, seed=1)
    presample = sample_batches(indptr, indices, NUM_BATCHES, BATCH, FANOUTS, seed=2)
    print(f"graph {NUM_NODES:,} nodes, {indices.size:,} edges; trace {sum(b.size for b in batches):,} "
          f"accesses in {NUM_BATCHES} batches ({time.perf_counter() - t0:.1f}s)", flush=True)
    hits = hit_rate_table(batches, presample, indptr, indices)
    hits.print()
    thr = throughput_table(batches, presample)
    thr.print()
    out = results_dir()
    hits.save(out / "cache_hit_rate.json")
    thr.save(out / "cache_throughput.json")
    md = out / "cache.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(hits.markdown() + "\n" + thr.markdown())
    os.replace(tmp, md)


if __name__ == "__main__":
    main()
