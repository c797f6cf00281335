"""Host memory per machine with a copy per rank vs one shared copy, 1/2/4 CPU processes.

Each configuration starts real processes (``torch.distributed.run --standalone`` for
several, gloo) that hold what a training rank holds, through the trainer's own code: the
synthetic graph (built once into the binary format; every run's build step reads it into
fresh memory, as building the dataset would), token ids of ``--tokens`` tokens per node,
and one float32 embedding table of width ``--dim`` per node type, filled by a refresh
(``encode_all_sharded`` with a copy per rank, ``encode_all_shared`` with the shared copy;
the rows come from a cheap deterministic stand-in for the LM, since the LM's cost is not
what is measured). Then ``--steps`` steps: sample two hops (fanouts [15, 10]) around this
rank's share of a global batch of 1024 seeds and gather the input rows of every sampled
node from the tables (the GNN and LM compute are left out: they do not depend on where
the graph lives).

Memory, read from ``/proc/<pid>/smaps`` by every rank after the steps (all ranks alive):
PSS (proportional set size: a page mapped by ``k`` processes counts ``1/k`` in each, so the
sum over ranks counts shared pages once), and per machine the sum of the ranks' PSS outside
the shared files plus the full size of the shared files (resident in ``/dev/shm`` whether
or not a rank touched every page). Peak: the sum of the ranks' PSS polled every 0.2 s.

``python benchmarks/bench_shared_memory.py [--nodes 1000000 --edges 10000000 --dim 384]``
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

SHARED_MARK = "lmgnn-shared-"


def _smaps(pid: int | str = "self") -> dict:
    """PSS of the process, and PSS / size of its mappings of shared-copy files."""
    total = shared_pss = 0
    files: dict[str, int] = {}
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                cur = parts[5] if len(parts) > 5 and SHARED_MARK in line else None
                if cur is not None:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    files[cur] = files.get(cur, 0) + (hi - lo)
            elif parts[0] == "Pss:":
                kb = int(parts[1]) * 1024
                total += kb
                if cur is not None:
                    shared_pss += kb
    return {"pss": total, "shared_pss": shared_pss, "shared_files": files}


def _pss_rollup(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _StandInLM(torch.nn.Module):
    """Deterministic rows from the token ids (what ``encode_all*`` needs of an LM)."""

    def __init__(self, dim: int):
        super().__init__()
        self.hidden_size = dim
        self.model = torch.nn.Linear(1, 1)
        self.freq = torch.linspace(0.001, 1.0, dim)

    def encode(self, tokens, ids):
        inp, mask = tokens.batch(ids)
        x = (inp * mask).sum(1).float() / mask.sum(1).clamp_min(1) + ids.float()
        return torch.sin(torch.outer(x, self.freq))


def worker(a) -> None:
    from lmgnn_fast.distributed import all_gather_object, barrier, init_distributed
    from lmgnn_fast.io import load_binary
    from lmgnn_fast.lm import TokenizedTexts
    from lmgnn_fast.train import builders, data_parallel
    from lmgnn_fast.train.shared_copy import MachineShare

    torch.set_num_threads(1)
    ctx = init_distributed("cpu", timeout_s=600)
    with open(os.path.join(a.pids, f"{os.getpid()}"), "w"):
        pass
    base_pss = _smaps()["pss"]  # interpreter, torch and the libraries, before any data
    share = MachineShare(ctx) if ctx.is_distributed and a.mode == "shared" else None
    t0 = time.time()

    def build():
        return load_binary(a.graph, mmap=False)

    g = share.share_graph(build) if share else build()

    def make_tokens(n):
        gen = torch.Generator().manual_seed(n)
        lens = torch.randint(a.tokens // 2, a.tokens + 1, (n,), generator=gen)
        offsets = torch.zeros(n + 1, dtype=torch.int64)
        offsets[1:] = lens.cumsum(0)
        toks = torch.randint(0, 30000, (int(offsets[-1]),), generator=gen, dtype=torch.int32).to(torch.uint16)
        return TokenizedTexts(toks, offsets, 0, "bench")

    lm = _StandInLM(a.dim)
    tokens, caches = {}, {}
    for t in g.node_types:
        n = g.num_nodes[t]
        tokens[t] = share.share_tokens(lambda n=n: make_tokens(n)) if share else make_tokens(n)
        if share:
            caches[t] = share.shared_cache(lambda p, n=n: builders.make_cache(n, a.dim, "cpu", shared_path=p), n, a.dim)
            data_parallel.encode_all_shared(lm, tokens[t], caches[t], 4096, 0, ctx, share)
        else:
            caches[t] = builders.make_cache(n, a.dim, "cpu")
            if ctx.is_distributed:
                data_parallel.encode_all_sharded(lm, tokens[t], caches[t], 4096, 0, ctx)
            else:
                order = torch.argsort(tokens[t].lengths, descending=True, stable=True)
                for i in range(0, n, 4096):
                    ids = order[i:i + 4096]
                    caches[t].update(ids, lm.encode(tokens[t], ids), 0)
    setup_s = time.time() - t0
    sampler = builders.make_sampler(g, [15, 10], seed=0)
    n0 = g.num_nodes[g.node_types[0]]
    barrier(ctx)
    t1 = time.time()
    rows = 0
    for step in range(a.steps):
        gen = torch.Generator().manual_seed(step)
        batch = torch.randperm(n0, generator=gen)[:1024]
        mine = data_parallel.rank_slice(batch, ctx)
        blocks = sampler.sample({g.node_types[0]: mine}, seed=step)
        for t in g.node_types:
            rows += caches[t].gather(blocks[0].src_nodes[t]).shape[0]
    step_s = (time.time() - t1) / a.steps
    checksum = float(sum(c.table[:1000].double().sum() for c in caches.values()))
    mem = _smaps()
    infos = all_gather_object({"pss": mem["pss"], "shared_pss": mem["shared_pss"], "files": mem["shared_files"],
                               "step_s": step_s, "setup_s": setup_s, "rows": rows, "checksum": checksum,
                               "base_pss": base_pss}, ctx)
    barrier(ctx)
    if ctx.rank == 0:
        with open(a.out, "w") as f:
            json.dump(infos, f)
    if share:
        share.close()
    if ctx.is_distributed:
        torch.distributed.destroy_process_group()


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run(a, mode: str, nproc: int, tmp: str) -> dict:
    out = os.path.join(tmp, f"{mode}-{nproc}.json")
    pids = tempfile.mkdtemp(dir=tmp)
    args = [__file__, "--worker", "--mode", mode, "--graph", a.graph, "--out", out, "--pids", pids,
            "--dim", str(a.dim), "--tokens", str(a.tokens), "--steps", str(a.steps)]
    cmd = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
                              if nproc > 1 else []) + args
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while p.poll() is None:
        time.sleep(0.2)
        peak = max(peak, sum(_pss_rollup(int(x)) for x in os.listdir(pids)))
        if _mem_available() < a.min_free_gb * 2**30:
            p.kill()
            raise RuntimeError(f"bench_shared_memory: {mode} x {nproc}: stopped, less than {a.min_free_gb} GB free")
    log = p.stdout.read()
    if p.returncode != 0:
        raise RuntimeError(f"bench_shared_memory: {mode} x {nproc} failed:\n{log[-3000:]}")
    ranks = json.load(open(out))
    files: dict[str, int] = {}
    for r in ranks:
        files.update(r["files"])
    machine = sum(r["pss"] - r["shared_pss"] for r in ranks) + sum(files.values())
    return {"mode": mode, "nproc": nproc, "pss_ranks": [r["pss"] for r in ranks],
            "pss_sum": sum(r["pss"] for r in ranks), "base_pss": max(r["base_pss"] for r in ranks),
            "machine": machine, "shared_files": sum(files.values()), "peak_pss_sum": peak,
            "step_s": max(r["step_s"] for r in ranks), "setup_s": max(r["setup_s"] for r in ranks),
            "checksum": ranks[0]["checksum"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--mode", default="shared")
    ap.add_argument("--graph")
    ap.add_argument("--out")
    ap.add_argument("--pids")
    # LMGNN_BENCH=full: the sizes of the issue; quick (the default, CI): a small graph, 2 runs
    quick = os.environ.get("LMGNN_BENCH", "quick") != "full"
    ap.add_argument("--nodes", type=int, default=20_000 if quick else 1_000_000)
    ap.add_argument("--edges", type=int, default=200_000 if quick else 10_000_000)
    ap.add_argument("--dim", type=int, default=64 if quick else 384)
    ap.add_argument("--tokens", type=int, default=16 if quick else 64)
    ap.add_argument("--steps", type=int, default=3 if quick else 20)
    ap.add_argument("--runs", default="copy:1,shared:2" if quick else "copy:1,copy:2,shared:2,shared:4,copy:4")
    ap.add_argument("--min-free-gb", type=float, default=3.0)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return
    from lmgnn_fast.datasets import load_dataset
    from lmgnn_fast.io import is_binary, save_binary

    with tempfile.TemporaryDirectory() as tmp:
        if a.graph is None or not is_binary(a.graph):
            t0 = time.time()
            g = load_dataset("synthetic", num_nodes=a.nodes, num_edges=a.edges, with_text=False)
            a.graph = a.graph or os.path.join(tmp, "graph")
            save_binary(g, a.graph)
            print(f"built {a.nodes} nodes / {g.num_edges()} edge entries (with reverses) in {time.time() - t0:.0f} s",
                  flush=True)
            del g
        print(f"synthetic graph {a.nodes} nodes / {a.edges} edges, d={a.dim} float32, {a.tokens} tokens per "
              f"node, {a.steps} steps of a global batch of 1024 seeds, fanouts [15, 10]", flush=True)
        print("| layout | processes | PSS per rank (MB) | of which runtime (MB) | sum of PSS (MB) | per machine (MB) "
              "| vs 1 process | peak sum of PSS (MB) | setup (s) | step (ms) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        base = None
        for spec in a.runs.split(","):
            mode, nproc = spec.split(":")
            r = run(a, mode, int(nproc), tmp)
            base = base or r["machine"]
            mb = 1e6
            print(f"| {'one copy per machine' if mode == 'shared' else 'copy per rank'} | {r['nproc']} | "
                  f"{' / '.join(f'{x / mb:.0f}' for x in r['pss_ranks'])} | {r['base_pss'] / mb:.0f} | "
                  f"{r['pss_sum'] / mb:.0f} | "
                  f"{r['machine'] / mb:.0f} | {r['machine'] / base:.2f}x | {r['peak_pss_sum'] / mb:.0f} | "
                  f"{r['setup_s']:.1f} | {1000 * r['step_s']:.0f} |", flush=True)
            print(f"<!-- {json.dumps(r)} -->", flush=True)


if __name__ == "__main__":
    main()
