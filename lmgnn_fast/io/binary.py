"""Binary cache of a HeteroGraph: memory-mapped ``.npy`` arrays plus one JSON file.

Layout::

    <path>/
      graph.json          format version, types, counts, tasks, label names, report, and
                          the name of the array file behind every tensor
      arrays/<name>.npy   one array per tensor (CSC arrays, labels, masks, lp edges, int ids)
      arrays/<name>.off.npy, <name>.dat.npy
                          string columns (string ids, text): int64 offsets [N+1] and the
                          UTF-8 bytes, Arrow's large_string layout

Loading maps the arrays copy-on-write (``numpy.load(mmap_mode="c")``), so a graph of tens
of millions of edges reloads in well under a second (the pages are read on first touch);
only strings are decoded into Python lists (or, with ``lazy_strings=True``, kept as
:class:`StringColumn` views over the mapped bytes, decoded on access). The folder is written
to a temporary sibling and renamed into place, so a reader never sees half a cache.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from lmgnn_fast.graph import CSC, SPLITS, HeteroGraph, Task, edge_type_str, name_problem
from lmgnn_fast.io.atomic import replace_dir
from lmgnn_fast.io.errors import GraphFormatError, PathError
from lmgnn_fast.io.paths import resolve_inside

FORMAT = "lmgnn_fast.binary"
FORMAT_VERSION = 1


def is_binary(path) -> bool:
    """Whether ``path`` holds a complete binary cache of this format version."""
    p = Path(path) / "graph.json"
    if not p.is_file():
        return False
    try:
        with open(p, encoding="utf-8") as f:
            head = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    return head.get("format") == FORMAT and head.get("version") == FORMAT_VERSION


class _Writer:
    def __init__(self, root: Path):
        self.root = root
        (root / "arrays").mkdir(parents=True)

    def array(self, name: str, a: np.ndarray) -> str:
        np.save(self.root / "arrays" / f"{name}.npy", np.ascontiguousarray(a))
        return name

    def tensor(self, name: str, t: torch.Tensor | None) -> str | None:
        if t is None:
            return None
        return self.array(name, t.detach().cpu().contiguous().numpy())

    def strings(self, name: str, values) -> str:
        arr = values._arr if isinstance(values, StringColumn) else pa.array(values, type=pa.large_string())
        _, off, dat = arr.buffers()
        n = len(arr)
        offsets = np.frombuffer(off, dtype=np.int64, count=n + 1) if off is not None else np.zeros(1, np.int64)
        data = (np.frombuffer(dat, dtype=np.uint8, count=int(offsets[-1])) if dat is not None
                else np.zeros(0, np.uint8))
        np.save(self.root / "arrays" / f"{name}.off.npy", offsets)
        np.save(self.root / "arrays" / f"{name}.dat.npy", data)
        return name


class StringColumn(Sequence):
    """A read-only column of strings over int64 offsets and UTF-8 bytes (Arrow's
    ``large_string`` layout), decoded one string at a time on access.

    :func:`load_binary` returns these with ``lazy_strings=True``, so several processes that
    map the same files share one copy of the texts and ids instead of each holding a
    Python list.

    Args:
        offsets: ``[N + 1]`` int64 byte offsets.
        data: ``[offsets[-1]]`` uint8, the strings back to back.
    """

    def __init__(self, offsets: np.ndarray, data: np.ndarray):
        self._arr = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))

    def __len__(self) -> int:
        return len(self._arr)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"StringColumn: index {i} out of range for {n} strings")
        return self._arr[j].as_py()

    def __iter__(self):
        step = 65536
        for s in range(0, len(self), step):
            yield from self._arr.slice(s, step).to_pylist()

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str) or len(other) != len(self):
            return False
        return all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"StringColumn({len(self)} strings)"


class _Reader:
    def __init__(self, root: Path, mmap: bool, lazy_strings: bool = False):
        self.root = root
        self.mode = "c" if mmap else None
        self.lazy = lazy_strings

    def _np(self, file: str) -> np.ndarray:
        folder = self.root / "arrays"
        path = folder / file
        if not isinstance(file, str) or "/" in file or "\\" in file or file.startswith("."):
            raise PathError(f"load_binary: array file name {file!r} in graph.json is not a "
                            "plain file name")
        resolve_inside(folder, path, "array file")
        where = str(path)
        try:
            a = np.load(path, mmap_mode=self.mode, allow_pickle=False)
        except FileNotFoundError:
            raise GraphFormatError("missing array file named in graph.json; write the cache again with save_binary",
                                   file=where) from None
        except (ValueError, OSError, EOFError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise GraphFormatError(f"not a plain numeric .npy array ({first}); write the cache again with "
                                   "save_binary", file=where) from None
        if not isinstance(a, np.ndarray) or a.dtype.hasobject or a.dtype.kind not in "biuf":
            raise GraphFormatError(f"array of dtype {getattr(a, 'dtype', type(a).__name__)} where a numeric one "
                                   "is expected; write the cache again with save_binary", file=where)
        return a

    def tensor(self, name: str | None) -> torch.Tensor | None:
        if name is None:
            return None
        return torch.from_numpy(self._np(f"{name}.npy"))

    def strings(self, name: str) -> list[str] | StringColumn:
        off = np.ascontiguousarray(self._np(f"{name}.off.npy"))
        dat = np.ascontiguousarray(self._np(f"{name}.dat.npy"))
        if self.lazy:
            return StringColumn(off, dat)
        n = len(off) - 1
        arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(off), pa.py_buffer(dat))
        return arr.to_pylist()


def save_binary(g: HeteroGraph, path) -> None:
    """Write the binary cache of a graph: one ``.npy`` per array plus ``graph.json``.

    Args:
        g: the graph.
        path: the folder to write (replaced as a whole once complete).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    w = _Writer(tmp)
    nodes = []
    for i, t in enumerate(g.node_types):
        raw = g.raw_ids[t]
        if isinstance(raw, np.ndarray):
            ids = {"kind": "int", "array": w.array(f"n{i}.ids", np.asarray(raw, dtype=np.int64))}
        else:
            ids = {"kind": "str", "array": w.strings(f"n{i}.ids", list(raw))}
        text = g.text.get(t)
        nodes.append({
            "type": t,
            "num_nodes": g.num_nodes[t],
            "ids": ids,
            "text": None if text is None else w.strings(f"n{i}.text", text),
            "labels": w.tensor(f"n{i}.labels", g.labels.get(t)),
            "label_names": g.label_names.get(t),
            "masks": ({s: w.tensor(f"n{i}.mask.{s}", g.masks[t][s]) for s in SPLITS}
                      if t in g.masks else None),
        })
    rels = []
    for r, et in enumerate(g.edge_types):
        c = g.csc[et]
        rels.append({
            "edge_type": list(et),
            "num_eids": g.num_eids.get(et),
            "reverse_of": g.edge_types.index(g.reverse_of[et]) if et in g.reverse_of else None,
            "csc": [w.tensor(f"e{r}.{f}", x) for f, x in zip(CSC._fields, c)],
            "edge_data": et in g.edge_labels,
            "labels": w.tensor(f"e{r}.labels", g.edge_labels.get(et)),
            "label_names": g.edge_label_names.get(et),
            "masks": ({s: w.tensor(f"e{r}.mask.{s}", g.edge_masks[et][s]) for s in SPLITS}
                      if et in g.edge_masks else None),
        })
    lp = []
    for k, (name, splits) in enumerate(g.lp_edges.items()):
        lp.append({"task": name, "splits": {s: [w.tensor(f"lp{k}.{s}.src", a), w.tensor(f"lp{k}.{s}.dst", b)]
                                            for s, (a, b) in splits.items()}})
    head = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "name": g.name,
        "nodes": nodes,
        "relations": rels,
        "tasks": [t.to_dict() for t in g.tasks],
        "lp_edges": lp,
        "report": g.report,
    }
    with open(tmp / "graph.json", "w", encoding="utf-8") as f:
        json.dump(head, f)
    replace_dir(tmp, dest)


