"""Data-parallel training under ``torchrun``: batch sharding, DDP, sharded encoding and
evaluation, rank-0-only checkpoints (the process group and collectives themselves are
:mod:`lmgnn_fast.distributed`).

Every helper is the identity (or the plain single-process code path) when the job has one
process, so ``python -m lmgnn_fast.train`` behaves exactly as before. The design goal for
several processes is that a run with ``W`` ranks and global batch ``B`` computes what one
process with batch ``B`` computes:

- each global batch (the same seeded batches a single process would draw) is cut into
  ``W`` interleaved slices of ``ceil(B / W)`` items, one per rank (the sampling loaders'
  ``rank``/``world_size`` for the GNN stages, :func:`rank_slice` for stage 1's batches);
  a last batch that does not divide is padded by repeating its first items, so every
  rank runs the same number of steps with the same slice size;
- gradients are averaged by ``DistributedDataParallel`` (mean of equal-size per-rank
  means = the mean over the global batch);
- the embedding refresh and the evaluation cut the *same* batches/chunks the single
  process would run, give each rank a contiguous run of them and all-gather the rows, so
  every rank holds identical tables and the metrics are computed on identical tensors;
  with one table per machine (:mod:`lmgnn_fast.train.shared_copy`) each rank writes its
  run of the refresh into the shared table instead (:func:`encode_all_shared`).
"""
from __future__ import annotations

import os
import sys

import torch
from torch import Tensor, nn

from lmgnn_fast.distributed import (
    DistContext,
    all_gather_variable,
    all_reduce_sum,
    barrier,
    init_distributed,
    shutdown,
    split_range,
)
from lmgnn_fast.sampling.loaders import shard_positions
from lmgnn_fast.train.checkpoint import CheckpointManager

__all__ = ["setup", "teardown", "rank_slice", "shard_batches", "wrap_modules", "mean_over_ranks",
           "map_chunks", "encode_all_sharded", "encode_all_shared", "sync_cache_update", "RankZeroCheckpoints",
           "maybe_fail", "FAIL_ENV"]

#: Testing aid: ``"<rank>:<step>"`` makes that rank ``os._exit(1)`` once the global step
#: reaches ``<step>`` (simulates a worker killed mid-epoch).
FAIL_ENV = "LMGNN_TEST_FAIL_RANK"


def setup(device: torch.device, timeout_s: float) -> DistContext:
    """Join the ``torchrun`` process group (single-process context without ``torchrun``)."""
    return init_distributed(device, timeout_s=timeout_s)


def teardown(ctx: DistContext, share=None) -> None:
    """Leave the process group after a successful run (all ranks reach this point); the
    machine share's leader removes its folder."""
    if ctx.is_distributed:
        barrier(ctx)
    if share is not None:
        share.close()
    shutdown(ctx)


def _slice_index(n: int, ctx: DistContext) -> Tensor:
    return shard_positions(n, ctx.rank, ctx.world_size, "strided")  # the loaders' sharding, padded by wrapping


def rank_slice(batch, ctx: DistContext):
    """This rank's share of one global batch.

    Args:
        batch: a ``[B]`` tensor, a tuple of ``[B]`` tensors cut alike, or ``None``
            (returned as is).
        ctx: the job context.

    Returns:
        Items ``rank, rank + W, ...`` of the batch (``ceil(B / W)`` of them on every rank,
        the batch padded by wrapping when ``W`` does not divide ``B``).
    """
    if batch is None or not ctx.is_distributed:
        return batch
    if isinstance(batch, tuple):
        idx = _slice_index(int(batch[0].shape[0]), ctx)
        return tuple(t[idx] for t in batch)
    return batch[_slice_index(int(batch.shape[0]), ctx)]


def shard_batches(batches: list, ctx: DistContext) -> list:
    """:func:`rank_slice` of every global batch (same count on every rank)."""
    if not ctx.is_distributed:
        return batches
    return [rank_slice(b, ctx) for b in batches]


