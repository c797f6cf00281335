"""Read a GraphStorm graph-construction (``gconstruct``) JSON config into a HeteroGraph.

The supported subset is documented in ``docs/data_format.md`` ("GraphStorm
graph-construction configs"): node and edge files in CSV, Parquet or JSON-lines (globs
and lists, relative to the config), ``node_id_col``, ``source_id_col`` / ``dest_id_col``,
``relation``, text features (a ``tokenize_hf`` or ``bert_hf`` transform) as the node text,
one ``labels`` entry per node or edge type with ``task_type`` ``classification`` or
``link_prediction``, ``label_col``, a multi-label ``separator``, ``split_pct`` and
``custom_split_filenames``. Other feature transforms are ignored with a warning (the model
reads text, not feature vectors); everything else unsupported (HDF5 input, regression,
several label entries per type, a node type split over several entries, ...) raises a
:class:`~lmgnn_fast.io.errors.GraphFormatError` naming the config key and file.

Errors found while building the graph are reported against the user's files and column
names: ``paper_nodes.csv, row 3 (line 5), column 'paper_id': duplicate node id 'p1'``.
"""
from __future__ import annotations

import glob as globmod
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmgnn_fast.graph import NAME_MAX_LENGTH, EdgeType, HeteroGraph, edge_type_str, name_problem
from lmgnn_fast.io.errors import GraphFormatError, Source
from lmgnn_fast.io.paths import is_inside
from lmgnn_fast.io.tables import build_graph

TEXT_TRANSFORMS = ("tokenize_hf", "bert_hf")
FORMATS = ("csv", "parquet", "json")
DEFAULT_SPLIT_PCT = (0.8, 0.1, 0.1)
_EXT_FORMAT = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json", ".jsonl": "json"}
_INT_RE = r"^-?(0|[1-9][0-9]{0,17})$"
_SPLIT_KEYS = (("train", "train"), ("valid", "val"), ("test", "test"))
_NODE_KEYS = {"node_type", "files", "format", "node_id_col", "features", "labels"}
_EDGE_KEYS = {"relation", "files", "format", "source_id_col", "dest_id_col", "features", "labels"}
_LABEL_KEYS = {"task_type", "label_col", "split_pct", "custom_split_filenames", "separator",
               "mask_field_names", "label_stats_type"}
_SEP = "\x1f"  # joins (src, dst) ids into one key when matching edge split files


@dataclass
class _Files:
    """The files of one table, to map a row of the concatenated table back to its file."""

    names: list[str]  # as shown in messages (relative to the config's folder when inside it)
    rows: list[int]  # rows per file
    fmt: str
    columns: dict[str, str] = field(default_factory=dict)  # our column -> the user's column

    def locate(self, row: int | None) -> tuple[str, int | None, int | None]:
        """file, row within the file and line for a row of the concatenated table."""
        if row is None:
            return self.names[0] if len(self.names) == 1 else ", ".join(self.names), None, None
        start = 0
        for name, n in zip(self.names, self.rows):
            if row < start + n:
                local = row - start
                line = local + 2 if self.fmt == "csv" else local + 1 if self.fmt == "json" else None
                return name, local, line
            start += n
        return self.names[-1], row, None


