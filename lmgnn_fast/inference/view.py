"""The run's graph as one request sees it: plus the request's new nodes and edges.

:class:`NodeIndex` maps raw ids to node indices (the run's nodes, then the request's);
:func:`extend_csc` rebuilds the CSC of the relations a request's edges touch;
:class:`GraphView` is what the models read: node counts and CSC (the sampler's view of a
graph) and the LM rows of every node, the request's new ones included. Nothing of a request
is kept: each builds its own view over the unchanged run.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lmgnn_fast.graph import CSC, EdgeType, edge_type_str
from lmgnn_fast.ops import coo_to_csc
from lmgnn_fast.ops.convert import csc_to_coo

__all__ = ["PredictError", "NodeIndex", "GraphView", "extend_csc", "parse_edge_type"]


class PredictError(ValueError):
    """A request the run cannot answer (unknown node type, relation or id, a node type
    without text, a task without such scores); the message names the field and value."""


def parse_edge_type(key, edge_types, where: str) -> EdgeType:
    """A relation given as ``(src, rel, dst)``, ``[src, rel, dst]`` or ``"src__rel__dst"``,
    checked to be one of ``edge_types``."""
    et = tuple(key.split("__")) if isinstance(key, str) else tuple(key)
    if et not in [tuple(e) for e in edge_types]:
        raise PredictError(f"{where}: unknown relation {list(et)}; the run's relations are "
                           f"{[list(e) for e in edge_types]}")
    return et  # type: ignore[return-value]


class NodeIndex:
    """Raw id -> node index of the run's graph, per node type (built on first use).

    Args:
        graph: the run's graph.
    """

    def __init__(self, graph):
        self.graph = graph
        self._index: dict[str, dict] = {}
        self._int_ids = {t: not isinstance((graph.raw_ids or {}).get(t), list) for t in graph.node_types}

    def check_type(self, t: str, where: str) -> None:
        """Raise :class:`PredictError` unless ``t`` is a node type of the graph."""
        if t not in self.graph.node_types:
            raise PredictError(f"{where}: unknown node type {t!r}; the run's node types are "
                               f"{self.graph.node_types}")

    def key(self, t: str, v, where: str):
        """``v`` as a key of type ``t``'s ids (an integer for integer ids, else a string)."""
        if self._int_ids[t]:
            try:
                if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                    raise ValueError
                return int(v)
            except (TypeError, ValueError):
                raise PredictError(f"{where}: id {v!r} is not an integer (node type {t!r} has integer ids)") from None
        if isinstance(v, (dict, list)):
            raise PredictError(f"{where}: id {v!r} is not a string")
        return str(v)

    def known(self, t: str) -> dict:
        """``{key: index}`` of the nodes of type ``t`` of the run's graph."""
        idx = self._index.get(t)
        if idx is None:
            raw = (self.graph.raw_ids or {}).get(t)
            n = self.graph.num_nodes[t]
            keys = range(n) if raw is None else (int(x) if self._int_ids[t] else str(x) for x in raw)
            idx = self._index[t] = {k: i for i, k in enumerate(keys)}
        return idx

    def lookup(self, t: str, v, where: str, new: dict | None = None) -> int:
        """The index of node ``v`` of type ``t``: a node of the run's graph, else one of the
        request's new nodes (``new``: ``{type: {key: index}}``)."""
        k = self.key(t, v, where)
        i = self.known(t).get(k)
        if i is None and new is not None:
            i = new.get(t, {}).get(k)
        if i is None:
            raise PredictError(f"{where}: id {v!r} is neither a node of type {t!r} of the run's graph "
                               "nor a new node of the request")
        return i