def load_binary(path, mmap: bool = True, lazy_strings: bool = False) -> HeteroGraph:
    """Load a graph written by :func:`save_binary`.

    Args:
        path: the folder written by :func:`save_binary`.
        mmap: memory-map the arrays (copy-on-write) instead of reading them.
        lazy_strings: string ids and texts as :class:`StringColumn` views over the
            arrays (decoded on access) instead of Python lists.

    Raises:
        ValueError: ``path`` holds no binary graph cache of this format version.
        GraphFormatError: ``graph.json`` names a type, relation or task that is not a name
            (see :func:`~lmgnn_fast.graph.name_problem`), or its structure or an array file
            is not what :func:`save_binary` writes (the message names the file).
        PathError: an array file leads outside the cache's ``arrays/`` folder.
    """
    root = Path(path)
    if not is_binary(root):
        raise ValueError(f"load_binary: {root} is not a binary graph cache "
                         f"({FORMAT} version {FORMAT_VERSION}); write one with save_binary")
    with open(root / "graph.json", encoding="utf-8") as f:
        head = json.load(f)
    try:
        _check_names(head, str(root / "graph.json"))
        return _load(root, head, mmap, lazy_strings)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise GraphFormatError(f"not a valid binary graph cache ({type(exc).__name__}: {exc}); write it again "
                               "with save_binary", file=str(root / "graph.json")) from None


