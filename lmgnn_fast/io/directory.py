"""The on-disk directory format: reading and writing.

Layout (see DESIGN.md, "On-disk directory format")::

    <dataset>/
      metadata.json
      nodes/<node_type>.{csv,parquet,jsonl}
      edges/<src_type>__<relation>__<dst_type>.{csv,parquet,jsonl}

CSV files are read with ``id``/``src``/``dst``/``split``/``text`` as strings so that ids
like ``"007"`` keep their spelling; an id column whose every value is a plain decimal
integer (``0``, ``-3``, ``42``, no leading zeros) that fits in int64 is then read as
integers, and an empty id cell is a missing id. JSONL and Parquet keep their own types.
``metadata.json`` may omit ``node_types`` / ``edge_types``; they are then taken from the
file names (sorted; hidden files ignored). Names must be names (``graph.name_problem``) and
every file must resolve inside the directory (no symbolic links leading out).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmgnn_fast.graph import SPLITS, EdgeType, HeteroGraph, edge_type_str
from lmgnn_fast.io.atomic import replace_dir
from lmgnn_fast.io.binary import FORMAT_VERSION, is_binary, load_binary, save_binary
from lmgnn_fast.io.errors import GraphFormatError, Source
from lmgnn_fast.io.paths import is_inside, name_problem, safe_join
from lmgnn_fast.io.tables import BUILD_OPTIONS, build_graph, check_options

FORMATS = ("csv", "parquet", "jsonl")
CACHE_DIR = ".lmgnn_cache"
_INT_RE = r"^-?(0|[1-9][0-9]{0,18})$"
_STRING_COLS = {"nodes": ("id", "split", "text"), "edges": ("src", "dst", "split")}


# ---------------------------------------------------------------------------- reading
def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def _find_file(root: Path, folder: str, stem: str) -> Path:
    hits = [root / folder / f"{stem}.{ext}" for ext in FORMATS if (root / folder / f"{stem}.{ext}").is_file()]
    if not hits:
        looked = ", ".join(f"{folder}/{stem}.{ext}" for ext in FORMATS)
        raise GraphFormatError(f"file not found (looked for {looked})", file=f"{folder}/{stem}.*")
    if len(hits) > 1:
        names = ", ".join(_rel(root, h) for h in hits)
        raise GraphFormatError(f"several files for one table ({names}); keep one", file=f"{folder}/{stem}.*")
    _check_inside(root, hits[0])
    return hits[0]


def _check_inside(root: Path, p: Path) -> None:
    """Refuse a file that resolves outside the dataset folder (a symbolic link leading out)."""
    if not is_inside(root, p):
        raise GraphFormatError(f"resolves to {os.path.realpath(p)}, outside the dataset directory; "
                               "symbolic links must stay inside it", file=_rel(root, p))


def _check_names(md: dict) -> None:
    """Node types and relations are names (they become file names): refuse any other."""
    node_types, edge_types = md.get("node_types"), md.get("edge_types")
    if isinstance(node_types, list):
        for t in node_types:
            why = name_problem(t, "node type")
            if why:
                raise GraphFormatError(f"node_types: {why}", file="metadata.json")
    if isinstance(edge_types, list):
        for i, et in enumerate(edge_types):
            if isinstance(et, (list, tuple)) and len(et) == 3:
                for x, kind in zip(et, ("node type", "relation", "node type")):
                    why = name_problem(x, kind)
                    if why:
                        raise GraphFormatError(f"edge_types[{i}]: {why}", file="metadata.json")


def _canonical_ints(table: pa.Table, cols) -> pa.Table:
    """CSV id columns: an empty cell is a missing id (null); a column whose every value is a
    plain decimal integer that fits in int64 becomes int64, any other keeps its spelling."""
    for c in cols:
        if c not in table.column_names:
            continue
        i = table.column_names.index(c)
        col = table.column(c)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        empty = pc.equal(col, "")
        if pc.any(empty).as_py():
            col = pc.if_else(empty, pa.scalar(None, col.type), col)
            table = table.set_column(i, c, col)
        if (col.null_count == 0 and len(col) > 0
                and pc.all(pc.match_substring_regex(col, _INT_RE)).as_py()):
            try:
                table = table.set_column(i, c, col.cast(pa.int64()))
            except pa.ArrowInvalid:  # beyond int64: the ids stay strings
                pass
    return table


def _csv_header(path: Path) -> list[str]:
    import csv

    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return next(csv.reader(f), [])


def _read_csv(path: Path, role: str):
    import pyarrow.csv as pv

    strings = {c: pa.large_string() for c in _STRING_COLS[role]}
    parse = pv.ParseOptions(newlines_in_values=True)
    convert = pv.ConvertOptions(column_types=strings)
    try:
        return pv.read_csv(path, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        if "straddl" not in str(exc):
            raise
    # a value larger than the reader's block (1 MiB): read the file as one block
    size = min(max(path.stat().st_size + 1, 1 << 20), (1 << 31) - 1)
    return pv.read_csv(path, read_options=pv.ReadOptions(block_size=size), parse_options=parse,
                       convert_options=convert)


def _read_jsonl(path: Path):
    import pyarrow.json as pj

    try:
        return pj.read_json(path)
    except pa.ArrowInvalid as exc:
        if "straddl" not in str(exc):
            raise
    size = min(max(path.stat().st_size + 1, 1 << 20), (1 << 31) - 1)
    return pj.read_json(path, read_options=pj.ReadOptions(block_size=size))


def read_table(path: Path, rel: str, role: str) -> tuple[pa.Table, Source]:
    """Read one node (``role="nodes"``) or edge (``role="edges"``) table.

    Raises:
        GraphFormatError: the file cannot be read or parsed.
    """
    ext = path.suffix[1:]
    try:
        if ext == "parquet":
            import pyarrow.parquet as pq

            table, src = pq.read_table(path), Source(rel)
        elif ext == "csv":
            table, src = _read_csv(path, role), Source(rel, line_base=2)
        else:
            table, src = _read_jsonl(path), Source(rel, line_base=1)
        cols = table.column_names
        if len(set(cols)) != len(cols):
            dup = next(c for c in cols if cols.count(c) > 1)
            raise src.error(f"column {dup!r} appears {cols.count(dup)} times (columns: {cols})", None, dup)
        if ext == "csv":
            table = _canonical_ints(table, ("id",) if role == "nodes" else ("src", "dst"))
        return table, src
    except GraphFormatError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        text = " ".join(str(exc).split())
        column = None
        m = re.search(r"column #(\d+)", text) if ext == "csv" else None
        if m:
            header = _csv_header(path)
            k = int(m.group(1))
            column = header[k] if k < len(header) else None
        if "UTF8" in text or "UTF-8" in text:
            text = f"invalid UTF-8 ({text})"
        raise GraphFormatError(f"cannot read {ext} file: {text}", file=rel, column=column) from exc


def read_metadata(root: Path) -> dict:
    path = root / "metadata.json"
    if not path.is_file():
        raise GraphFormatError("file not found: every dataset directory needs a metadata.json",
                               file="metadata.json")
    _check_inside(root, path)
    try:
        with open(path, encoding="utf-8") as f:
            md = json.load(f)
    except json.JSONDecodeError as exc:
        raise GraphFormatError(f"invalid JSON: {exc.msg}", file="metadata.json", line=exc.lineno,
                               row=None) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphFormatError(f"cannot read file: {exc}", file="metadata.json") from exc
    if not isinstance(md, dict):
        raise GraphFormatError(f"metadata must be a JSON object, got {type(md).__name__}", file="metadata.json")
    return md


def _stems(root: Path, folder: str) -> list[str]:
    d = root / folder
    if not d.is_dir():
        return []
    return sorted({p.name.rsplit(".", 1)[0] for p in d.iterdir()
                   if p.is_file() and p.suffix[1:] in FORMATS and not p.name.startswith(".")})


def _plan(root: Path) -> tuple[dict, dict[str, Path], dict[EdgeType, Path]]:
    """metadata plus the file of every node and edge table (all checked to exist)."""
    if not root.is_dir():
        raise GraphFormatError("not a directory (expected metadata.json, nodes/, edges/)", file=str(root))
    md = read_metadata(root)
    node_types = md.get("node_types")
    if node_types is None:
        node_types = _stems(root, "nodes")
        if not node_types:
            raise GraphFormatError("no node tables found and metadata.json lists no node_types",
                                   file="nodes/")
    edge_types = md.get("edge_types")
    if edge_types is None:
        edge_types = []
        for stem in _stems(root, "edges"):
            parts = stem.split("__")
            if len(parts) != 3:
                raise GraphFormatError("edge file names must be <src_type>__<relation>__<dst_type>",
                                       file=f"edges/{stem}")
            edge_types.append(parts)
    md = dict(md, node_types=node_types, edge_types=edge_types)
    _check_names(md)
    node_files = {}
    if isinstance(node_types, list):
        for t in node_types:
            if isinstance(t, str):
                node_files[t] = _find_file(root, "nodes", t)
    edge_files = {}
    if isinstance(edge_types, list):
        for et in edge_types:
            if isinstance(et, (list, tuple)) and len(et) == 3 and all(isinstance(x, str) for x in et):
                if et[0] in node_files and et[2] in node_files:  # else metadata validation reports it
                    edge_files[tuple(et)] = _find_file(root, "edges", edge_type_str(tuple(et)))
    return md, node_files, edge_files


def _cache_key(root: Path, files: list[Path], options: dict) -> str:
    h = hashlib.sha1()
    stat = []
    for p in [root / "metadata.json", *files]:
        st = p.stat()
        stat.append([_rel(root, p), st.st_size, st.st_mtime_ns])
    opts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(options.items()) if k != "sources"}
    h.update(json.dumps([FORMAT_VERSION, stat, opts], sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def read_dir_tables(path) -> tuple[dict, dict, dict, dict]:
    """The tables of a dataset directory as read, before validation and graph building.

    Args:
        path: the dataset directory.

    Returns:
        ``(metadata, nodes, edges, sources)``: the metadata with ``node_types`` and
        ``edge_types`` filled in, per node type and per ``(src, rel, dst)`` a
        ``pyarrow.Table``, and per table its :class:`Source` (for
        :func:`~lmgnn_fast.io.tables.build_graph`'s ``sources``).

    Raises:
        GraphFormatError: a file is missing, unreadable, or outside the directory.
    """
    root = Path(path)
    md, node_files, edge_files = _plan(root)
    return _read_planned(root, md, node_files, edge_files)


def _read_planned(root: Path, md: dict, node_files: dict, edge_files: dict):
    nodes, edges, sources = {}, {}, {"metadata": Source("metadata.json")}
    for t, p in node_files.items():
        nodes[t], sources[t] = read_table(p, _rel(root, p), "nodes")
    for et, p in edge_files.items():
        edges[et], sources[et] = read_table(p, _rel(root, p), "edges")
    return md, nodes, edges, sources


LOAD_OPTIONS = tuple(o for o in BUILD_OPTIONS if o != "sources")


def read_dir(path, cache: bool | str = False, **options) -> HeteroGraph:
    """Read a graph in the directory format (``metadata.json``, ``nodes/``, ``edges/``).

    Args:
        path: the dataset directory.
        cache: ``True`` keeps a binary cache in ``<path>/.lmgnn_cache/`` keyed by the
            files' sizes and mtimes and the options; a string names another cache
            folder. A valid cache is loaded instead of parsing the tables.
        **options: as :func:`~lmgnn_fast.io.tables.build_graph`.

    Raises:
        GraphFormatError: a file breaks the format (the message names the file, row and
            column), or resolves outside the directory.
        OptionError: an unknown option or a bad value.
    """
    check_options(options, "read_dir", accepted=LOAD_OPTIONS)
    root = Path(path)
    md, node_files, edge_files = _plan(root)
    cache_path = None
    if cache:
        base = root / CACHE_DIR if cache is True else Path(cache)
        cache_path = base / _cache_key(root, [*node_files.values(), *edge_files.values()], options)
        if is_binary(cache_path):
            return load_binary(cache_path, mmap=True)
    md, nodes, edges, sources = _read_planned(root, md, node_files, edge_files)
    g = build_graph(md, nodes, edges, sources=sources, **options)
    if cache_path is not None:
        save_binary(g, cache_path)
    return g


# ---------------------------------------------------------------------------- writing
def _canonical_names(names) -> bool:
    return names is not None and list(names) == [str(i) for i in range(len(names))]


def _label_column(y, names, fmt: str) -> pa.Array:
    y = y.cpu()
    if y.dim() == 1:
        v = y.numpy()
        mask = v < 0
        if _canonical_names(names):
            return pa.array(v, mask=mask, type=pa.int64())
        return pa.array(np.asarray(names, dtype=object)[np.where(mask, 0, v)], mask=mask, type=pa.large_string())
    rows, cols = np.nonzero(y.numpy() > 0)
    offsets = np.searchsorted(rows, np.arange(y.shape[0] + 1)).astype(np.int64)
    flat = pa.array(np.asarray(names, dtype=object)[cols] if len(cols) else [], type=pa.large_string())
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), flat)
    if fmt == "csv":
        return pc.binary_join(lists, pa.scalar("|", pa.large_string()))
    return lists


def _split_column(masks: dict, n: int) -> pa.Array:
    codes = np.full(n, -1, dtype=np.int64)
    for i, s in enumerate(SPLITS):
        codes[masks[s].cpu().numpy()] = i
    return pa.array(np.asarray(SPLITS, dtype=object)[np.maximum(codes, 0)], mask=codes < 0, type=pa.large_string())


def _take_ids(raw, idx: np.ndarray) -> pa.Array:
    if isinstance(raw, np.ndarray):
        return pa.array(raw[idx])
    return pa.array(raw, type=pa.large_string()).take(pa.array(idx))


def forward_edge_types(g: HeteroGraph) -> list[EdgeType]:
    """The relations of the graph's tables (the reverses added on load excluded)."""
    return g.edge_types[: len(g.edge_types) - len(g.reverse_of) // 2]


def full_edges(g: HeteroGraph, et: EdgeType) -> tuple[np.ndarray, np.ndarray]:
    """All edges of a forward relation in eid order, held-out link-prediction edges included
    (:meth:`HeteroGraph.all_edges` as numpy arrays)."""
    src, dst = g.all_edges(et)
    if (src < 0).any():
        raise RuntimeError(f"HeteroGraph: relation {et} lacks edges for some eids")
    return src.numpy(), dst.numpy()


def _write_table(table: pa.Table, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif fmt == "csv":
        import pyarrow.csv as pv

        pv.write_csv(table, path)
    else:
        cols = [table.column(c).to_pylist() for c in table.column_names]
        names = table.column_names
        with open(path, "w", encoding="utf-8") as f:
            for row in zip(*cols):
                f.write(json.dumps({k: v for k, v in zip(names, row) if v is not None}, ensure_ascii=False))
                f.write("\n")


def write_dir(g: HeteroGraph, path, format: str = "parquet") -> None:
    """Write a graph in the directory format (``parquet``, ``csv`` or ``jsonl``).

    Splits are written out (drawn ones too), so reading it back gives an identical graph;
    held-out link-prediction edges are written back into their relation's table. The
    folder ``path`` is replaced as a whole once complete.
    """
    if format not in FORMATS:
        raise ValueError(f"write_dir: format must be one of {FORMATS}, got {format!r}")
    fwd = forward_edge_types(g)
    for t in g.node_types:  # refuse a name that is a path before writing anything
        safe_join("nodes", t, f".{format}", "node type")
    for et in fwd:
        safe_join("edges", edge_type_str(et), f".{format}", "edge type")
    dest = Path(path)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "nodes").mkdir(parents=True)
    (tmp / "edges").mkdir()
    label_names = {}
    for t in g.node_types:
        cols = {"id": _take_ids(g.raw_ids[t], np.arange(g.num_nodes[t]))}
        if g.text.get(t) is not None:
            cols["text"] = pa.array(g.text[t], type=pa.large_string())
        if g.labels.get(t) is not None:
            names = g.label_names[t]
            cols["label"] = _label_column(g.labels[t], names, format)
            if not (_canonical_names(names) and g.labels[t].dim() == 1):
                label_names[t] = list(names)
        if t in g.masks:
            cols["split"] = _split_column(g.masks[t], g.num_nodes[t])
        _write_table(pa.table(cols), safe_join(tmp / "nodes", t, f".{format}", "node type"), format)
    for et in fwd:
        s, d = full_edges(g, et)
        cols = {"src": _take_ids(g.raw_ids[et[0]], s), "dst": _take_ids(g.raw_ids[et[2]], d)}
        if g.edge_labels.get(et) is not None:
            names = g.edge_label_names[et]
            cols["label"] = _label_column(g.edge_labels[et], names, format)
            if not (_canonical_names(names) and g.edge_labels[et].dim() == 1):
                label_names[edge_type_str(et)] = list(names)
        if et in g.edge_masks:
            cols["split"] = _split_column(g.edge_masks[et], g.num_eids[et])
        _write_table(pa.table(cols), safe_join(tmp / "edges", edge_type_str(et), f".{format}", "edge type"),
                     format)
    md = {
        "name": g.name,
        "node_types": list(g.node_types),
        "edge_types": [list(et) for et in fwd],
        "add_reverse_edges": bool(g.reverse_of),
        "tasks": [t.to_dict() for t in g.tasks],
    }
    if label_names:
        md["label_names"] = label_names
    with open(tmp / "metadata.json", "w", encoding="utf-8") as f:
        json.dump(md, f, indent=2)
        f.write("\n")
    replace_dir(tmp, dest)


__all__ = ["read_dir", "read_dir_tables", "write_dir", "read_table", "read_metadata", "forward_edge_types",
           "full_edges"]
