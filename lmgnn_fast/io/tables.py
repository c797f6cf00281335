"""Build a :class:`~lmgnn_fast.graph.HeteroGraph` from tables in the directory format.

Everything per row is vectorized (pyarrow compute and numpy/torch), so tables of tens of
millions of edges load in seconds: ids are mapped to dense node indices with a hash lookup
(``pyarrow.compute.index_in``) or, for integer ids that already are ``0..N-1``, directly.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from lmgnn_fast.graph import (
    CSC,
    REVERSE_PREFIX,
    SPLITS,
    TASK_TYPES,
    EdgeType,
    HeteroGraph,
    Task,
    edge_type_str,
    name_problem,
)
from lmgnn_fast.io.errors import GraphFormatError, OptionError, Source
from lmgnn_fast.ops import coo_to_csc

POLICIES = ("keep", "remove")
# Integer class ids must be below max(MAX_CLASSES_FLOOR, rows of the table): class ids are
# positions in the class list, so a stray huge value would otherwise make a huge list.
MAX_CLASSES_FLOOR = 10_000
# The options of build_graph (read_dir adds ``cache``).
BUILD_OPTIONS = ("add_reverse_edges", "dedup_edges", "self_loops", "seed", "split_ratios", "index_dtype",
                 "sources")
INT32_MAX = 2**31 - 1
# Accepted spellings of the split column; empty / null means "in no split".
_SPLIT_NAMES = ["train", "val", "test", "valid", "validation", ""]
_SPLIT_CODES = np.array([0, 1, 2, 1, 1, -1], dtype=np.int8)


# ---------------------------------------------------------------------------- helpers
def check_options(options, where: str, accepted=BUILD_OPTIONS) -> None:
    """Raise :class:`OptionError` naming every unknown key of ``options`` and the accepted ones."""
    unknown = sorted(str(k) for k in options if k not in accepted)
    if unknown:
        s = "s" if len(unknown) > 1 else ""
        raise OptionError(f"{where}: unknown option{s} {', '.join(map(repr, unknown))} "
                          f"(options: {', '.join(sorted(set(accepted)))})")


def _combine(col) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 0:
            return pa.array([], type=col.type)
        col = col.combine_chunks() if col.num_chunks > 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _is_str(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _key_kind(col: pa.Array, src: Source, column: str, what: str) -> str:
    t = col.type
    if pa.types.is_integer(t):
        return "int"
    if _is_str(t):
        empty = pc.fill_null(pc.equal(col, ""), False).to_numpy(zero_copy_only=False)
        if empty.any():
            r = _first(empty)
            raise src.error(f"{what} must not be empty", r, column)
        return "str"
    if pa.types.is_floating(t):
        # JSON/CSV readers give float for integer columns with gaps; accept integral values.
        vals = col.to_numpy(zero_copy_only=False)
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        bad = valid & (~np.isfinite(vals) | (vals != np.round(vals)) | (np.abs(vals) >= 2.0**63))
        if bad.any():
            r = _first(bad)
            raise src.error(f"{what} must be integers or strings, got {float(vals[r])!r}", r, column)
        return "float"
    raise src.error(f"{what} must be integers or strings, got column type {t}", None, column)


def _check_nulls(col: pa.Array, src: Source, column: str, what: str) -> None:
    if col.null_count:
        r = _first(col.is_null().to_numpy(zero_copy_only=False))
        raise src.error(f"{what} is missing (null)", r, column)


def _check_columns(table: pa.Table, src: Source) -> list[str]:
    """The column names, refusing a name used twice (which column would be meant?)."""
    cols = table.column_names
    if len(set(cols)) != len(cols):
        dup = next(c for c in cols if cols.count(c) > 1)
        raise src.error(f"column {dup!r} appears {cols.count(dup)} times (columns: {cols})", None, dup)
    return cols


class _IdIndex:
    """Maps raw ids of one node type to dense indices ``0..N-1``."""

    def __init__(self, node_type: str, ids: pa.Array, kind: str, src: Source):
        self.node_type = node_type
        self.src = src
        self.kind = kind  # "int" | "str"
        self.n = len(ids)
        self.ids = ids.cast(pa.int64()) if kind == "int" else ids.cast(pa.large_string())
        self.dense = False
        if kind == "int":
            a = self.ids.to_numpy()
            self.dense = bool(self.n == 0 or (a[0] == 0 and a[-1] == self.n - 1
                                              and np.all(np.diff(a) == 1)))
        self._as_str = None

    def lookup(self, keys: pa.Array, kind: str) -> np.ndarray:
        """Dense indices of ``keys`` (int64), ``-1`` where an id is not a node."""
        if kind == "float":
            keys, kind = keys.cast(pa.int64()), "int"
        if kind == "int" and self.kind == "int":
            k = keys.cast(pa.int64())
            if self.dense:
                out = k.to_numpy().astype(np.int64, copy=True)
                out[(out < 0) | (out >= self.n)] = -1
                return out
            value_set = self.ids
        elif self.kind == "str":
            k = keys.cast(pa.large_string())
            value_set = self.ids
        else:  # int node ids, string keys: compare the decimal spelling
            k = keys.cast(pa.large_string())
            if self._as_str is None:
                self._as_str = self.ids.cast(pa.large_string())
            value_set = self._as_str
        idx = pc.index_in(k, value_set=value_set)
        return pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _node_ids(t: str, table: pa.Table, src: Source) -> tuple[_IdIndex, Any]:
    col = _combine(table.column("id"))
    _check_nulls(col, src, "id", "node id")
    kind = _key_kind(col, src, "id", "node ids")
    if kind == "float":
        col, kind = col.cast(pa.int64()), "int"
    n = len(col)
    if pc.count_distinct(col).as_py() != n:
        codes = (col.cast(pa.int64()).to_numpy() if kind == "int"
                 else pc.dictionary_encode(col).indices.to_numpy())
        order = np.argsort(codes, kind="stable")
        sc = codes[order]
        dup = np.flatnonzero(sc[1:] == sc[:-1])
        second = order[dup + 1]
        r2 = int(second.min())
        r1 = int(np.flatnonzero(codes == codes[r2])[0])
        raise src.error(f"duplicate node id {_fmt(col[r2].as_py())} (first seen in row {r1})", r2, "id")
    index = _IdIndex(t, col, kind, src)
    raw = index.ids.to_numpy() if kind == "int" else index.ids.to_pylist()
    return index, raw


def _parse_split(col, src: Source, column: str = "split") -> np.ndarray:
    """Split column -> int8 codes (0 train, 1 val, 2 test, -1 none)."""
    col = _combine(col)
    if not _is_str(col.type):
        if col.null_count == len(col):
            return np.full(len(col), -1, dtype=np.int8)
        raise src.error(f"split must be one of {list(SPLITS)}, got column type {col.type}", None, column)
    col = pc.utf8_lower(pc.utf8_trim_whitespace(col))
    idx = pc.index_in(col, value_set=pa.array(_SPLIT_NAMES))
    unknown = (idx.is_null().to_numpy(zero_copy_only=False)
               & col.is_valid().to_numpy(zero_copy_only=False))
    if unknown.any():
        r = _first(unknown)
        raise src.error(f"unknown split {_fmt(col[r].as_py())}: use 'train', 'val', 'test' "
                        "or leave it empty", r, column)
    codes = pc.fill_null(idx, 5).to_numpy(zero_copy_only=False)
    return _SPLIT_CODES[codes]


def _parse_labels(col, src: Source, multilabel: bool, names: list[str] | None = None,
                  num_classes: int | None = None, column: str = "label"):
    """Label column -> (labels tensor, class names, multilabel, labelled bool[N]).

    Single-label: int64 ``[N]`` with ``-1`` for missing. Multi-label (a list column, or
    ``|``-separated strings when ``multilabel``): float32 multi-hot ``[N, C]``.
    """
    col = _combine(col)
    n = len(col)
    t = col.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        multilabel = True
        lists = col
        labelled = col.is_valid().to_numpy(zero_copy_only=False)
    elif multilabel and _is_str(t):
        s = pc.utf8_trim_whitespace(col)
        labelled = (s.is_valid().to_numpy(zero_copy_only=False)
                    & (pc.fill_null(pc.utf8_length(s), 0).to_numpy(zero_copy_only=False) > 0))
        lists = pc.split_pattern(s, "|")
    elif multilabel and (pa.types.is_integer(t) or pa.types.is_floating(t)):
        labelled = col.is_valid().to_numpy(zero_copy_only=False)
        vals = pc.drop_null(col)
        if pa.types.is_floating(t):
            vals = pa.array(_integral_codes(vals.to_numpy(zero_copy_only=False), src, column,
                                            rows=np.flatnonzero(labelled)))
        offsets = np.concatenate([[0], np.cumsum(labelled.astype(np.int32))]).astype(np.int32)
        lists = pa.ListArray.from_arrays(pa.array(offsets), vals.cast(pa.int64()))
    else:
        y, names = _parse_single(col, src, names, num_classes, column)
        return y, names, False, (y >= 0).numpy()
    # multi-label
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(lists)
    if _is_str(flat.type):
        flat = pc.utf8_trim_whitespace(flat)
        keep = pc.fill_null(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False) > 0
        flat = flat.filter(pa.array(keep))
        parents = parents[keep]
        codes, names = _codes_from_strings(flat, names, src, column, rows=parents)
    elif pa.types.is_integer(flat.type) or pa.types.is_floating(flat.type):
        if flat.null_count:
            i = _first(flat.is_null().to_numpy(zero_copy_only=False))
            raise src.error("label is missing (null) inside a label list", int(parents[i]), column)
        codes = (flat.cast(pa.int64()).to_numpy() if pa.types.is_integer(flat.type)
                 else _integral_codes(flat.to_numpy(zero_copy_only=False), src, column, rows=parents))
        codes, names = _codes_from_ints(codes, names, num_classes, src, column, rows=parents, num_rows=n)
    else:
        raise src.error(f"labels must be integers or strings, got column type {t}", None, column)
    y = np.zeros((n, len(names)), dtype=np.float32)
    y[parents, codes] = 1.0
    return torch.from_numpy(y), names, True, labelled


def _class_limit(rows: int) -> int:
    return max(MAX_CLASSES_FLOOR, int(rows))


def _codes_from_ints(codes: np.ndarray, names, num_classes, src: Source, column: str, rows=None,
                     num_rows: int = 0):
    if codes.size and codes.min() < 0:
        i = _first(codes < 0)
        r = int(rows[i]) if rows is not None else i
        raise src.error(f"label {int(codes[i])} is negative (use -1 or leave empty for unlabelled)", r, column)
    c = int(codes.max()) + 1 if codes.size else 0
    if names is not None:
        if c > len(names):
            i = _first(codes >= len(names))
            r = int(rows[i]) if rows is not None else i
            raise src.error(f"label {int(codes[i])} out of range for {len(names)} classes", r, column)
        return codes, list(names)
    limit = _class_limit(num_rows)
    if c > limit:
        i = _first(codes >= limit)
        r = int(rows[i]) if rows is not None else i
        raise src.error(f"label {int(codes[i])} is too large: integer classes are 0..C-1 with C at most "
                        f"{limit:,} (the larger of {MAX_CLASSES_FLOOR:,} and the table's rows); give "
                        "classes as strings for arbitrary codes", r, column)
    if num_classes is not None and int(num_classes) > limit:
        raise src.error(f"num_classes {int(num_classes):,} of the task is too large for this table (at most "
                        f"{limit:,}: the larger of {MAX_CLASSES_FLOOR:,} and the table's rows)", None, column)
    c = max(c, int(num_classes or 0))
    return codes, [str(i) for i in range(c)]


def _integral_codes(f: np.ndarray, src: Source, column: str, rows=None) -> np.ndarray:
    """float64 labels -> int64, refusing NaN, infinities, fractions and values beyond int64."""
    bad = ~np.isfinite(f) | (f != np.round(f))
    if bad.any():
        i = _first(bad)
        r = int(rows[i]) if rows is not None else i
        raise src.error(f"labels must be integers or strings, got {float(f[i])!r}", r, column)
    big = np.abs(f) >= 2.0**62
    if big.any():
        i = _first(big)
        r = int(rows[i]) if rows is not None else i
        what = "negative" if f[i] < 0 else "too large"
        raise src.error(f"label {float(f[i]):g} is {what}", r, column)
    return f.astype(np.int64)


def _codes_from_strings(col: pa.Array, names, src: Source, column: str, rows=None):
    if names is None:
        names = sorted(pc.unique(col.drop_null()).to_pylist())
    idx = pc.index_in(col, value_set=pa.array(names, type=col.type))
    unknown = idx.is_null().to_numpy(zero_copy_only=False) & col.is_valid().to_numpy(zero_copy_only=False)
    if unknown.any():
        i = _first(unknown)
        r = int(rows[i]) if rows is not None else i
        raise src.error(f"unknown class {_fmt(col[i].as_py())} (classes: {names[:20]})", r, column)
    return pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int64), list(names)


def _parse_single(col: pa.Array, src: Source, names, num_classes, column: str):
    t = col.type
    n = len(col)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        if pa.types.is_integer(t):
            codes = pc.fill_null(col.cast(pa.int64()), -1).to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            codes = _integral_codes(pc.fill_null(col.cast(pa.float64()), -1.0).to_numpy(zero_copy_only=False),
                                    src, column)
        labelled = codes != -1
        if (codes < -1).any():
            r = _first(codes < -1)
            raise src.error(f"label {int(codes[r])} is negative (use -1 or leave empty for unlabelled)",
                            r, column)
        sub, names = _codes_from_ints(codes[labelled], names, num_classes, src, column,
                                      rows=np.flatnonzero(labelled), num_rows=n)
        out = np.full(n, -1, dtype=np.int64)
        out[labelled] = sub
        return torch.from_numpy(out), names
    if _is_str(t):
        s = pc.utf8_trim_whitespace(col)
        s = pc.if_else(pc.equal(s, ""), pa.scalar(None, type=s.type), s)
        codes, names = _codes_from_strings(s, names, src, column)
        return torch.from_numpy(codes), names
    if pa.types.is_null(t):
        return torch.full((n,), -1, dtype=torch.long), list(names or [])
    raise src.error(f"labels must be integers or strings, got column type {t}", None, column)


def _draw_split(candidates: np.ndarray, n: int, ratios, rng: np.random.Generator) -> np.ndarray:
    """Seeded split of ``candidates`` -> int8 codes over ``n`` items (-1 = none)."""
    codes = np.full(n, -1, dtype=np.int8)
    m = len(candidates)
    perm = candidates[rng.permutation(m)]
    r = np.asarray(ratios, dtype=np.float64)
    r = r / r.sum()
    n_val = int(round(m * r[1]))
    n_test = int(round(m * r[2]))
    if m >= 3:  # every split non-empty when there is anything to split
        n_val = max(n_val, 1) if r[1] > 0 else 0
        n_test = max(n_test, 1) if r[2] > 0 else 0
    n_train = max(m - n_val - n_test, 0)
    codes[perm[:n_train]] = 0
    codes[perm[n_train:n_train + n_val]] = 1
    codes[perm[n_train + n_val:n_train + n_val + n_test]] = 2
    return codes


def _masks(codes: np.ndarray) -> dict[str, torch.Tensor]:
    return {s: torch.from_numpy(codes == i) for i, s in enumerate(SPLITS)}


# ---------------------------------------------------------------------------- metadata
def _as_source(x, default: str) -> Source:
    if x is None:
        return Source(default)
    if isinstance(x, Source):
        return x
    return Source(str(x))


def _parse_edge_type(x, where: str, msrc: Source) -> EdgeType:
    if (not isinstance(x, (list, tuple)) or len(x) != 3
            or not all(isinstance(v, str) and v for v in x)):
        raise msrc.error(f"{where} must be [src_type, relation, dst_type], got {x!r}")
    for v, kind in zip(x, ("node type", "relation", "node type")):
        why = name_problem(v, kind)
        if why:
            raise msrc.error(f"{where}: {why}")
    return tuple(x)  # type: ignore[return-value]


def parse_metadata(metadata: dict, node_tables, edge_tables, msrc: Source) -> dict:
    """Validate ``metadata`` against the tables; returns the normalized fields."""
    if not isinstance(metadata, dict):
        raise msrc.error(f"metadata must be a JSON object, got {type(metadata).__name__}")
    node_types = metadata.get("node_types")
    if node_types is None:
        node_types = list(node_tables)
    if not isinstance(node_types, list) or not all(isinstance(t, str) and t for t in node_types):
        raise msrc.error(f"node_types must be a list of names, got {node_types!r}")
    if len(set(node_types)) != len(node_types):
        dup = next(t for t in node_types if node_types.count(t) > 1)
        raise msrc.error(f"node_types: node type {dup!r} is listed twice")
    if not node_types:
        raise msrc.error("node_types is empty: a graph needs at least one node type")
    for t in node_types:
        why = name_problem(t, "node type")
        if why:
            raise msrc.error(f"node_types: {why}")
    raw_ets = metadata.get("edge_types")
    if raw_ets is None:
        raw_ets = [list(et) for et in edge_tables]
    if not isinstance(raw_ets, list):
        raise msrc.error(f"edge_types must be a list of [src_type, relation, dst_type], got {raw_ets!r}")
    edge_types: list[EdgeType] = []
    for i, x in enumerate(raw_ets):
        et = _parse_edge_type(x, f"edge_types[{i}]", msrc)
        for t in (et[0], et[2]):
            if t not in node_types:
                raise msrc.error(f"edge_types[{i}]: relation {et} names unknown node type {t!r} "
                                 f"(node types: {node_types})")
        if et in edge_types:
            raise msrc.error(f"edge_types[{i}]: relation {et} is listed twice")
        edge_types.append(et)
    add_rev = metadata.get("add_reverse_edges", True)
    if not isinstance(add_rev, bool):
        raise msrc.error(f"add_reverse_edges must be true or false, got {add_rev!r}")

    tasks: list[Task] = []
    raw_tasks = metadata.get("tasks", []) or []
    if not isinstance(raw_tasks, list):
        raise msrc.error(f"tasks must be a list, got {raw_tasks!r}")
    for i, d in enumerate(raw_tasks):
        where = f"tasks[{i}]"
        if not isinstance(d, dict):
            raise msrc.error(f"{where} must be an object, got {d!r}")
        ttype = d.get("type")
        if ttype not in TASK_TYPES:
            raise msrc.error(f"{where}: unknown task type {ttype!r} (use one of {list(TASK_TYPES)})")
        nt = et = None
        if ttype == "node_classification":
            nt = d.get("node_type")
            if nt not in node_types:
                raise msrc.error(f"{where}: task names unknown node type {nt!r} (node types: {node_types})")
        else:
            raw = d.get("edge_type")
            if isinstance(raw, str):
                hits = [e for e in edge_types if e[1] == raw]
                if len(hits) != 1:
                    raise msrc.error(f"{where}: task names relation {raw!r}, which matches {len(hits)} "
                                     f"relations (relations: {edge_types})")
                et = hits[0]
            else:
                et = _parse_edge_type(raw, f"{where}.edge_type", msrc)
                if et not in edge_types:
                    raise msrc.error(f"{where}: task names unknown relation {et} (relations: {edge_types})")
        name = d.get("name") or (nt if nt is not None else et[1])
        why = name_problem(name, "task name")
        if why:
            raise msrc.error(f"{where}: {why}")
        if any(t.name == name for t in tasks):
            raise msrc.error(f"{where}: task name {name!r} is used twice")
        multilabel = d.get("multilabel", False)
        if not isinstance(multilabel, bool):
            raise msrc.error(f"{where}: multilabel must be true or false (a JSON boolean), got {multilabel!r}")
        num_classes = d.get("num_classes")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise msrc.error(f"{where}: num_classes must be an integer >= 1, got {num_classes!r}")
        tasks.append(Task(name=name, type=ttype, node_type=nt, edge_type=et, multilabel=multilabel,
                          num_classes=num_classes))

    text_columns = metadata.get("text_columns", {}) or {}
    if not isinstance(text_columns, dict):
        raise msrc.error(f"text_columns must map node types to a column or a list of columns, "
                         f"got {text_columns!r}")
    for t, cols in text_columns.items():
        if t not in node_types:
            raise msrc.error(f"text_columns names unknown node type {t!r} (node types: {node_types})")
        if not (isinstance(cols, str) or (isinstance(cols, list) and cols
                                          and all(isinstance(c, str) for c in cols))):
            raise msrc.error(f"text_columns[{t!r}] must be a column name or a list of them, got {cols!r}")
    label_names = _parse_label_names(metadata.get("label_names", {}), node_types, edge_types, msrc)
    name = metadata.get("name", "graph")
    if not isinstance(name, str):
        raise msrc.error(f"name must be a string, got {name!r}")
    sep = metadata.get("text_separator", " ")
    if not isinstance(sep, str):
        raise msrc.error(f"text_separator must be a string, got {sep!r}")
    return dict(name=name, node_types=node_types, edge_types=edge_types,
                add_reverse_edges=add_rev, tasks=tasks, text_columns=text_columns,
                text_separator=sep, label_names=label_names)


def _parse_label_names(raw, node_types, edge_types, msrc: Source) -> dict[str, list[str]]:
    """``label_names``: node type or ``src__rel__dst`` -> distinct class names (strings)."""
    if raw is None:
        return {}
    keys = list(node_types) + [edge_type_str(et) for et in edge_types]
    if not isinstance(raw, dict):
        raise msrc.error(f"label_names must map node types or relations (src__rel__dst) to lists of "
                         f"class names, got {type(raw).__name__} {_short(raw)}")
    out = {}
    for k, names in raw.items():
        if k not in keys:
            raise msrc.error(f"label_names names unknown node type or relation {k!r} (known: {keys})")
        if not isinstance(names, list) or not all(isinstance(c, (str, int)) and not isinstance(c, bool)
                                                   for c in names):
            raise msrc.error(f"label_names[{k!r}] must be a list of class names, got {_short(names)}")
        names = [str(c) for c in names]
        seen = set()
        for c in names:
            if c in seen:
                raise msrc.error(f"label_names[{k!r}]: class {c!r} is listed twice")
            seen.add(c)
        out[k] = names
    return out


def _short(v, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------------------- builder
@contextmanager
def _arrow_errors(src: Source, column: str | None = None):
    """Turn an error pyarrow (or decoding its strings) raises on malformed values (invalid
    UTF-8, an overflowing cast, ...) into a :class:`GraphFormatError` naming the table."""
    try:
        yield
    except pa.ArrowException as exc:
        text = " ".join(str(exc).split())
        raise src.error(f"cannot process the values: {text}", None, column) from exc
    except UnicodeDecodeError as exc:
        raise src.error(f"invalid UTF-8 in the values ({exc.reason} at byte {exc.start} of a value)",
                        None, column) from exc


def _check_build_options(dedup_edges, self_loops, seed, split_ratios, index_dtype, add_reverse_edges) -> None:
    for opt, val in (("dedup_edges", dedup_edges), ("self_loops", self_loops)):
        if val not in POLICIES:
            raise OptionError(f"build_graph: {opt} must be 'keep' or 'remove', got {val!r}")
    if index_dtype not in ("auto", "int64", "int32"):
        raise OptionError(f"build_graph: index_dtype must be 'auto', 'int32' or 'int64', "
                          f"got {index_dtype!r}")
    if (not isinstance(split_ratios, (list, tuple)) or len(split_ratios) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)
                       for x in split_ratios)
            or min(split_ratios) < 0 or sum(split_ratios) <= 0):
        raise OptionError(f"build_graph: split_ratios must be 3 non-negative numbers, "
                          f"got {split_ratios!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise OptionError(f"build_graph: seed must be an integer >= 0, got {seed!r}")
    if add_reverse_edges is not None and not isinstance(add_reverse_edges, bool):
        raise OptionError(f"build_graph: add_reverse_edges must be true or false, "
                          f"got {add_reverse_edges!r}")


def build_graph(metadata: dict, nodes: dict, edges: dict, *, add_reverse_edges: bool | None = None,
                dedup_edges: str = "keep", self_loops: str = "keep", seed: int = 0,
                split_ratios=(0.8, 0.1, 0.1), index_dtype: str = "auto",
                sources: dict | None = None) -> HeteroGraph:
    """Build a graph from tables in the directory format.

    Args:
        metadata: the ``metadata.json`` content (``node_types``, ``edge_types``,
            ``add_reverse_edges``, ``tasks``, optional ``text_columns``,
            ``text_separator``, ``label_names``, ``name``).
        nodes: node type -> ``pyarrow.Table`` with ``id`` and optional ``text``,
            ``label``, ``split`` columns.
        edges: ``(src, rel, dst)`` -> ``pyarrow.Table`` with ``src``, ``dst`` and
            optional ``label``, ``split``.
        add_reverse_edges: overrides the metadata (default: the metadata's, else True).
        dedup_edges, self_loops: ``"keep"`` | ``"remove"``.
        seed: for drawn splits.
        split_ratios: train/val/test ratios of drawn splits.
        index_dtype: ``"auto"`` (int32 indices where ids fit) or ``"int64"``.
        sources: table -> file name, for messages.

    Three steps: the node tables (ids, text, labels, splits), the edge tables (endpoints,
    duplicates and self-loops, labels, splits, held-out link-prediction edges), then the
    message-passing CSC of every relation and its reverse.

    Raises:
        GraphFormatError: the tables break the format (the message names the file,
            row and column).
        OptionError: an option is unknown or has a bad value.
    """
    _check_build_options(dedup_edges, self_loops, seed, split_ratios, index_dtype, add_reverse_edges)
    sources = sources or {}
    msrc = _as_source(sources.get("metadata"), "metadata")
    edges = {tuple(k): v for k, v in edges.items()}
    md = parse_metadata(metadata, nodes, edges, msrc)
    node_types, edge_types, tasks = md["node_types"], md["edge_types"], md["tasks"]
    add_rev = md["add_reverse_edges"] if add_reverse_edges is None else bool(add_reverse_edges)
    if add_rev:
        for et in edge_types:
            rev = (et[2], REVERSE_PREFIX + et[1], et[0])
            if rev in edge_types:
                raise msrc.error(f"relation {rev} exists already, so reverse edges cannot be added for "
                                 f"{et}; set add_reverse_edges to false")
    report: dict[str, Any] = {
        "policies": {"dedup_edges": dedup_edges, "self_loops": self_loops, "add_reverse_edges": add_rev,
                     "index_dtype": index_dtype, "seed": seed, "split_ratios": list(split_ratios)},
        "nodes": {}, "edges": {}, "drawn_splits": [],
        "ignored_tables": sorted([f"nodes/{t}" for t in nodes if t not in node_types]
                                 + [f"edges/{edge_type_str(et)}" for et in edges if et not in edge_types]),
    }
    g = HeteroGraph(node_types=list(node_types), edge_types=[], num_nodes={}, csc={}, tasks=tasks,
                    report=report, name=md["name"])
    nc_tasks = {t.node_type: t for t in tasks if t.type == "node_classification"}
    index: dict[str, _IdIndex] = {}
    nsrc: dict[str, Source] = {}
    for ti, t in enumerate(node_types):
        src = nsrc[t] = _as_source(sources.get(t), f"nodes/{t}")
        with _arrow_errors(src):
            index[t] = _add_nodes(g, t, nodes.get(t), src, md, nc_tasks.get(t),
                                  np.random.default_rng([seed, 0, ti]), split_ratios)
    edge_tasks: dict[EdgeType, list[Task]] = {}
    for t in tasks:
        if t.edge_type is not None:
            edge_tasks.setdefault(t.edge_type, []).append(t)
    fwd = {}
    for r, et in enumerate(edge_types):
        src = _as_source(sources.get(et), f"edges/{edge_type_str(et)}")
        with _arrow_errors(src):
            fwd[et] = _add_edges(g, et, edges.get(et), src, md, index, nsrc, edge_tasks.get(et, []),
                                 dedup_edges, self_loops, np.random.default_rng([seed, 1, r]), split_ratios)
    use32 = index_dtype == "int32" or (index_dtype == "auto" and max(g.num_nodes.values()) <= INT32_MAX)
    _add_csc(g, edge_types, fwd, add_rev, np.int32 if use32 else np.int64)
    return g


def _node_text(table: pa.Table, cols: list[str], t: str, src: Source, md: dict):
    """The text of a node type (``list[str]``) and the count of empty texts, or ``(None, 0)``."""
    tcols = md["text_columns"].get(t, "text")
    tcols = [tcols] if isinstance(tcols, str) else list(tcols)
    if t in md["text_columns"]:
        for c in tcols:
            if c not in cols:
                raise src.error(f"missing text column {c!r} named in text_columns (columns: {cols})", None, c)
    if not all(c in cols for c in tcols):
        return None, 0
    parts = []
    for c in tcols:
        col = _combine(table.column(c))
        if not _is_str(col.type):
            if pa.types.is_null(col.type) or pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
                col = col.cast(pa.large_string())
            else:
                raise src.error(f"text must be strings, got column type {col.type}", None, c)
        with _arrow_errors(src, c):
            parts.append(pc.fill_null(col.cast(pa.large_string()), ""))
    with _arrow_errors(src, tcols[0] if len(tcols) == 1 else None):
        if len(parts) == 1:
            text = parts[0]
        else:
            # join the non-empty parts only (element-wise, without null-skipping joins)
            sep = pa.scalar(str(md["text_separator"]), pa.large_string())
            text = parts[0]
            for p in parts[1:]:
                t_empty = pc.equal(pc.utf8_trim_whitespace(text), "")
                p_empty = pc.equal(pc.utf8_trim_whitespace(p), "")
                both = pc.binary_join_element_wise(text, p, sep)
                text = pc.if_else(p_empty, text, pc.if_else(t_empty, p, both))
        n = len(text)
        empty = int(n - (pc.sum(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0)).as_py() or 0)) if n else 0
    return text.to_pylist(), empty


def _add_nodes(g: HeteroGraph, t: str, table, src: Source, md: dict, task: Task | None,
               rng: np.random.Generator, split_ratios) -> _IdIndex:
    """Step 1, one node type: ids, text, labels and splits into ``g``; returns the id index."""
    if table is None:
        raise src.error(f"no node table for node type {t!r}")
    cols = _check_columns(table, src)
    if "id" not in cols:
        raise src.error(f"missing column 'id' (columns: {cols})")
    if table.num_rows == 0:
        raise src.error(f"the node table of {t!r} is empty")
    idx, raw = _node_ids(t, table, src)
    n = idx.n
    g.num_nodes[t] = n
    g.raw_ids[t] = raw
    g.text[t], empty = _node_text(table, cols, t, src, md)
    g.report["nodes"][t] = {"rows": n, "empty_text": empty}
    labelled = None
    if "label" in cols:
        with _arrow_errors(src, "label"):
            y, names, multi, labelled = _parse_labels(
                table.column("label"), src, multilabel=bool(task and task.multilabel),
                names=md["label_names"].get(t), num_classes=task.num_classes if task else None)
        g.labels[t], g.label_names[t] = y, names
        if task is not None:
            task.multilabel = multi
            task.num_classes = len(names)
    else:
        g.labels[t], g.label_names[t] = None, None
        if task is not None:
            raise src.error(f"missing column 'label', needed by node classification task "
                            f"{task.name!r} (columns: {cols})", None, "label")
    if "split" in cols:
        with _arrow_errors(src, "split"):
            codes = _parse_split(table.column("split"), src)
        if task is not None:
            missing = (codes >= 0) & ~labelled
            if missing.any():
                r = _first(missing)
                raise src.error(f"node {_fmt(raw[r] if not isinstance(raw, np.ndarray) else int(raw[r]))} "
                                f"is in split {SPLITS[codes[r]]!r} but has no label "
                                f"(task {task.name!r})", r, "label")
        g.masks[t] = _masks(codes)
    elif task is not None:
        g.masks[t] = _masks(_draw_split(np.flatnonzero(labelled), n, split_ratios, rng))
        g.report["drawn_splits"].append(f"nodes/{t}")
    return idx


def _endpoints(table: pa.Table, et: EdgeType, src: Source, index: dict, nsrc: dict) -> list[np.ndarray]:
    """Dense node indices of the ``src`` and ``dst`` columns."""
    ends = []
    for c, t in (("src", et[0]), ("dst", et[2])):
        col = _combine(table.column(c))
        _check_nulls(col, src, c, f"{c} id")
        kind = _key_kind(col, src, c, "edge endpoint ids")
        with _arrow_errors(src, c):
            ix = index[t].lookup(col, kind)
        bad = ix < 0
        if bad.any():
            row = _first(bad)
            raise src.error(f"id {_fmt(col[row].as_py())} is not in the node table of {t!r} "
                            f"({nsrc[t].name})", row, c)
        ends.append(ix)
    return ends


def _kept_edges(s_ix: np.ndarray, d_ix: np.ndarray, num_dst: int, same_type: bool, dedup_edges: str,
                self_loops: str) -> tuple[np.ndarray, int, int]:
    """Which rows stay under the duplicate and self-loop policies: ``(keep, duplicates, loops)``."""
    rows = len(s_ix)
    keep = np.ones(rows, dtype=bool)
    loops = (s_ix == d_ix) if same_type else np.zeros(rows, dtype=bool)
    n_loops = int(loops.sum())
    if self_loops == "remove":
        keep &= ~loops
    # duplicates among the edges kept so far: all but the first occurrence of a pair
    pair = s_ix * num_dst + d_ix
    if not keep.all():
        pair = pair[keep]
    order = np.argsort(pair, kind="stable")
    sp = pair[order]
    first_sorted = np.ones(len(sp), dtype=bool)
    first_sorted[1:] = sp[1:] != sp[:-1]
    first = np.empty_like(first_sorted)
    first[order] = first_sorted
    n_dup = int(len(first) - first.sum())
    if dedup_edges == "remove" and n_dup:
        kidx = np.flatnonzero(keep)
        keep[kidx[~first]] = False
    return keep, n_dup, n_loops


def _add_edges(g: HeteroGraph, et: EdgeType, table, src: Source, md: dict, index: dict, nsrc: dict,
               etasks: list[Task], dedup_edges: str, self_loops: str, rng: np.random.Generator,
               split_ratios) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Step 2, one relation: endpoints, labels, splits and held-out link-prediction edges
    into ``g``; returns ``(src, dst, held)`` for the CSC step (``held``: bool over eids or
    None)."""
    key = edge_type_str(et)
    if table is None:
        raise src.error(f"no edge table for relation {et}")
    cols = _check_columns(table, src)
    for c in ("src", "dst"):
        if c not in cols:
            raise src.error(f"missing column {c!r} (columns: {cols})")
    if table.num_rows == 0:
        raise src.error(f"the edge table of relation {et} is empty")
    s_ix, d_ix = _endpoints(table, et, src, index, nsrc)
    rows = len(s_ix)
    keep, n_dup, n_loops = _kept_edges(s_ix, d_ix, g.num_nodes[et[2]], et[0] == et[2], dedup_edges, self_loops)
    all_kept = bool(keep.all())
    if not all_kept:
        s_ix, d_ix = s_ix[keep], d_ix[keep]
    e = len(s_ix)
    g.report["edges"][key] = {"rows": rows, "duplicates": n_dup, "self_loops": n_loops,
                              "removed": rows - e, "edges": e}
    g.num_eids[et] = e
    ec = next((t for t in etasks if t.type == "edge_classification"), None)
    labelled = None
    if "label" in cols:
        col = table.column("label")
        if not all_kept:
            col = _combine(col).filter(pa.array(keep))
        with _arrow_errors(src, "label"):
            y, names, multi, labelled = _parse_labels(
                col, src, multilabel=bool(ec and ec.multilabel), names=md["label_names"].get(key),
                num_classes=ec.num_classes if ec else None)
        g.edge_labels[et], g.edge_label_names[et] = y, names
        for t in etasks:
            if t.type == "edge_classification":
                t.multilabel, t.num_classes = multi, len(names)
    else:
        g.edge_labels[et], g.edge_label_names[et] = None, None
        if ec is not None:
            raise src.error(f"missing column 'label', needed by edge classification task "
                            f"{ec.name!r} (columns: {cols})", None, "label")
    codes = None
    if "split" in cols:
        col = table.column("split")
        if not all_kept:
            col = _combine(col).filter(pa.array(keep))
        with _arrow_errors(src, "split"):
            codes = _parse_split(col, src)
        if ec is not None:
            missing = (codes >= 0) & ~labelled
            if missing.any():
                rr = _first(missing)
                row = int(np.flatnonzero(keep)[rr])
                raise src.error(f"edge is in split {SPLITS[codes[rr]]!r} but has no label "
                                f"(task {ec.name!r})", row, "label")
    elif etasks:
        cand = np.flatnonzero(labelled) if ec is not None else np.arange(e)
        codes = _draw_split(cand, e, split_ratios, rng)
        g.report["drawn_splits"].append(f"edges/{key}")
    if codes is not None:
        g.edge_masks[et] = _masks(codes)
    held = None
    if codes is not None and any(t.type == "link_prediction" for t in etasks):
        held = codes >= 1
        for t in etasks:
            if t.type == "link_prediction":
                g.lp_edges[t.name] = {
                    sp_name: (torch.from_numpy(s_ix[codes == i]), torch.from_numpy(d_ix[codes == i]))
                    for i, sp_name in enumerate(SPLITS)}
    return s_ix, d_ix, held


def _add_csc(g: HeteroGraph, edge_types: list[EdgeType], fwd: dict, add_rev: bool, np_idtype) -> None:
    """Step 3: the message-passing graph, a CSC per relation (forward ones, then reverses);
    held-out link-prediction edges are left out."""

    def _csc(a: torch.Tensor, b: torch.Tensor, num_dst: int, eids: torch.Tensor | None) -> CSC:
        indptr, indices, perm = coo_to_csc(a, b, num_dst)
        return CSC(indptr, indices, perm if eids is None else eids[perm])

    mp: dict[EdgeType, tuple] = {}
    for et in edge_types:
        a, b, held = fwd[et]
        eids = None
        if held is not None and held.any():
            keep_ids = np.flatnonzero(~held)
            a, b = a[keep_ids], b[keep_ids]
            eids = torch.from_numpy(keep_ids)
        a = torch.from_numpy(a.astype(np_idtype, copy=False))
        b = torch.from_numpy(b.astype(np_idtype, copy=False))
        mp[et] = (a, b, eids)
        g.edge_types.append(et)
        g.csc[et] = _csc(a, b, g.num_nodes[et[2]], eids)
    if add_rev:
        for et in edge_types:
            a, b, eids = mp[et]
            rev = (et[2], REVERSE_PREFIX + et[1], et[0])
            g.edge_types.append(rev)
            g.csc[rev] = _csc(b, a, g.num_nodes[et[0]], eids)
            g.num_eids[rev] = g.num_eids[et]
            g.reverse_of[et] = rev
            g.reverse_of[rev] = et


__all__ = ["build_graph", "parse_metadata", "GraphFormatError"]
