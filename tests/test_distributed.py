"""torch.distributed helpers, run in 2 real gloo processes."""
import os

import pytest
import torch

from conftest import spawn_gloo
from lmgnn_fast.distributed import (
    DistContext,
    all_gather_rows,
    all_gather_variable,
    all_reduce_sum,
    init_distributed,
    shard_for_epoch,
    split_range,
)


def test_single_process_is_identity():
    ctx = init_distributed("cpu")
    assert not ctx.is_distributed and ctx.is_main
    items = torch.arange(10)
    shard = shard_for_epoch(items, ctx, seed=1, epoch=0)
    assert sorted(shard.tolist()) == list(range(10))
    x = torch.randn(4, 3)
    assert all_gather_rows(x, 4, ctx) is x
    assert split_range(7, ctx) == (0, 7)


@pytest.mark.parametrize("n,world", [(10, 2), (11, 2), (7, 3), (1, 2), (0, 2)])
def test_shards_are_equal_and_cover_everything(n, world):
    items = torch.arange(100, 100 + n)
    shards = [shard_for_epoch(items, DistContext(rank=r, world_size=world), seed=3, epoch=2)
              for r in range(world)]
    assert len({s.numel() for s in shards}) == 1
    seen = torch.cat(shards)
    assert set(seen.tolist()) == set(items.tolist())
    assert seen.numel() - n < world  # padding only to equalize
    # a new epoch reshuffles
    if n > 3:
        other = shard_for_epoch(items, DistContext(rank=0, world_size=world), seed=3, epoch=3)
        assert not torch.equal(other, shards[0])


@pytest.mark.parametrize("n,world", [(10, 3), (2, 4), (9, 1)])
def test_split_range_partitions(n, world):
    ranges = [split_range(n, DistContext(rank=r, world_size=world)) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def _worker(rank, world, port, q):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ctx = init_distributed("cpu", timeout_s=60)
    try:
        n = 7
        s, e = split_range(n, ctx)
        rows = torch.arange(s, e, dtype=torch.float32)[:, None].repeat(1, 3)
        full = all_gather_rows(rows, n, ctx)
        var = all_gather_variable(torch.full((rank + 1,), float(rank)), ctx)
        tot = all_reduce_sum(torch.tensor([rank + 1.0]), ctx)
        q.put((rank, full.tolist(), var.tolist(), tot.item()))
    finally:
        torch.distributed.destroy_process_group()


def test_collectives_in_two_gloo_processes():
    results = spawn_gloo(_worker, 2)
    expect_full = [[float(i)] * 3 for i in range(7)]
    for _rank, full, var, tot in results:
        assert full == expect_full
        assert var == [0.0, 1.0, 1.0]
        assert tot == 3.0