class _Config:
    """The parsed JSON with helpers that name the config and key in errors."""

    def __init__(self, path: Path):
        self.path = path
        self.base = path.parent
        self.name = str(path)
        self.outside: set[Path] = set()  # files named by an absolute path outside the config's folder
        if not path.is_file():
            raise GraphFormatError("config file not found", file=self.name)
        try:
            with open(path, encoding="utf-8") as f:
                self.data = json.load(f)
        except json.JSONDecodeError as exc:
            raise GraphFormatError(f"invalid JSON at line {exc.lineno}: {exc.msg}", file=self.name) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise GraphFormatError(f"cannot read file: {exc}", file=self.name) from exc

    def error(self, key: str, message: str) -> GraphFormatError:
        return GraphFormatError(f"{key}: {message}", file=self.name)

    def rel(self, p: Path) -> str:
        try:
            return str(p.relative_to(self.base))
        except ValueError:
            return str(p)

    def files(self, entry: dict, key: str) -> list[Path]:
        spec = entry.get("files")
        if spec is None:
            raise self.error(key, "missing 'files'")
        specs = [spec] if isinstance(spec, str) else spec
        if not isinstance(specs, list) or not specs or not all(isinstance(s, str) and s for s in specs):
            raise self.error(f"{key}.files", f"must be a path, a glob or a list of them, got {spec!r}")
        return self._expand(specs, f"{key}.files")

    def _expand(self, specs: list[str], key: str) -> list[Path]:
        """The files named by ``specs`` (paths, globs, folders). A relative spec stays inside
        the config's folder: a match that resolves outside it (``..``, a symbolic link leading
        out) is refused before it is read, without naming where it leads. An absolute path
        (documented) may name a file elsewhere; such a file's content (header, values) is
        never echoed in an error."""
        out: list[Path] = []
        for s in specs:
            absolute = Path(s).is_absolute()
            p = Path(s) if absolute else self.base / s
            if any(c in s for c in "*?["):
                hits = sorted(Path(h) for h in globmod.glob(str(p)) if Path(h).is_file())
                if not hits:
                    raise self.error(key, f"no file matches {s!r} (relative to {self.rel(self.base) or '.'})")
            elif p.is_dir():
                hits = sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith("."))
                if not hits:
                    raise self.error(key, f"folder {s!r} holds no files")
            elif p.is_file():
                hits = [p]
            else:
                raise self.error(key, f"file not found: {s!r} (relative to the config's folder)")
            for h in hits:
                if is_inside(self.base, h):
                    continue
                if not absolute:
                    what = f"{s!r}" if h == p else f"{s!r} (its entry {h.name!r})"
                    raise self.error(key, f"{what} resolves outside the config's folder; relative paths must stay "
                                          "inside it (no '..', no symbolic links leading out)")
                self.outside.add(h)
            out += hits
        return out

    def shown(self, p: Path, detail: str) -> str:
        """``detail`` (a file's header or a parser's message) unless ``p`` lies outside the
        config's folder, whose content is not echoed."""
        return "" if p in self.outside else detail


def _strings(col) -> bool:
    return pa.types.is_string(col.type) or pa.types.is_large_string(col.type)


