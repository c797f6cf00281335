"""Stage-2 training throughput (training seeds per second) with 1 vs 2 processes.

Each configuration is a real run of ``python -m lmgnn_fast.train`` (under
``torch.distributed.run`` for several processes) on the built-in ``synthetic`` graph with
learnable node-type embeddings (``gnn.text_features: false``, so no LM encoding precedes
stage 2), the same global batch in every row. Throughput = training seeds of one epoch /
the epoch's wall time as the trainer records it (``epoch_time_s``; median over the epochs
after the first), which includes sampling, the DDP gradient all-reduce and the per-step
loss all-reduce, but not the validation pass.

Rows: 1 process with 1 thread, 1 process with 2 threads (the same cores as 2 processes),
2 processes with 1 thread each (gloo on CPU; NCCL on a GPU machine with ``--device cuda``).

Table: ``python benchmarks/bench_distributed.py`` (``LMGNN_BENCH=full`` for the larger
graph); pytest: ``pytest benchmarks/bench_distributed.py``.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

import torch

from common import QUICK, device_name

SIZES = {"quick": dict(num_nodes=3000, num_edges=30000), "full": dict(num_nodes=30000, num_edges=300000)}
BATCH = 256


def _config(path: str, out: str, size: dict, threads: int, device: str, epochs: int) -> None:
    with open(path, "w") as f:
        f.write("data:\n  name: synthetic\n  options: {num_nodes: %d, num_edges: %d, with_text: false}\n"
                % (size["num_nodes"], size["num_edges"]))
        f.write("gnn: {hidden: 64, fanouts: [10, 10], text_features: false}\n"
                f"stage2: {{epochs: {epochs}, batch_size: {BATCH}, patience: 0}}\n"
                f"run: {{stages: '2', device: {device}, out_dir: {out}, progress: false, "
                f"num_threads: {threads}, checkpoint_every: 0}}\n")


def measure(nproc: int, threads: int, size: dict, device: str = "cpu", epochs: int = 4) -> dict:
    """Run stage 2 and return ``{"seeds_per_s", "epoch_s", "seeds"}``."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg, out = os.path.join(tmp, "b.yaml"), os.path.join(tmp, "run")
        _config(cfg, out, size, threads, device, epochs)
        launcher = [sys.executable] if nproc == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        p = subprocess.run(launcher + ["-m", "lmgnn_fast.train", "--config", cfg], capture_output=True,
                           text=True, env=env)
        if p.returncode != 0:
            raise RuntimeError(f"bench_distributed: run with {nproc} processes failed:\n{p.stderr[-3000:]}")
        m = json.load(open(os.path.join(out, "metrics.json")))
        ep = [r["epoch_time_s"] for r in m["history"]["stage2"] if "epoch_time_s" in r]
        steps = sum(1 for r in m["history"]["stage2"] if "loss" in r) // len(ep)
    epoch_s = statistics.median(ep[1:] if len(ep) > 1 else ep)
    seeds = steps * BATCH  # global seeds per epoch (the last batch may be partial)
    return {"seeds_per_s": seeds / epoch_s, "epoch_s": epoch_s, "seeds": seeds}


ROWS = [(1, 1), (1, 2), (2, 1)]


def test_stage2_throughput(benchmark):
    size = SIZES["quick"]
    res = benchmark.pedantic(lambda: measure(2, 1, size, epochs=2), rounds=1, iterations=1)
    assert res["seeds_per_s"] > 0


def main() -> None:
    size = SIZES["quick" if QUICK else "full"]
    device = "cuda" if torch.cuda.is_available() and os.environ.get("LMGNN_BENCH_DEVICE", "cpu") == "cuda" else "cpu"
    print(f"stage 2, synthetic graph {size['num_nodes']} nodes / {size['num_edges']} edges, "
          f"global batch {BATCH}, fanouts [10, 10], hidden 64; device: {device_name(device)}")
    print("| processes | threads/process | epoch (s) | seeds/s | vs 1 proc x 1 thread |")
    print("|---|---|---|---|---|")
    base = None
    for nproc, threads in ROWS:
        r = measure(nproc, threads, size, device)
        base = base or r["seeds_per_s"]
        print(f"| {nproc} | {threads} | {r['epoch_s']:.3f} | {r['seeds_per_s']:.0f} | "
              f"{r['seeds_per_s'] / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
