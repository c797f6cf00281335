"""Dataset loading: time and peak memory of building a graph from a built-in dataset, from
the directory format (Parquet) and from the binary cache (memory-mapped), side by side.

Datasets: ``hpo`` (36.8k nodes, 519k edges, text on every node) and a synthetic graph
(quick: 100k nodes / 1M edges; full: 1M nodes / 10M edges, 3 node types, 8 relations, no
text). Every measurement runs in a fresh interpreter so its peak RSS is its own; the table
shows the peak RSS above the interpreter's baseline after ``import lmgnn_fast``.

pytest: ``pytest benchmarks/bench_data.py --benchmark-json=out.json``
table:  ``python benchmarks/bench_data.py`` (``LMGNN_BENCH=full`` for the 10M-edge graph)
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from common import QUICK, Table, device_name, results_dir
from lmgnn_fast.io import build_graph, load_binary, read_dir, save_binary

SYNTH = (dict(num_nodes=100_000, num_edges=1_000_000) if QUICK
         else dict(num_nodes=1_000_000, num_edges=10_000_000))
SYNTH.update(num_node_types=3, num_relations=8, num_classes=10, with_text=False, seed=0)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _options(name: str) -> dict:
    return SYNTH if name == "synthetic" else {}


def _touch(graph) -> int:
    """Read every CSC array once (a memory-mapped load pays its page-ins here)."""
    total = 0
    for et in graph.edge_types:
        csc = graph.csc[et]
        csc.indices.sum(), csc.eid.sum()
        total += int(csc.indptr[-1])
    return total


def _child(step: str, name: str, path: str) -> dict:
    """One measurement in this (fresh) interpreter; returns seconds and peak RSS."""
    import lmgnn_fast  # noqa: F401
    from lmgnn_fast.datasets import dataset_tables, load_dataset, write_tables

    base = _rss_mb()
    t0 = time.perf_counter()
    if step == "tables":
        md, nodes, edges = dataset_tables(name, **_options(name))
        n = sum(t.num_rows for t in edges.values())
    elif step == "build":
        n = _touch(load_dataset(name, **_options(name)))
    elif step == "load_dir":
        n = _touch(read_dir(path))
    elif step == "load_binary":
        n = _touch(load_binary(path, mmap=True))
    elif step == "load_binary_copy":
        n = _touch(load_binary(path, mmap=False))
    elif step == "prepare":  # write both formats (not timed in the table)
        md, nodes, edges = dataset_tables(name, **_options(name))
        write_tables(Path(path) / "dir", md, nodes, edges, overwrite=True)
        g = build_graph(md, nodes, edges)
        save_binary(g, Path(path) / "bin")
        n = g.num_edges()
    else:
        raise ValueError(step)
    return {"seconds": time.perf_counter() - t0, "peak_mb": _rss_mb() - base, "edges": int(n)}


def _run(step: str, name: str, path: str = "") -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", step, name, path], capture_output=True,
                         text=True, check=False, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if out.returncode != 0:
        raise RuntimeError(f"bench_data child {step} {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _prepared(name: str, root: Path) -> Path:
    path = root / name
    if not (path / "bin").is_dir():
        _run("prepare", name, str(path))
    return path


# ------------------------------------------------------------------ pytest-benchmark

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_data")
    return {name: _prepared(name, root) for name in ("hpo", "synthetic")}


@pytest.mark.parametrize("name", ["hpo", "synthetic"])
@pytest.mark.parametrize("source", ["dir", "binary"])
def test_load(benchmark, prepared, name, source):
    path = prepared[name]
    fn = (lambda: read_dir(path / "dir")) if source == "dir" else \
        (lambda: load_binary(path / "bin"))
    benchmark.extra_info.update(dataset=name, source=source, device=device_name("cpu"))
    g = benchmark.pedantic(fn, rounds=2 if QUICK else 3, iterations=1)
    assert g.num_edges() > 0


@pytest.mark.parametrize("name", ["attack", "synthetic"])
def test_tables(benchmark, name):
    from lmgnn_fast.datasets import dataset_tables

    benchmark.extra_info.update(dataset=name, device=device_name("cpu"))
    md, nodes, edges = benchmark.pedantic(lambda: dataset_tables(name, **_options(name)), rounds=2, iterations=1)
    assert edges


# ------------------------------------------------------------------ table

def main():
    table = Table("dataset loading (fresh process per row; peak RSS above the post-import baseline)",
                  ["dataset", "nodes", "edges", "from", "s", "peak MB", "speed-up vs build"])
    steps = [("build", "package -> tables -> HeteroGraph"), ("tables", "package -> tables only"),
             ("load_dir", "directory (Parquet)"), ("load_binary", "binary cache, mmap"),
             ("load_binary_copy", "binary cache, read")]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("hpo", "synthetic"):
            path = _prepared(name, Path(tmp))
            import lmgnn_fast  # noqa: F401

            g = load_binary(path / "bin")
            n_nodes = sum(g.num_nodes.values())
            del g
            results = {step: _run(step, name, str(path / ("dir" if step == "load_dir" else "bin")))
                       for step, _ in steps}
            n_edges = results["tables"]["edges"]  # forward edges (the graph adds rev- edges)
            base = results["build"]["seconds"]
            for step, label in steps:
                r = results[step]
                table.add(name, f"{n_nodes:,}", f"{n_edges:,}", label, r["seconds"], r["peak_mb"],
                          base / r["seconds"])
    table.rows.append([f"device: {device_name('cpu')}, mode {'quick' if QUICK else 'full'}", "", "", "", "", "", ""])
    table.print()
    table.save(results_dir() / "data.json")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        sys.path.insert(0, str(Path(__file__).parent))
        print(json.dumps(_child(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")))
    else:
        main()