def _canonical_int(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A string id column whose every value is a plain decimal integer -> int64 (as the
    directory format reads CSV ids)."""
    if (_strings(col) and col.null_count == 0 and len(col) > 0
            and pc.all(pc.match_substring_regex(col, _INT_RE)).as_py()):
        return col.cast(pa.int64())
    return col


def _read_format(cfg: _Config, entry: dict, key: str, paths: list[Path]) -> tuple[str, str]:
    """The entry's file format (``csv``/``parquet``/``json``) and CSV separator."""
    fmt_spec = entry.get("format")
    if fmt_spec is None:
        fmts = {_EXT_FORMAT.get(p.suffix.lower()) for p in paths}
        if len(fmts) != 1 or None in fmts:
            raise cfg.error(key, "missing 'format' and the file extensions do not tell it "
                                 f"(files: {[cfg.rel(p) for p in paths[:5]]})")
        fmt, sep = fmts.pop(), ","
    else:
        if not isinstance(fmt_spec, dict) or not isinstance(fmt_spec.get("name"), str):
            raise cfg.error(f"{key}.format", f"must be an object like {{\"name\": \"parquet\"}}, got {fmt_spec!r}")
        fmt = fmt_spec["name"].lower()
        if fmt in ("hdf5", "h5"):
            raise cfg.error(f"{key}.format.name", "HDF5 input is not supported; convert the files to "
                                                  "Parquet or CSV")
        if fmt not in FORMATS:
            raise cfg.error(f"{key}.format.name", f"unknown format {fmt_spec['name']!r} (supported: "
                                                  f"{', '.join(FORMATS)})")
        sep = fmt_spec.get("separator", ",")
        if not isinstance(sep, str) or len(sep) != 1:
            raise cfg.error(f"{key}.format.separator", f"must be one character, got {sep!r}")
    return fmt, sep


def _read(cfg: _Config, entry: dict, key: str, columns: dict[str, str],
          string_cols: set[str]) -> tuple[pa.Table, _Files]:
    """Read the files of one node/edge entry, keeping ``columns`` (our name -> user's name)."""
    paths = cfg.files(entry, key)
    fmt, sep = _read_format(cfg, entry, key, paths)
    wanted = list(dict.fromkeys(columns.values()))
    tables, names, rows = [], [], []
    for p in paths:
        name = cfg.rel(p)
        try:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                schema = pq.read_schema(p)
                missing = [c for c in wanted if c not in schema.names]
                t = None if missing else pq.read_table(p, columns=wanted)
                have = schema.names
            elif fmt == "csv":
                import pyarrow.csv as pv

                header = pv.open_csv(p, parse_options=pv.ParseOptions(delimiter=sep)).schema.names
                missing = [c for c in wanted if c not in header]
                t = None if missing else pv.read_csv(
                    p, parse_options=pv.ParseOptions(delimiter=sep, newlines_in_values=True),
                    convert_options=pv.ConvertOptions(
                        include_columns=wanted,
                        column_types={c: pa.large_string() for c in string_cols}))
                have = header
            else:
                import pyarrow.json as pj

                t = pj.read_json(p)
                have = t.column_names
                missing = [c for c in wanted if c not in have]
                t = None if missing else t.select(wanted)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise GraphFormatError(f"cannot read {fmt} file ({key}){cfg.shown(p, f': {exc}')}", file=name) from None
        if missing:
            users = {v: k for k, v in columns.items()}
            what = ", ".join(f"{c!r} ({_role(users[c])})" for c in missing)
            raise GraphFormatError(f"missing column {what} named in {key}{cfg.shown(p, f' (columns: {have})')}",
                                   file=name)
        tables.append(t)
        names.append(name)
        rows.append(t.num_rows)
    try:
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except pa.ArrowException as exc:
        raise GraphFormatError(f"{key}: the files do not share column types: {exc}",
                               file=", ".join(names)) from exc
    out = {}
    for ours, theirs in columns.items():
        col = table.column(theirs)
        if ours in ("id", "src", "dst") and fmt == "csv":
            col = _canonical_int(col)
        out[ours] = col
    return pa.table(out), _Files(names, rows, fmt, dict(columns))


def _role(ours: str) -> str:
    """The config key that names a column we read."""
    return {"id": "node_id_col", "src": "source_id_col", "dst": "dest_id_col",
            "label": "label_col"}.get(ours, "feature_col")


def _check_keys(entry: dict, allowed: set[str], key: str, ignored: list[str]) -> None:
    for k in entry:
        if k not in allowed:
            ignored.append(f"{key}.{k}")


def _text_columns(cfg: _Config, entry: dict, key: str, node: bool, ignored: list[str]) -> list[str]:
    feats = entry.get("features", []) or []
    if not isinstance(feats, list):
        raise cfg.error(f"{key}.features", f"must be a list, got {feats!r}")
    text: list[str] = []
    for j, f in enumerate(feats):
        fk = f"{key}.features[{j}]"
        if not isinstance(f, dict) or "feature_col" not in f:
            raise cfg.error(fk, f"must be an object with 'feature_col', got {f!r}")
        cols = f["feature_col"]
        cols = [cols] if isinstance(cols, str) else cols
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) and c for c in cols):
            raise cfg.error(f"{fk}.feature_col", f"must be a column name or a list of them, got {f['feature_col']!r}")
        tr = f.get("transform") or {}
        name = tr.get("name") if isinstance(tr, dict) else None
        if node and name in TEXT_TRANSFORMS:
            text += [c for c in cols if c not in text]
        else:
            why = "edge features" if not node else f"transform {name!r}" if name else "no transform"
            ignored.append(f"{fk} ({', '.join(cols)}: {why})")
    return text


