"""DistNeighborSampler in 2 and 4 real gloo processes: every rank holds only its part of the
graph and its blocks equal, tensor for tensor, the single-process NeighborSampler's blocks
on the whole graph for the same seeds and sampling seed (contiguous, random and METIS
partitions; 1-3 hops; with and without excluded edges; with replacement; every rank with
the same sampling seed or its own)."""
from __future__ import annotations

import os

import pytest
import torch

from lmgnn_fast.datasets import load_dataset
from lmgnn_fast.distributed import DistContext
from lmgnn_fast.partition import local_graph, partition_graph
from lmgnn_fast.sampling import NeighborSampler
from lmgnn_fast.sampling.distributed import DistNeighborSampler

FANOUTS = ([4], [3, 2], [3, 2, 2], [-1, 2])
R0 = ("t0", "r0", "t1")


def _graph():
    return load_dataset("synthetic", num_nodes=1500, num_edges=9000, with_text=False, seed=5)


def _methods() -> list[str]:
    try:
        import pymetis  # noqa: F401
    except ImportError:
        return ["contiguous", "random"]
    return ["contiguous", "random", "metis"]


def _seeds(g, rank: int, case: int) -> dict:
    gen = torch.Generator().manual_seed(1000 * case + rank)
    if case % 3 == 2 and rank == 1:
        return {}  # a rank with nothing to sample still answers the others
    out = {"t0": torch.randperm(g.num_nodes["t0"], generator=gen)[:40]}
    if case % 2:
        out["t2"] = torch.randperm(g.num_nodes["t2"], generator=gen)[:7].int()
    return out


def _exclude(g, rank: int) -> dict:
    """A link-prediction batch's positives of this rank, under r0 and its reverse."""
    gen = torch.Generator().manual_seed(77 + rank)
    eids = torch.randperm(g.num_edges(R0), generator=gen)[:300]
    return {R0: eids, g.reverse_of[R0]: eids}


def _diff(a, b) -> str:
    """'' when two block lists are equal, else where they differ."""
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} blocks"
    for i, (x, y) in enumerate(zip(a, b)):
        if x.node_types != y.node_types or x.edge_types != y.edge_types or x.num_dst != y.num_dst:
            return f"block {i}: node types / edge types / num_dst"
        for t in x.node_types:
            if not torch.equal(x.src_nodes[t], y.src_nodes[t]):
                return f"block {i}: src_nodes[{t}]"
        for name in ("indptr", "indices", "eid"):
            for r, (p, q) in enumerate(zip(getattr(x, name), getattr(y, name))):
                if p.dtype != q.dtype or not torch.equal(p, q):
                    return f"block {i}: {name}[{r}]"
    return ""


def _worker(rank, world, port, q):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from lmgnn_fast.distributed import init_distributed

    torch.set_num_threads(1)
    ctx = init_distributed("cpu", timeout_s=120)
    try:
        g = _graph()
        failures, sampled_remote, edges = [], 0, 0
        for method in _methods():
            parts = partition_graph(g, world, method=method, seed=2)
            mine = local_graph(g, parts, rank)
            held = sum(c.indices.numel() for c in mine.csc.values())
            if held >= g.num_edges():
                failures.append(f"{method}: rank {rank} holds all {held} edges")
            case = 0
            for fanouts in FANOUTS:
                for excl in (False, True):
                    for replace in ((False, True) if fanouts == [3, 2] else (False,)):
                        case += 1
                        seeds = _seeds(g, rank, case)
                        ex = _exclude(g, rank) if excl else None
                        ds = DistNeighborSampler(mine, parts, fanouts, ctx, replace=replace)
                        seed = 100 + case + (rank if case % 2 else 0)  # ranks may sample with their own seed
                        got = ds.sample(seeds, ex, seed=seed)
                        want = NeighborSampler(g, fanouts, replace=replace).sample(seeds, ex, seed=seed)
                        d = _diff(got, want)
                        if d:
                            failures.append(f"{method} fanouts={fanouts} exclude={excl} replace={replace}: {d}")
                        st = ds.stats()
                        sampled_remote += st["nodes_remote"]
                        edges += sum(int(e.numel()) for b in want for e in b.eid)
                        if st["nodes_remote"] and not (st["bytes_sent"] and st["bytes_received"]):
                            failures.append(f"{method}: remote nodes but no bytes counted")
        q.put((rank, failures, sampled_remote, edges))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_sample_the_single_process_blocks(world, spawn_gloo):
    res = spawn_gloo(_worker, world)
    assert [r[0] for r in res] == list(range(world))
    for rank, failures, sampled_remote, edges in res:
        assert failures == [], (rank, failures[:5])
        assert sampled_remote > 0  # every rank sent frontier nodes to other owners
        assert edges > 0


def test_single_process_and_exclusions_match():
    """One process (no exchange): the same blocks as NeighborSampler; the exclusion really
    removes edges (the excluded ids never appear, and the blocks differ from no exclusion)."""
    g = _graph()
    parts = partition_graph(g, 1)
    ds = DistNeighborSampler(local_graph(g, parts, 0), parts, [-1, 3], DistContext(), seed=4)
    ref = NeighborSampler(g, [-1, 3], seed=4)
    seeds = {"t0": torch.arange(0, 500, 7)}
    ex = _exclude(g, 0)
    for _ in range(2):  # implicit per-call seeds follow the same counter
        assert _diff(ds.sample(seeds, ex), ref.sample(seeds, ex)) == ""
    with_ex = ds.sample(seeds, ex, seed=9)
    r = g.edge_types.index(R0)
    assert not set(with_ex[-1].eid[r].tolist()) & set(ex[R0].tolist())
    assert _diff(with_ex, ds.sample(seeds, None, seed=9)) != ""


def test_bad_input_is_named():
    g = _graph()
    parts = partition_graph(g, 1)
    ds = DistNeighborSampler(g, parts, [2], DistContext())
    with pytest.raises(ValueError, match=r"seed id 500 out of range for node type 't0' \(500 nodes\)"):
        ds.sample({"t0": torch.tensor([1, 500])})
    with pytest.raises(ValueError, match="seed id -1 out of range"):
        ds.sample({"t0": torch.tensor([-1])})
    with pytest.raises(ValueError, match="seeds of 't0' hold repeated ids"):
        ds.sample({"t0": torch.tensor([3, 3])})
    with pytest.raises(ValueError, match="unknown node type 'paper'"):
        ds.sample({"paper": torch.tensor([0])})
    with pytest.raises(ValueError, match="exclude_eids names unknown edge type"):
        ds.sample({"t0": torch.tensor([0])}, {("t0", "nope", "t1"): torch.tensor([0])})
    with pytest.raises(ValueError, match="partition of 't0' has 2 parts but the job has 1 ranks"):
        DistNeighborSampler(g, partition_graph(g, 2), [2], DistContext())
    with pytest.raises(ValueError, match="no partition for node type 't1'"):
        DistNeighborSampler(g, {"t0": parts["t0"]}, [2], DistContext())
    import copy

    from lmgnn_fast.graph import CSC

    off_host = copy.copy(g)
    off_host.csc = {et: CSC(*(t.to("meta") for t in c)) for et, c in g.csc.items()}
    with pytest.raises(ValueError, match=r"graph part must be in host memory, got a graph on \['meta'\]"):
        DistNeighborSampler(off_host, parts, [2], DistContext())
