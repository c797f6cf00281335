"""Mini-batch loaders over a ``HeteroGraph``: node, edge and link-prediction batches.

Each loader shuffles its items per epoch from ``(seed, epoch)``, gives batch ``i`` of
epoch ``e`` the sampling seed ``mix_seed(seed, e, i)`` (so a batch is the same whatever
the prefetching or thread count), builds batches in a background thread (``prefetch``
batches ahead; 0 = in the caller's thread), has ``len()`` and is a plain iterable, so
``for batch in tqdm(loader)`` works. Iterating starts epoch ``loader.epoch`` and then
advances it; ``set_epoch(e)`` picks the epoch explicitly; ``max_batches`` cuts every epoch
after that many batches. ``loader.transform`` (default ``None``), when set, is applied to
every batch where the batch is built — in the background thread when ``prefetch > 0`` —
so work that only reads (the trainer's feature fetch) overlaps the caller's compute.

**Rank sharding** (data-parallel training, like torch's ``DistributedSampler``): with
``world_size = W > 1`` each epoch still has the same global batches as with one process
(same shuffle, same per-batch seeds, ``len()`` is their number on every rank); rank ``r``
gets its share of each: items ``r, r + W, ...`` of the batch (``shard="strided"``) or the
``r``-th contiguous run (``shard="contiguous"``), ``ceil(B / W)`` items on every rank — a
batch that ``W`` does not divide is padded by wrapping around to its first items. So every
rank runs the same number of steps with equal-size slices, and the ranks together see each
global batch (plus at most ``W - 1`` repeated items). ``shard="owner"`` (training on a
partitioned graph) gives every rank the items of each global batch whose node it owns
(``owners``: the owner rank of every node, per node type; an edge belongs to its
destination's owner): slices differ in size, may be empty, and are never padded; every rank
still runs ``len()`` steps, and each batch's ``share`` is this rank's fraction of the
global batch's items (weight the loss by ``share * W`` and DDP's gradient average is the
global-batch mean).
"""
from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass, fields
from typing import Iterator

import torch
from torch import Tensor

from lmgnn_fast.graph import REVERSE_PREFIX, EdgeType
from lmgnn_fast.ops.convert import csc_to_coo
from lmgnn_fast.ops.random import mix_seed
from lmgnn_fast.sampling.block import Block
from lmgnn_fast.sampling.negative import NegativeSampler, make_negative_sampler
from lmgnn_fast.sampling.neighbor import NeighborSampler


def _move(x, device, non_blocking):
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=non_blocking)
    if isinstance(x, Block):
        return x.to(device, non_blocking=non_blocking)
    if isinstance(x, dict):
        return {k: _move(v, device, non_blocking) for k, v in x.items()}
    if isinstance(x, list):
        return [_move(v, device, non_blocking) for v in x]
    return x


class _BatchBase:
    def to(self, device, non_blocking: bool = False):
        """A copy with every tensor and block on ``device``."""
        return type(self)(**{f.name: _move(getattr(self, f.name), device, non_blocking) for f in fields(self)})


@dataclass
class NodeBatch(_BatchBase):
    """Seeds of one node type and their blocks.

    Attributes:
        node_type: the seeds' type.
        seeds: ``{node_type: [B] int64}`` global ids (= ``blocks[-1].dst_nodes(node_type)``).
        blocks: outermost first.
        input_nodes: per type, ``blocks[0].src_nodes`` (the nodes whose features enter).
        labels: ``[B]`` or ``[B, C]`` labels of the seeds when the graph has them, else None.
        share: with ``shard="owner"``, this rank's items over the global batch's; else None.
    """

    node_type: str
    seeds: dict[str, Tensor]
    blocks: list[Block]
    input_nodes: dict[str, Tensor]
    labels: Tensor | None = None
    share: float | None = None


@dataclass
class EdgeBatch(_BatchBase):
    """Edges of one relation (edge classification) with blocks around both endpoints.

    Attributes:
        edge_type: the relation.
        edge_ids: ``[B]`` eids of the batch's edges.
        src, dst: ``[B]`` local ids into ``blocks[-1].dst_nodes(src type / dst type)``.
        seeds, blocks, input_nodes: as in :class:`NodeBatch` (seeds: unique endpoints).
        labels: ``[B]`` edge labels when the graph has them, else None.
        share: as in :class:`NodeBatch`.
    """

    edge_type: EdgeType
    edge_ids: Tensor
    src: Tensor
    dst: Tensor
    seeds: dict[str, Tensor]
    blocks: list[Block]
    input_nodes: dict[str, Tensor]
    labels: Tensor | None = None
    share: float | None = None