@dataclass
class _Label:
    task_type: str
    label_col: str | None
    separator: str | None
    split_pct: tuple[float, float, float] | None
    custom: dict | None
    key: str


def _label(cfg: _Config, entry: dict, key: str, node: bool, ignored: list[str]) -> _Label | None:
    labels = entry.get("labels")
    if labels is None or labels == [] or labels == [{}]:
        return None
    if not isinstance(labels, list) or not all(isinstance(x, dict) for x in labels):
        raise cfg.error(f"{key}.labels", f"must be a list of objects, got {labels!r}")
    if len(labels) > 1:
        raise cfg.error(f"{key}.labels[1]", "only one label entry per node or edge type is supported")
    d = labels[0]
    lk = f"{key}.labels[0]"
    _check_keys(d, _LABEL_KEYS, lk, ignored)
    tt = d.get("task_type")
    allowed = ("classification",) if node else ("classification", "link_prediction")
    if tt not in allowed:
        what = "node" if node else "edge"
        raise cfg.error(f"{lk}.task_type", f"task type {tt!r} is not supported on {what}s (supported: "
                                           f"{', '.join(allowed)})")
    col = d.get("label_col")
    if tt == "classification" and not (isinstance(col, str) and col):
        raise cfg.error(f"{lk}.label_col", f"a classification task needs a label column, got {col!r}")
    if tt == "link_prediction":
        col = None
    sep = d.get("separator")
    if sep is not None and not (isinstance(sep, str) and sep):
        raise cfg.error(f"{lk}.separator", f"must be a non-empty string, got {sep!r}")
    pct = None
    custom = d.get("custom_split_filenames")
    if custom is not None:
        if not isinstance(custom, dict) or not any(custom.get(k) for k, _ in _SPLIT_KEYS):
            raise cfg.error(f"{lk}.custom_split_filenames", "must be an object with at least one of "
                                                            f"'train', 'valid', 'test', got {custom!r}")
    else:
        raw = d.get("split_pct", list(DEFAULT_SPLIT_PCT))
        if (not isinstance(raw, list) or len(raw) != 3
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in raw)
                or sum(raw) > 1 + 1e-6 or sum(raw) <= 0):
            raise cfg.error(f"{lk}.split_pct", f"must be 3 non-negative fractions summing to at most 1, got {raw!r}")
        pct = tuple(float(x) for x in raw)
    return _Label(tt, col, sep, pct, custom, lk)


def _task_name(column: str) -> str:
    """A label column's name as a task name (characters outside ``[A-Za-z0-9_-]`` -> ``_``)."""
    name = re.sub(r"[^A-Za-z0-9_\-]", "_", column)[:NAME_MAX_LENGTH]
    return "_" + name[1:] if name.startswith("-") else name


def _draw(candidates: np.ndarray, n: int, pct, rng: np.random.Generator) -> np.ndarray:
    """Split codes (0 train, 1 val, 2 test, -1 none) drawn among ``candidates``."""
    codes = np.full(n, -1, dtype=np.int8)
    m = len(candidates)
    perm = candidates[rng.permutation(m)]
    n_train, n_val = int(math.floor(m * pct[0] + 1e-9)), int(math.floor(m * pct[1] + 1e-9))
    n_test = m - n_train - n_val if abs(sum(pct) - 1) < 1e-6 else int(math.floor(m * pct[2] + 1e-9))
    codes[perm[:n_train]] = 0
    codes[perm[n_train:n_train + n_val]] = 1
    codes[perm[n_train + n_val:n_train + n_val + n_test]] = 2
    return codes


def _keys(cols: list) -> pa.Array:
    """String keys of ids (one column) or id pairs (two columns), for matching."""
    parts = [pa.chunked_array([c]) if isinstance(c, pa.Array) else c for c in cols]
    parts = [p.cast(pa.large_string()) for p in parts]
    if len(parts) == 1:
        return parts[0].combine_chunks()
    return pc.binary_join_element_wise(parts[0], parts[1], pa.scalar(_SEP, pa.large_string())).combine_chunks()