def extend_csc(base: CSC, num_dst: int, src: Tensor, dst: Tensor, coo: tuple[Tensor, Tensor] | None) -> CSC:
    """``base`` over ``num_dst`` destinations with edges ``(src, dst)`` added (new edge ids
    after the largest of ``base``).

    Args:
        base: a relation's CSC over the run's graph.
        num_dst: destination count with the request's new nodes.
        src, dst: ``[E_new]`` int64 node indices of the added edges.
        coo: ``(src, dst)`` of ``base`` (from :func:`csc_to_coo`), or ``None`` to compute it.
    """
    if src.numel() == 0:
        pad = num_dst + 1 - base.indptr.numel()
        indptr = base.indptr if pad == 0 else torch.cat([base.indptr, base.indptr[-1:].expand(pad)])
        return CSC(indptr, base.indices, base.eid)
    s0, d0 = coo if coo is not None else csc_to_coo(base.indptr, base.indices)
    first = int(base.eid.max()) + 1 if base.eid.numel() else 0
    eid = torch.cat([base.eid[base.indptr[0]:base.indptr[-1]], first + torch.arange(src.numel())])
    indptr, indices, perm = coo_to_csc(torch.cat([s0.long(), src]), torch.cat([d0.long(), dst]), num_dst)
    return CSC(indptr, indices.to(base.indices.dtype), eid[perm])


class GraphView:
    """The run's graph plus a request's new nodes (appended after each type's nodes) and
    edges: what the sampler and the models read.

    Attributes:
        graph: the run's graph (unchanged).
        node_types, edge_types, reverse_of: the run's.
        num_nodes: node counts with the request's new nodes.
        csc: per relation the message-passing CSC with the request's edges.
        new_rows: per text node type, the LM rows ``[n_new, H]`` of the new nodes.
        added: per relation the added edges ``(src, dst)`` (node indices), reverses included.
    """

    def __init__(self, graph, table: dict[str, Tensor], num_nodes: dict[str, int] | None = None,
                 new_rows: dict[str, Tensor] | None = None, added: dict[EdgeType, tuple[Tensor, Tensor]] | None = None,
                 coo=None):
        self.graph = graph
        self.node_types, self.edge_types = graph.node_types, graph.edge_types
        self.reverse_of = getattr(graph, "reverse_of", {}) or {}
        self.num_nodes = dict(num_nodes or graph.num_nodes)
        self.new_rows = new_rows or {}
        self.added = added or {}
        self._table = table
        if self.num_nodes == graph.num_nodes and not self.added:
            self.csc = graph.csc
        else:
            none = torch.empty(0, dtype=torch.long)
            self.csc = {et: extend_csc(graph.csc[et], self.num_nodes[et[2]], *self.added.get(et, (none, none)),
                                       coo(et) if coo is not None and et in self.added else None)
                        for et in graph.edge_types}

    @property
    def is_extended(self) -> bool:
        """Whether the request added nodes or edges."""
        return self.csc is not self.graph.csc

    def lm_rows(self, t: str, ids: Tensor) -> Tensor:
        """LM rows ``[len(ids), H]`` of nodes ``ids`` of text type ``t`` (the run's nodes from
        the table, new nodes from :attr:`new_rows`)."""
        table = self._table[t]
        ids = ids.to(table.device)
        n0 = self.graph.num_nodes[t]
        if ids.numel() == 0 or int(ids.max()) < n0:
            return table[ids]
        old = ids < n0
        rows = torch.empty(ids.numel(), table.shape[1], device=table.device, dtype=table.dtype)
        rows[old] = table[ids[old]]
        rows[~old] = self.new_rows[t].to(table.device, table.dtype)[ids[~old] - n0]
        return rows

    def features(self, block) -> dict[str, Tensor]:
        """Input rows of a block's source nodes for every text type with a table."""
        return {t: self.lm_rows(t, block.src_nodes[t]) for t in self._table}

    def __repr__(self) -> str:
        extra = {t: self.num_nodes[t] - self.graph.num_nodes[t] for t in self.node_types
                 if self.num_nodes[t] != self.graph.num_nodes[t]}
        return f"GraphView(new nodes {extra}, new edges " \
               f"{ {edge_type_str(et): int(s.numel()) for et, (s, _) in self.added.items()} })"