@dataclass
class LinkBatch(_BatchBase):
    """Positive edges plus negatives (corrupted destinations) with blocks around them.

    Attributes:
        edge_type: the relation predicted.
        edge_ids: ``[B]`` eids of the positives (None when they are not in the graph,
            e.g. validation/test edges).
        src, dst: ``[B]`` local ids of the positives' endpoints (into ``blocks[-1]``'s
            destinations of the source / destination type).
        neg_dst: ``[B, K]`` local ids of the negative destinations of each positive.
        negative_mode: ``uniform``, ``joint`` or ``in_batch``.
        seeds, blocks, input_nodes, share: as in :class:`NodeBatch`.
    """

    edge_type: EdgeType
    edge_ids: Tensor | None
    src: Tensor
    dst: Tensor
    neg_dst: Tensor
    negative_mode: str
    seeds: dict[str, Tensor]
    blocks: list[Block]
    input_nodes: dict[str, Tensor]
    share: float | None = None


def shard_positions(n: int, rank: int, world_size: int, shard: str = "strided") -> Tensor:
    """Positions into a batch of ``n`` items that rank ``rank`` of ``world_size`` takes.

    Args:
        n: items in the global batch.
        rank, world_size: this rank and the number of ranks.
        shard: ``"strided"`` (items ``rank, rank + W, ...``) or ``"contiguous"``.

    Returns:
        ``[ceil(n / W)]`` int64 positions (the batch padded by wrapping around when ``W``
        does not divide ``n``); ``arange(n)`` for one rank.
    """
    if world_size == 1:
        return torch.arange(n)
    per = max(1, -(-n // world_size))
    idx = torch.arange(per * world_size) % max(n, 1)
    if shard == "strided":
        return idx[rank::world_size]
    return idx[rank * per:(rank + 1) * per]


class _Loader:
    """Shuffling, batching, rank sharding, per-batch seeds and background prefetch."""

    def __init__(self, num_items: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool,
                 prefetch: int, rank: int = 0, world_size: int = 1, shard: str = "strided",
                 max_batches: int = 0, item_owner: Tensor | None = None):
        name = type(self).__name__
        if batch_size < 1:
            raise ValueError(f"{name}: batch_size must be >= 1, got {batch_size}")
        if prefetch < 0:
            raise ValueError(f"{name}: prefetch must be >= 0, got {prefetch}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"{name}: rank must be in [0, world_size), got rank {rank} and world_size {world_size}")
        if shard not in ("strided", "contiguous", "owner"):
            raise ValueError(f"{name}: shard must be 'strided', 'contiguous' or 'owner', got {shard!r}")
        if shard == "owner" and item_owner is None:
            raise ValueError(f"{name}: shard='owner' needs owners (the owner rank of every node, per node type)")
        if max_batches < 0:
            raise ValueError(f"{name}: max_batches must be >= 0, got {max_batches}")
        self.rank, self.world_size, self.shard = int(rank), int(world_size), shard
        self.max_batches = int(max_batches)
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.prefetch = int(prefetch)
        self.epoch = 0
        self.transform = None  # callable(batch) -> batch, run where the batch is built
        self.item_owner = item_owner  # [num_items] owner rank of every item (shard="owner")

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration runs (it fixes the shuffle and the batch seeds)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = self.num_items // self.batch_size if self.drop_last else math.ceil(self.num_items / self.batch_size)
        return min(n, self.max_batches) if self.max_batches else n

    def _order(self, epoch: int) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.num_items)
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0x5EED))
        return torch.randperm(self.num_items, generator=g)

    def _make(self, items: Tensor, batch_seed: int):
        raise NotImplementedError

    def _batches(self, epoch: int):
        order = self._order(epoch)
        for i in range(len(self)):
            items = order[i * self.batch_size:(i + 1) * self.batch_size]
            share = None
            if self.shard == "owner":
                n = items.numel()
                items = items[self.item_owner[items] == self.rank]
                share = items.numel() / max(n, 1)
            elif self.world_size > 1:
                items = items[shard_positions(items.numel(), self.rank, self.world_size, self.shard)]
            batch = self._make(items, mix_seed(self.seed, epoch, i))
            if share is not None:
                batch.share = share
            yield batch if self.transform is None else self.transform(batch)

    def __iter__(self) -> Iterator:
        epoch = self.epoch
        self.epoch += 1
        if self.prefetch == 0:
            yield from self._batches(epoch)
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def produce():
            try:
                for b in self._batches(epoch):
                    while not stop.is_set():
                        try:
                            q.put(b, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(done)
            except BaseException as exc:  # handed to the consumer
                q.put(exc)

        worker = threading.Thread(target=produce, name=f"{type(self).__name__}-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                b = q.get()
                if b is done:
                    break
                if isinstance(b, BaseException):
                    raise b
                yield b
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    pass
                worker.join(timeout=0.05)


def _item_owner(owners: dict[str, Tensor] | None, node_type: str, nodes: Tensor) -> Tensor | None:
    """The owner rank of every item, given by the owner of its node ``nodes`` of ``node_type``."""
    if owners is None:
        return None
    if node_type not in owners:
        raise ValueError(f"owners has no owner map for node type {node_type!r}")
    return torch.as_tensor(owners[node_type]).long().cpu()[nodes]


def _split_mask(masks, key, split, what):
    if masks is None or key not in masks or masks[key] is None or split not in masks[key]:
        raise ValueError(f"no '{split}' split for {what}; pass the seeds explicitly")
    return masks[key][split]


def _unique_seeds(parts: dict[str, list[Tensor]]) -> dict[str, Tensor]:
    return {t: torch.unique(torch.cat(v)) for t, v in parts.items()}


def _local(seeds: Tensor, ids: Tensor) -> Tensor:
    return torch.searchsorted(seeds, ids.contiguous())


class NodeLoader(_Loader):
    """Batches of seed nodes of one type and their sampled blocks.

    Args:
        graph: the ``HeteroGraph``.
        sampler: a :class:`NeighborSampler` over ``graph``.
        node_type: the seeds' type.
        seeds: ``[N]`` node ids; default: the nodes of ``graph.masks[node_type][split]``.
        split: ``train``, ``val`` or ``test`` (used when ``seeds`` is None).
        batch_size, shuffle, seed, drop_last, prefetch: see the module docstring.
        rank, world_size, shard, max_batches: this rank's share of each batch and the cut
            of each epoch (see the module docstring).
        owners: ``{node_type: [N_t] int}`` the owner rank of every node (``shard="owner"``).
    """

    def __init__(self, graph, sampler: NeighborSampler, node_type: str, seeds: Tensor | None = None,
                 split: str = "train", batch_size: int = 1024, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, prefetch: int = 2, *, rank: int = 0, world_size: int = 1,
                 shard: str = "strided", max_batches: int = 0, owners: dict[str, Tensor] | None = None):
        if node_type not in graph.node_types:
            raise ValueError(f"NodeLoader: unknown node type {node_type!r}; node types are {graph.node_types}")
        if seeds is None:
            mask = _split_mask(getattr(graph, "masks", None), node_type, split, f"node type {node_type!r}")
            seeds = torch.nonzero(torch.as_tensor(mask)).flatten()
        self.graph, self.sampler, self.node_type = graph, sampler, node_type
        self.seeds = torch.as_tensor(seeds).long().flatten().cpu()
        if torch.unique(self.seeds).numel() != self.seeds.numel():
            raise ValueError("NodeLoader: seeds contain duplicates")
        labels = getattr(graph, "labels", None)
        self._labels = labels.get(node_type) if isinstance(labels, dict) else None
        super().__init__(self.seeds.numel(), batch_size, shuffle, seed, drop_last, prefetch, rank, world_size, shard,
                         max_batches, _item_owner(owners, node_type, self.seeds))

    def _make(self, items, batch_seed):
        seeds = self.seeds[items]
        blocks = self.sampler.sample({self.node_type: seeds}, seed=batch_seed)
        labels = None if self._labels is None else self._labels[seeds.to(self._labels.device)]
        return NodeBatch(self.node_type, {self.node_type: blocks[-1].dst_nodes(self.node_type)}, blocks,
                         dict(blocks[0].src_nodes), labels)


def _csc_edges(graph, et: EdgeType) -> tuple[Tensor, Tensor, Tensor]:
    """(src, dst, eid) of a relation's message-passing edges, read from its CSC."""
    c = graph.csc[et]
    src, dst = csc_to_coo(c.indptr.cpu(), c.indices.cpu())
    return src, dst, c.eid.cpu()


class EdgeLoader(_Loader):
    """Batches of edges of one relation (edge classification); both endpoints are seeds.

    Args:
        graph, sampler: as in :class:`NodeLoader`.
        edge_type: the relation.
        edge_ids: ``[B]`` eids to iterate; default: the relation's edges in the message-passing
            graph selected by ``graph.edge_masks[edge_type][split]`` (all when no masks).
        exclude_self: also exclude the batch's own edges (and reverses) from the blocks.
        batch_size, shuffle, seed, drop_last, prefetch, rank, world_size, shard, max_batches, owners:
            as in :class:`NodeLoader` (an edge belongs to its destination's owner).
    """

    def __init__(self, graph, sampler: NeighborSampler, edge_type: EdgeType, edge_ids: Tensor | None = None,
                 split: str = "train", batch_size: int = 1024, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, prefetch: int = 2, exclude_self: bool = False, *, rank: int = 0,
                 world_size: int = 1, shard: str = "strided", max_batches: int = 0,
                 owners: dict[str, Tensor] | None = None):
        edge_type = tuple(edge_type)
        if edge_type not in [tuple(e) for e in graph.edge_types]:
            raise ValueError(f"EdgeLoader: unknown edge type {edge_type!r}")
        src, dst, eid = _csc_edges(graph, edge_type)
        num_eids = (getattr(graph, "num_eids", None) or {}).get(edge_type)
        size = int(num_eids) if num_eids is not None else (int(eid.max()) + 1 if eid.numel() else 0)
        by_eid = torch.full((max(size, int(eid.max()) + 1 if eid.numel() else 0),), -1, dtype=torch.long)
        by_eid[eid] = torch.arange(eid.numel())
        if edge_ids is None:
            masks = (getattr(graph, "edge_masks", None) or {}).get(edge_type)
            if masks:
                if split not in masks:
                    raise ValueError(f"{type(self).__name__}: no '{split}' split for edge type {edge_type} "
                                     f"(splits: {sorted(masks)}); pass edge_ids explicitly")
                edge_ids = torch.nonzero(torch.as_tensor(masks[split])).flatten()
                edge_ids = edge_ids[edge_ids < by_eid.numel()]
                edge_ids = edge_ids[by_eid[edge_ids] >= 0]  # held-out edges are not in the graph
            else:
                edge_ids = torch.sort(eid).values
        edge_ids = torch.as_tensor(edge_ids).long().cpu()
        if edge_ids.numel() and (edge_ids.min() < 0 or edge_ids.max() >= by_eid.numel()
                                 or (by_eid[edge_ids] < 0).any()):
            raise ValueError(f"EdgeLoader: edge_ids name edges that are not in {edge_type}")
        pos = by_eid[edge_ids]
        self.graph, self.sampler, self.edge_type = graph, sampler, edge_type
        self.edge_ids, self.src_ids, self.dst_ids = edge_ids, src[pos], dst[pos]
        self.exclude_self = exclude_self
        labels = getattr(graph, "edge_labels", None)
        self._labels = labels.get(edge_type) if isinstance(labels, dict) else None
        rev = (getattr(graph, "reverse_of", None) or {}).get(edge_type)
        if (self._labels is None and isinstance(labels, dict) and rev is not None
                and edge_type[1].startswith(REVERSE_PREFIX)):
            self._labels = labels.get(tuple(rev))  # a reverse edge shares its forward edge's eid
        super().__init__(edge_ids.numel(), batch_size, shuffle, seed, drop_last, prefetch, rank, world_size, shard,
                         max_batches, _item_owner(owners, edge_type[2], self.dst_ids))

    def _exclude(self, eids):
        ex = {self.edge_type: eids}
        rev = (getattr(self.graph, "reverse_of", None) or {}).get(self.edge_type)
        if rev is not None:
            ex[tuple(rev)] = eids
        return ex

    def _make(self, items, batch_seed):
        eids, s, d = self.edge_ids[items], self.src_ids[items], self.dst_ids[items]
        st, _, dt = self.edge_type
        parts: dict[str, list[Tensor]] = {}
        parts.setdefault(st, []).append(s)
        parts.setdefault(dt, []).append(d)
        seeds = _unique_seeds(parts)
        blocks = self.sampler.sample(seeds, exclude_eids=self._exclude(eids) if self.exclude_self else None,
                                     seed=batch_seed)
        labels = None if self._labels is None else self._labels[eids.to(self._labels.device)]
        return EdgeBatch(self.edge_type, eids, _local(seeds[st], s), _local(seeds[dt], d), seeds, blocks,
                         dict(blocks[0].src_nodes), labels)


class LinkLoader(EdgeLoader):
    """Link-prediction batches: positive edges, negatives and blocks around all endpoints.

    Positives are the relation's message-passing edges (``split="train"``, eids known, and
    by default excluded from the blocks together with their reverses so a batch never sees
    its own answers) or explicit ``(src, dst)`` pairs (e.g. ``graph.lp_edges[task]["val"]``).

    Args:
        graph, sampler, edge_type: as in :class:`EdgeLoader`.
        edges: optional ``(src, dst)`` global ids of the positives (no eids).
        split: without ``edges``: ``"train"`` iterates the relation's training edges of the
            message-passing graph (``edge_masks``, all edges when it has none); ``"val"`` /
            ``"test"`` take ``graph.lp_edges[task][split]`` of the link-prediction task on
            ``edge_type`` (held-out edges are not in the graph, so they have no eids).
        negative: ``"uniform"``, ``"joint"``, ``"in_batch"`` or a NegativeSampler.
        num_negatives: K for uniform / joint.
        exclude_positives: exclude the batch's positive eids (and reverses) from sampling.
        batch_size, shuffle, seed, drop_last, prefetch, rank, world_size, shard, max_batches, owners:
            as in :class:`EdgeLoader`.
    """

    def __init__(self, graph, sampler: NeighborSampler, edge_type: EdgeType,
                 edges: tuple[Tensor, Tensor] | None = None, split: str = "train",
                 negative: str | NegativeSampler = "uniform", num_negatives: int = 1,
                 batch_size: int = 1024, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 prefetch: int = 2, exclude_positives: bool = True, *, rank: int = 0, world_size: int = 1,
                 shard: str = "strided", max_batches: int = 0, owners: dict[str, Tensor] | None = None):
        self.negative = make_negative_sampler(negative, num_negatives)
        edge_type = tuple(edge_type)
        if edges is None and split != "train":
            # Held-out positives are not in the message-passing graph: take them from lp_edges.
            lp = getattr(graph, "lp_edges", None) or {}
            tasks = [t.name for t in (getattr(graph, "tasks", None) or [])
                     if t.type == "link_prediction" and t.edge_type is not None and tuple(t.edge_type) == edge_type]
            found = [lp[n][split] for n in tasks if n in lp and split in lp[n]]
            if not found:
                raise ValueError(f"LinkLoader: no '{split}' link-prediction edges for {edge_type} in "
                                 "graph.lp_edges; pass edges=(src, dst)")
            edges = found[0]
        if edges is None:
            super().__init__(graph, sampler, edge_type, None, split, batch_size, shuffle, seed, drop_last,
                             prefetch, exclude_self=exclude_positives, rank=rank, world_size=world_size,
                             shard=shard, max_batches=max_batches, owners=owners)
            self._has_eids = True
        else:
            edge_type = tuple(edge_type)
            self.graph, self.sampler, self.edge_type = graph, sampler, edge_type
            self.src_ids = torch.as_tensor(edges[0]).long().cpu()
            self.dst_ids = torch.as_tensor(edges[1]).long().cpu()
            if self.src_ids.shape != self.dst_ids.shape:
                raise ValueError("LinkLoader: edges must be two tensors of the same shape")
            self.edge_ids = torch.arange(self.src_ids.numel())
            self.exclude_self, self._has_eids, self._labels = False, False, None
            _Loader.__init__(self, self.src_ids.numel(), batch_size, shuffle, seed, drop_last, prefetch, rank,
                             world_size, shard, max_batches, _item_owner(owners, edge_type[2], self.dst_ids))
        self._num_dst_nodes = int(graph.num_nodes[self.edge_type[2]])

    def _make(self, items, batch_seed):
        s, d = self.src_ids[items], self.dst_ids[items]
        eids = self.edge_ids[items] if self._has_eids else None
        g = torch.Generator().manual_seed(mix_seed(batch_seed, 0x4E47))
        neg = self.negative(s, d, self._num_dst_nodes, g)
        st, _, dt = self.edge_type
        parts: dict[str, list[Tensor]] = {}
        parts.setdefault(st, []).append(s)
        parts.setdefault(dt, []).extend([d, neg.reshape(-1)])
        seeds = _unique_seeds(parts)
        ex = self._exclude(eids) if (self.exclude_self and eids is not None) else None
        blocks = self.sampler.sample(seeds, exclude_eids=ex, seed=batch_seed)
        return LinkBatch(self.edge_type, eids, _local(seeds[st], s), _local(seeds[dt], d),
                         _local(seeds[dt], neg), self.negative.mode, seeds, blocks, dict(blocks[0].src_nodes))
