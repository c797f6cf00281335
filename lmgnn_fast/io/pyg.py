"""Conversion between :class:`~lmgnn_fast.graph.HeteroGraph` and torch_geometric's ``HeteroData``.

torch_geometric is optional: it is imported only when :func:`to_pyg` or :func:`from_pyg`
runs (``pip install torch-geometric``). The mapping (see ``docs/data_format.md``):

=================================  ===================================================
HeteroGraph                        HeteroData
=================================  ===================================================
node type ``t``, ``num_nodes[t]``  ``data[t].num_nodes``
``text[t]``                        ``data[t].text`` (``list[str]``)
``raw_ids[t]``                     ``data[t].raw_id`` (int64 tensor, or ``list[str]``)
``labels[t]``                      ``data[t].y`` (int64 ``[N]``, ``-1`` = unlabelled; or
                                   float multi-hot ``[N, C]``)
``masks[t][s]``                    ``data[t].train_mask`` / ``val_mask`` / ``test_mask``
forward relation ``et``            ``data[et].edge_index`` ``[2, E_r]``: every edge of the
                                   relation in eid order, held-out link-prediction edges
                                   included
``edge_labels[et]``                ``data[et].edge_label`` (aligned with ``edge_index``)
``edge_masks[et][s]``              ``data[et].train_mask`` / ``val_mask`` / ``test_mask``
reverse ``(d, "rev-r", s)``        absent by default; ``to_pyg(g, reverse_edges=True)``
                                   adds ``edge_index.flip(0)`` of the forward relation
``label_names``                    ``data.label_names`` ``{t: [...]}``, and
                                   ``data.edge_label_names`` ``{et: [...]}``
``tasks``, ``name``                ``data.tasks`` (list of task dicts as in
                                   ``metadata.json``), ``data.name``
=================================  ===================================================

:func:`from_pyg` rebuilds the graph through :func:`~lmgnn_fast.io.tables.build_graph`, so
it validates like the directory reader, draws splits where a task's target has no masks,
and holds out the val/test edges of link-prediction relations; ``from_pyg(to_pyg(g))``
equals ``g``. These functions live here rather than on :class:`HeteroGraph` because
``lmgnn_fast.graph`` sits below ``lmgnn_fast.io`` and must not import it.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch

from lmgnn_fast.graph import REVERSE_PREFIX, SPLITS, EdgeType, HeteroGraph
from lmgnn_fast.io.directory import forward_edge_types, full_edges
from lmgnn_fast.io.errors import GraphFormatError, Source
from lmgnn_fast.io.tables import BUILD_OPTIONS, INT32_MAX, build_graph, check_options

_MASKS = tuple(f"{s}_mask" for s in SPLITS)
_REVERSE_PREFIXES = (REVERSE_PREFIX, "rev_")  # ours, and torch_geometric's ToUndirected
_NODE_KEYS = {"num_nodes", "text", "raw_id", "y", *_MASKS}
_EDGE_KEYS = {"edge_index", "edge_label", *_MASKS}
_SPLIT_ATTRS = "/".join(_MASKS)
_NODE_COLUMNS = {"id": "raw_id", "label": "y", "split": _SPLIT_ATTRS}
_EDGE_COLUMNS = {"src": "edge_index[0]", "dst": "edge_index[1]", "label": "edge_label", "split": _SPLIT_ATTRS}
_GLOBAL_KEYS = {"name", "tasks", "label_names", "edge_label_names", "add_reverse_edges"}
MAX_NODES = INT32_MAX  # per node type; a larger num_nodes is refused rather than allocated


def _require_pyg():
    try:
        from torch_geometric.data import HeteroData
    except ImportError as exc:
        raise ImportError("torch_geometric is needed for PyG conversion: pip install torch-geometric "
                          f"(import failed: {exc})") from exc
    return HeteroData


# ---------------------------------------------------------------------------- to_pyg
def to_pyg(graph: HeteroGraph, reverse_edges: bool = False):
    """Convert a graph to a torch_geometric ``HeteroData`` (CPU tensors).

    Args:
        graph: the graph.
        reverse_edges: also write the graph's reverse relations ``(dst, "rev-<rel>", src)``
            as ``edge_index.flip(0)`` of their forward relation (every edge, as
            ``torch_geometric.transforms.ToUndirected`` would); :func:`from_pyg` recognizes
            and drops them again.

    Returns:
        torch_geometric.data.HeteroData with, per node type ``t``: ``num_nodes``,
        ``raw_id``, and where the graph has them ``text`` (``list[str]``), ``y``
        (``[N]`` int64 or ``[N, C]`` float) and ``train_mask``/``val_mask``/``test_mask``
        (bool ``[N]``); per forward relation: ``edge_index`` (int64 ``[2, E_r]``, all edges
        in eid order, held-out link-prediction edges included), optional ``edge_label``
        and split masks over those edges; globally ``name``, ``tasks``,
        ``add_reverse_edges``, ``label_names`` and ``edge_label_names``.

    Raises:
        ImportError: torch_geometric is not installed.

    Example::

        data = to_pyg(load_dataset("attack"))
        data["technique"].y.shape       # [835, 14] multi-hot
        data["group", "uses", "technique"].edge_index.shape  # [2, 4362]
    """
    HeteroData = _require_pyg()
    g = graph.to("cpu")
    data = HeteroData()
    for t in g.node_types:
        store = data[t]
        store.num_nodes = int(g.num_nodes[t])
        raw = g.raw_ids.get(t)
        if raw is None:
            store.raw_id = torch.arange(g.num_nodes[t])
        elif isinstance(raw, np.ndarray):
            store.raw_id = torch.from_numpy(np.asarray(raw, dtype=np.int64).copy())
        else:
            store.raw_id = [str(x) for x in raw]
        if g.text.get(t) is not None:
            store.text = list(g.text[t])
        if g.labels.get(t) is not None:
            store.y = g.labels[t].clone()
        for s, key in zip(SPLITS, _MASKS):
            if t in g.masks:
                store[key] = g.masks[t][s].clone()
    fwd = forward_edge_types(g)
    for et in fwd:
        src, dst = full_edges(g, et)
        store = data[et]
        store.edge_index = torch.from_numpy(np.stack([src, dst]).astype(np.int64))
        if g.edge_labels.get(et) is not None:
            store.edge_label = g.edge_labels[et].clone()
        if et in g.edge_masks:
            for s, key in zip(SPLITS, _MASKS):
                store[key] = g.edge_masks[et][s].clone()
    if reverse_edges:
        for et in fwd:
            rev = g.reverse_of.get(et)
            if rev is not None:
                data[rev].edge_index = data[et].edge_index.flip(0)
    data.name = g.name
    data.tasks = [t.to_dict() for t in g.tasks]
    data.add_reverse_edges = bool(g.reverse_of)
    data.label_names = {t: list(n) for t, n in g.label_names.items() if n is not None}
    data.edge_label_names = {et: list(n) for et, n in g.edge_label_names.items() if n is not None}
    return data


# ---------------------------------------------------------------------------- from_pyg
def _where(t) -> str:
    return f"data[{t!r}]"


def _err(t, message: str, attr: str | None = None) -> GraphFormatError:
    return GraphFormatError(message, file=_where(t), column=attr)


def _as_tensor(value, t, attr: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise _err(t, f"must be a tensor, got {type(value).__name__}", attr)
    return value.detach().cpu()


def _split_column(store, t, n: int) -> pa.Array | None:
    """train/val/test masks -> a split column (None when no mask is given)."""
    present = [k for k in _MASKS if k in store]
    if not present:
        return None
    codes = np.full(n, -1, dtype=np.int64)
    for i, key in enumerate(_MASKS):
        if key not in store:
            continue
        m = _as_tensor(store[key], t, key)
        if m.dtype != torch.bool:
            if m.dtype.is_floating_point or m.dim() != 1 or not bool(((m == 0) | (m == 1)).all()):
                raise _err(t, f"must be a boolean mask of shape [{n}], got dtype {m.dtype} and shape "
                              f"{list(m.shape)}", key)
            m = m.bool()
        if m.shape != (n,):
            raise _err(t, f"must have shape [{n}], got {list(m.shape)}", key)
        m = m.numpy()
        both = m & (codes >= 0)
        if both.any():
            r = int(np.flatnonzero(both)[0])
            raise GraphFormatError(f"item {r} is in both {_MASKS[codes[r]]} and {key}",
                                   file=_where(t), row=r, column=key)
        codes[m] = i
    return pa.array(np.asarray(SPLITS, dtype=object)[np.maximum(codes, 0)], mask=codes < 0,
                    type=pa.large_string())


def _label_column(value, t, attr: str, n: int) -> tuple[pa.Array, int | None]:
    """y / edge_label -> a label column; returns it and the class count of a multi-hot."""
    y = _as_tensor(value, t, attr)
    if y.shape[:1] != (n,) or y.dim() not in (1, 2):
        raise _err(t, f"must have shape [{n}] (class ids) or [{n}, C] (multi-hot), got {list(y.shape)}", attr)
    if y.dim() == 2:
        if not bool(((y == 0) | (y == 1)).all()):
            raise _err(t, "a 2-D label tensor must be multi-hot (0/1 values)", attr)
        rows, cols = np.nonzero(y.numpy() > 0)
        offsets = np.searchsorted(rows, np.arange(n + 1)).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(cols.astype(np.int64))), int(y.shape[1])
    if y.dtype == torch.bool or y.dtype.is_complex:
        raise _err(t, f"labels must be integer class ids, got dtype {y.dtype}", attr)
    if y.dtype.is_floating_point:
        v = y.double().numpy()
        bad = np.isnan(v) | (v != np.round(v))
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise GraphFormatError(f"labels must be integer class ids (regression is not supported), "
                                   f"got {float(v[r])}", file=_where(t), row=r, column=attr)
    v = y.long().numpy()
    return pa.array(v, mask=v == -1, type=pa.int64()), None


def _raw_ids(store, t, n: int):
    """``raw_id`` -> int64 ndarray or list[str] (default ``0..N-1``), checked."""
    if "raw_id" not in store:
        return np.arange(n, dtype=np.int64)
    raw = store["raw_id"]
    if isinstance(raw, (torch.Tensor, np.ndarray)):
        a = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else raw
        if a.ndim != 1 or len(a) != n or not np.issubdtype(a.dtype, np.integer):
            raise _err(t, f"must be an integer tensor of shape [{n}] or a list of {n} strings, "
                          f"got dtype {a.dtype} and shape {list(a.shape)}", "raw_id")
        ids = a.astype(np.int64)
        uniq, first = np.unique(ids, return_index=True)
        if len(uniq) != n:
            dup = np.setdiff1d(np.arange(n), first)[0]
            raise GraphFormatError(f"duplicate raw id {int(ids[dup])}", file=_where(t), row=int(dup),
                                   column="raw_id")
        return ids
    if isinstance(raw, (list, tuple)):
        if len(raw) != n:
            raise _err(t, f"has {len(raw)} entries for {n} nodes", "raw_id")
        seen: dict[str, int] = {}
        for i, x in enumerate(raw):
            if not isinstance(x, str):
                raise GraphFormatError(f"raw ids in a list must be strings, got {type(x).__name__}",
                                       file=_where(t), row=i, column="raw_id")
            if not x:  # the directory format refuses empty ids: write_dir's output would not read back
                raise GraphFormatError("raw ids must not be empty strings", file=_where(t), row=i, column="raw_id")
            if x in seen:
                raise GraphFormatError(f"duplicate raw id {x!r} (first seen at node {seen[x]})",
                                       file=_where(t), row=i, column="raw_id")
            seen[x] = i
        return list(raw)
    raise _err(t, f"must be a tensor or a list of str, got {type(raw).__name__}", "raw_id")


def _num_nodes(value, t) -> int:
    """``num_nodes`` as an int in ``[0, MAX_NODES]``: an integral number (Python, NumPy or a
    one-element integer tensor), never truncated."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        value = value.item()
    elif isinstance(value, (np.ndarray, np.generic)) and value.size == 1 and value.dtype.kind in "biuf":
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (isinstance(value, float) and not value.is_integer()):
        raise _err(t, f"must be a whole number of nodes, got {value!r}", "num_nodes")
    if not 0 <= value <= MAX_NODES:
        raise _err(t, f"must be in [0, {MAX_NODES:,}] (the most nodes per type from_pyg builds), got {value!r}",
                   "num_nodes")
    return int(value)


