"""Loading a heterogeneous graph: from tables, from the directory format, from the binary cache.

A random graph of two node types (string ids, text on one type) and two relations, one of
them a link-prediction target. Side by side: ``build_graph`` with integer and string ids,
``read_dir`` from Parquet and CSV, ``load_binary`` memory-mapped and read, and — as the
reference for the id mapping — a pure-Python dict lookup per edge.

pytest: ``pytest benchmarks/bench_io.py --benchmark-json=out.json``
table:  ``python benchmarks/bench_io.py`` (``LMGNN_BENCH=full``: 10M edges)
"""
from __future__ import annotations

import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import lmgnn_fast  # noqa: F401
from common import QUICK, Table, cpu_peak_rss_mb, device_name, results_dir
from lmgnn_fast.io import build_graph, load_binary, read_dir, save_binary, write_dir

SIZES = [(20_000, 200_000)] if QUICK else [(1_000_000, 10_000_000)]


def make_tables(n: int, e: int, string_ids: bool = True, seed: int = 0):
    """``n`` nodes per type, ``e`` edges in all; returns (metadata, nodes, edges)."""
    rng = np.random.default_rng(seed)
    md = {"name": "bench", "node_types": ["a", "b"], "edge_types": [["a", "r0", "b"], ["b", "r1", "a"]],
          "tasks": [{"name": "lp", "type": "link_prediction", "edge_type": ["a", "r0", "b"]}]}

    def ids(prefix):
        perm = rng.permutation(n)
        if not string_ids:
            return pa.array(perm)
        return pc_format(prefix, perm)

    ida, idb = ids("a"), ids("b")
    words = np.array(["graph", "text", "node", "model", "language", "edge", "relation", "type"], dtype=object)
    text = pa.array([" ".join(words[rng.integers(0, 8, 6)]) for _ in range(min(n, 50_000))])
    text = pa.concat_arrays([text] * (n // len(text)) + [text.slice(0, n % len(text))])
    nodes = {"a": pa.table({"id": ida, "text": text}), "b": pa.table({"id": idb})}
    half = e // 2
    edges = {("a", "r0", "b"): pa.table({"src": ida.take(pa.array(rng.integers(0, n, half))),
                                         "dst": idb.take(pa.array(rng.integers(0, n, half)))}),
             ("b", "r1", "a"): pa.table({"src": idb.take(pa.array(rng.integers(0, n, e - half))),
                                         "dst": ida.take(pa.array(rng.integers(0, n, e - half)))})}
    return md, nodes, edges


def pc_format(prefix: str, values: np.ndarray) -> pa.Array:
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(pa.scalar(prefix), pa.array(values).cast(pa.string()), "")


def dict_mapping_ref(nodes, edges) -> int:
    """Reference: map every edge endpoint with a Python dict, one row at a time."""
    total = 0
    for (s, _, d), tab in edges.items():
        ms = {v: i for i, v in enumerate(nodes[s].column("id").to_pylist())}
        md = {v: i for i, v in enumerate(nodes[d].column("id").to_pylist())}
        src = [ms[v] for v in tab.column("src").to_pylist()]
        dst = [md[v] for v in tab.column("dst").to_pylist()]
        total += len(src) + len(dst)
    return total


def _dir_size(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# ------------------------------------------------------------------ pytest-benchmark (quick)
@pytest.fixture(scope="module")
def quick_data(tmp_path_factory):
    n, e = SIZES[0]
    md, nodes, edges = make_tables(n, e)
    g = build_graph(md, nodes, edges)
    root = tmp_path_factory.mktemp("io")
    write_dir(g, root / "parquet", format="parquet")
    save_binary(g, root / "bin")
    return md, nodes, edges, root


@pytest.mark.parametrize("impl", ["build_graph", "read_dir_parquet", "load_binary", "dict_ref"])
def test_load(benchmark, quick_data, impl):
    md, nodes, edges, root = quick_data
    benchmark.extra_info.update(edges=SIZES[0][1], nodes_per_type=SIZES[0][0], device=device_name())
    fn = {"build_graph": lambda: build_graph(md, nodes, edges),
          "read_dir_parquet": lambda: read_dir(root / "parquet"),
          "load_binary": lambda: load_binary(root / "bin"),
          "dict_ref": lambda: dict_mapping_ref(nodes, edges)}[impl]
    benchmark.pedantic(fn, rounds=3, iterations=1)


# ------------------------------------------------------------------ table
def main():
    table = Table("HeteroGraph loading", ["device", "nodes/type", "edges", "path", "s", "speed-up vs dict ref",
                                          "on disk MiB"])
    tmp = Path(tempfile.mkdtemp(prefix="bench_io_"))
    try:
        for n, e in SIZES:
            md, nodes, edges = make_tables(n, e)
            t_ref, _ = _timed(partial(dict_mapping_ref, nodes, edges))
            rows = [("reference: Python dict id mapping only", t_ref, "")]
            t, g = _timed(partial(build_graph, md, nodes, edges))
            rows.append(("build_graph, string ids", t, ""))
            md_i, nodes_i, edges_i = make_tables(n, e, string_ids=False)
            t, _ = _timed(partial(build_graph, md_i, nodes_i, edges_i))
            rows.append(("build_graph, integer ids", t, ""))
            del md_i, nodes_i, edges_i
            for fmt in ("parquet", "csv"):
                write_dir(g, tmp / fmt, format=fmt)
                t, h = _timed(partial(read_dir, tmp / fmt))
                assert h.num_edges() == g.num_edges()
                rows.append((f"read_dir, {fmt}", t, _dir_size(tmp / fmt)))
                del h
            t, _ = _timed(partial(save_binary, g, tmp / "bin"))
            rows.append(("save_binary", t, _dir_size(tmp / "bin")))
            for mmap in (True, False):
                t, h = _timed(partial(load_binary, tmp / "bin", mmap=mmap))
                assert h.num_edges() == g.num_edges()
                rows.append((f"load_binary, mmap={mmap}", t, ""))
                del h
            read_dir(tmp / "parquet", cache=True)
            t, h = _timed(partial(read_dir, tmp / "parquet", cache=True))
            rows.append(("read_dir, parquet, cache hit", t, ""))
            del h, g
            for name, t, size in rows:
                table.add(device_name(), n, e, name, t, t_ref / t, size)
        table.add(device_name(), "", "", f"peak RSS of the run: {cpu_peak_rss_mb():,.0f} MiB", "", "", "")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table.print()
    table.save(results_dir() / "io.json")


if __name__ == "__main__":
    main()
