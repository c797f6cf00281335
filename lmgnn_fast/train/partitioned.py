"""Partitioned training (``run.partitioned``): every rank owns a part of the nodes.

Under ``torchrun`` with ``run.partitioned true``, :func:`build_layout` partitions the nodes
into one part per rank (:func:`lmgnn_fast.partition.partition_graph`, METIS when ``pymetis``
is installed, else a seeded balanced random split; ``run.partition_method`` picks one).
Rank 0 computes the partition and broadcasts the owner of every node, so the ranks cannot
disagree. Then, in stages 2 and 3:

- sampling runs on each rank's part of the structure through
  :class:`~lmgnn_fast.sampling.distributed.DistNeighborSampler` (:func:`make_sampler`),
  whose blocks equal the single process's;
- the LM rows of every text node type live in a
  :class:`~lmgnn_fast.partition.PartitionedTable` (:func:`make_table`): each rank holds the
  rows of the nodes it owns plus a cache of hot remote rows (``run.partition_cache``);
  :func:`encode_all_partitioned` refreshes it with the same encode batches a single process
  runs, each row sent to its owner;
- the training loaders give each rank the items of every global batch that it owns
  (``shard="owner"``), and the loss is weighted by the rank's share of the batch.

Every piece is collective: the ranks issue their all-to-alls in the same order, from the
main thread (no loader prefetch thread, no background row fetch).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from lmgnn_fast.distributed import DistContext, all_gather_variable, split_range
from lmgnn_fast.partition import NodePartition, PartitionedTable, local_graph, partition_graph, partition_stats
from lmgnn_fast.sampling.distributed import DistNeighborSampler

__all__ = ["PartitionLayout", "resolve_method", "build_layout", "make_sampler", "make_table",
           "encode_all_partitioned", "gather_table"]


@dataclass
class PartitionLayout:
    """The partition of a run.

    Attributes:
        parts: one :class:`NodePartition` per node type (``num_parts`` = world size).
        graph: this rank's part of the structure (:func:`local_graph`).
        method: the partitioning method used.
    """

    parts: dict[str, NodePartition]
    graph: object
    method: str

    @property
    def owners(self) -> dict[str, Tensor]:
        """``{node_type: [N_t] int64}`` the owner rank of every node."""
        return {t: p.owner for t, p in self.parts.items()}


def resolve_method(name: str) -> str:
    """``run.partition_method``: ``auto`` = ``metis`` when ``pymetis`` is importable, else
    ``random`` (balanced, but cuts about (W - 1) / W of the edges)."""
    if name != "auto":
        return name
    return "metis" if importlib.util.find_spec("pymetis") is not None else "random"


def build_layout(cfg, graph, ctx: DistContext, log) -> PartitionLayout:
    """Partition ``graph`` over the ranks of the job (collective: rank 0 computes, the
    owners are broadcast) and cut this rank's part.

    Args:
        cfg: the run's configuration (``run.partition_method``, ``run.seed``).
        graph: the whole ``HeteroGraph`` (every rank holds it; the part is cut from it).
        ctx: the job context (``world_size`` parts).
        log: progress lines (rank 0).
    """
    method = resolve_method(cfg.run.partition_method)
    W = ctx.world_size
    counts = [int(graph.num_nodes[t]) for t in graph.node_types]
    owner = torch.empty(sum(counts), dtype=torch.long)
    if ctx.is_main:
        balance = ("nodes", "train") if method == "metis" else ("nodes",)
        parts = partition_graph(graph, W, method, seed=cfg.run.seed, balance=balance)
        owner = torch.cat([parts[t].owner for t in graph.node_types]) if counts else owner
        st = partition_stats(graph, parts)
        why = "" if cfg.run.partition_method != "auto" else \
            (" (run.partition_method auto: pymetis is installed)" if method == "metis"
             else " (run.partition_method auto: pymetis is not installed, so a balanced random split; "
                  "pip install 'lmgnn_fast[partition]' for METIS)")
        log(f"partitioned: {W} parts by {method}{why}; edge cut {100 * st['cut_fraction']:.1f}% of "
            f"{st['edges']} edges; nodes per part {st['nodes_per_part']['all']}")
    if ctx.is_distributed:
        dist.broadcast(owner, src=0)
    parts = {t: NodePartition(o, W) for t, o in zip(graph.node_types, owner.split(counts))}
    return PartitionLayout(parts=parts, graph=local_graph(graph, parts, ctx.rank), method=method)


def make_sampler(layout: PartitionLayout, fanouts: list[int], ctx: DistContext, seed: int) -> DistNeighborSampler:
    """The distributed sampler over this rank's part (the trainer's ``NeighborSampler``
    without replacement, partitioned)."""
    return DistNeighborSampler(layout.graph, layout.parts, list(fanouts), ctx, replace=False, seed=seed)


def make_table(layout: PartitionLayout, t: str, dim: int, ctx: DistContext, cache: float) -> PartitionedTable:
    """The LM rows of node type ``t``, this rank's part plus ``cache`` remote rows (a
    fraction of the type's rows when ``<= 1``, else a row count), on the CPU."""
    n = layout.parts[t].num_nodes
    rows = int(cache * n) if cache <= 1 else int(cache)
    return PartitionedTable(layout.parts[t], dim, ctx, cache_capacity=rows)


@torch.no_grad()
def encode_all_partitioned(lm, tokens, table: PartitionedTable, batch_size: int, ctx: DistContext) -> None:
    """The embedding refresh into a partitioned table (collective).

    The single process's longest-first encode batches are split into contiguous runs
    (:func:`~lmgnn_fast.distributed.split_range`, as ``data_parallel.encode_all_sharded``
    does), rank ``k`` encodes the ``k``-th run and sends every row to its owner
    (:meth:`PartitionedTable.scatter`); then every rank drops its cached remote rows. The
    rows are bit-identical to the replicated refresh's (same batches), and no rank holds
    more than its run and its part.
    """
    n = len(tokens)
    order = torch.argsort(tokens.lengths, descending=True, stable=True)
    k = -(-n // batch_size) if n else 0
    a, b = split_range(k, ctx)
    was_training = lm.training
    lm.eval()
    try:
        ids = [order[i * batch_size:min(n, (i + 1) * batch_size)] for i in range(a, b)]
        rows = [lm.encode(tokens, x).float().cpu() for x in ids]
    finally:
        lm.train(was_training)
    ids = torch.cat(ids) if ids else torch.empty(0, dtype=torch.long)
    rows = torch.cat(rows) if rows else torch.zeros(0, table.dim)
    table.scatter(ids, rows, refresh_cached=False)
    table.clear_cache()


def gather_table(table: PartitionedTable, ctx: DistContext) -> Tensor:
    """The whole ``[N, dim]`` table on every rank (collective; for the run's outputs)."""
    rows = all_gather_variable(table.rows, ctx)
    ids = all_gather_variable(table.ids, ctx)
    out = torch.empty(table.part.num_nodes, table.dim, dtype=table.rows.dtype)
    out[ids] = rows.to(out.dtype)
    return out
