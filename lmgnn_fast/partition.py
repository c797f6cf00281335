"""Node partitions for graphs larger than one machine, and rows fetched from their owners.

A :class:`NodePartition` says which of ``P`` parts owns every node of one node type and
where the node's row sits in its owner's table; :func:`partition_graph` makes one per node
type. A :class:`PartitionedTable` spreads the ``[N, d]`` rows of one node type over the ranks
of a job — rank ``p`` holds only the rows of the nodes part ``p`` owns — and
:meth:`PartitionedTable.fetch` returns the rows of any node ids through
``torch.distributed`` all-to-alls (the ids to their owners, the rows back), so every rank
reads the whole table while holding ``1/P`` of it, optionally with a per-rank cache of hot
remote rows. :func:`local_graph` cuts a rank's part of the structure, which
``lmgnn_fast.sampling.distributed.DistNeighborSampler`` samples from.

Partitioning methods: ``"metis"`` (a min-edge-cut partition of the graph made homogeneous
and undirected, computed by METIS through the ``pymetis`` package — the optional extra
``partition`` — balanced per node type and optionally by training seeds or degree),
``"contiguous"`` (balanced id ranges: node ids that were numbered with locality keep it)
and ``"random"`` (a seeded balanced shuffle). :func:`partition_stats` reports the edge cut
and the balance of any partition.

Example (under ``torchrun``, every rank)::

    part = partition_graph(graph, ctx.world_size, method="metis")["paper"]
    table = PartitionedTable(part, 384, ctx, cache_capacity=100_000)
    table.write(part.owned(ctx.rank), my_rows)   # each owner writes its rows
    rows = table.fetch(ids)                      # [len(ids), 384] == full_table[ids]
    table.scatter(ids, new_rows)                 # any rank writes any rows; owners store them
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from lmgnn_fast.distributed import DistContext, all_gather_variable
from lmgnn_fast.ops.cache import cache_admit, cache_lookup

__all__ = ["NodePartition", "PartitionedTable", "partition_graph", "partition_stats", "local_graph",
           "homogeneous_adjacency", "METHODS", "BALANCE"]

METHODS = ("contiguous", "random", "metis")
BALANCE = ("nodes", "train", "degree")


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


def partition_graph(graph, num_parts: int, method: str = "contiguous", seed: int = 0,
                    balance: Sequence[str] = ("nodes",), max_imbalance: float = 1.05) -> dict[str, NodePartition]:
    """One :class:`NodePartition` per node type of ``graph`` (``node_types``, ``num_nodes``).

    Args:
        graph: a ``HeteroGraph``.
        num_parts: ``P``, e.g. the number of machines or ranks; ``1 <= P <=`` the graph's
            node count (all types together).
        method: ``"metis"``, ``"contiguous"`` or ``"random"`` (see the module docstring).
        seed: seed of ``"random"`` (node type ``i`` uses ``seed + i``) and of METIS.
        balance: ``"metis"`` only: what every part gets an equal share of, one METIS balance
            constraint each: ``"nodes"`` — the nodes of every node type (one constraint per
            type), ``"train"`` — the training seeds (nodes in a ``train`` mask, all types
            together), ``"degree"`` — the edges (every node weighted by its degree over all
            relations). The partition is made by METIS's recursive bisection (its k-way
            scheme left parts ~40 % over the mean with one constraint per type).
        max_imbalance: ``"metis"`` with ``"nodes"`` balance: METIS still leaves some node
            type's parts up to ~30 % over the mean on large graphs, so afterwards, per node
            type, nodes of parts above ``max_imbalance`` x the mean move to parts below it,
            those whose move increases the cut least first. ``"train"`` and ``"degree"``
            are balanced by METIS alone (:func:`partition_stats` reports the result).

    Raises:
        ValueError: an unknown method or balance, or ``num_parts`` out of range.
        ImportError: ``"metis"`` without the ``pymetis`` package.
    """
    if method not in METHODS:
        raise ValueError(f"partition_graph: method must be one of {METHODS}, got {method!r}")
    if not max_imbalance >= 1.0:
        raise ValueError(f"partition_graph: max_imbalance must be >= 1.0, got {max_imbalance}")
    total = sum(int(graph.num_nodes[t]) for t in graph.node_types)
    if not 1 <= num_parts <= max(total, 1):
        raise ValueError(f"partition_graph: num_parts must be in [1, {max(total, 1)}] (the graph's node "
                         f"count), got {num_parts}")
    if method == "metis":
        return _partition_metis(graph, int(num_parts), int(seed), balance, float(max_imbalance))
    out = {}
    for i, t in enumerate(graph.node_types):
        n = int(graph.num_nodes[t])
        out[t] = (NodePartition.contiguous(n, num_parts) if method == "contiguous"
                  else NodePartition.random(n, num_parts, seed + i))
    return out


def _import_pymetis():
    try:
        import pymetis
    except ImportError as exc:
        raise ImportError("partition_graph: method='metis' needs the 'pymetis' package, which is not "
                          "installed; install it with pip install 'lmgnn_fast[partition]' (from a "
                          "checkout: pip install '.[partition]') or pip install pymetis") from exc
    return pymetis


def _type_offsets(graph) -> dict[str, int]:
    off, out = 0, {}
    for t in graph.node_types:
        out[t] = off
        off += int(graph.num_nodes[t])
    return out


def homogeneous_adjacency(graph) -> tuple[Tensor, Tensor, Tensor]:
    """All relations of ``graph`` as one undirected graph over all its nodes.

    Node ``i`` of type ``graph.node_types[k]`` becomes ``offset_k + i`` (the node counts of
    the types before it summed). Every CSC entry ``u -> v`` of every relation links ``u``
    and ``v`` both ways; parallel entries (several relations, a relation and its reverse)
    merge into one edge whose weight is their count; self-loops are dropped.

    Returns:
        xadj: Tensor  # [N + 1] int64 row pointers (N = all nodes)
        adjncy: Tensor  # [2M] int64 neighbours, increasing within a row
        weight: Tensor  # [2M] int64 edge weights (CSC entries between the two nodes)
    """
    off = _type_offsets(graph)
    n = sum(int(graph.num_nodes[t]) for t in graph.node_types)
    us, vs = [], []
    for et, c in graph.csc.items():
        deg = c.indptr[1:] - c.indptr[:-1]
        dst = torch.repeat_interleave(torch.arange(deg.numel(), dtype=torch.long), deg.cpu()) + off[et[2]]
        src = c.indices.cpu().long() + off[et[0]]
        us += [src, dst]
        vs += [dst, src]
    u = torch.cat(us) if us else torch.empty(0, dtype=torch.long)
    v = torch.cat(vs) if vs else torch.empty(0, dtype=torch.long)
    keep = u != v
    key, weight = torch.unique(u[keep] * max(n, 1) + v[keep], return_counts=True)  # sorted by (u, v)
    xadj = torch.zeros(n + 1, dtype=torch.long)
    xadj[1:] = torch.cumsum(torch.bincount(key // max(n, 1), minlength=n), 0)
    return xadj, key % max(n, 1), weight


def _rebalance(owner: Tensor, lo: int, hi: int, xadj: Tensor, adjncy: Tensor, weight: Tensor, num_parts: int,
               max_imbalance: float) -> None:
    """Move nodes ``lo..hi-1`` (one node type) out of parts holding more than
    ``max_imbalance`` x the mean, least cut increase first, into parts under that cap.

    ``owner``: Tensor  # [N] the part of every node, updated in place. Gains are taken from
    the assignment before any move (one greedy pass; enough room always exists since the cap
    is at least the mean).
    """
    n_t = hi - lo
    cap = max(-(-n_t // num_parts), int(n_t / num_parts * max_imbalance))
    counts = torch.bincount(owner[lo:hi], minlength=num_parts)
    over = counts > cap
    if n_t == 0 or not bool(over.any()):
        return
    cand = lo + torch.nonzero(over[owner[lo:hi]]).flatten()  # [C] nodes in overfull parts
    deg = xadj[cand + 1] - xadj[cand]
    start = torch.repeat_interleave(xadj[cand] - (torch.cumsum(deg, 0) - deg), deg)
    pos = start + torch.arange(int(deg.sum()))  # adjacency positions of the candidates
    row = torch.repeat_interleave(torch.arange(cand.numel()), deg)
    conn = torch.zeros(cand.numel(), num_parts, dtype=torch.long)  # [C, P] edge weight into each part
    conn.index_put_((row, owner[adjncy[pos]]), weight[pos], accumulate=True)
    home = owner[cand]
    gain = (conn - conn[torch.arange(cand.numel()), home][:, None]).double()  # cut saved by moving to q
    gain[:, over] = float("-inf")
    order = torch.argsort(gain.max(1).values, descending=True, stable=True).tolist()
    excess = (counts - cap).clamp(min=0).tolist()
    room = (cap - counts).clamp(min=0).tolist()
    gain_np, home_l, moved = gain.numpy(), home.tolist(), {}
    left = sum(excess)
    for i in order:
        if left == 0:
            break
        if excess[home_l[i]] == 0:
            continue
        q = max((q for q in range(num_parts) if room[q] > 0), key=lambda q: gain_np[i, q])
        moved[int(cand[i])] = q
        excess[home_l[i]] -= 1
        room[q] -= 1
        left -= 1
    ids = torch.tensor(list(moved), dtype=torch.long)
    owner[ids] = torch.tensor(list(moved.values()), dtype=torch.long)


def _partition_metis(graph, num_parts: int, seed: int, balance: Sequence[str],
                     max_imbalance: float) -> dict[str, NodePartition]:
    balance = [balance] if isinstance(balance, str) else list(balance)
    bad = [b for b in balance if b not in BALANCE]
    if bad or not balance:
        raise ValueError(f"partition_graph: balance must name one or more of {BALANCE}, got {balance!r}")
    pymetis = _import_pymetis()
    off = _type_offsets(graph)
    n = sum(int(graph.num_nodes[t]) for t in graph.node_types)
    xadj, adjncy, weight = homogeneous_adjacency(graph)
    cons = []  # [N] integer weights, one per balance constraint
    if "nodes" in balance:
        for t in graph.node_types:
            w = torch.zeros(n, dtype=torch.long)
            w[off[t]:off[t] + int(graph.num_nodes[t])] = 1
            cons.append(w)
    if "train" in balance:
        w = torch.zeros(n, dtype=torch.long)
        for t in graph.node_types:
            m = (graph.masks or {}).get(t, {}).get("train")
            if m is not None:
                w[off[t]:off[t] + int(graph.num_nodes[t])] = torch.as_tensor(m).cpu().long()
        cons.append(w)
    if "degree" in balance:
        cons.append(xadj[1:] - xadj[:-1] + 1)  # +1: an isolated node still weighs something
    cons = [w for w in cons if int(w.sum()) > 0]  # an empty type or no train mask constrains nothing
    vweights = torch.stack(cons, 1).reshape(-1).numpy() if cons else None
    res = pymetis.part_graph(num_parts, pymetis.CSRAdjacency(xadj.numpy(), adjncy.numpy()),
                             vweights=vweights, eweights=weight.numpy() if weight.numel() else None,
                             options=pymetis.Options(seed=seed), recursive=True)
    owner = torch.from_numpy(np.asarray(res.vertex_part, dtype=np.int64)).clone()  # [N]
    if "nodes" in balance:
        for t in graph.node_types:
            _rebalance(owner, off[t], off[t] + int(graph.num_nodes[t]), xadj, adjncy, weight, num_parts,
                       max_imbalance)
    return {t: NodePartition(owner[off[t]:off[t] + int(graph.num_nodes[t])].clone(), num_parts)
            for t in graph.node_types}


def partition_stats(graph, parts: Mapping[str, NodePartition]) -> dict:
    """Edge cut and balance of a partition of ``graph``.

    An edge (a CSC entry ``src -> dst`` of a relation) is cut when its two ends have
    different owners: sampling it from the destination's owner needs the source's row (and,
    one hop further, its neighbour list) from another part.

    Args:
        graph: a ``HeteroGraph``.
        parts: a partition per node type (:func:`partition_graph`).

    Returns:
        ``{"edges", "cut", "cut_fraction"}`` over all relations; ``"relations"``: the same
        per relation (key ``"src__rel__dst"``); ``"node_types"``: the same per node type,
        over the in-edges of its nodes (the edges its owners store); ``"nodes_per_part"``: per node type and
        ``"all"``, the node count of every part; ``"balance"``: per node type and ``"all"``,
        the largest part over the mean part (1.0 = perfectly balanced).
    """
    def _cut(e: int, k: int) -> dict:
        return {"edges": e, "cut": k, "cut_fraction": k / e if e else 0.0}

    rel, by_type = {}, {t: [0, 0] for t in graph.node_types}
    for et, c in graph.csc.items():
        deg = c.indptr[1:] - c.indptr[:-1]
        own_dst = torch.repeat_interleave(parts[et[2]].owner, deg.cpu())
        k = int((parts[et[0]].owner[c.indices.cpu().long()] != own_dst).sum())
        e = int(c.indices.numel())
        rel["__".join(et)] = _cut(e, k)
        by_type[et[2]][0] += e
        by_type[et[2]][1] += k
    edges, cut = sum(e for e, _ in by_type.values()), sum(k for _, k in by_type.values())
    num_parts = next(iter(parts.values())).num_parts if parts else 1
    counts = {t: parts[t].counts for t in graph.node_types}
    counts["all"] = sum(counts.values(), torch.zeros(num_parts, dtype=torch.long))

    def _balance(c: Tensor) -> float:
        return float(c.max()) / (float(c.sum()) / c.numel()) if int(c.sum()) else 1.0

    return {**_cut(edges, cut), "relations": rel, "node_types": {t: _cut(e, k) for t, (e, k) in by_type.items()},
            "nodes_per_part": {t: c.tolist() for t, c in counts.items()},
            "balance": {t: _balance(c) for t, c in counts.items()}}


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
    With ``cache_capacity > 0`` each rank also keeps up to that many rows owned by other
    ranks (the hot remote rows, admitted on miss and evicted by ``cache_policy`` through the
    embedding cache's ops ``lmgnn::cache_lookup`` / ``lmgnn::cache_admit``), so a remote row
    read again is not moved again.

    Args:
        part: the partition; ``part.num_parts`` must equal the job's world size.
        dim: row width.
        ctx: the job context (one process: the whole table is local).
        dtype: row dtype.
        device: where the local rows and the cache live (the communication device follows
            the backend).
        cache_capacity: remote rows cached per rank (0: no cache).
        cache_policy: ``"clock"`` or ``"lru"`` eviction.

    Attributes:
        rows: Tensor  # [counts[rank], dim] this rank's rows.
        ids: Tensor  # [counts[rank]] the node ids of ``rows``.
    """

    def __init__(self, part: NodePartition, dim: int, ctx: DistContext, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", cache_capacity: int = 0, cache_policy: str = "clock"):
        if part.num_parts != ctx.world_size:
            raise ValueError(f"PartitionedTable: the partition has {part.num_parts} parts but the job has "
                             f"{ctx.world_size} ranks")
        if cache_policy not in ("clock", "lru"):
            raise ValueError(f"PartitionedTable: cache_policy must be 'clock' or 'lru', got {cache_policy!r}")
        if isinstance(cache_capacity, bool) or int(cache_capacity) < 0:
            raise ValueError(f"PartitionedTable: cache_capacity must be an int >= 0, got {cache_capacity!r}")
        self.part, self.ctx, self.dim = part, ctx, int(dim)
        self.ids = part.owned(ctx.rank)
        self.rows = torch.zeros(self.ids.numel(), self.dim, dtype=dtype, device=device)
        self._comm = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
        # the cache of remote rows: the embedding cache's state layout (see lmgnn_fast.ops.cache)
        cap = min(int(cache_capacity), part.num_nodes - self.ids.numel())
        self.cache_capacity, self.cache_policy = cap, cache_policy
        dev, h = self.rows.device, 2
        while h < 2 * cap:
            h *= 2
        self._keys = torch.full((h,), -1, dtype=torch.long, device=dev)
        self._vals = torch.zeros(h, dtype=torch.long, device=dev)
        self._slot_ids = torch.full((cap,), -1, dtype=torch.long, device=dev)
        self._meta = torch.zeros(cap, dtype=torch.long, device=dev)
        self._cached = torch.zeros(cap, self.dim, dtype=dtype, device=dev)
        self._state = torch.zeros(4, dtype=torch.long, device=dev)
        self._stats = {"fetches": 0, "rows_local": 0, "rows_remote": 0, "hits": 0, "misses": 0,
                       "rows_moved": 0, "rows_scattered": 0, "bytes_sent": 0, "bytes_received": 0}

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

        Other ranks' cached copies of these rows are not updated: after owners rewrite
        rows (an embedding refresh), every rank calls :meth:`clear_cache`.

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
    def scatter(self, ids: Tensor, rows: Tensor, refresh_cached: bool = True) -> None:
        """Write rows of any node ids (collective: every rank calls it, possibly with no ids).

        Each row goes to its owner (one all-to-all of counts, one of row positions, one of
        rows), which writes it; rows of one id sent by several ranks are written in rank
        order (the last wins, as when every rank writes every rank's rows in rank order).
        With ``refresh_cached`` the written ids are all-gathered and every rank re-reads
        from the owners the ones it holds in its remote-row cache, so no rank reads a stale
        copy (after writing every row, :meth:`clear_cache` is cheaper: pass ``False``).

        Args:
            ids: Tensor  # [K] int32/int64 node ids of any owner
            rows: Tensor  # [K, dim]
            refresh_cached: re-read the cached copies of the written rows (must be the same
                on every rank).

        Raises:
            ValueError: rows of the wrong shape. IndexError: an id outside ``[0, N)``.
        """
        ids = self._check(ids, "scatter")
        if rows.shape != (ids.numel(), self.dim):
            raise ValueError(f"PartitionedTable.scatter: rows must have shape ({ids.numel()}, {self.dim}), "
                             f"got {tuple(rows.shape)}")
        if not self.ctx.is_distributed:
            self.rows[self.part.local[ids].to(self.rows.device)] = rows.to(self.rows.device, self.rows.dtype)
            return
        owner = self.part.owner[ids]
        me, W = self.ctx.rank, self.ctx.world_size
        order = torch.argsort(owner, stable=True)
        send = torch.bincount(owner, minlength=W)
        recv = torch.empty(W, dtype=torch.long, device=self._comm)
        dist.all_to_all_single(recv, send.to(self._comm))
        send_l, recv_l = send.tolist(), recv.tolist()
        pos = torch.empty(sum(recv_l), dtype=torch.long, device=self._comm)
        dist.all_to_all_single(pos, self.part.local[ids][order].to(self._comm), recv_l, send_l)
        got = torch.empty(sum(recv_l), self.dim, dtype=self.rows.dtype, device=self._comm)
        dist.all_to_all_single(got, rows[order.to(rows.device)].to(self._comm, self.rows.dtype), recv_l, send_l)
        self.rows[pos.to(self.rows.device)] = got.to(self.rows.device)
        row_bytes = self.dim * self.rows.element_size()
        n_out, n_in = sum(send_l) - send_l[me], sum(recv_l) - recv_l[me]
        self._stats["rows_scattered"] += n_out
        self._stats["bytes_sent"] += n_out * (8 + row_bytes)
        self._stats["bytes_received"] += n_in * (8 + row_bytes)
        if not refresh_cached:
            return
        written = all_gather_variable(ids.to(self._comm), self.ctx).cpu()
        if self.cache_capacity > 0 and written.numel():
            written = torch.unique(written)
            slots = cache_lookup(written.to(self.rows.device), self._keys, self._vals, self.part.num_nodes).cpu()
            hit = slots >= 0
            stale, slots = written[hit], slots[hit]
        else:
            stale, slots = torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
        fresh = self._request(stale)  # collective even when this rank caches none of them
        self._cached[slots.to(self.rows.device)] = fresh

    def clear_cache(self) -> None:
        """Forget every cached remote row (call on every rank after owners rewrote rows)."""
        self._keys.fill_(-1)
        self._slot_ids.fill_(-1)
        self._meta.zero_()
        self._state.zero_()

    def cached_ids(self) -> Tensor:
        """Tensor  # [n] int64, the remote node ids now cached (in slot order)."""
        return self._slot_ids[self._slot_ids >= 0]

    @torch.no_grad()
    def fetch(self, ids: Tensor) -> Tensor:
        """Rows of any node ids (collective: every rank calls it, possibly with no ids).

        Local rows are read in place and cached remote rows from the cache; the remaining
        remote ids are deduplicated, grouped by owner and sent to their owners (one
        all-to-all of counts, one of row positions), the owners' rows come back in a third
        all-to-all and are admitted into the cache.

        Args:
            ids: Tensor  # [K] int32/int64, duplicates allowed

        Returns:
            Tensor  # [K, dim] on the rows' device, equal to the full table's ``[ids]``

        Raises:
            IndexError: an id outside ``[0, N)`` (named with the op and the value).
        """
        ids = self._check(ids, "fetch")
        owner = self.part.owner[ids]
        local = self.part.local[ids]
        me, dev = self.ctx.rank, self.rows.device
        self._stats["fetches"] += 1
        mine = owner == me
        n_local = int(mine.sum())
        self._stats["rows_local"] += n_local
        self._stats["rows_remote"] += ids.numel() - n_local
        out = torch.empty(ids.numel(), self.dim, dtype=self.rows.dtype, device=dev)
        out[mine.to(dev)] = self.rows[local[mine].to(dev)]
        if not self.ctx.is_distributed:
            return out
        rpos = torch.nonzero(~mine).flatten()  # [K_r] positions of remote ids
        rids = ids[rpos]
        if self.cache_capacity > 0 and rids.numel():
            slots = cache_lookup(rids.to(dev), self._keys, self._vals, self.part.num_nodes).cpu()
        else:
            slots = torch.full((rids.numel(),), -1, dtype=torch.long)
        hit = slots >= 0
        n_hit = int(hit.sum())
        self._stats["hits"] += n_hit
        self._stats["misses"] += rids.numel() - n_hit
        out[rpos[hit].to(dev)] = self._cached[slots[hit].to(dev)]
        want, inv = torch.unique(rids[~hit], return_inverse=True)  # [M] each missed row once
        got = self._request(want)  # [M, dim]
        out[rpos[~hit].to(dev)] = got[inv.to(dev)]
        if self.cache_capacity > 0 and rids.numel():
            cache_admit(rids.to(dev), slots.to(dev), out[rpos.to(dev)], self._keys, self._vals, self._slot_ids,
                        self._meta, self._cached, self._state, self.cache_policy)
        return out

    def _request(self, want: Tensor) -> Tensor:
        """Rows of ``want`` (unique ids owned by other ranks) from their owners (collective)."""
        owner = self.part.owner[want]
        me = self.ctx.rank
        order = torch.argsort(owner, stable=True)
        send = torch.bincount(owner, minlength=self.ctx.world_size)
        recv = torch.empty(self.ctx.world_size, dtype=torch.long, device=self._comm)
        dist.all_to_all_single(recv, send.to(self._comm))
        send_l, recv_l = send.tolist(), recv.tolist()
        asked = torch.empty(sum(recv_l), dtype=torch.long, device=self._comm)
        dist.all_to_all_single(asked, self.part.local[want][order].to(self._comm), recv_l, send_l)
        answer = self.rows[asked.to(self.rows.device)].to(self._comm)
        got = torch.empty(want.numel(), self.dim, dtype=self.rows.dtype, device=self._comm)
        dist.all_to_all_single(got, answer, send_l, recv_l)
        out = torch.empty_like(got)
        out[order.to(self._comm)] = got
        row_bytes = self.dim * self.rows.element_size()
        n_asked, n_answered = sum(send_l) - send_l[me], sum(recv_l) - recv_l[me]  # rows to / from others
        self._stats["rows_moved"] += n_asked
        self._stats["bytes_sent"] += n_asked * 8 + n_answered * row_bytes
        self._stats["bytes_received"] += n_answered * 8 + n_asked * row_bytes
        return out.to(self.rows.device)

    def stats(self) -> dict:
        """Counters since creation: ``fetches``; ``rows_local`` / ``rows_remote`` (requested
        rows this rank owns / others own, duplicates counted); of the remote ones ``hits``
        (served by the cache) and ``misses``; ``rows_moved`` (distinct missed rows received
        from their owners, also by :meth:`scatter`'s cache refresh); ``rows_scattered`` (rows
        :meth:`scatter` sent to other owners); ``bytes_sent`` / ``bytes_received`` to and
        from other ranks (8-byte row positions and the rows)."""
        return dict(self._stats)
