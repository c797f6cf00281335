"""Node partitions and the partitioned table: every rank holds only its part and fetches any
rows through all-to-alls, in 2 real gloo processes, against the full single-process table."""
from __future__ import annotations

import os

import pytest
import torch

from _toy_graph import write_toy_dir
from lmgnn_fast.distributed import DistContext
from lmgnn_fast.io import read_dir
from lmgnn_fast.partition import NodePartition, PartitionedTable, partition_graph


@pytest.mark.parametrize("make", ["contiguous", "random"])
@pytest.mark.parametrize("n,parts", [(37, 2), (10, 3), (5, 5), (0, 2), (3, 4)])
def test_partition_owned_and_local_agree(make, n, parts):
    p = NodePartition.contiguous(n, parts) if make == "contiguous" else NodePartition.random(n, parts, seed=3)
    assert p.counts.sum() == n and int(p.counts.max() - p.counts.min()) <= 1  # balanced
    seen = []
    for k in range(parts):
        ids = p.owned(k)
        assert torch.equal(ids, torch.sort(ids).values)
        assert (p.owner[ids] == k).all()
        assert torch.equal(p.local[ids], torch.arange(ids.numel()))  # row i of part k is owned(k)[i]
        seen += ids.tolist()
    assert sorted(seen) == list(range(n))


def test_partition_rejects_bad_owners():
    with pytest.raises(ValueError, match="owner 3 out of range for 3 parts"):
        NodePartition(torch.tensor([0, 3, 1]), 3)
    with pytest.raises(ValueError, match="owner -1 out of range"):
        NodePartition(torch.tensor([0, -1]), 2)
    with pytest.raises(ValueError, match="1-D integer"):
        NodePartition(torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match="num_parts must be >= 1"):
        NodePartition(torch.tensor([0]), 0)
    with pytest.raises(ValueError, match="part 2 out of range"):
        NodePartition.contiguous(4, 2).owned(2)


def test_partition_graph_covers_every_type(tmp_path):
    g = read_dir(write_toy_dir(str(tmp_path / "d"), num_papers=20))
    parts = partition_graph(g, 3, method="random", seed=1)
    assert set(parts) == set(g.node_types)
    for t, p in parts.items():
        assert p.num_nodes == g.num_nodes[t] and p.num_parts == 3
    with pytest.raises(ValueError, match="method must be one of"):
        partition_graph(g, 2, method="kmeans")


