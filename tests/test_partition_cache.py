"""PartitionedTable's per-rank cache of remote rows, in 2 real gloo processes: fetched rows
always equal the full table's, a repeated fetch is served from the cache and moves fewer
bytes, and the hit / miss / byte counters say what happened."""
from __future__ import annotations

import os

import pytest
import torch

from lmgnn_fast.distributed import DistContext
from lmgnn_fast.partition import NodePartition, PartitionedTable

N, D = 61, 5


def _full() -> torch.Tensor:
    return torch.randn(N, D, generator=torch.Generator().manual_seed(11))


def _worker(rank, world, port, q):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from lmgnn_fast.distributed import init_distributed

    ctx = init_distributed("cpu", timeout_s=120)
    try:
        full = _full()
        part = NodePartition.random(N, world, seed=3)
        out = {}
        for name, cap, policy in (("none", 0, "clock"), ("clock", 64, "clock"), ("lru", 64, "lru"),
                                  ("small", 4, "clock")):
            tab = PartitionedTable(part, D, ctx, cache_capacity=cap, cache_policy=policy)
            tab.write(part.owned(rank), full[part.owned(rank)])
            gen = torch.Generator().manual_seed(50 + rank)
            ids = torch.randint(0, N, (80,), generator=gen)  # duplicates, both owners
            steps, equal = [], []
            for req in (ids, ids, torch.empty(0, dtype=torch.long), ids.flip(0)[:30].int(),
                        torch.randint(0, N, (40,), generator=gen)):
                before = tab.stats()
                got = tab.fetch(req)
                equal.append(got.shape == (req.numel(), D) and torch.equal(got, full[req.long()]))
                after = tab.stats()
                steps.append({k: after[k] - before[k] for k in after})
            # owners rewrite their rows: after clear_cache every rank reads the new ones
            tab.write(part.owned(rank), 2 * full[part.owned(rank)])
            tab.clear_cache()
            before = tab.stats()
            equal.append(torch.equal(tab.fetch(ids), 2 * full[ids]))
            after = tab.stats()
            steps.append({k: after[k] - before[k] for k in after})
            try:
                tab.fetch(torch.tensor([3, N]))
                err = ""
            except IndexError as e:
                err = str(e)
            out[name] = (equal, steps, tab.cached_ids().tolist(), err)
        q.put((rank, out))
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_fetch_through_the_remote_row_cache(spawn_gloo):
    part = NodePartition.random(N, 2, seed=3)
    for rank, out in spawn_gloo(_worker, 2):
        gen = torch.Generator().manual_seed(50 + rank)
        ids = torch.randint(0, N, (80,), generator=gen)
        remote = ids[part.owner[ids] != rank]
        n_remote, n_distinct = remote.numel(), torch.unique(remote).numel()
        row = D * 4
        for name, (equal, steps, cached, err) in out.items():
            assert all(equal), (name, equal)
            assert err == f"PartitionedTable.fetch: id {N} out of range for {N} nodes"
            first, second, empty, _, _, cleared = steps
            assert first["rows_remote"] == n_remote and first["hits"] == 0 and first["misses"] == n_remote
            assert first["rows_moved"] == n_distinct and first["bytes_received"] >= n_distinct * row
            assert empty["rows_remote"] == 0 and empty["rows_moved"] == 0
            assert cleared["hits"] == 0 and cleared["rows_moved"] == n_distinct  # nothing cached after clear
            if name == "none":
                assert second == first and cached == []  # no cache: the same rows move again
            elif name in ("clock", "lru"):
                # every remote row fits the cache: the repeat is all hits and moves no row
                assert second["hits"] == n_remote and second["misses"] == 0 and second["rows_moved"] == 0
                assert second["bytes_received"] < first["bytes_received"]
                assert set(cached) <= set(part.owned(1 - rank).tolist()) and len(cached) > 0
            else:  # 4 slots: evicting, still correct, the repeat moves fewer rows
                assert len(cached) == 4 and second["hits"] > 0
                assert second["rows_moved"] < first["rows_moved"]
                assert second["bytes_received"] < first["bytes_received"]


def test_cache_arguments_and_single_process():
    p = NodePartition.contiguous(N, 1)
    with pytest.raises(ValueError, match="cache_policy must be 'clock' or 'lru', got 'lfu'"):
        PartitionedTable(p, D, DistContext(), cache_capacity=4, cache_policy="lfu")
    with pytest.raises(ValueError, match="cache_capacity must be an int >= 0, got -1"):
        PartitionedTable(p, D, DistContext(), cache_capacity=-1)
    t = PartitionedTable(p, D, DistContext(), cache_capacity=8)  # one process: nothing is remote
    assert t.cache_capacity == 0
    full = _full()
    t.write(torch.arange(N), full)
    ids = torch.tensor([5, 5, 60, 0])
    assert torch.equal(t.fetch(ids), full[ids])
    assert t.stats()["hits"] == 0 and t.stats()["rows_local"] == 4
    with pytest.raises(IndexError, match="PartitionedTable.fetch: id -2 out of range for 61 nodes"):
        t.fetch(torch.tensor([-2, 1]))


def _scatter_worker(rank, world, port, q):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from lmgnn_fast.distributed import init_distributed

    ctx = init_distributed("cpu", timeout_s=120)
    try:
        full = _full()
        part = NodePartition.random(N, world, seed=3)
        tab = PartitionedTable(part, D, ctx, cache_capacity=64)
        tab.write(part.owned(rank), full[part.owned(rank)])
        warm = tab.fetch(torch.arange(N))  # every remote row is now cached
        ids = torch.randperm(N, generator=torch.Generator().manual_seed(7 + rank))[:25]  # ranks overlap
        tab.scatter(ids, -full[ids] * (rank + 1))  # refreshes the cached copies
        after = tab.fetch(torch.arange(N))
        empty = tab.scatter(torch.empty(0, dtype=torch.long), torch.empty(0, D))  # nothing to write
        q.put((rank, torch.equal(warm, full), after, tab.stats(), empty))
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_scatter_writes_any_rows_and_refreshes_cached_copies(spawn_gloo):
    full = _full()
    want = full.clone()
    for r in range(2):  # rank order: where both ranks write an id, rank 1's row wins
        ids = torch.randperm(N, generator=torch.Generator().manual_seed(7 + r))[:25]
        want[ids] = -full[ids] * (r + 1)
    for rank, warm_ok, after, stats, empty in spawn_gloo(_scatter_worker, 2):
        assert warm_ok and empty is None
        assert torch.equal(after, want), rank  # cached remote copies were re-read, not stale
        assert stats["rows_scattered"] > 0 and stats["hits"] > 0


def test_scatter_single_process_and_bad_shape():
    t = PartitionedTable(NodePartition.contiguous(N, 1), D, DistContext())
    full = _full()
    t.scatter(torch.arange(N), full)
    assert torch.equal(t.fetch(torch.tensor([4, 0])), full[[4, 0]])
    with pytest.raises(ValueError, match=r"PartitionedTable.scatter: rows must have shape \(2, 5\), got \(2, 4\)"):
        t.scatter(torch.tensor([1, 2]), torch.zeros(2, 4))