def _tasks(value, source: str) -> list[dict]:
    """``tasks`` (the argument or ``data.tasks``): a list of task dicts, checked for shape."""
    if not isinstance(value, (list, tuple)):
        raise GraphFormatError(f"must be a list of task dicts as in metadata.json, got {type(value).__name__} "
                               f"{value!r:.60}", file=source)
    for i, task in enumerate(value):
        if not isinstance(task, Mapping):
            raise GraphFormatError(f"each task must be a dict such as {{'name': ..., 'type': "
                                   f"'node_classification', 'node_type': ...}}, got {task!r:.60}", file=source, row=i)
    return [dict(task) for task in value]


def _text(value, t, n: int) -> pa.Array:
    if not isinstance(value, (list, tuple)):
        raise _err(t, f"text must be a list of str, got {type(value).__name__}", "text")
    if len(value) != n:
        raise _err(t, f"text has {len(value)} entries for {n} nodes", "text")
    for i, s in enumerate(value):
        if s is not None and not isinstance(s, str):
            raise GraphFormatError(f"text must be str, got {type(s).__name__}", file=_where(t), row=i,
                                   column="text")
    return pa.array(value, type=pa.large_string())


def _is_reverse(data, et: EdgeType) -> bool:
    """Whether ``et`` is ``(d, "rev-r"|"rev_r", s)`` of a relation ``(s, r, d)`` in ``data``
    holding exactly its flipped edges."""
    s, rel, d = et
    for p in _REVERSE_PREFIXES:
        if rel.startswith(p):
            fwd = (d, rel[len(p):], s)
            if fwd in data.edge_types and "edge_index" in data[fwd] and "edge_index" in data[et]:
                a = _as_tensor(data[fwd].edge_index, fwd, "edge_index").long()
                b = _as_tensor(data[et].edge_index, et, "edge_index").long()
                if a.shape != b.shape:
                    return False
                m = int(max(a.max(), b.max())) + 1 if a.numel() else 1
                ka, kb = a[0] * m + a[1], b[1] * m + b[0]
                return bool(torch.equal(torch.sort(ka).values, torch.sort(kb).values))
    return False


