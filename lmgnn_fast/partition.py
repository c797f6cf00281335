"""Node partitions for graphs larger than one machine, and rows fetched from their owners.

A :class:`NodePartition` says which of ``P`` parts owns every node of one node type and
where the node's row sits in its owner's table; :func:`partition_graph` makes one per node
type. A :class:`PartitionedTable` spreads the ``[N, d]`` rows of one node type over the ranks
of a job — rank ``p`` holds only the rows of the nodes part ``p`` owns — and
:meth:`PartitionedTable.fetch` returns the rows of any node ids through two
``torch.distributed`` all-to-alls (the ids to their owners, the rows back), so every rank
reads the whole table while holding ``1/P`` of it.

Partitioning methods: ``"contiguous"`` (balanced id ranges: node ids that were numbered
with locality keep it) and ``"random"`` (a seeded balanced shuffle). Neither minimizes the
edge cut; a min-cut partitioner (METIS-style or a streaming heuristic) is not part of this
module yet.

Example (under ``torchrun``, every rank)::

    part = partition_graph(graph, ctx.world_size)["paper"]
    table = PartitionedTable(part, 384, ctx)
    table.write(part.owned(ctx.rank), my_rows)   # each owner writes its rows
    rows = table.fetch(ids)                      # [len(ids), 384] == full_table[ids]
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from lmgnn_fast.distributed import DistContext

__all__ = ["NodePartition", "PartitionedTable", "partition_graph", "local_graph", "METHODS"]

METHODS = ("contiguous", "random")


class NodePartition:
    """Owner of every node of one node type among ``num_parts`` parts.

    Args:
        owner: Tensor  # [N] integer part of every node, in ``[0, num_parts)``
        num_parts: ``P``.

    Attributes:
        owner: Tensor  # [N] int64
        local: Tensor  # [N] int64, the row of each node in its owner's table (owners keep
            their nodes in increasing id order)
        counts: Tensor  # [P] int64, nodes per part

    Raises:
        ValueError: ``num_parts < 1``, or an owner outside ``[0, num_parts)``.
    """

    def __init__(self, owner: Tensor, num_parts: int):
        if num_parts < 1:
            raise ValueError(f"NodePartition: num_parts must be >= 1, got {num_parts}")
        owner = torch.as_tensor(owner)
        if owner.dim() != 1 or owner.dtype.is_floating_point or owner.dtype == torch.bool:
            raise ValueError(f"NodePartition: owner must be a 1-D integer tensor, got {owner.dtype} "
                             f"of shape {tuple(owner.shape)}")
        owner = owner.long()
        if owner.numel():
            lo, hi = int(owner.min()), int(owner.max())
            bad = lo if lo < 0 else hi if hi >= num_parts else None
            if bad is not None:
                raise ValueError(f"NodePartition: owner {bad} out of range for {num_parts} parts")
        self.owner = owner
        self.num_parts = int(num_parts)
        self.counts = torch.bincount(owner, minlength=num_parts)
        self._starts = torch.cumsum(self.counts, 0) - self.counts
        self._order = torch.argsort(owner, stable=True)  # ids grouped by owner, increasing inside
        self.local = torch.empty_like(owner)
        self.local[self._order] = torch.arange(owner.numel()) - self._starts[owner[self._order]]

    @property
    def num_nodes(self) -> int:
        return int(self.owner.numel())

    def owned(self, part: int) -> Tensor:
        """Tensor  # [counts[part]] int64, the ids ``part`` owns, increasing."""
        if not 0 <= part < self.num_parts:
            raise ValueError(f"NodePartition.owned: part {part} out of range for {self.num_parts} parts")
        s = int(self._starts[part])
        return self._order[s:s + int(self.counts[part])]

    @classmethod
    def contiguous(cls, num_nodes: int, num_parts: int) -> "NodePartition":
        """Balanced contiguous id ranges (part sizes differ by at most one)."""
        return cls(torch.arange(num_nodes) * num_parts // max(num_nodes, 1), num_parts)

    @classmethod
    def random(cls, num_nodes: int, num_parts: int, seed: int = 0) -> "NodePartition":
        """A seeded balanced shuffle (part sizes differ by at most one)."""
        perm = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(int(seed)))
        owner = torch.empty(num_nodes, dtype=torch.long)
        owner[perm] = torch.arange(num_nodes) % num_parts
        return cls(owner, num_parts)