def _split_file_keys(cfg: _Config, path: Path, key: str, node: bool, column) -> tuple[pa.Array, str]:
    """The ids (nodes) or ``[src, dst]`` pairs (edges) listed in one split file, as keys."""
    name = cfg.rel(path)
    fmt = _EXT_FORMAT.get(path.suffix.lower())
    if fmt == "json":
        values = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    v = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise GraphFormatError(f"invalid JSON: {exc.msg}", file=name, row=i, line=i + 1) from exc
                ok = (isinstance(v, (str, int)) and not isinstance(v, bool)) if node else (
                    isinstance(v, list) and len(v) == 2
                    and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v))
                if not ok:
                    want = "a node id (string or integer)" if node else "a [source id, destination id] pair"
                    raise GraphFormatError(f"each line must hold {want}{cfg.shown(path, f', got {v!r}')}",
                                           file=name, row=i, line=i + 1)
                values.append(v)
        if node:
            return _keys([pa.array([str(v) for v in values], pa.large_string())]), name
        return _keys([pa.array([str(v[0]) for v in values], pa.large_string()),
                      pa.array([str(v[1]) for v in values], pa.large_string())]), name
    if fmt == "parquet":
        import pyarrow.parquet as pq

        cols = [column] if isinstance(column, str) else column
        need = 1 if node else 2
        if not isinstance(cols, list) or len(cols) != need or not all(isinstance(c, str) for c in cols):
            what = "one id column" if node else "two columns [source id, destination id]"
            raise cfg.error(f"{key}.custom_split_filenames.column", f"a Parquet split file needs {what}, "
                                                                    f"got {column!r}")
        try:
            t = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise GraphFormatError(f"cannot read parquet file{cfg.shown(path, f': {exc}')}", file=name) from None
        for c in cols:
            if c not in t.column_names:
                raise GraphFormatError(f"missing column {c!r} named in {key}.custom_split_filenames.column"
                                       f"{cfg.shown(path, f' (columns: {t.column_names})')}", file=name)
        return _keys([t.column(c) for c in cols]), name
    raise cfg.error(f"{key}.custom_split_filenames", f"split file {name!r}: only JSON-lines (.json) and "
                                                     "Parquet split files are supported")


def _custom_split(cfg: _Config, lab: _Label, table_keys: pa.Array, n: int, node: bool, what: str) -> np.ndarray:
    kind = "node" if node else "edge"
    codes = np.full(n, -1, dtype=np.int8)
    for ci, (k, _) in enumerate(_SPLIT_KEYS):
        spec = lab.custom.get(k)
        if not spec:
            continue
        specs = [spec] if isinstance(spec, str) else spec
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            raise cfg.error(f"{lab.key}.custom_split_filenames.{k}", f"must be a path or a list of paths, got {spec!r}")
        for path in cfg._expand(specs, f"{lab.key}.custom_split_filenames.{k}"):
            keys, name = _split_file_keys(cfg, path, lab.key, node, lab.custom.get("column"))
            found = pc.is_in(keys, value_set=table_keys).to_numpy(zero_copy_only=False)
            if not found.all():
                r = int(np.flatnonzero(~found)[0])
                shown = cfg.shown(path, " ('" + keys[r].as_py().replace(_SEP, "', '") + "')")
                raise GraphFormatError(f"{kind}{shown} is not {what}", file=name, row=r,
                                       line=r + 1 if path.suffix.lower() in (".json", ".jsonl") else None)
            hit = pc.is_in(table_keys, value_set=keys).to_numpy(zero_copy_only=False)
            clash = hit & (codes >= 0) & (codes != ci)
            if clash.any():
                r = int(np.flatnonzero(clash)[0])
                shown = table_keys[r].as_py().replace(_SEP, "', '")
                raise GraphFormatError(f"{kind} ('{shown}') is listed in both the "
                                       f"{_SPLIT_KEYS[codes[r]][0]} and the {k} split files", file=name)
            codes[hit] = ci
    return codes


