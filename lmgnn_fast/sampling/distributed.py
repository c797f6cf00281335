"""``DistNeighborSampler``: multi-hop sampling over a graph partitioned across the ranks.

Each rank stores only its part of the structure (:func:`lmgnn_fast.partition.local_graph`:
per relation the in-edges of the destination nodes it owns) and samples the blocks of its
own seeds. Per hop, every rank sends the frontier nodes of its batch to their owners (one
``torch.distributed`` all-to-all), each owner draws their neighbours on its part with the
single-process op ``lmgnn::hetero_neighbor_sample`` and sends the sampled neighbour lists
back (a second all-to-all), and the rank assembles them into the block in the single
process's node order.

Why the blocks are exactly the single process's: the op draws neighbour ``c`` of node ``v``
in hop ``h`` of relation ``r`` from the counter-based random word
``philox(seed, h * R + r, v, c)`` (see ``hetero_neighbor_sample_ref``), never from the
node's position in the frontier, and an owner's part keeps every owned node's neighbour
list unchanged (same order, same edge ids). So an owner that samples any subset of a
frontier at hop ``h`` (the op called with ``h`` leading all-zero hops, which keep the seeds
as they are) draws for each node what the single process draws for it. The frontier
order, the deduplication and the local indices depend only on the frontier and the drawn
neighbours, so the requester rebuilds them as the op does. Excluded edges are given by edge
id and sent to every owner with the request, where they become positions in the owner's
part; so is the requester's sampling seed (ranks may sample with different seeds in the
same call, e.g. evaluation chunks), which the owner draws with for that requester.

Example (under ``torchrun``, every rank)::

    parts = partition_graph(graph, ctx.world_size, method="metis")
    sampler = DistNeighborSampler(local_graph(graph, parts, ctx.rank), parts, [15, 10], ctx)
    blocks = sampler.sample({"paper": my_seeds}, seed=step)   # == NeighborSampler(graph, ...)
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from lmgnn_fast.distributed import DistContext
from lmgnn_fast.graph import EdgeType
from lmgnn_fast.ops.random import as_int64, mix_seed
from lmgnn_fast.ops.sampling import hetero_neighbor_sample
from lmgnn_fast.partition import NodePartition
from lmgnn_fast.sampling.block import Block
from lmgnn_fast.sampling.neighbor import FanoutSpec, NeighborSampler

__all__ = ["DistNeighborSampler"]

_ID_BYTES = 8  # every id, count and edge id travels as int64


class DistNeighborSampler:
    """Samples the blocks of this rank's seeds from the parts of a partitioned graph.

    Every rank calls :meth:`sample` the same number of times (it is collective: a rank with
    no seeds passes empty ones and still answers the others' requests).

    Args:
        graph: this rank's part of the graph (``local_graph(graph, parts, ctx.rank)``), in
            host memory; the whole graph works too (only the neighbour lists of owned nodes
            are read). The blocks come back on the CPU.
        parts: the partition, one :class:`NodePartition` per node type, ``num_parts`` equal
            to the job's world size.
        fanouts: per hop, as for :class:`NeighborSampler`.
        ctx: the job context.
        replace: draw with replacement.
        seed: base seed; call ``i`` without an explicit seed uses ``mix_seed(seed, i)``, as
            :class:`NeighborSampler` does.

    Raises:
        ValueError: a node type without a partition, a partition of another size than the
            job, or a graph not on the CPU.
    """

    def __init__(self, graph, parts: Mapping[str, NodePartition], fanouts: FanoutSpec, ctx: DistContext,
                 replace: bool = False, seed: int = 0):
        devices = {c.indptr.device.type for c in graph.csc.values()}
        if devices - {"cpu"}:
            raise ValueError(f"DistNeighborSampler: the graph part must be in host memory, got a graph on "
                             f"{sorted(devices - {'cpu'})}")
        self._local = NeighborSampler(graph, fanouts, replace=replace, seed=seed)  # fanouts, exclusion
        self.node_types: list[str] = self._local.node_types
        self.edge_types: list[EdgeType] = self._local.edge_types
        for t in self.node_types:
            p = parts.get(t)
            if p is None:
                raise ValueError(f"DistNeighborSampler: parts has no partition for node type {t!r}")
            if p.num_parts != ctx.world_size:
                raise ValueError(f"DistNeighborSampler: the partition of {t!r} has {p.num_parts} parts but the "
                                 f"job has {ctx.world_size} ranks")
            if p.num_nodes != int(graph.num_nodes[t]):
                raise ValueError(f"DistNeighborSampler: the partition of {t!r} covers {p.num_nodes} nodes, the "
                                 f"graph has {int(graph.num_nodes[t])}")
        self.parts = {t: parts[t] for t in self.node_types}
        self.ctx = ctx
        self.fanouts = self._local.fanouts
        self.replace = bool(replace)
        self.seed = int(seed)
        self._calls = 0
        tid = {t: i for i, t in enumerate(self.node_types)}
        self._src = [tid[et[0]] for et in self.edge_types]
        self._dst = [tid[et[2]] for et in self.edge_types]
        self._num_nodes = [int(graph.num_nodes[t]) for t in self.node_types]
        csc = [graph.csc[et] for et in self.edge_types]
        self._csc = ([c.indptr for c in csc], [c.indices for c in csc], [c.eid for c in csc])
        self._comm = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
        self._stats = {"calls": 0, "nodes_local": 0, "nodes_remote": 0, "edges_remote": 0,
                       "bytes_sent": 0, "bytes_received": 0}

    @property
    def num_layers(self) -> int:
        return len(self.fanouts)

    # ------------------------------------------------------------------ communication
    def _exchange(self, chunks: list[Tensor]) -> list[Tensor]:
        """Send ``chunks[p]`` (1-D int64) to rank ``p``; return what every rank sent here."""
        W, me = self.ctx.world_size, self.ctx.rank
        if W == 1:
            return chunks
        send = torch.tensor([c.numel() for c in chunks], dtype=torch.long)
        recv = torch.empty(W, dtype=torch.long, device=self._comm)
        dist.all_to_all_single(recv, send.to(self._comm))
        send_l, recv_l = send.tolist(), recv.tolist()
        out = torch.empty(sum(recv_l), dtype=torch.long, device=self._comm)
        dist.all_to_all_single(out, torch.cat(chunks).to(self._comm), recv_l, send_l)
        self._stats["bytes_sent"] += (sum(send_l) - send_l[me] + W - 1) * _ID_BYTES
        self._stats["bytes_received"] += (sum(recv_l) - recv_l[me] + W - 1) * _ID_BYTES
        return list(out.cpu().split(recv_l))

    def _exclusions(self, exclude_eids: Mapping[EdgeType, Tensor] | None,
                    seed: int) -> tuple[list[list[Tensor] | None], list[int]]:
        """Every rank's excluded edge ids, as CSC positions of this rank's part, and its
        sampling seed (per requester)."""
        R = len(self.edge_types)
        mine = [torch.empty(0, dtype=torch.long)] * R
        for et, e in (exclude_eids or {}).items():
            if tuple(et) not in self.edge_types:
                raise ValueError(f"DistNeighborSampler: exclude_eids names unknown edge type {et!r}")
            mine[self.edge_types.index(tuple(et))] = torch.as_tensor(e).reshape(-1).cpu().long()
        packed = torch.cat([torch.tensor([seed] + [m.numel() for m in mine], dtype=torch.long)] + mine)
        out, seeds = [], []
        for got in self._exchange([packed] * self.ctx.world_size):
            seeds.append(int(got[0]))
            sizes = got[1:R + 1].tolist()
            if sum(sizes) == 0:
                out.append(None)
                continue
            eids = dict(zip(self.edge_types, got[R + 1:].split(sizes)))
            out.append(self._local.exclude_positions(eids))
        return out, seeds

    # ------------------------------------------------------------------ the owner's side
    def _answer(self, hop: int, ids: Tensor, exclude: list[Tensor] | None, seed: int) -> Tensor:
        """Sample hop ``hop`` of the requested nodes this rank owns.

        ``ids``: ``T`` counts then the ids, grouped by node type. Returns the answer: per
        relation the sampled count of every requested destination, then per relation the
        sampled sources (global ids), then per relation their edge ids.
        """
        T, R = len(self.node_types), len(self.edge_types)
        seeds = list(ids[T:].split(ids[:T].tolist()))
        for t, s in enumerate(seeds):
            if s.numel() and bool((self.parts[self.node_types[t]].owner[s] != self.ctx.rank).any()):
                raise RuntimeError(f"DistNeighborSampler: rank {self.ctx.rank} was asked for nodes of type "
                                   f"{self.node_types[t]!r} it does not own (ranks disagree on the partition)")
        fanouts = [0] * (hop * R) + self.fanouts[hop]
        nodes, _, indptr, indices, eid = hetero_neighbor_sample(
            *self._csc, self._src, self._dst, self._num_nodes, seeds, fanouts, self.replace,
            seed, exclude, self.node_types)
        # block 0 of the output is hop ``hop``; its node lists are block-major, type-minor
        counts = [indptr[r][1:] - indptr[r][:-1] for r in range(R)]
        src = [nodes[self._src[r]][indices[r]] for r in range(R)]
        return torch.cat(counts + src + [eid[r] for r in range(R)])

    # ------------------------------------------------------------------ the requester's side
    def _hop(self, hop: int, cur: list[Tensor], exclude: list,
             seeds: list[int]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per relation: the frontier's indptr, sampled global sources and edge ids."""
        T, R, W = len(self.node_types), len(self.edge_types), self.ctx.world_size
        owner = [self.parts[t].owner[cur[i]] for i, t in enumerate(self.node_types)]
        requests = []
        for p in range(W):
            sel = [cur[t][owner[t] == p] for t in range(T)]
            requests.append(torch.cat([torch.tensor([s.numel() for s in sel], dtype=torch.long)] + sel))
            if p == self.ctx.rank:
                self._stats["nodes_local"] += sum(s.numel() for s in sel)
            else:
                self._stats["nodes_remote"] += sum(s.numel() for s in sel)
        asked = self._exchange(requests)
        answers = self._exchange([self._answer(hop, asked[q], exclude[q], seeds[q]) for q in range(W)])
        per_rel = [([], [], []) for _ in range(R)]  # (dst position, source, eid) per owner
        for p, ans in enumerate(answers):
            n_req = [int((owner[t] == p).sum()) for t in range(T)]
            n_cnt = [n_req[self._dst[r]] for r in range(R)]
            cnt = ans[:sum(n_cnt)].split(n_cnt)
            e_r = [int(c.sum()) for c in cnt]
            rest = ans[sum(n_cnt):]
            srcs = rest[:sum(e_r)].split(e_r)
            eids = rest[sum(e_r):].split(e_r)
            if p != self.ctx.rank:
                self._stats["edges_remote"] += sum(e_r)
            for r in range(R):
                pos = torch.nonzero(owner[self._dst[r]] == p).flatten()
                per_rel[r][0].append(torch.repeat_interleave(pos, cnt[r]))
                per_rel[r][1].append(srcs[r])
                per_rel[r][2].append(eids[r])
        indptr, src, eid = [], [], []
        for r in range(R):
            dpos = torch.cat(per_rel[r][0])
            order = torch.argsort(dpos, stable=True)  # each node's list comes whole from its owner
            ptr = torch.zeros(cur[self._dst[r]].numel() + 1, dtype=torch.long)
            ptr[1:] = torch.cumsum(torch.bincount(dpos, minlength=cur[self._dst[r]].numel()), 0)
            indptr.append(ptr)
            src.append(torch.cat(per_rel[r][1])[order])
            eid.append(torch.cat(per_rel[r][2])[order])
        return indptr, src, eid

    def sample(self, seeds: Mapping[str, Tensor], exclude_eids: Mapping[EdgeType, Tensor] | None = None,
               seed: int | None = None) -> list[Block]:
        """This rank's blocks around ``seeds`` (collective: every rank calls it).

        Args:
            seeds: per node type, unique node ids  # [S_t] int32/int64; missing types have none
            exclude_eids: per edge type, edge ids never sampled (this rank's batch's).
            seed: random seed for this call (default: derived from ``self.seed`` and a call
                counter); ranks may pass different seeds.

        Returns:
            ``num_layers`` blocks, outermost first, equal tensor for tensor to
            ``NeighborSampler(whole_graph, fanouts, replace).sample(seeds, exclude_eids, seed)``.

        Raises:
            ValueError: an unknown node type, a seed id out of range or a repeated seed.
        """
        T, R = len(self.node_types), len(self.edge_types)
        cur = []
        for t in seeds:
            if t not in self.node_types:
                raise ValueError(f"DistNeighborSampler.sample: seeds name unknown node type {t!r}; "
                                 f"node types are {self.node_types}")
        for i, t in enumerate(self.node_types):
            s = torch.as_tensor(seeds.get(t, torch.empty(0, dtype=torch.long))).reshape(-1).cpu()
            if s.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"DistNeighborSampler.sample: seeds of {t!r} must be int32/int64, got {s.dtype}")
            s = s.long()
            if s.numel():
                lo, hi = int(s.min()), int(s.max())
                bad = lo if lo < 0 else hi if hi >= self._num_nodes[i] else None
                if bad is not None:
                    raise ValueError(f"DistNeighborSampler.sample: seed id {bad} out of range for node type "
                                     f"{t!r} ({self._num_nodes[i]} nodes)")
                if torch.unique(s).numel() != s.numel():
                    raise ValueError(f"DistNeighborSampler.sample: seeds of {t!r} hold repeated ids")
            cur.append(s)
        if seed is None:
            seed = mix_seed(self.seed, self._calls)
            self._calls += 1
        seed = as_int64(seed)
        self._stats["calls"] += 1
        exclude, seeds_of = self._exclusions(exclude_eids, seed)
        L = self.num_layers
        blocks: list = [None] * L
        for hop in range(L):
            indptr, src, eid = self._hop(hop, cur, exclude, seeds_of)
            nxt, indices = [], [None] * R
            for t in range(T):  # first-occurrence order over (frontier, then each relation's sources)
                rels = [r for r in range(R) if self._src[r] == t]
                keys = torch.cat([cur[t]] + [src[r] for r in rels])
                uniq, inv = torch.unique(keys, return_inverse=True)
                first = torch.full((uniq.numel(),), keys.numel(), dtype=torch.long)
                first.scatter_reduce_(0, inv, torch.arange(keys.numel()), "amin")
                order = torch.argsort(first)
                local_of = torch.empty_like(order)
                local_of[order] = torch.arange(order.numel())
                local = local_of[inv]
                off = cur[t].numel()
                for r in rels:
                    indices[r] = local[off:off + src[r].numel()]
                    off += src[r].numel()
                nxt.append(uniq[order])
            blocks[L - 1 - hop] = Block(
                node_types=list(self.node_types), edge_types=list(self.edge_types),
                src_nodes={t: nxt[i] for i, t in enumerate(self.node_types)},
                num_dst={t: int(cur[i].numel()) for i, t in enumerate(self.node_types)},
                indptr=indptr, indices=indices, eid=eid)
            cur = nxt
        return blocks

    def stats(self) -> dict:
        """Counters since creation: ``calls``; ``nodes_local`` / ``nodes_remote`` (frontier
        nodes this rank expanded itself / sent to their owners, over all hops);
        ``edges_remote`` (sampled edges received from other owners); ``bytes_sent`` /
        ``bytes_received`` to and from other ranks (ids, counts, sources, edge ids and the
        size headers, 8 B each)."""
        return dict(self._stats)