def from_pyg(data, text: Mapping[str, Sequence[str]] | None = None, tasks: list[dict] | None = None,
             name: str | None = None, label_names: Mapping | None = None, **options) -> HeteroGraph:
    """Build a graph from a torch_geometric ``HeteroData``.

    Args:
        data: the ``HeteroData``. Read per node type: ``num_nodes``, and where present
            ``text`` (``list[str]``), ``raw_id`` (int tensor or ``list[str]``; default
            ``0..N-1``), ``y`` (int class ids ``[N]`` with ``-1`` = unlabelled, or multi-hot
            ``[N, C]``) and ``train_mask``/``val_mask``/``test_mask``; per relation
            ``edge_index`` ``[2, E]`` (the edges' order gives their ids), optional
            ``edge_label`` ``[E]``/``[E, C]`` and split masks over the edges; globally the
            optional ``name``, ``tasks``, ``label_names``, ``edge_label_names`` and
            ``add_reverse_edges`` that :func:`to_pyg` writes. Other attributes (``x``,
            ``edge_attr``, ...) are ignored with a warning: lmgnn_fast reads text only.
        text: node type -> ``list[str]``; overrides ``data[t].text``.
        tasks: the tasks as in ``metadata.json`` (``[{"name": ..., "type":
            "node_classification", "node_type": ...}, ...]``). Default: ``data.tasks``,
            else one node classification task per node type with ``y`` (named after it).
        name: the graph's name (default ``data.name``, else ``"pyg"``).
        label_names: node type or edge type -> class names (index = class id); default
            ``data.label_names`` / ``data.edge_label_names``.
        **options: passed to :func:`~lmgnn_fast.io.tables.build_graph` (``add_reverse_edges``
            — default ``data.add_reverse_edges``, else True —, ``dedup_edges``,
            ``self_loops``, ``seed``, ``split_ratios``, ``index_dtype``).

    Relations named ``rev-<r>`` or ``rev_<r>`` whose edges are exactly the flipped edges
    of a relation ``<r>`` in ``data`` are taken as reverse edges: dropped, and
    ``add_reverse_edges`` turned on (lmgnn_fast adds its own ``rev-<r>``).

    Returns:
        HeteroGraph

    Raises:
        ImportError: torch_geometric is not installed.
        OptionError: an unknown keyword in ``options`` (named, with the accepted ones).
        GraphFormatError: an attribute has the wrong type, shape or values (the message
            names ``data[type]`` and the attribute: an empty string raw id, a ``num_nodes``
            that is not a whole number in ``[0, 2**31 - 1]``, ``tasks`` that is not a list
            of dicts, ...), or the graph breaks the rules of
            :func:`build_graph` (e.g. an ``edge_index`` entry out of range, a masked node
            without a label).
    """
    HeteroData = _require_pyg()
    if not isinstance(data, HeteroData):
        raise TypeError(f"from_pyg: expected a torch_geometric.data.HeteroData, got {type(data).__name__}")
    check_options(options, "from_pyg", accepted=[o for o in BUILD_OPTIONS if o != "sources"])
    text = dict(text or {})
    for t in text:
        if t not in data.node_types:
            raise KeyError(f"from_pyg: text given for unknown node type {t!r} (node types: {data.node_types})")
    gstore = data._global_store if hasattr(data, "_global_store") else {}
    gget = lambda k, default=None: gstore[k] if k in gstore else default  # noqa: E731
    names_all: dict = {}
    names_all.update({t: v for t, v in (gget("label_names") or {}).items()})
    names_all.update({tuple(k): v for k, v in (gget("edge_label_names") or {}).items()})
    names_all.update({(tuple(k) if isinstance(k, (list, tuple)) else k): v
                      for k, v in (label_names or {}).items()})

    ignored: list[str] = [f"data.{k}" for k in gstore.keys() if k not in _GLOBAL_KEYS]
    nodes: dict[str, pa.Table] = {}
    sources: dict[Any, Source] = {}
    origin: dict[str, tuple[str, dict]] = {}  # source name -> (data[...], our column -> attribute)
    raw_ids: dict[str, Any] = {}
    md_names: dict[str, list[str]] = {}
    multi_classes: dict[Any, int] = {}
    for t in data.node_types:
        store = data[t]
        n = store.num_nodes
        if n is None:
            raise _err(t, f"cannot tell the number of nodes: set data[{t!r}].num_nodes", "num_nodes")
        n = _num_nodes(n, t)
        ignored += [f"data[{t!r}].{k}" for k in store.keys() if k not in _NODE_KEYS]
        raw_ids[t] = _raw_ids(store, t, n)
        cols: dict[str, pa.Array] = {"id": pa.array(np.arange(n, dtype=np.int64))}
        tx = text.get(t, store["text"] if "text" in store else None)
        if tx is not None:
            cols["text"] = _text(tx, t, n)
        if "y" in store:
            cols["label"], c = _label_column(store["y"], t, "y", n)
            if c is not None:
                multi_classes[t] = c
        split = _split_column(store, t, n)
        if split is not None:
            cols["split"] = split
        nodes[t] = pa.table(cols)
        sources[t] = Source(f"<table {len(sources)}>")
        origin[sources[t].name] = (_where(t), _NODE_COLUMNS)
        if t in names_all and "y" in store:
            md_names[t] = [str(x) for x in names_all[t]]
        elif t in multi_classes:
            md_names[t] = [str(i) for i in range(multi_classes[t])]

    reverse_found = []
    edges: dict[EdgeType, pa.Table] = {}
    edge_types: list[EdgeType] = []
    for et in data.edge_types:
        et = tuple(et)
        store = data[et]
        if _is_reverse(data, et):
            reverse_found.append(et)
            continue
        ignored += [f"data[{et!r}].{k}" for k in store.keys() if k not in _EDGE_KEYS]
        if "edge_index" not in store:
            raise _err(et, "missing edge_index (sparse adj_t is not supported)", "edge_index")
        ei = _as_tensor(store.edge_index, et, "edge_index")
        if ei.dim() != 2 or ei.shape[0] != 2 or ei.dtype.is_floating_point or ei.dtype == torch.bool:
            raise _err(et, f"must be an integer tensor of shape [2, E], got dtype {ei.dtype} and "
                           f"shape {list(ei.shape)}", "edge_index")
        e = int(ei.shape[1])
        ei = ei.long().numpy()
        cols = {"src": pa.array(ei[0]), "dst": pa.array(ei[1])}
        if "edge_label" in store:
            cols["label"], c = _label_column(store["edge_label"], et, "edge_label", e)
            if c is not None:
                multi_classes[et] = c
        if "edge_label_index" in store:
            raise _err(et, "edge_label_index (supervision edges, e.g. from RandomLinkSplit) is not "
                           "supported: give the graph before the split, with train_mask/val_mask/"
                           "test_mask over edge_index", "edge_label_index")
        split = _split_column(store, et, e)
        if split is not None:
            cols["split"] = split
        edges[et] = pa.table(cols)
        edge_types.append(et)
        sources[et] = Source(f"<table {len(sources)}>")
        origin[sources[et].name] = (_where(et), _EDGE_COLUMNS)
        key = "__".join(et)
        if et in names_all and "edge_label" in store:
            md_names[key] = [str(x) for x in names_all[et]]
        elif et in multi_classes:
            md_names[key] = [str(i) for i in range(multi_classes[et])]
    if ignored:
        warnings.warn(f"from_pyg: ignoring attributes lmgnn_fast does not read: {', '.join(ignored[:12])}"
                      + (f" (+{len(ignored) - 12} more)" if len(ignored) > 12 else ""), stacklevel=2)

    if tasks is not None:
        tasks = _tasks(tasks, "from_pyg: tasks")
    elif gget("tasks") is not None:
        tasks = _tasks(gget("tasks"), "data.tasks")
    else:
        tasks = [{"name": t, "type": "node_classification", "node_type": t,
                  "multilabel": t in multi_classes} for t in data.node_types if "y" in data[t]]
    add_rev = options.pop("add_reverse_edges", None)
    if add_rev is None:
        add_rev = True if reverse_found else bool(gget("add_reverse_edges", True))
    metadata = {
        "name": name if name is not None else gget("name", "pyg"),
        "node_types": list(data.node_types),
        "edge_types": [list(et) for et in edge_types],
        "add_reverse_edges": bool(add_rev),
        "tasks": [dict(t) for t in tasks],
        "label_names": md_names,
    }
    sources["metadata"] = Source("HeteroData (tasks, label_names)")
    try:
        g = build_graph(metadata, nodes, edges, sources=sources, **options)
    except GraphFormatError as exc:
        if exc.file not in origin:
            raise
        where, columns = origin[exc.file]
        reason = exc.reason
        for name, (other, _) in origin.items():  # a message may name another table
            reason = reason.replace(name, other)
        column = None if exc.column is None else columns.get(exc.column, exc.column)
        raise GraphFormatError(reason, file=where, row=exc.row, column=column) from exc
    g.raw_ids.update(raw_ids)
    return g


__all__ = ["from_pyg", "to_pyg"]