def _label_and_split(cfg: _Config, lab: _Label, table: pa.Table, files: _Files, seed_key: list[int],
                     seed: int, node: bool, what: str) -> pa.Table:
    """Add our ``label`` (multi-label lists where a separator is given) and ``split`` columns."""
    n = table.num_rows
    labelled = np.ones(n, dtype=bool)
    if lab.label_col is not None:
        col = table.column("label")
        if lab.separator is not None:
            if not _strings(col):
                name, _, _ = files.locate(None)
                raise GraphFormatError(f"{lab.key}.separator is set, so the labels must be strings, got column "
                                       f"type {col.type}", file=name, column=lab.label_col)
            s = pc.utf8_trim_whitespace(col)
            s = pc.if_else(pc.equal(s, ""), pa.scalar(None, s.type), s)
            col = pc.split_pattern(s, lab.separator)
            table = table.set_column(table.column_names.index("label"), "label", col)
        labelled = col.is_valid().to_numpy(zero_copy_only=False)
        if _strings(col):
            labelled &= pc.fill_null(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0).to_numpy(
                zero_copy_only=False) > 0
    if lab.custom is not None:
        keys = _keys([table.column("id")] if node else [table.column("src"), table.column("dst")])
        codes = _custom_split(cfg, lab, keys, n, node, what)
    else:
        codes = _draw(np.flatnonzero(labelled), n, lab.split_pct, np.random.default_rng([seed, *seed_key]))
    names = np.asarray(["train", "val", "test"], dtype=object)
    split = pa.array(names[np.maximum(codes, 0)], mask=codes < 0, type=pa.large_string())
    return table.append_column("split", split)


