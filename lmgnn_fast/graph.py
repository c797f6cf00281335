"""HeteroGraph: a heterogeneous, text-attributed graph stored as per-relation CSC.

The data model every other part of lmgnn_fast reads (see ``docs/interfaces.md``):

* node types in a fixed order, each with a count, its raw ids (to map results back) and
  optional text, labels and ``train``/``val``/``test`` masks;
* canonical edge types ``(src_type, relation, dst_type)``; relation id ``r`` is the index in
  :attr:`HeteroGraph.edge_types` — the metadata's relations in metadata order, then the
  reverse relations ``(dst, "rev-" + relation, src)`` in the same order when they are added;
* per relation a CSC over the destination nodes (:class:`CSC`), edges numbered
  ``0..E_r-1`` in the order of the relation's edge table; a reverse edge carries the eid of
  its forward edge.

HeteroGraph is data: this module sits below :mod:`lmgnn_fast.io`, which builds, reads and
writes graphs (``build_graph`` from in-memory pyarrow tables, ``read_dir`` / ``write_dir``
for the on-disk directory format, ``save_binary`` / ``load_binary`` for the binary cache)
and imports this module, never the other way round.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor

from lmgnn_fast.ops.convert import csc_to_coo

EdgeType = tuple[str, str, str]

TASK_TYPES = ("node_classification", "edge_classification", "link_prediction")
SPLITS = ("train", "val", "test")
REVERSE_PREFIX = "rev-"

# Names of node types, relations and tasks: they become file names (``nodes/<type>.csv``,
# ``edges/<src>__<rel>__<dst>.csv``, the trainer's token cache and embeddings) and module
# keys, so they are names, never paths: ASCII letters, digits, ``_`` and ``-``, not starting
# with ``-``, at most NAME_MAX_LENGTH characters; node types and relations also without
# ``__`` (the separator of edge file names).
NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_\-]*"
NAME_MAX_LENGTH = 80
_NAME_RE = re.compile(NAME_PATTERN)


def name_problem(name: Any, kind: str = "name") -> str | None:
    """Why ``name`` is not a valid node type / relation / task name, or None when it is.

    Args:
        name: the candidate.
        kind: ``"node type"``, ``"relation"`` or ``"task name"`` (the latter may contain
            ``__``); used in the message.

    Returns:
        ``None``, or a message such as ``node type '../x' is not a valid name: use ASCII
        letters, digits, '_' and '-' (not first)``.
    """
    if not isinstance(name, str):
        return f"{kind} {name!r} is not a valid name: it must be a string"
    if not _NAME_RE.fullmatch(name):
        return (f"{kind} {name!r} is not a valid name: use ASCII letters, digits, '_' and '-' "
                "(not first)")
    if len(name) > NAME_MAX_LENGTH:
        return f"{kind} {name[:20]!r}... is not a valid name: longer than {NAME_MAX_LENGTH} characters"
    if kind != "task name" and "__" in name:
        return f"{kind} {name!r} is not a valid name: '__' separates the parts of edge file names"
    return None


class CSC(NamedTuple):
    """One relation's edges, compressed over destination nodes.

    Attributes:
        indptr: Tensor  # [num_nodes[dst] + 1] int64; edges of node v are indptr[v]:indptr[v+1]
        indices: Tensor  # [E] source node ids, int32 when every id of the source type fits
            (and the graph was built with ``index_dtype="auto"``), else int64
        eid: Tensor  # [E] int64 edge ids (positions in the relation's edge table)
    """

    indptr: Tensor
    indices: Tensor
    eid: Tensor


@dataclass
class Task:
    """A learning task on the graph.

    Attributes:
        name: unique task name (keys ``lp_edges`` for link prediction).
        type: ``node_classification``, ``edge_classification`` or ``link_prediction``.
        node_type: target node type (node classification).
        edge_type: target relation (edge classification, link prediction).
        multilabel: labels are multi-hot ``[N, C]`` instead of class ids ``[N]``.
        num_classes: number of classes (classification tasks).
    """

    name: str
    type: str
    node_type: str | None = None
    edge_type: EdgeType | None = None
    multilabel: bool = False
    num_classes: int | None = None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.node_type is not None:
            d["node_type"] = self.node_type
        if self.edge_type is not None:
            d["edge_type"] = list(self.edge_type)
        if self.type != "link_prediction":
            d["multilabel"] = bool(self.multilabel)
        if self.num_classes is not None:
            d["num_classes"] = int(self.num_classes)
        return d


def edge_type_str(et: EdgeType) -> str:
    """``(src, rel, dst)`` -> ``"src__rel__dst"`` (the edge file's stem)."""
    return "__".join(et)


def lookup_edge_type(edge_types: Sequence[EdgeType], key: EdgeType | str | int) -> EdgeType:
    """Resolve a relation among ``edge_types``.

    Args:
        edge_types: the canonical relations, relation id ``r`` at index ``r``.
        key: a canonical ``(src, rel, dst)`` tuple (or list), a relation name that names
            exactly one of ``edge_types``, or a relation id.

    Returns:
        the canonical ``(src, rel, dst)`` tuple.

    Raises:
        KeyError: ``key`` names no relation, or a relation name that several share (the
            message lists the relations).
    """
    if isinstance(key, int) and not isinstance(key, bool):
        if not 0 <= key < len(edge_types):
            raise KeyError(f"relation id {key} out of range ({len(edge_types)} relations)")
        return tuple(edge_types[key])  # type: ignore[return-value]
    if isinstance(key, str):
        hits = [tuple(et) for et in edge_types if et[1] == key]
        if len(hits) != 1:
            raise KeyError(f"relation name '{key}' matches {len(hits)} relations "
                           f"(relations: {[tuple(et) for et in edge_types]})")
        return hits[0]  # type: ignore[return-value]
    et = tuple(key)
    if len(et) != 3 or et not in [tuple(e) for e in edge_types]:
        raise KeyError(f"unknown relation {et} (relations: {[tuple(e) for e in edge_types]})")
    return et  # type: ignore[return-value]


@dataclass(repr=False, eq=False)
class HeteroGraph:
    """A heterogeneous text-attributed graph (see the module docstring and
    ``docs/interfaces.md``).

    Attributes:
        node_types: node types in a fixed order.
        edge_types: canonical relations; relation id ``r`` is the index here.
        num_nodes: nodes per type.
        csc: per relation, the message-passing graph as :class:`CSC`. For a link-prediction
            target, only edges outside its val/test split are here (and in its reverse).
        reverse_of: relation -> its reverse, in both directions, for relations with one.
        num_eids: per forward relation, the number of edge ids ``E_r`` (all edges of its
            table after de-duplication, held-out link-prediction edges included); a reverse
            relation has the count of its forward relation.
        raw_ids: per node type, the original ids: ``np.ndarray`` int64 for integer ids, or a
            ``list[str]``; ``raw_ids[t][i]`` is the id of node ``i``.
        text: per node type, ``list[str]`` (``""`` where empty) or None.
        labels: per node type, int64 ``[N]`` class ids (``-1`` = unlabelled) or float
            ``[N, C]`` multi-hot, or None.
        label_names: per node type, the class names (index = class id), or None.
        masks: per node type, ``{"train"|"val"|"test": bool[N]}`` (absent: no split).
        edge_labels: per forward relation, int64 ``[E_r]`` or float ``[E_r, C]``, or None.
        edge_label_names: per forward relation, the class names, or None.
        edge_masks: per forward relation, ``{"train"|"val"|"test": bool[E_r]}`` over eids.
        tasks: the graph's tasks.
        lp_edges: per link-prediction task, ``{"train"|"val"|"test": (src, dst)}`` int64
            node ids, each split in eid order. ``train`` edges are in the message-passing
            graph, ``val``/``test`` edges are not.
        report: what loading found and did: per node type ``rows`` and ``empty_text``, per
            relation (key ``"src__rel__dst"``) ``rows``, ``duplicates``, ``self_loops``,
            ``removed`` and ``edges``; the policies used and which splits were drawn.
        name: the dataset's name.
    """

    node_types: list[str]
    edge_types: list[EdgeType]
    num_nodes: dict[str, int]
    csc: dict[EdgeType, CSC]
    reverse_of: dict[EdgeType, EdgeType] = field(default_factory=dict)
    num_eids: dict[EdgeType, int] = field(default_factory=dict)
    raw_ids: dict[str, Any] = field(default_factory=dict)
    text: dict[str, list[str] | None] = field(default_factory=dict)
    labels: dict[str, Tensor | None] = field(default_factory=dict)
    label_names: dict[str, list[str] | None] = field(default_factory=dict)
    masks: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    edge_labels: dict[EdgeType, Tensor | None] = field(default_factory=dict)
    edge_label_names: dict[EdgeType, list[str] | None] = field(default_factory=dict)
    edge_masks: dict[EdgeType, dict[str, Tensor]] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    lp_edges: dict[str, dict[str, tuple[Tensor, Tensor]]] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    name: str = "graph"

    # ------------------------------------------------------------------ queries
    @property
    def num_relations(self) -> int:
        return len(self.edge_types)

    def relation_id(self, edge_type: EdgeType | str) -> int:
        """Dense id of a relation, given as a tuple or as a unique relation name."""
        return self.edge_types.index(self.edge_type(edge_type))

    def edge_type(self, key: EdgeType | str | int) -> EdgeType:
        """Resolve a relation given as tuple, relation name (if unique) or id (see
        :func:`lookup_edge_type`)."""
        try:
            return lookup_edge_type(self.edge_types, key)
        except KeyError as exc:
            raise KeyError(f"HeteroGraph: {exc.args[0]}") from None

    def num_edges(self, edge_type: EdgeType | str | int | None = None) -> int:
        """Edges in the message-passing graph: of one relation, or of all."""
        if edge_type is None:
            return sum(int(c.indices.numel()) for c in self.csc.values())
        return int(self.csc[self.edge_type(edge_type)].indices.numel())

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"HeteroGraph: no task named '{name}' (tasks: {[t.name for t in self.tasks]})")

    def edges(self, edge_type: EdgeType | str | int,
              with_eid: bool = False) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """The message-passing edges of a relation as COO, in eid order.

        Args:
            edge_type: the relation (tuple, unique relation name or id).
            with_eid: also return the edges' ids.

        Returns:
            src: Tensor  # [E] int64 source node ids
            dst: Tensor  # [E] int64 destination node ids
            eid: Tensor  # [E] int64 edge ids, increasing (only with ``with_eid``)
        """
        c = self.csc[self.edge_type(edge_type)]
        src, dst = csc_to_coo(c.indptr, c.indices)
        eid, order = torch.sort(c.eid.long())
        if with_eid:
            return src[order], dst[order], eid
        return src[order], dst[order]

    def all_edges(self, edge_type: EdgeType | str | int) -> tuple[Tensor, Tensor]:
        """Every edge of a forward relation, indexed by edge id: the message-passing edges
        and the val/test edges a link-prediction task on the relation holds out (taken from
        :attr:`lp_edges`, each split in eid order over :attr:`edge_masks`).

        The one home of a relation's full edge list: training (edge endpoints of a task),
        the outputs, inference (known links) and the writers of other formats read it here.

        Args:
            edge_type: a forward relation (tuple, unique relation name or id).

        Returns:
            src: Tensor  # [E_r] int64 source node ids, -1 for an edge id found in neither
            dst: Tensor  # [E_r] int64 destination node ids, likewise
        """
        et = self.edge_type(edge_type)
        src, dst, eid = self.edges(et, with_eid=True)
        masks = (self.edge_masks or {}).get(et) or {}
        labels = (self.edge_labels or {}).get(et)
        n = max([int(self.num_eids.get(et, 0)), int(eid.max()) + 1 if eid.numel() else 0]
                + [int(torch.as_tensor(m).numel()) for m in masks.values()]
                + ([int(torch.as_tensor(labels).shape[0])] if labels is not None else []))
        out_s = torch.full((n,), -1, dtype=torch.long)
        out_d = torch.full((n,), -1, dtype=torch.long)
        out_s[eid] = src.long().cpu()
        out_d[eid] = dst.long().cpu()
        for t in self.tasks or []:
            if t.type != "link_prediction" or t.name not in (self.lp_edges or {}) or \
                    tuple(t.edge_type or ()) != et:
                continue
            for split, (s, d) in self.lp_edges[t.name].items():
                if split not in masks:
                    continue
                ids = torch.nonzero(torch.as_tensor(masks[split]).bool()).flatten().cpu()
                if ids.numel() == torch.as_tensor(s).numel():
                    out_s[ids] = torch.as_tensor(s).long().cpu()
                    out_d[ids] = torch.as_tensor(d).long().cpu()
        return out_s, out_d

    def degrees(self, edge_type: EdgeType | str | int, direction: str = "in") -> Tensor:
        """Per-node degree in one relation of the message-passing graph.

        Args:
            edge_type: the relation.
            direction: ``"in"`` (per destination node, ``[num_nodes[dst]]``) or ``"out"``
                (per source node, ``[num_nodes[src]]``).

        Returns:
            Tensor  # int64 degrees
        """
        et = self.edge_type(edge_type)
        c = self.csc[et]
        if direction == "in":
            return c.indptr[1:] - c.indptr[:-1]
        if direction == "out":
            return torch.bincount(c.indices.long(), minlength=self.num_nodes[et[0]])
        raise ValueError(f"HeteroGraph.degrees: direction must be 'in' or 'out', got {direction!r}")

    def degree_stats(self) -> dict[EdgeType, dict[str, float]]:
        """Per relation: edges, and min/mean/median/max in-degree and isolated destinations."""
        out = {}
        for et in self.edge_types:
            d = self.degrees(et).double()
            if d.numel() == 0:
                out[et] = {"edges": 0, "min": 0, "mean": 0.0, "median": 0.0, "max": 0, "zero": 0}
                continue
            out[et] = {
                "edges": self.num_edges(et),
                "min": int(d.min()),
                "mean": float(d.mean()),
                "median": float(d.median()),
                "max": int(d.max()),
                "zero": int((d == 0).sum()),
            }
        return out

    # ------------------------------------------------------------------ devices
    def _map_tensors(self, fn) -> "HeteroGraph":
        mp = lambda t: None if t is None else fn(t)  # noqa: E731
        return HeteroGraph(
            node_types=list(self.node_types),
            edge_types=list(self.edge_types),
            num_nodes=dict(self.num_nodes),
            csc={et: CSC(*(fn(x) for x in c)) for et, c in self.csc.items()},
            reverse_of=dict(self.reverse_of),
            num_eids=dict(self.num_eids),
            raw_ids=dict(self.raw_ids),
            text=dict(self.text),
            labels={t: mp(v) for t, v in self.labels.items()},
            label_names=dict(self.label_names),
            masks={t: {s: fn(m) for s, m in ms.items()} for t, ms in self.masks.items()},
            edge_labels={et: mp(v) for et, v in self.edge_labels.items()},
            edge_label_names=dict(self.edge_label_names),
            edge_masks={et: {s: fn(m) for s, m in ms.items()} for et, ms in self.edge_masks.items()},
            tasks=[Task(**vars(t)) for t in self.tasks],
            lp_edges={k: {s: (fn(a), fn(b)) for s, (a, b) in v.items()} for k, v in self.lp_edges.items()},
            report=self.report,
            name=self.name,
        )

    def to(self, device, non_blocking: bool = False) -> "HeteroGraph":
        """A copy with every tensor on ``device`` (raw ids and text stay on the host)."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "HeteroGraph":
        """A copy with every CPU tensor in page-locked memory (for fast, asynchronous
        host-to-GPU copies). Without a CUDA device pinning is impossible and the graph is
        returned unchanged."""
        if not torch.cuda.is_available():
            return self
        return self._map_tensors(lambda t: t.pin_memory() if t.device.type == "cpu" else t)

    @property
    def device(self) -> torch.device:
        for c in self.csc.values():
            return c.indptr.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ comparison / repr
    def diff(self, other: "HeteroGraph") -> list[str]:
        """Differences from ``other`` (empty when the graphs are identical): structure,
        CSC arrays, node and edge data, tasks and link-prediction splits."""
        out: list[str] = []

        def teq(a, b):
            if a is None or b is None:
                return a is None and b is None
            return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.cpu(), b.cpu())

        for attr in ("node_types", "edge_types", "num_nodes", "reverse_of", "num_eids", "label_names",
                     "edge_label_names"):
            if getattr(self, attr) != getattr(other, attr):
                out.append(attr)
        if out:
            return out
        for et in self.edge_types:
            for name, a, b in zip(CSC._fields, self.csc[et], other.csc[et]):
                if not teq(a, b):
                    out.append(f"csc[{et}].{name}")
        for t in self.node_types:
            ra, rb = self.raw_ids.get(t), other.raw_ids.get(t)
            if (ra is None) != (rb is None) or (ra is not None and list(ra) != list(rb)):
                out.append(f"raw_ids[{t}]")
            if self.text.get(t) != other.text.get(t):
                out.append(f"text[{t}]")
            if not teq(self.labels.get(t), other.labels.get(t)):
                out.append(f"labels[{t}]")
            ma, mb = self.masks.get(t, {}), other.masks.get(t, {})
            if set(ma) != set(mb) or any(not teq(ma[s], mb[s]) for s in ma):
                out.append(f"masks[{t}]")
        for et in set(self.edge_labels) | set(other.edge_labels):
            if not teq(self.edge_labels.get(et), other.edge_labels.get(et)):
                out.append(f"edge_labels[{et}]")
        for et in set(self.edge_masks) | set(other.edge_masks):
            ma, mb = self.edge_masks.get(et, {}), other.edge_masks.get(et, {})
            if set(ma) != set(mb) or any(not teq(ma[s], mb[s]) for s in ma):
                out.append(f"edge_masks[{et}]")
        if [t.to_dict() for t in self.tasks] != [t.to_dict() for t in other.tasks]:
            out.append("tasks")
        if set(self.lp_edges) != set(other.lp_edges):
            out.append("lp_edges")
        else:
            for k, v in self.lp_edges.items():
                for s, (a, b) in v.items():
                    if s not in other.lp_edges[k] or not (teq(a, other.lp_edges[k][s][0])
                                                         and teq(b, other.lp_edges[k][s][1])):
                        out.append(f"lp_edges[{k}][{s}]")
        return out

    def equals(self, other: "HeteroGraph") -> bool:
        """Whether two graphs hold the same structure and data (see :meth:`diff`)."""
        return not self.diff(other)

    def __repr__(self) -> str:
        lines = [f"HeteroGraph(name={self.name!r}, device={self.device},"]
        lines.append(f"  nodes ({sum(self.num_nodes.values()):,} total):")
        for t in self.node_types:
            extra = []
            if self.text.get(t) is not None:
                extra.append("text")
            lab = self.labels.get(t)
            if lab is not None:
                names = self.label_names.get(t)
                n_cls = len(names) if names is not None else "?"
                extra.append(f"labels[{n_cls} classes{', multi-label' if lab.dim() == 2 else ''}]")
            if t in self.masks:
                extra.append("split " + "/".join(str(int(self.masks[t][s].sum())) for s in SPLITS))
            lines.append(f"    {t}: {self.num_nodes[t]:,}" + (f"  ({', '.join(extra)})" if extra else ""))
        lines.append(f"  relations ({len(self.edge_types)}, {self.num_edges():,} edges):")
        for r, et in enumerate(self.edge_types):
            extra = []
            if self.csc[et].indices.dtype == torch.int32:
                extra.append("int32")
            if self.edge_labels.get(et) is not None:
                extra.append("labels")
            if et in self.edge_masks:
                extra.append("split " + "/".join(str(int(self.edge_masks[et][s].sum())) for s in SPLITS))
            lines.append(f"    {r}: ({et[0]}, {et[1]}, {et[2]}): {self.num_edges(et):,}"
                         + (f"  ({', '.join(extra)})" if extra else ""))
        if self.tasks:
            lines.append("  tasks:")
            for t in self.tasks:
                target = t.node_type if t.node_type is not None else f"({', '.join(t.edge_type)})"
                cls = f", {t.num_classes} classes" if t.num_classes is not None else ""
                ml = ", multi-label" if t.multilabel else ""
                lines.append(f"    {t.name}: {t.type} on {target}{cls}{ml}")
        lines.append(")")
        return "\n".join(lines)


__all__ = ["CSC", "EdgeType", "HeteroGraph", "Task", "TASK_TYPES", "SPLITS", "REVERSE_PREFIX",
           "edge_type_str", "lookup_edge_type"]
