"""hetero_neighbor_sample: ours vs the pure-torch reference vs PyG's hetero sampler.

Synthetic graphs (3 node types, power-law-ish random edges generated with numpy), 1,024
seeds of one type per batch, fanouts per hop (PyG's ``num_neighbors`` convention: hop 1
first). PyG runs its ``NeighborSampler.sample_from_nodes`` (what ``NeighborLoader`` calls
per batch, before feature collation) on the same graph as a ``HeteroData``; the backend it
used (``pyg-lib`` or ``torch-sparse``) is printed. Note: PyG expands only the nodes new at
each hop, while blocks expand every destination of every hop, so ours samples more edges
per batch; edges/s is the fair comparison.

A second table is ours' thread scaling (issue #26): fanouts [10, 10] and [15, 10, 5] at
1, 2, ... threads up to the cores present, every thread count of a row timed in
interleaved rounds (``common.time_interleaved``: one call at each count in turn), so each
speed-up over 1 thread is a ratio measured in one run under the same load.

pytest: ``pytest benchmarks/bench_sampling.py --benchmark-json=out.json``
table:  ``python benchmarks/bench_sampling.py [--scaling-only]`` (``LMGNN_BENCH=full`` for
full sizes)
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
import torch

import lmgnn_fast  # noqa: F401
from common import QUICK, Table, bench_devices, device_name, results_dir, time_interleaved
from lmgnn_fast.ops import coo_to_csc, hetero_neighbor_sample, hetero_neighbor_sample_ref

NODE_TYPES = ["paper", "author", "field"]
NODE_FRACTIONS = [0.5, 0.4, 0.1]
SCALE = (50_000, 500_000) if QUICK else (1_000_000, 10_000_000)
RELATIONS = [4] if QUICK else [4, 16]
FANOUTS = [[15, 10, 5], [25, 20]]
THREADS = [1, 2]
SCALING_FANOUTS = [[10, 10], [15, 10, 5]]
SCALING_THREADS = list(range(1, (os.cpu_count() or 1) + 1))
BATCH = 1024
NUM_BATCHES = 3 if QUICK else 8


def make_graph(num_nodes_total: int, num_edges: int, num_rels: int, seed: int = 0):
    """Random heterogeneous graph; each relation gets num_edges / num_rels edges whose
    endpoints follow a power law (id ~ N * u^3, then relabelled by a random permutation)."""
    rng = np.random.default_rng(seed)
    n = {t: int(num_nodes_total * f) for t, f in zip(NODE_TYPES, NODE_FRACTIONS)}
    perm = {t: rng.permutation(n[t]) for t in NODE_TYPES}
    pairs = [(s, d) for s in NODE_TYPES for d in NODE_TYPES]
    edge_types, coo = [], {}
    per_rel = num_edges // num_rels
    for r in range(num_rels):
        s, d = pairs[r % len(pairs)]
        et = (s, f"rel{r}", d)
        src = perm[s][(n[s] * rng.random(per_rel) ** 3).astype(np.int64)]
        dst = perm[d][(n[d] * rng.random(per_rel) ** 3).astype(np.int64)]
        coo[et] = (torch.from_numpy(src), torch.from_numpy(dst))
        edge_types.append(et)
    csc = {et: coo_to_csc(*coo[et], n[et[2]]) for et in edge_types}
    return n, edge_types, coo, csc


class Graph:
    def __init__(self, num_nodes_total, num_edges, num_rels):
        self.n, self.edge_types, self.coo, self.csc = make_graph(num_nodes_total, num_edges, num_rels)
        self.num_rels = num_rels
        g = torch.Generator().manual_seed(1)
        self.batches = [torch.randperm(self.n["paper"], generator=g)[:BATCH] for _ in range(NUM_BATCHES)]
        ets = self.edge_types
        self.args = ([self.csc[et][0] for et in ets], [self.csc[et][1] for et in ets],
                     [self.csc[et][2] for et in ets], [NODE_TYPES.index(et[0]) for et in ets],
                     [NODE_TYPES.index(et[2]) for et in ets], [self.n[t] for t in NODE_TYPES])
        self._pyg = {}

    def ours(self, fanouts, i, fn=hetero_neighbor_sample):
        seeds = [self.batches[i % len(self.batches)]] + [torch.empty(0, dtype=torch.long)] * 2
        flat = [f for f in fanouts for _ in range(self.num_rels)]
        out = fn(*self.args, seeds, flat, False, i)
        return sum(int(x.numel()) for x in out[3])

    def pyg_sampler(self, fanouts):
        key = tuple(fanouts)
        if key not in self._pyg:
            from torch_geometric.data import HeteroData
            from torch_geometric.sampler import NeighborSampler as PygSampler
            data = HeteroData()
            for t in NODE_TYPES:
                data[t].num_nodes = self.n[t]
            for et in self.edge_types:
                data[et].edge_index = torch.stack(self.coo[et])
            self._pyg[key] = PygSampler(data, num_neighbors={et: list(fanouts) for et in self.edge_types})
        return self._pyg[key]

    def pyg(self, fanouts, i):
        from torch_geometric.sampler import NodeSamplerInput
        seeds = self.batches[i % len(self.batches)]
        out = self.pyg_sampler(fanouts).sample_from_nodes(
            NodeSamplerInput(input_id=None, node=seeds, input_type="paper"))
        return sum(int(v.numel()) for v in out.row.values())


def pyg_backend() -> str:
    try:
        import torch_geometric.typing as tgt
    except ImportError:
        return "absent"
    if tgt.WITH_PYG_LIB:
        return "pyg-lib"
    if tgt.WITH_TORCH_SPARSE:
        return "torch-sparse"
    return "none"


def measure(fn, rounds):
    """(median seconds per batch, mean sampled edges per batch) over ``rounds`` batches."""
    fn(0)  # warm-up (PyG builds its CSC here)
    edges, times = 0, []
    for i in range(rounds):
        t0 = time.perf_counter()
        edges += fn(i)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], edges / rounds


_GRAPHS: dict = {}


def _graph(num_rels):
    if num_rels not in _GRAPHS:
        _GRAPHS[num_rels] = Graph(*SCALE, num_rels)
    return _GRAPHS[num_rels]


@pytest.mark.parametrize("impl", ["ours", "reference", "pyg"])
@pytest.mark.parametrize("fanouts", FANOUTS, ids=lambda f: "-".join(map(str, f)))
def test_hetero_neighbor_sample(benchmark, impl, fanouts):
    g = _graph(RELATIONS[0])
    if impl == "pyg" and pyg_backend() in ("absent", "none"):
        pytest.skip("PyG sampling backend not installed")
    fn = {"ours": lambda i: g.ours(fanouts, i), "reference": lambda i: g.ours(fanouts, i, hetero_neighbor_sample_ref),
          "pyg": lambda i: g.pyg(fanouts, i)}[impl]
    fn(0)
    benchmark.extra_info.update(nodes=SCALE[0], edges=SCALE[1], relations=RELATIONS[0], batch=BATCH,
                                fanouts=fanouts, device=device_name("cpu"), pyg_backend=pyg_backend())
    counter = iter(range(10**9))
    if impl == "reference":  # slow: a few rounds only
        assert benchmark.pedantic(lambda: fn(next(counter)), rounds=2, iterations=1) > 0
    else:
        assert benchmark(lambda: fn(next(counter))) > 0


def scaling_table() -> Table:
    """Ours at 1..cores threads, interleaved per row: ms / batch and speed-up over 1 thread."""
    old = torch.get_num_threads()
    table = Table(f"hetero_neighbor_sample thread scaling, CPU, batch {BATCH}, graph {SCALE[0]:,} nodes / "
                  f"{SCALE[1]:,} edges ({os.cpu_count()} cores)",
                  ["relations", "fanouts", "threads", "ms / batch", "sampled edges / batch", "speed-up vs 1 thread",
                   "load (1 min)"])
    try:
        for R in RELATIONS:
            g = _graph(R)
            for fanouts in SCALING_FANOUTS:
                counter = iter(range(10**9))
                edges = g.ours(fanouts, 0)

                def at(n, fanouts=fanouts, counter=counter):
                    def run():
                        torch.set_num_threads(n)
                        g.ours(fanouts, next(counter) % NUM_BATCHES)
                    return run
                times = time_interleaved({n: at(n) for n in SCALING_THREADS}, rounds=5 if QUICK else 30)
                load = os.getloadavg()[0]
                for n in SCALING_THREADS:
                    table.add(R, str(fanouts), n, times[n] * 1e3, edges, times[1] / times[n], load)
                print(table.rows[-1], flush=True)
    finally:
        torch.set_num_threads(old)
    return table


def main():
    devices = bench_devices()
    if "cpu" in devices:
        print(f"load average before: {os.getloadavg()}", flush=True)
        scaling = scaling_table()
        scaling.print()
        scaling.save(results_dir() / "sampling_scaling.json")
        print(f"load average after: {os.getloadavg()}", flush=True)
        if "--scaling-only" in sys.argv[1:]:
            return
        old = torch.get_num_threads()
        backend = pyg_backend()
        table = Table(f"hetero_neighbor_sample, CPU, batch {BATCH}, graph {SCALE[0]:,} nodes / {SCALE[1]:,} edges "
                      f"(PyG backend: {backend})",
                      ["relations", "fanouts", "threads", "impl", "ms / batch", "sampled edges / batch",
                       "M edges / s", "edges/s vs PyG", "time vs PyG"])
        for R in RELATIONS:
            g = _graph(R)
            for fanouts in FANOUTS:
                for threads in THREADS:
                    torch.set_num_threads(threads)
                    rows = []
                    if backend not in ("absent", "none"):
                        rows.append(("PyG " + backend, *measure(lambda i: g.pyg(fanouts, i), NUM_BATCHES)))
                    rows.append(("reference (torch)", *measure(lambda i: g.ours(fanouts, i, hetero_neighbor_sample_ref),
                                                               1 if QUICK else 3)))
                    rows.append(("ours", *measure(lambda i: g.ours(fanouts, i), NUM_BATCHES * 3)))
                    base = rows[0]
                    for name, t, e in rows:
                        table.add(R, str(fanouts), threads, name, t * 1e3, int(e), e / t / 1e6,
                                  (e / t) / (base[2] / base[1]), base[1] / t)
                    print(table.rows[-1], flush=True)
        torch.set_num_threads(old)
        print(f"device: {device_name('cpu')}; torch {torch.__version__}")
        table.print()
        table.save(results_dir() / "sampling.json")
    if "cuda" in devices:
        cuda_table()


def cuda_table() -> None:
    """Ours on the GPU, graph in device memory and in pinned host memory (UVA)."""
    table = Table(f"hetero_neighbor_sample on {device_name('cuda')}, batch {BATCH}",
                  ["relations", "fanouts", "graph in", "ms / batch", "M edges / s"])
    for R in RELATIONS:
        g = _graph(R)
        for where in ("device", "pinned"):
            move = (lambda x: x.cuda()) if where == "device" else (lambda x: x.pin_memory())
            args = tuple([move(x) for x in a] for a in g.args[:3]) + g.args[3:]
            for fanouts in FANOUTS:
                flat = [f for f in fanouts for _ in range(R)]

                def run(i):
                    seeds = ([g.batches[i % len(g.batches)].cuda()]
                             + [torch.empty(0, dtype=torch.long, device="cuda")] * 2)
                    out = hetero_neighbor_sample(*args, seeds, flat, False, i)
                    torch.cuda.synchronize()
                    return sum(int(x.numel()) for x in out[3])

                t, e = measure(run, NUM_BATCHES * 3)
                table.add(R, str(fanouts), where, t * 1e3, e / t / 1e6)
    table.print()
    table.save(results_dir() / "sampling_cuda.json")


if __name__ == "__main__":
    main()