def partition_graph(graph, num_parts: int, method: str = "contiguous", seed: int = 0) -> dict[str, NodePartition]:
    """One :class:`NodePartition` per node type of ``graph`` (``node_types``, ``num_nodes``).

    Args:
        graph: a ``HeteroGraph``.
        num_parts: ``P``, e.g. the number of machines or ranks.
        method: ``"contiguous"`` or ``"random"`` (see the module docstring).
        seed: seed of ``"random"`` (node type ``i`` uses ``seed + i``).

    Raises:
        ValueError: an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"partition_graph: method must be one of {METHODS}, got {method!r}")
    out = {}
    for i, t in enumerate(graph.node_types):
        n = int(graph.num_nodes[t])
        out[t] = (NodePartition.contiguous(n, num_parts) if method == "contiguous"
                  else NodePartition.random(n, num_parts, seed + i))
    return out


def local_graph(graph, parts: dict[str, NodePartition], rank: int):
    """The part of ``graph``'s structure that rank ``rank`` stores: per relation the in-edges
    of the destination nodes it owns.

    A shallow copy of ``graph`` (node data shared) whose CSC keeps, per relation, the
    neighbour lists of owned destinations unchanged (same order, same edge ids) and empty
    lists for the others; ``indptr`` keeps its full length (8 B per destination node). The
    sampler's draws depend on the seed, the hop, the relation and the node id only, so an
    owner sampling its own nodes on this graph draws exactly what a single process draws on
    the whole graph (hop ``h`` of a frontier: fanouts ``[0] * h + [f]``).

    Args:
        graph: a ``HeteroGraph``.
        parts: a partition per node type (:func:`partition_graph`).
        rank: the part to keep.

    Returns:
        the ``HeteroGraph`` of part ``rank``.
    """
    import copy

    from lmgnn_fast.graph import CSC

    g = copy.copy(graph)
    g.csc = {}
    for et, c in graph.csc.items():
        own = parts[et[2]].owner == rank  # [N_dst]
        deg = c.indptr[1:] - c.indptr[:-1]
        indptr = torch.zeros_like(c.indptr)
        indptr[1:] = torch.cumsum(torch.where(own, deg, torch.zeros_like(deg)), 0)
        keep = torch.repeat_interleave(own, deg)  # [E]
        g.csc[et] = CSC(indptr, c.indices[keep], c.eid[keep])
    return g


class PartitionedTable:
    """The ``[N, dim]`` rows of one node type spread over the ranks by a partition.

    Rank ``p`` holds ``rows``: the rows of ``part.owned(p)`` in that order. Every rank
    writes only rows it owns (:meth:`write`) and reads any rows (:meth:`fetch`, collective).

    Args:
        part: the partition; ``part.num_parts`` must equal the job's world size.
        dim: row width.
        ctx: the job context (one process: the whole table is local).
        dtype: row dtype.
        device: where the local rows live (the communication device follows the backend).

    Attributes:
        rows: Tensor  # [counts[rank], dim] this rank's rows.
        ids: Tensor  # [counts[rank]] the node ids of ``rows``.
    """

    def __init__(self, part: NodePartition, dim: int, ctx: DistContext, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu"):
        if part.num_parts != ctx.world_size:
            raise ValueError(f"PartitionedTable: the partition has {part.num_parts} parts but the job has "
                             f"{ctx.world_size} ranks")
        self.part, self.ctx, self.dim = part, ctx, int(dim)
        self.ids = part.owned(ctx.rank)
        self.rows = torch.zeros(self.ids.numel(), self.dim, dtype=dtype, device=device)
        self._comm = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
        self._stats = {"fetches": 0, "rows_local": 0, "rows_remote": 0, "bytes_sent": 0, "bytes_received": 0}

    def _check(self, ids: Tensor, op: str) -> Tensor:
        ids = torch.as_tensor(ids)
        if ids.dim() != 1 or ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"PartitionedTable.{op}: ids must be a 1-D int32/int64 tensor, got {ids.dtype} "
                             f"of shape {tuple(ids.shape)}")
        ids = ids.cpu().long()
        if ids.numel():
            lo, hi = int(ids.min()), int(ids.max())
            bad = lo if lo < 0 else hi if hi >= self.part.num_nodes else None
            if bad is not None:
                raise IndexError(f"PartitionedTable.{op}: id {bad} out of range for {self.part.num_nodes} nodes")
        return ids

    def write(self, ids: Tensor, rows: Tensor) -> None:
        """Write rows of nodes this rank owns.

        Args:
            ids: Tensor  # [K] node ids owned by this rank
            rows: Tensor  # [K, dim]

        Raises:
            ValueError: an id another rank owns, or rows of the wrong shape.
        """
        ids = self._check(ids, "write")
        if rows.shape != (ids.numel(), self.dim):
            raise ValueError(f"PartitionedTable.write: rows must have shape ({ids.numel()}, {self.dim}), "
                             f"got {tuple(rows.shape)}")
        other = self.part.owner[ids] != self.ctx.rank
        if bool(other.any()):
            i = int(ids[other][0])
            raise ValueError(f"PartitionedTable.write: node {i} is owned by rank {int(self.part.owner[i])}, "
                             f"not by rank {self.ctx.rank}")
        self.rows[self.part.local[ids].to(self.rows.device)] = rows.to(self.rows.device, self.rows.dtype)

    @torch.no_grad()
    def fetch(self, ids: Tensor) -> Tensor:
        """Rows of any node ids (collective: every rank calls it, possibly with no ids).

        The ids are grouped by owner, sent to their owners (one all-to-all of counts, one of
        row positions), and the owners' rows come back in a third all-to-all.

        Args:
            ids: Tensor  # [K] int32/int64, duplicates allowed

        Returns:
            Tensor  # [K, dim] on the rows' device, equal to the full table's ``[ids]``
        """
        ids = self._check(ids, "fetch")
        owner = self.part.owner[ids]
        local = self.part.local[ids]
        me = self.ctx.rank
        self._stats["fetches"] += 1
        n_local = int((owner == me).sum())
        self._stats["rows_local"] += n_local
        self._stats["rows_remote"] += ids.numel() - n_local
        if not self.ctx.is_distributed:
            return self.rows[local.to(self.rows.device)]
        order = torch.argsort(owner, stable=True)
        send = torch.bincount(owner, minlength=self.ctx.world_size)
        recv = torch.empty(self.ctx.world_size, dtype=torch.long, device=self._comm)
        dist.all_to_all_single(recv, send.to(self._comm))
        send_l, recv_l = send.tolist(), recv.tolist()
        want = torch.empty(sum(recv_l), dtype=torch.long, device=self._comm)
        dist.all_to_all_single(want, local[order].to(self._comm), recv_l, send_l)
        answer = self.rows[want.to(self.rows.device)].to(self._comm)
        got = torch.empty(ids.numel(), self.dim, dtype=self.rows.dtype, device=self._comm)
        dist.all_to_all_single(got, answer, send_l, recv_l)
        out = torch.empty_like(got)
        out[order.to(self._comm)] = got
        row_bytes = self.dim * self.rows.element_size()
        asked, answered = sum(send_l) - send_l[me], sum(recv_l) - recv_l[me]  # rows to / from others
        self._stats["bytes_sent"] += asked * 8 + answered * row_bytes
        self._stats["bytes_received"] += answered * 8 + asked * row_bytes
        return out.to(self.rows.device)

    def stats(self) -> dict:
        """Counters since creation: ``fetches``, ``rows_local`` / ``rows_remote`` (requested
        rows this rank owns / others own) and ``bytes_sent`` / ``bytes_received`` to and from
        other ranks (ids and rows)."""
        return dict(self._stats)