class _Step(nn.Module):
    """Runs a loss closure as its forward, so every module the closure touches (LM, GNN,
    heads called outside the GNN's own forward) is inside one DDP forward."""

    def __init__(self, modules: nn.Module):
        super().__init__()
        self.inner = modules

    def forward(self, fn):
        """The loss ``fn()``."""
        return fn()


def wrap_modules(modules: nn.Module, ctx: DistContext):
    """``run(fn) -> loss``: evaluates the loss closure ``fn``; with several ranks inside a
    ``DistributedDataParallel`` forward, so ``loss.backward()`` averages the gradients.

    ``find_unused_parameters`` is on because some parameters legitimately get no gradient
    in a step: relation weights of relations absent from a sampled block, the LM while it
    is frozen (stage-3 warm-up) or when no text node is chosen for it, the stage-1 task
    head on LM-only batches.
    """
    if not ctx.is_distributed:
        return lambda fn: fn()
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # buffers (BERT's position ids) are the same on every rank: no per-forward broadcast
    params = inspect.signature(DDP.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DDP(_Step(modules), device_ids=ids, output_device=ids[0] if ids else None,
               find_unused_parameters=True, **no_sync)


def mean_over_ranks(value: float, ctx: DistContext) -> float:
    """Mean of a per-rank scalar (the global-batch loss for equal-size rank slices)."""
    if not ctx.is_distributed:
        return value
    return float(all_reduce_sum(torch.tensor([float(value)], dtype=torch.float64), ctx)) / ctx.world_size


def map_chunks(n: int, chunk: int, fn, ctx: DistContext, width: int, device, idle=None) -> Tensor:
    """Rows of ``fn(start, end)`` over the chunks ``[i, i + chunk)`` of ``range(n)``, in order.

    With several ranks each computes a contiguous run of the chunks (the same chunks, with
    the same boundaries, a single process computes) and the rows are all-gathered, so the
    result is identical on every rank and equal to the single-process result.

    Args:
        n: number of rows.
        chunk: rows per call of ``fn``.
        fn: ``fn(start, end) -> Tensor[end - start, width]``.
        width: row width (for ranks without a chunk).
        device: where the result lives.
        idle: with several ranks, ``idle()`` is called once for every chunk this rank has
            fewer than the rank with the most, after its own chunks, so every rank makes the
            same number of calls (when ``fn`` issues collectives, as the partitioned
            sampler does, ``idle`` issues the same ones with no rows).

    Returns:
        ``[n, width]`` tensor.
    """
    k = -(-n // chunk) if n else 0
    a, b = split_range(k, ctx) if ctx.is_distributed else (0, k)
    out = [fn(i * chunk, min(n, (i + 1) * chunk)) for i in range(a, b)]
    if idle is not None and ctx.is_distributed:
        for _ in range(-(-k // ctx.world_size) - (b - a)):
            idle()
    if not ctx.is_distributed:
        return torch.cat(out) if out else torch.zeros(0, width, device=device)
    dtype = out[0].dtype if out else torch.float32
    local = torch.cat(out).float() if out else torch.zeros(0, width, device=device)
    rows = all_gather_variable(local, ctx)
    return rows.to(device=device, dtype=dtype if out else rows.dtype)


@torch.no_grad()
def encode_all_sharded(lm, tokens, cache, batch_size: int, step: int, ctx: DistContext) -> None:
    """The embedding refresh across ranks: the single process's longest-first batches are
    split into contiguous runs, each rank encodes its run, the rows are all-gathered and
    every rank writes the full, identical table into its ``cache``."""
    n = len(tokens)
    order = torch.argsort(tokens.lengths, descending=True, stable=True)
    was_training = lm.training
    lm.eval()
    try:
        rows = map_chunks(n, batch_size, lambda s, e: lm.encode(tokens, order[s:e]), ctx,
                          lm.hidden_size, next(lm.model.parameters()).device)
    finally:
        lm.train(was_training)
    if n:
        cache.update(order.to(rows.device), rows, step)


@torch.no_grad()
def encode_all_shared(lm, tokens, cache, batch_size: int, step: int, ctx: DistContext, share) -> None:
    """The embedding refresh into a table the ranks of each machine share (``cache`` has
    ``backing="shared"``; ``share`` is the :class:`~lmgnn_fast.train.shared_copy.MachineShare`).

    The single process's longest-first batches are split into contiguous runs as in
    :func:`encode_all_sharded`. On one machine each rank writes the rows of its run straight
    into the shared table (nothing is gathered); across machines the rows are all-gathered
    and each rank writes its :meth:`~MachineShare.local_split` of them, so every row is
    written once per machine. Barriers before (no rank still reads the old rows) and after
    (every row is written); then every rank records the versions and re-reads its cached
    copies (:meth:`EmbeddingCache.reload`).
    """
    n = len(tokens)
    order = torch.argsort(tokens.lengths, descending=True, stable=True)
    was_training = lm.training
    lm.eval()
    barrier(ctx)
    try:
        if share.machines == 1:
            k = -(-n // batch_size) if n else 0
            a, b = split_range(k, ctx)
            for i in range(a, b):
                ids = order[i * batch_size:min(n, (i + 1) * batch_size)]
                rows = lm.encode(tokens, ids)
                cache.update(ids.to(rows.device), rows, step)
        else:
            rows = map_chunks(n, batch_size, lambda s, e: lm.encode(tokens, order[s:e]), ctx,
                              lm.hidden_size, next(lm.model.parameters()).device)
            lo, hi = share.local_split(n)
            if hi > lo:
                cache.update(order[lo:hi].to(rows.device), rows[lo:hi], step)
            del rows
    finally:
        lm.train(was_training)
    if cache.device.type == "cuda":
        torch.cuda.synchronize(cache.device)  # the kernels write the host table asynchronously
    barrier(ctx)
    if n:
        cache.reload(order, step)


def sync_cache_update(cache, ids: Tensor, rows: Tensor, step: int, ctx: DistContext) -> None:
    """Write recomputed rows into ``cache``; with several ranks, every rank's rows go into
    every rank's cache (called by all ranks, possibly with zero rows), so the caches stay
    identical between full refreshes. With a table shared by the ranks of a machine each
    of them writes the same gathered rows (identical bytes, each row once per rank, no
    barrier needed: a rank reads a row only after having written it itself)."""
    if ctx.is_distributed:
        ids = all_gather_variable(ids.to(cache.device).long(), ctx)
        rows = all_gather_variable(rows.detach().float(), ctx)
    if ids.numel():
        cache.update(ids.to(cache.device), rows, step)


class RankZeroCheckpoints(CheckpointManager):
    """Checkpoints written by rank 0 only; every rank reads them.

    ``save_stage`` ends with a barrier because the other ranks load the stage checkpoint
    right after it is written (evaluation, next stage)."""

    def __init__(self, out_dir: str, ctx: DistContext, log=None):
        super().__init__(out_dir, log=log, clean=ctx.is_main)
        self.ctx = ctx

    def save_stage(self, stage, model_state, meta=None) -> None:
        """Rank 0 writes; every rank waits until the file is there."""
        if self.ctx.is_main:
            super().save_stage(stage, model_state, meta)
        barrier(self.ctx)

    def save_last(self, state, model_state, optimizers) -> None:
        """Rank 0 writes the resumable state."""
        if self.ctx.is_main:
            super().save_last(state, model_state, optimizers)

    def clear_last(self) -> None:
        """Rank 0 removes the resumable state; every rank waits."""
        if self.ctx.is_main:
            super().clear_last()
        barrier(self.ctx)


def maybe_fail(ctx: DistContext, global_step: int) -> None:
    """Testing aid (see :data:`FAIL_ENV`): kill this rank abruptly at the configured step."""
    spec = os.environ.get(FAIL_ENV)
    if not spec:
        return
    rank, step = (int(x) for x in spec.split(":"))
    if ctx.rank == rank and global_step >= step:
        print(f"rank {ctx.rank}: {FAIL_ENV}={spec}: exiting abruptly at step {global_step}",
              file=sys.stderr, flush=True)
        os._exit(1)