def _check_names(head: dict, where: str) -> None:
    """Node types, relations and task names in ``graph.json`` are names (they become file
    names and module keys), as the writers check: refuse any other."""
    for i, nd in enumerate(head["nodes"]):
        why = name_problem(nd["type"], "node type")
        if why:
            raise GraphFormatError(f"nodes[{i}].type: {why}", file=where)
    for i, rel in enumerate(head["relations"]):
        et = rel["edge_type"]
        if not isinstance(et, list) or len(et) != 3:
            raise GraphFormatError(f"relations[{i}].edge_type must be [src, relation, dst], got {et!r}", file=where)
        for x, kind in zip(et, ("node type", "relation", "node type")):
            why = name_problem(x, kind)
            if why:
                raise GraphFormatError(f"relations[{i}].edge_type: {why}", file=where)
    for i, d in enumerate(head["tasks"]):
        why = name_problem(d["name"], "task name")
        if why:
            raise GraphFormatError(f"tasks[{i}].name: {why}", file=where)


def _load(root: Path, head: dict, mmap: bool, lazy_strings: bool) -> HeteroGraph:
    rd = _Reader(root, mmap, lazy_strings)
    g = HeteroGraph(node_types=[], edge_types=[], num_nodes={}, csc={}, name=head["name"],
                    report=head["report"])
    for nd in head["nodes"]:
        t = nd["type"]
        g.node_types.append(t)
        g.num_nodes[t] = nd["num_nodes"]
        ids = nd["ids"]
        g.raw_ids[t] = rd.tensor(ids["array"]).numpy() if ids["kind"] == "int" else rd.strings(ids["array"])
        g.text[t] = None if nd["text"] is None else rd.strings(nd["text"])
        g.labels[t] = rd.tensor(nd["labels"])
        g.label_names[t] = nd["label_names"]
        if nd["masks"] is not None:
            g.masks[t] = {s: rd.tensor(v) for s, v in nd["masks"].items()}
    ets = [tuple(r["edge_type"]) for r in head["relations"]]
    for r, rel in enumerate(head["relations"]):
        et = ets[r]
        g.edge_types.append(et)
        g.csc[et] = CSC(*(rd.tensor(x) for x in rel["csc"]))
        if rel["num_eids"] is not None:
            g.num_eids[et] = rel["num_eids"]
        if rel["reverse_of"] is not None:
            g.reverse_of[et] = ets[rel["reverse_of"]]
        if rel["edge_data"]:
            g.edge_labels[et] = rd.tensor(rel["labels"])
            g.edge_label_names[et] = rel["label_names"]
        if rel["masks"] is not None:
            g.edge_masks[et] = {s: rd.tensor(v) for s, v in rel["masks"].items()}
    for d in head["tasks"]:
        g.tasks.append(Task(name=d["name"], type=d["type"], node_type=d.get("node_type"),
                            edge_type=tuple(d["edge_type"]) if d.get("edge_type") else None,
                            multilabel=d.get("multilabel", False), num_classes=d.get("num_classes")))
    for item in head["lp_edges"]:
        g.lp_edges[item["task"]] = {s: (rd.tensor(a), rd.tensor(b)) for s, (a, b) in item["splits"].items()}
    return g


__all__ = ["save_binary", "load_binary", "is_binary", "edge_type_str", "StringColumn"]