def _graphstorm_tables(config, seed: int = 0, name: str | None = None):
    """Read a GraphStorm graph-construction config into tables in the directory format.

    Args:
        config: path of the JSON config; relative ``files`` are relative to its folder.
        seed: seed of the splits drawn from ``split_pct``.
        name: the graph's name (default: the config file's stem).

    Returns:
        ``(metadata, nodes, edges, files)``: the first three for
        :func:`~lmgnn_fast.io.tables.build_graph`; ``files`` gives per table (and
        ``"metadata"``) the :class:`_Files` it came from, to report errors against them.

    Raises:
        GraphFormatError: the config or a file uses something unsupported or is wrong.
    """
    cfg = _Config(Path(config))
    d = cfg.data
    if not isinstance(d, dict):
        raise GraphFormatError(f"the config must be a JSON object, got {type(d).__name__}", file=cfg.name)
    if "graph" in d and "nodes" not in d:
        raise cfg.error("graph", "this is a GSProcessing config; give the GConstruct config "
                                 "(top-level 'nodes' and 'edges')")
    ignored: list[str] = [k for k in d if k not in ("version", "nodes", "edges")]
    raw_nodes, raw_edges = d.get("nodes"), d.get("edges", [])
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise cfg.error("nodes", f"must be a non-empty list of node entries, got {raw_nodes!r}")
    if not isinstance(raw_edges, list):
        raise cfg.error("edges", f"must be a list of edge entries, got {raw_edges!r}")

    nodes: dict[str, pa.Table] = {}
    edges: dict[EdgeType, pa.Table] = {}
    files: dict[Any, _Files] = {}
    node_where: dict[str, str] = {}
    tasks: list[dict] = []
    text_columns: dict[str, list[str]] = {}
    for i, e in enumerate(raw_nodes):
        key = f"nodes[{i}]"
        if not isinstance(e, dict):
            raise cfg.error(key, f"must be an object, got {e!r}")
        _check_keys(e, _NODE_KEYS, key, ignored)
        t = e.get("node_type")
        if not isinstance(t, str) or not t:
            raise cfg.error(f"{key}.node_type", f"must be a non-empty string, got {t!r}")
        problem = name_problem(t, "node type")
        if problem:
            raise cfg.error(f"{key}.node_type", problem)
        if t in node_where:
            raise cfg.error(key, f"node type {t!r} appears again (first in {node_where[t]}): splitting one "
                                 "node type over several entries is not supported")
        node_where[t] = key
        idc = e.get("node_id_col")
        if idc is not None and not (isinstance(idc, str) and idc):
            raise cfg.error(f"{key}.node_id_col", f"must be a column name, got {idc!r}")
        text = _text_columns(cfg, e, key, True, ignored)
        lab = _label(cfg, e, key, True, ignored)
        cols: dict[str, str] = {}
        if idc is not None:
            cols["id"] = idc
        for j, c in enumerate(text):
            cols["text" if len(text) == 1 else f"text_{j}"] = c
        if lab is not None:
            cols["label"] = lab.label_col
        strings = {c for c in [idc, *text] if c is not None}
        if not cols:  # no column named at all: ids are row numbers
            table, f = _read_count(cfg, e, key)
        else:
            table, f = _read(cfg, e, key, cols, strings)
            if idc is None:  # GraphStorm numbers the rows
                table = table.append_column("id", pa.array(np.arange(table.num_rows, dtype=np.int64)))
        if len(text) > 1:
            text_columns[t] = [f"text_{j}" for j in range(len(text))]
        if lab is not None:
            table = _label_and_split(cfg, lab, table, f, [0, i], seed, True, f"a node of {t!r}")
            tasks.append({"name": _task_name(lab.label_col), "type": "node_classification", "node_type": t,
                          "multilabel": lab.separator is not None, "_key": lab.key, "_qual": t})
        nodes[t] = table
        files[t] = f

    for i, e in enumerate(raw_edges):
        key = f"edges[{i}]"
        if not isinstance(e, dict):
            raise cfg.error(key, f"must be an object, got {e!r}")
        _check_keys(e, _EDGE_KEYS, key, ignored)
        rel = e.get("relation")
        if not (isinstance(rel, list) and len(rel) == 3 and all(isinstance(x, str) and x for x in rel)):
            raise cfg.error(f"{key}.relation", f"must be [source type, relation, destination type], got {rel!r}")
        et: EdgeType = tuple(rel)  # type: ignore[assignment]
        problem = name_problem(et[1], "relation")
        if problem:
            raise cfg.error(f"{key}.relation", problem)
        for t in (et[0], et[2]):
            if t not in node_where:
                raise cfg.error(f"{key}.relation", f"node type {t!r} has no entry in 'nodes' (node types: "
                                                   f"{list(node_where)}); every node type needs a node file")
        if et in edges:
            raise cfg.error(key, f"relation {list(et)} appears twice")
        for k in ("source_id_col", "dest_id_col"):
            if not (isinstance(e.get(k), str) and e.get(k)):
                raise cfg.error(f"{key}.{k}", f"must be a column name, got {e.get(k)!r}")
        _text_columns(cfg, e, key, False, ignored)
        lab = _label(cfg, e, key, False, ignored)
        cols = {"src": e["source_id_col"], "dst": e["dest_id_col"]}
        if lab is not None and lab.label_col is not None:
            cols["label"] = lab.label_col
        table, f = _read(cfg, e, key, cols, {e["source_id_col"], e["dest_id_col"]})
        if lab is not None:
            table = _label_and_split(cfg, lab, table, f, [1, i], seed, False, f"an edge of {list(et)}")
            ttype = "edge_classification" if lab.task_type == "classification" else "link_prediction"
            tasks.append({"name": _task_name(lab.label_col) if lab.label_col else et[1], "type": ttype,
                          "edge_type": list(et), "_key": lab.key, "_qual": edge_type_str(et)})
        edges[et] = table
        files[et] = f

    # task names: the label column (or relation), qualified by type where two would clash
    counts: dict[str, int] = {}
    for tk in tasks:
        counts[tk["name"]] = counts.get(tk["name"], 0) + 1
    for tk in tasks:
        if counts[tk["name"]] > 1:
            tk["name"] = f"{tk['_qual']}__{tk['name']}"[-NAME_MAX_LENGTH:].lstrip("-")
        tk.pop("_key")
        tk.pop("_qual")
    if ignored:
        warnings.warn(f"{cfg.name}: ignoring what lmgnn_fast does not read (it embeds node text; "
                      f"numeric, categorical and edge features are not used): {'; '.join(ignored[:10])}"
                      + (f" (+{len(ignored) - 10} more)" if len(ignored) > 10 else ""), stacklevel=3)
    metadata = {
        "name": name if name is not None else cfg.path.stem,
        "node_types": list(nodes),
        "edge_types": [list(et) for et in edges],
        "add_reverse_edges": True,
        "tasks": tasks,
    }
    if text_columns:
        metadata["text_columns"] = text_columns
    files["metadata"] = _Files([cfg.name], [0], "json")
    return metadata, nodes, edges, files


