"""Shared helpers for the side-by-side benchmarks.

Every benchmark compares implementations *in one process* on the same inputs and prints a
table with the sizes, the time per call, peak memory, the speed-up against the first
(baseline) row and the device name. ``LMGNN_BENCH=quick`` (the default, used in CI) runs
small sizes and few rounds; ``LMGNN_BENCH=full`` runs the sizes the issues name.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

MODE = os.environ.get("LMGNN_BENCH", "quick")
QUICK = MODE != "full"


def bench_devices() -> list[str]:
    """Devices to measure on: ``LMGNN_BENCH_DEVICES`` (comma list, e.g. ``cuda`` for a GPU
    check that skips the CPU rows measured elsewhere), else ``cpu`` plus ``cuda`` when visible."""
    avail = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    want = [d for d in os.environ.get("LMGNN_BENCH_DEVICES", ",".join(avail)).split(",") if d]
    bad = [d for d in want if d not in ("cpu", "cuda")]
    if bad:
        raise ValueError(f"LMGNN_BENCH_DEVICES: unknown device {bad[0]!r} (use cpu and/or cuda)")
    return [d for d in want if d in avail]


def device_name(device: str | torch.device = "cpu") -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def sync(device: str | torch.device = "cpu") -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector off while timing (as in timeit): a collection scans
    every object the process holds (torch, PyG, the graphs), and landing inside a timed call
    it charges that call with work that is not its own."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_fn(fn: Callable[[], object], device="cpu", warmup: int = 1, rounds: int | None = None,
            min_time: float | None = None) -> float:
    """Median seconds per call of ``fn`` (after ``warmup`` calls): at least ``rounds`` calls
    and, in full mode, at least ``min_time`` seconds (default ``LMGNN_BENCH_MIN_TIME`` or 0.5)."""
    if min_time is None:
        min_time = float(os.environ.get("LMGNN_BENCH_MIN_TIME", "0.5"))
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    rounds = rounds or (3 if QUICK else 10)
    with gc_paused():
        t_end = time.perf_counter() + (min_time if not QUICK else 0.0)
        while len(times) < rounds or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t0)
            if len(times) >= 1000:
                break
    times.sort()
    return times[len(times) // 2]


def time_interleaved(fns: dict[str, Callable[[], object]], device="cpu", rounds: int | None = None,
                     min_time: float | None = None, max_time: float = 60.0) -> dict[str, float]:
    """Median seconds per call of every ``fn`` in ``fns``, timed in interleaved rounds (each
    round calls every fn once, in turn) after one warm-up call each. At least ``rounds``
    rounds (3 quick, 5 full) and, in full mode, until the fastest fn has ``min_time`` seconds
    of samples, unless the rounds already took ``max_time`` seconds. Interleaving puts every
    implementation of a row under the same machine load, so a slow spell on a shared machine
    moves all of them rather than one, and the ratios between them stay honest."""
    if min_time is None:
        min_time = float(os.environ.get("LMGNN_BENCH_MIN_TIME", "0.5"))
    if QUICK:
        min_time = 0.0
    rounds = rounds or (3 if QUICK else 5)
    for fn in fns.values():
        fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    with gc_paused():
        start = time.perf_counter()
        while True:
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                sync(device)
                times[name].append(time.perf_counter() - t0)
            n = len(next(iter(times.values())))
            fastest = min(sum(v) for v in times.values())
            if n >= rounds and (fastest >= min_time or time.perf_counter() - start >= max_time or n >= 1000):
                break
    return {name: sorted(v)[len(v) // 2] for name, v in times.items()}


def peak_memory(fn: Callable[[], object], device="cpu") -> int | None:
    """Peak bytes allocated while running ``fn`` once (CUDA: allocator peak; CPU: None)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def tracked_peak_memory(fn: Callable[[], object], device="cpu") -> int | None:
    """Peak bytes of tensors allocated while running ``fn`` once, above what was live before.

    CUDA: the caching allocator's peak (:func:`peak_memory`). CPU (no allocator statistics):
    ``torch.profiler`` with ``profile_memory=True`` records every CPU tensor allocation and
    free with its size; the peak of their running sum, in time order, is returned.
    """
    if torch.device(device).type == "cuda":
        return peak_memory(fn, device)
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def cpu_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class Table:
    """Rows of measurements printed as a Markdown table (and saved as JSON)."""

    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)

    def add(self, *values) -> None:
        self.rows.append(list(values))

    def markdown(self) -> str:
        def fmt(v):
            if isinstance(v, float):
                return f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
            return str(v)

        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def print(self) -> None:
        print("\n" + self.markdown(), flush=True)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({"title": self.title, "columns": self.columns, "rows": self.rows,
                                   "mode": MODE}, indent=1, default=str))
        os.replace(tmp, path)


def results_dir() -> Path:
    return Path(os.environ.get("LMGNN_BENCH_OUT", "bench-results"))


def worker_parser(with_parts: bool = True):
    """``(parser, quick)``: the argument parser every torchrun benchmark's launcher and workers
    share (``--worker``, ``--graph``, ``--out``, ``--parts`` when ``with_parts``); the script adds
    its own sizes. ``quick`` is true unless ``LMGNN_BENCH=full``."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--graph")
    if with_parts:
        ap.add_argument("--parts")
    ap.add_argument("--out")
    return ap, os.environ.get("LMGNN_BENCH", "quick") != "full"


def finish_worker(res, ctx, path: str) -> None:
    """End of a torchrun benchmark worker: gather every rank's ``res``, rank 0 writes the list
    as JSON to ``path``, the process group is torn down."""
    from lmgnn_fast.distributed import all_gather_object

    out = all_gather_object(res, ctx)
    if ctx.rank == 0:
        with open(path, "w") as f:
            json.dump(out, f)
    if ctx.is_distributed:
        torch.distributed.destroy_process_group()