def test_single_process_table_is_the_whole_table():
    full = torch.randn(9, 3)
    p = NodePartition.contiguous(9, 1)
    t = PartitionedTable(p, 3, DistContext())
    t.write(torch.arange(9), full)
    ids = torch.tensor([8, 0, 0, 4], dtype=torch.int32)
    assert torch.equal(t.fetch(ids), full[ids.long()])
    assert t.stats()["rows_local"] == 4 and t.stats()["rows_remote"] == 0
    with pytest.raises(IndexError, match="id 9 out of range for 9 nodes"):
        t.fetch(torch.tensor([9]))
    with pytest.raises(ValueError, match=r"rows must have shape \(2, 3\)"):
        t.write(torch.tensor([0, 1]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="partition has 2 parts but the job has 1 ranks"):
        PartitionedTable(NodePartition.contiguous(9, 2), 3, DistContext())


N, D = 53, 6


def _requests(rank: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    return [torch.randint(0, N, (40,), generator=g),  # duplicates, both owners
            torch.empty(0, dtype=torch.long) if rank == 1 else torch.arange(N - 1, -1, -1),  # one rank asks nothing
            torch.tensor([rank])]


def _worker(rank, world, port, method, q):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from lmgnn_fast.distributed import init_distributed

    ctx = init_distributed("cpu", timeout_s=60)
    try:
        full = torch.randn(N, D, generator=torch.Generator().manual_seed(7))  # the single-process table
        part = NodePartition.contiguous(N, world) if method == "contiguous" else NodePartition.random(N, world, 5)
        table = PartitionedTable(part, D, ctx)
        table.write(part.owned(rank), full[part.owned(rank)])
        try:
            table.write(part.owned(1 - rank)[:1], full[part.owned(1 - rank)[:1]])
            wrong_owner = ""
        except ValueError as e:
            wrong_owner = str(e)
        got = [table.fetch(ids) for ids in _requests(rank)]
        q.put((rank, table.rows.shape[0], [torch.equal(a, full[ids]) for a, ids in zip(got, _requests(rank))],
               table.stats(), wrong_owner))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("method", ["contiguous", "random"])
def test_two_ranks_fetch_what_one_process_reads(method, spawn_gloo):
    res = spawn_gloo(_worker, 2, method)
    part = NodePartition.contiguous(N, 2) if method == "contiguous" else NodePartition.random(N, 2, 5)
    for rank, held, equal, stats, wrong_owner in res:
        assert held == int(part.counts[rank])  # each rank holds only its part
        assert equal == [True, True, True]
        reqs = torch.cat(_requests(rank))
        remote = int((part.owner[reqs] != rank).sum())
        assert stats["rows_remote"] == remote and stats["rows_local"] == reqs.numel() - remote
        # each distinct remote row of a fetch came back once: 8-byte ids out, D x 4-byte rows in
        other = 1 - rank
        remote = sum(int((part.owner[torch.unique(ids)] != rank).sum()) for ids in _requests(rank))
        answered = sum(int((part.owner[torch.unique(ids)] == rank).sum()) for ids in _requests(other))
        assert stats["rows_moved"] == remote and stats["hits"] == 0  # no cache
        assert stats["bytes_received"] == remote * D * 4 + answered * 8
        assert stats["bytes_sent"] == remote * 8 + answered * D * 4
        assert f"owned by rank {1 - rank}, not by rank {rank}" in wrong_owner


def _blocks_equal(a, b) -> bool:
    return all(x.node_types == y.node_types and all(torch.equal(x.src_nodes[t], y.src_nodes[t]) for t in x.node_types)
               and x.num_dst == y.num_dst
               and all(torch.equal(p, q) for p, q in zip(x.indptr + x.indices + x.eid, y.indptr + y.indices + y.eid))
               for x, y in zip(a, b))


@pytest.mark.parametrize("method", ["contiguous", "random"])
def test_owners_sample_what_one_process_samples(tmp_path, method):
    from lmgnn_fast.partition import local_graph
    from lmgnn_fast.sampling import NeighborSampler

    g = read_dir(write_toy_dir(str(tmp_path / "d"), num_papers=40))
    parts = partition_graph(g, 2, method=method, seed=4)
    locals_ = [local_graph(g, parts, r) for r in range(2)]
    for et, c in g.csc.items():  # the parts' edges are the graph's, split by destination owner
        assert sum(lg.csc[et].indices.numel() for lg in locals_) == c.indices.numel()
        own = parts[et[2]].owner
        for r, lg in enumerate(locals_):
            deg = lg.csc[et].indptr[1:] - lg.csc[et].indptr[:-1]
            assert (deg[own != r] == 0).all()
            assert torch.equal(deg[own == r], (c.indptr[1:] - c.indptr[:-1])[own == r])
    assert locals_[0].text is g.text  # node data shared, not copied
    for r, lg in enumerate(locals_):
        seeds = {t: parts[t].owned(r)[:7] for t in g.node_types}
        for fanouts in ([3], [0, 2], [0, 0, 4]):  # hop h of a frontier: h zero fanouts first
            full = NeighborSampler(g, fanouts, seed=11).sample(seeds, seed=5)
            mine = NeighborSampler(lg, fanouts, seed=11).sample(seeds, seed=5)
            assert _blocks_equal(full, mine), (r, fanouts)
            assert sum(b.indices[i].numel() for b in full for i in range(len(b.indices))) > 0


def _edges(block) -> set:
    """(relation, global dst, global src, edge id) of every sampled edge of a block."""
    out = set()
    for r, (s, _, d) in enumerate(block.edge_types):
        ptr, idx, eid = block.indptr[r], block.indices[r], block.eid[r]
        for v in range(ptr.numel() - 1):
            for k in range(int(ptr[v]), int(ptr[v + 1])):
                out.add((r, int(block.src_nodes[d][v]), int(block.src_nodes[s][idx[k]]), int(eid[k])))
    return out


def test_owners_of_a_frontier_together_draw_the_single_process_hop(tmp_path):
    """A frontier mixing both parts' nodes: each owner samples its own nodes on its part (at
    other positions of a shorter seed list) and the union is the single process's hop."""
    from lmgnn_fast.partition import local_graph
    from lmgnn_fast.sampling import NeighborSampler

    g = read_dir(write_toy_dir(str(tmp_path / "d"), num_papers=40))
    parts = partition_graph(g, 2, method="random", seed=9)
    frontier = {t: torch.randperm(g.num_nodes[t], generator=torch.Generator().manual_seed(1))[:12]
                for t in g.node_types}
    for fanouts in ([3], [0, 2]):
        whole = _edges(NeighborSampler(g, fanouts).sample(frontier, seed=8)[-1 if len(fanouts) == 1 else 0])
        union = set()
        for r in range(2):
            mine = {t: f[parts[t].owner[f] == r] for t, f in frontier.items()}
            blocks = NeighborSampler(local_graph(g, parts, r), fanouts).sample(mine, seed=8)
            union |= _edges(blocks[-1 if len(fanouts) == 1 else 0])
        assert whole and union == whole, fanouts