def _read_count(cfg: _Config, entry: dict, key: str) -> tuple[pa.Table, _Files]:
    """A node entry that names no column: its ids are the row numbers of its files."""
    paths = cfg.files(entry, key)
    first = _read_format(cfg, entry, key, paths)
    rows = []
    for p in paths:
        try:
            if first[0] == "parquet":
                import pyarrow.parquet as pq

                rows.append(pq.ParquetFile(p).metadata.num_rows)
            elif first[0] == "csv":
                import pyarrow.csv as pv

                rows.append(pv.read_csv(p, parse_options=pv.ParseOptions(
                    delimiter=first[1], newlines_in_values=True)).num_rows)
            else:
                import pyarrow.json as pj

                rows.append(pj.read_json(p).num_rows)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise GraphFormatError(f"cannot read {first[0]} file ({key}){cfg.shown(p, f': {exc}')}",
                                   file=cfg.rel(p)) from None
    table = pa.table({"id": pa.array(np.arange(sum(rows), dtype=np.int64))})
    return table, _Files([cfg.rel(p) for p in paths], rows, first[0])


def from_graphstorm(config, seed: int = 0, name: str | None = None, **options) -> HeteroGraph:
    """Build a graph from a GraphStorm graph-construction (gconstruct) JSON config.

    Args:
        config: path of the JSON config (``{"version": "gconstruct-v0.1", "nodes": [...],
            "edges": [...]}``); relative ``files`` are relative to the config's folder.
        seed: seed of the splits drawn from ``split_pct`` (the default 80/10/10 where a
            label entry gives neither ``split_pct`` nor ``custom_split_filenames``).
        name: the graph's name (default: the config file's stem).
        **options: passed to :func:`~lmgnn_fast.io.tables.build_graph`
            (``add_reverse_edges`` — default True, as GraphStorm's —, ``dedup_edges``,
            ``self_loops``, ``index_dtype``).

    Returns:
        HeteroGraph whose tasks are named after their label column (a link-prediction task
        after its relation), qualified by type where two would clash.

    Raises:
        GraphFormatError: unsupported or wrong config keys (the message names the config
            file and key, e.g. ``nodes[0].format.name``), unreadable files, or data that
            breaks the directory format's rules (the message names the data file, row and
            the user's column).

    Example::

        g = from_graphstorm("acm/config.json")
        write_dir(g, "data/acm")   # or: python -m lmgnn_fast.datasets import-graphstorm ...
    """
    metadata, nodes, edges, files = _graphstorm_tables(config, seed=seed, name=name)
    sources = {k: Source(f"<table {i}>") for i, k in enumerate(files)}
    by_name = {s.name: files[k] for k, s in sources.items()}
    try:
        return build_graph(metadata, nodes, edges, sources=sources, seed=seed, **options)
    except GraphFormatError as exc:
        f = by_name.get(exc.file) if exc.file is not None else None
        if f is None:
            raise
        file, row, line = f.locate(exc.row)
        column = None if exc.column is None else f.columns.get(exc.column, exc.column)
        reason = exc.reason
        for src_name, other in by_name.items():  # a message may name another table
            reason = reason.replace(src_name, other.locate(None)[0])
        raise GraphFormatError(reason, file=file, row=row, column=column, line=line) from exc


__all__ = ["from_graphstorm", "TEXT_TRANSFORMS"]
