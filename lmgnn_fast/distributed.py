"""Multi-process training on ``torch.distributed``: launch context, seed sharding, collectives.

Launched by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...), the
trainer calls :func:`init_distributed` once; in a plain ``python`` process it returns a
single-process context and every helper here degenerates to the identity, so the same
training code runs with one process or many. Backend: NCCL when the device is CUDA, gloo
on CPU. Every collective runs under the process group's timeout, so a rank that died makes
the others fail with an error instead of waiting forever.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str | torch.device = "cpu", timeout_s: float = 300.0) -> DistContext:
    """Join the process group that ``torchrun`` set up (no-op for a single process).

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; with CUDA each rank takes the GPU of
            its ``LOCAL_RANK``.
        timeout_s: bound on every collective; a rank that died or hangs makes the others
            raise after at most this long.

    Raises:
        RuntimeError: CUDA requested with fewer visible GPUs than local ranks.
    """
    device = torch.device(device)
    world = env_world_size()
    if world <= 1:
        return DistContext(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise RuntimeError(
                f"distributed: LOCAL_RANK {local_rank} needs GPU {local_rank} but only {n} visible; "
                "start at most one process per GPU (--nproc-per-node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)


def shutdown(ctx: DistContext) -> None:
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard_for_epoch(items: Tensor, ctx: DistContext, *, seed: int, epoch: int,
                    shuffle: bool = True) -> Tensor:
    """This rank's share of ``items`` for one epoch: disjoint and of equal length on every rank.

    All ranks permute with the same ``(seed, epoch)`` generator and take every
    ``world_size``-th item starting at their rank. To keep the batch count equal (a rank
    with fewer batches would leave the others waiting in a collective), the permutation is
    padded by repeating its first items, as ``DistributedSampler`` does; with one process
    nothing is padded or dropped.
    """
    n = items.numel()
    if shuffle:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    if not ctx.is_distributed:
        return items[order]
    per_rank = -(-n // ctx.world_size)
    pad = per_rank * ctx.world_size - n
    if pad:
        order = torch.cat([order, order[:pad].repeat(-(-pad // max(n, 1)))[:pad]]) if n else order
    return items[order[ctx.rank::ctx.world_size]]


def split_range(n: int, ctx: DistContext) -> tuple[int, int]:
    """Contiguous ``[start, end)`` of ``range(n)`` owned by this rank (sizes differ by <= 1)."""
    base, extra = divmod(n, ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return start, start + base + (1 if ctx.rank < extra else 0)


def all_gather_rows(rows: Tensor, n: int, ctx: DistContext) -> Tensor:
    """Concatenate each rank's :func:`split_range` slice of a ``[n, ...]`` table, in rank order.

    Every rank ends with the identical full table (used for the embedding refresh, which
    each rank computes for its own slice of the nodes).
    """
    if not ctx.is_distributed:
        return rows
    sizes = [split_range(n, DistContext(rank=r, world_size=ctx.world_size))
             for r in range(ctx.world_size)]
    longest = max(e - s for s, e in sizes)
    comm_device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    padded = rows.new_zeros((longest, *rows.shape[1:]), device=comm_device)
    padded[: rows.shape[0]] = rows.to(comm_device)
    out = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(out, padded)
    return torch.cat([o[: e - s] for o, (s, e) in zip(out, sizes)]).to(rows.device)


def all_gather_variable(t: Tensor, ctx: DistContext) -> Tensor:
    """Concatenate tensors of different first-dimension sizes from all ranks, in rank order."""
    if not ctx.is_distributed:
        return t
    comm_device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    n = torch.tensor([t.shape[0]], device=comm_device)
    ns = [torch.empty_like(n) for _ in range(ctx.world_size)]
    dist.all_gather(ns, n)
    ns = [int(x.item()) for x in ns]
    if max(ns) == 0:
        return t[:0]
    padded = t.new_zeros((max(ns), *t.shape[1:]), device=comm_device)
    padded[: t.shape[0]] = t.to(comm_device)
    out = [torch.empty_like(padded) for _ in ns]
    dist.all_gather(out, padded)
    return torch.cat([o[:k] for o, k in zip(out, ns)]).to(t.device)


def all_reduce_sum(t: Tensor, ctx: DistContext) -> Tensor:
    """Sum of ``t`` over ranks (returns a new tensor; identity for one process)."""
    if not ctx.is_distributed:
        return t
    comm_device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    out = t.detach().to(comm_device).clone()
    dist.all_reduce(out)
    return out.to(t.device)


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's ``obj`` on every rank."""
    if not ctx.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj, ctx: DistContext) -> list:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` for one process)."""
    if not ctx.is_distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
