"""hetero_neighbor_sample / NeighborSampler: reference equality, invariants, statistics."""
from __future__ import annotations

import threading
from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from lmgnn_fast.ops import coo_to_csc, csc_to_coo, hetero_neighbor_sample, hetero_neighbor_sample_ref
from lmgnn_fast.sampling import Block, NeighborSampler
from lmgnn_fast.testing import with_devices

CSC = namedtuple("CSC", "indptr indices eid")

NODE_TYPES = ["paper", "author", "venue"]
EDGE_TYPES = [("author", "writes", "paper"), ("paper", "cites", "paper"), ("paper", "in", "venue"),
              ("paper", "rev-writes", "author"), ("venue", "rev-in", "paper")]


def make_graph(num_nodes=(60, 40, 8), num_edges=(300, 500, 60), seed=0, index_dtype=torch.long,
               device="cpu", edge_types=EDGE_TYPES, node_types=NODE_TYPES):
    """A duck-typed HeteroGraph from random COO (reverse relations share the eids)."""
    g = torch.Generator().manual_seed(seed)
    n = dict(zip(node_types, num_nodes))
    coo, csc = {}, {}
    fwd = [et for et in edge_types if not et[1].startswith("rev-")]
    for et, E in zip(fwd, num_edges):
        src = torch.randint(0, n[et[0]], (E,), generator=g)
        dst = torch.randint(0, n[et[2]], (E,), generator=g)
        coo[et] = (src, dst)
    for et in edge_types:
        if et[1].startswith("rev-"):
            f = next(x for x in fwd if x[1] == et[1][4:])
            coo[et] = (coo[f][1], coo[f][0])
    reverse_of = {}
    for et in edge_types:
        src, dst = coo[et]
        indptr, indices, perm = coo_to_csc(src, dst, n[et[2]])
        csc[et] = CSC(indptr.to(device), indices.to(index_dtype).to(device), perm.to(device))
        partner = [x for x in edge_types if x != et and (x[1] == "rev-" + et[1] or "rev-" + x[1] == et[1])]
        if partner:
            reverse_of[et] = partner[0]
    return SimpleNamespace(node_types=list(node_types), edge_types=list(edge_types), num_nodes=n,
                           csc=csc, coo=coo, reverse_of=reverse_of, edges=lambda et: coo[et])


def _seed_device(seeds):
    """Where the given seeds live: the missing node types get empty seeds there too."""
    return next(iter(seeds.values())).device if seeds else torch.device("cpu")


def op_args(graph, seeds, fanouts, exclude=None):
    ets, nts = graph.edge_types, graph.node_types
    return ([graph.csc[et].indptr for et in ets], [graph.csc[et].indices for et in ets],
            [graph.csc[et].eid for et in ets], [nts.index(et[0]) for et in ets],
            [nts.index(et[2]) for et in ets], [graph.num_nodes[t] for t in nts],
            [seeds.get(t, torch.empty(0, dtype=torch.long, device=_seed_device(seeds))) for t in nts], fanouts), exclude


def assert_same(a, b):
    for x, y in zip(a, b):
        if isinstance(x, list):
            assert len(x) == len(y)
            for u, v in zip(x, y):
                assert u.dtype == v.dtype and torch.equal(u.cpu(), v.cpu())
        else:
            assert torch.equal(x.cpu(), y.cpu())


def check_blocks(graph, blocks: list[Block], seeds, fanouts, replace, exclude_eids=None):
    """dst-prefix, uniqueness, edge validity and per-node counts."""
    nts, ets = graph.node_types, graph.edge_types
    for t in nts:
        s = seeds.get(t, torch.empty(0, dtype=torch.long))
        assert torch.equal(blocks[-1].dst_nodes(t).cpu(), s.cpu())
    for l, b in enumerate(blocks):
        hop = len(blocks) - 1 - l
        for t in nts:
            src = b.src_nodes[t].cpu()
            assert src.unique().numel() == src.numel(), "source nodes must be unique"
            if l > 0:
                assert torch.equal(blocks[l - 1].dst_nodes(t).cpu(), src)
        for r, et in enumerate(ets):
            ip, ix, ei = b.indptr[r].cpu(), b.indices[r].cpu(), b.eid[r].cpu()
            assert ip.numel() == b.num_dst[et[2]] + 1 and ip[-1] == ix.numel() == ei.numel()
            if ix.numel():
                assert 0 <= ix.min() and ix.max() < b.num_src(et[0])
            gsrc, gdst = graph.coo[et]
            _, dst_local = csc_to_coo(ip, ix)
            assert torch.equal(gsrc[ei], b.src_nodes[et[0]].cpu()[ix])
            assert torch.equal(gdst[ei], b.dst_nodes(et[2]).cpu()[dst_local])
            k = fanouts[hop][r]
            ex = set() if not exclude_eids or et not in exclude_eids else set(exclude_eids[et].tolist())
            assert not (set(ei.tolist()) & ex), "an excluded edge was sampled"
            dst_glob = b.dst_nodes(et[2]).cpu()
            indptr = graph.csc[et].indptr.cpu()
            geid = graph.csc[et].eid.cpu()
            for i in range(ip.numel() - 1):
                v = int(dst_glob[i])
                nbr = geid[indptr[v]:indptr[v + 1]].tolist()
                m = sum(1 for e in nbr if e not in ex)
                mine = ei[ip[i]:ip[i + 1]].tolist()
                want = 0 if m == 0 or k == 0 else (m if k < 0 else (k if replace else min(k, m)))
                assert len(mine) == want
                if not replace:
                    assert len(set(mine)) == len(mine), "duplicate neighbour without replacement"


@with_devices
@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("index_dtype", [torch.long, torch.int32])
@pytest.mark.parametrize("fanouts", [[[3] * 5, [2] * 5], [[-1, 2, 0, 5, 1]], [[4, 1, 2, 6, 3], [-1] * 5, [2] * 5]])
def test_matches_reference_and_invariants(device, replace, index_dtype, fanouts):
    graph = make_graph(seed=len(fanouts) + replace, index_dtype=index_dtype, device=device)
    seeds = {"paper": torch.tensor([3, 17, 0, 59], device=device), "venue": torch.tensor([2], device=device)}
    flat = [f for row in fanouts for f in row]
    args, _ = op_args(graph, seeds, flat)
    got = hetero_neighbor_sample(*args, replace=replace, seed=123)
    want = hetero_neighbor_sample_ref(*args, replace=replace, seed=123)
    assert_same(got, want)
    sampler = NeighborSampler(graph, fanouts, replace=replace)
    blocks = sampler.sample(seeds, seed=7)
    check_blocks(graph, blocks, seeds, fanouts, replace)


@with_devices
@pytest.mark.parametrize("replace", [False, True])
def test_excluded_edges_never_appear(device, replace):
    graph = make_graph(num_edges=(600, 900, 100), seed=5, device=device)
    sampler = NeighborSampler(graph, [[4] * 5, [3] * 5], replace=replace)
    # Exclude most writes/cites edges (and the reverses under the same ids).
    g = torch.Generator().manual_seed(3)
    ex = {EDGE_TYPES[0]: torch.randperm(600, generator=g)[:450], EDGE_TYPES[1]: torch.randperm(900, generator=g)[:600]}
    ex[EDGE_TYPES[3]] = ex[EDGE_TYPES[0]]
    seeds = {"paper": torch.arange(0, 60, 3, device=device), "author": torch.tensor([1, 2], device=device)}
    blocks = sampler.sample(seeds, exclude_eids=ex, seed=99)
    check_blocks(graph, blocks, seeds, sampler.fanouts, replace, ex)
    # Same result as the reference given the same excluded positions.
    args, _ = op_args(graph, seeds, [f for row in sampler.fanouts for f in row])
    pos = sampler.exclude_positions(ex)
    assert_same(hetero_neighbor_sample(*args, replace=replace, seed=99, exclude=pos),
                hetero_neighbor_sample_ref(*args, replace=replace, seed=99, exclude=pos))


def _star_graph(num_dst, deg):
    """num_dst destinations, each with the same `deg` sources 0..deg-1 (eid = position)."""
    src = torch.arange(deg).repeat(num_dst)
    dst = torch.arange(num_dst).repeat_interleave(deg)
    indptr, indices, perm = coo_to_csc(src, dst, num_dst)
    return indptr, indices, perm


@pytest.mark.parametrize("replace", [False, True])
def test_neighbours_drawn_uniformly(replace):
    num_dst, deg, k = 3000, 20, 5
    indptr, indices, eid = _star_graph(num_dst, deg)
    excluded = torch.tensor(sorted({v * deg + j for v in range(num_dst) for j in (2, 3, 11, 19)}))
    for ex in (None, excluded):
        nodes, _, ip, ix, _ = hetero_neighbor_sample([indptr], [indices], [eid], [0], [0], [num_dst],
                                                     [torch.arange(num_dst)], [k], replace, 2024,
                                                     None if ex is None else [ex])
        src = nodes[0][ix[0]]
        assert torch.equal(ip[0].diff(), torch.full((num_dst,), k))
        counts = torch.bincount(src, minlength=deg).numpy()
        eligible = [j for j in range(deg) if ex is None or j not in (2, 3, 11, 19)]
        assert counts[[j for j in range(deg) if j not in eligible]].sum() == 0
        assert stats.chisquare(counts[eligible]).pvalue > 1e-4


def test_subsets_drawn_uniformly():
    # deg 5, k 2: each of the 10 subsets equally likely.
    num_dst, deg, k = 4000, 5, 2
    indptr, indices, eid = _star_graph(num_dst, deg)
    nodes, _, ip, ix, _ = hetero_neighbor_sample([indptr], [indices], [eid], [0], [0], [num_dst],
                                                 [torch.arange(num_dst)], [k], False, 11)
    src = nodes[0][ix[0]].view(num_dst, k)
    assert torch.all(src[:, 0] < src[:, 1])
    code = (src[:, 0] * deg + src[:, 1]).numpy()
    _, counts = np.unique(code, return_counts=True)
    assert counts.size == 10 and stats.chisquare(counts).pvalue > 1e-4


def test_deterministic_across_threads_and_runs():
    graph = make_graph(num_nodes=(30000, 20000, 50), num_edges=(200000, 300000, 3000), seed=9)
    seeds = {"paper": torch.randperm(30000, generator=torch.Generator().manual_seed(1))[:2000]}
    args, _ = op_args(graph, seeds, [8, 5, 3, 6, 4] + [4] * 5 + [3] * 5)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = hetero_neighbor_sample(*args, seed=5)
        torch.set_num_threads(2)
        two = hetero_neighbor_sample(*args, seed=5)
        again = hetero_neighbor_sample(*args, seed=5)
    finally:
        torch.set_num_threads(old)
    assert_same(one, two)
    assert_same(two, again)
    assert sum(x.numel() for x in one[3]) > 2 * 131072  # large enough for the parallel dedup path
    assert_same(one, hetero_neighbor_sample_ref(*args, seed=5))
    other = hetero_neighbor_sample(*args, seed=6)
    assert not torch.equal(one[0][0], other[0][0])


@pytest.mark.parametrize("replace", [False, True])
def test_same_blocks_for_1_2_and_3_threads(replace):
    # Several relations into and out of each type, per-relation fanouts (0, -1 and counts)
    # and excluded edges, sized so that every hop runs the parallel paths: sampling over
    # blocks and the partitioned dedup (types with >= 2^15 destinations + edges). Every
    # thread count must give the same bits, equal to the pure-torch reference.
    graph = make_graph(num_nodes=(40000, 30000, 300), num_edges=(250000, 300000, 40000), seed=17)
    g = torch.Generator().manual_seed(3)
    seeds = {"paper": torch.randperm(40000, generator=g)[:3000], "author": torch.randperm(30000, generator=g)[:500]}
    fanouts = [6, 4, -1, 5, 2] + [3, 0, 2, 4, -1] + [2, 2, 1, 3, 0]
    exclude = [torch.unique(torch.randint(0, graph.csc[et].eid.numel(), (2000,), generator=g))
               for et in graph.edge_types]
    args, _ = op_args(graph, seeds, fanouts)
    old = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(hetero_neighbor_sample(*args, replace=replace, seed=11, exclude=exclude))
    finally:
        torch.set_num_threads(old)
    for other in outs[1:]:
        assert_same(outs[0], other)
    assert_same(outs[0], hetero_neighbor_sample_ref(*args, replace=replace, seed=11, exclude=exclude))
    assert sum(x.numel() for x in outs[0][3]) >= (1 << 16)  # large enough for the parallel paths


def test_concurrent_calls_from_two_threads_match():
    # The kernel's scratch buffers belong to the calling thread: a loader's background
    # thread and the main thread sampling at once must not see each other's.
    graph = make_graph(num_nodes=(30000, 20000, 50), num_edges=(200000, 300000, 3000), seed=4)
    g = torch.Generator().manual_seed(5)
    batches = [{"paper": torch.randperm(30000, generator=g)[:1500]} for _ in range(6)]
    args = [op_args(graph, b, [5] * 5 + [3] * 5)[0] for b in batches]
    want = [hetero_neighbor_sample(*a, seed=i) for i, a in enumerate(args)]
    got: dict[int, object] = {}

    def run(ids):
        for i in ids:
            got[i] = hetero_neighbor_sample(*args[i], seed=i)

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        worker = threading.Thread(target=run, args=([0, 2, 4],))
        worker.start()
        run([1, 3, 5])
        worker.join()
    finally:
        torch.set_num_threads(old)
    for i, w in enumerate(want):
        assert_same(w, got[i])


def test_sampler_seed_sequence_is_reproducible():
    graph = make_graph(seed=2)
    a, b = NeighborSampler(graph, [3, 2], seed=4), NeighborSampler(graph, [3, 2], seed=4)
    seeds = {"paper": torch.arange(10)}
    for _ in range(2):
        ba, bb = a.sample(seeds), b.sample(seeds)
        assert all(torch.equal(x.src_nodes["paper"], y.src_nodes["paper"]) for x, y in zip(ba, bb))


def test_empty_seeds_and_type_without_incoming_relation():
    graph = make_graph(edge_types=EDGE_TYPES[:3])  # author has no incoming relation
    sampler = NeighborSampler(graph, [2, 2])
    blocks = sampler.sample({})
    assert len(blocks) == 2
    for b in blocks:
        assert all(b.num_src(t) == 0 and b.num_dst[t] == 0 for t in NODE_TYPES)
        assert all(ip.tolist() == [0] for ip in b.indptr) and b.num_edges() == 0
    blocks = sampler.sample({"author": torch.tensor([4, 1])})
    assert blocks[-1].dst_nodes("author").tolist() == [4, 1]
    assert blocks[0].src_nodes["author"].tolist() == [4, 1] and blocks[0].num_edges() == 0
    check_blocks(graph, blocks, {"author": torch.tensor([4, 1])}, sampler.fanouts, False)


def test_fanout_spec_forms():
    graph = make_graph()
    s = NeighborSampler(graph, [{"writes": 3, ("paper", "cites", "paper"): 2}, [1, 2, 3, 4, 5], -1])
    assert s.fanouts == [[3, 2, 0, 0, 0], [1, 2, 3, 4, 5], [-1] * 5]


@pytest.mark.parametrize("mutate,exc,match", [
    (lambda a: a[6].__setitem__(0, torch.tensor([0, 60])), IndexError,
     r"hetero_neighbor_sample: seed id 60 out of range for node type 'paper' \(60 nodes\)"),
    (lambda a: a[6].__setitem__(2, torch.tensor([-1])), IndexError, r"seed id -1 out of range for node type 'venue'"),
    (lambda a: a.__setitem__(7, [2, 2, 2]), RuntimeError,
     r"fanouts has 3 entries, not a multiple of the number of relations \(5\)"),
    (lambda a: a.__setitem__(7, [2, 2, -3, 2, 2]), RuntimeError, r"fanout -3 of hop 0, relation 2 is invalid"),
    (lambda a: a.__setitem__(7, []), RuntimeError, r"fanouts is empty"),
    (lambda a: a[6].__setitem__(0, torch.tensor([4, 9, 4])), RuntimeError,
     r"seeds of node type 'paper' contain duplicate id 4"),
    (lambda a: a[6].__setitem__(0, torch.tensor([0.5])), RuntimeError,
     r"seeds of node type 'paper' must be a 1-D int32 or int64"),
    (lambda a: a[0].__setitem__(1, a[0][1][:-1]), RuntimeError,
     r"indptr\[1\] has 60 entries but its destination type 'paper' has 60 nodes"),
    (lambda a: a[1].__setitem__(1, a[1][1] + 1000), IndexError,
     r"indices\[1\] holds source id \d+ out of range for node type 'paper'"),
    (lambda a: a[2].__setitem__(0, a[2][0][:-1]), RuntimeError, r"eid\[0\] has 299 entries but indices\[0\] has 300"),
    (lambda a: a[6].pop(), RuntimeError, r"seeds must have one tensor per node type \(3\), got 2"),
    (lambda a: a[3].__setitem__(0, 7), RuntimeError, r"relation 0 has node types \(7, 0\) out of range"),
])
@with_devices
def test_bad_inputs(mutate, exc, match, device):
    graph = make_graph()
    args, _ = op_args(graph, {"paper": torch.tensor([1, 2])}, [2] * 5)
    args = [list(a) if isinstance(a, list) else a for a in args]
    mutate(args)
    # The same messages from the CUDA kernel (its checks run on the device, then one sync).
    args = [[x.to(device) if isinstance(x, torch.Tensor) else x for x in a] if isinstance(a, list) else a
            for a in args]
    with pytest.raises(exc, match=match):
        hetero_neighbor_sample(*args, seed=1, node_type_names=NODE_TYPES)


def test_bad_exclude():
    graph = make_graph()
    args, _ = op_args(graph, {"paper": torch.tensor([1])}, [2] * 5)
    ex = [torch.empty(0, dtype=torch.long)] * 5
    with pytest.raises(RuntimeError, match=r"exclude\[1\] must be sorted and unique, got 5 before 3"):
        hetero_neighbor_sample(*args, exclude=ex[:1] + [torch.tensor([5, 3])] + ex[2:])
    with pytest.raises(IndexError, match=r"exclude\[0\] holds position 300 out of range for 300 edges"):
        hetero_neighbor_sample(*args, exclude=[torch.tensor([300])] + ex[1:])
    with pytest.raises(RuntimeError, match=r"exclude must have one tensor per relation \(5\), got 1"):
        hetero_neighbor_sample(*args, exclude=ex[:1])


def test_sampler_bad_inputs():
    graph = make_graph()
    with pytest.raises(ValueError, match="fanouts\\[0\\] has 2 entries but the graph has 5 relations"):
        NeighborSampler(graph, [[1, 2]])
    with pytest.raises(ValueError, match="unknown relation 'nope'"):
        NeighborSampler(graph, [{"nope": 1}])
    with pytest.raises(ValueError, match="fanouts\\[1\\] holds -2"):
        NeighborSampler(graph, [1, -2])
    with pytest.raises(ValueError, match="unknown node type 'user'"):
        NeighborSampler(graph, [1]).sample({"user": torch.tensor([0])})


def test_opcheck():
    graph = make_graph()
    args, _ = op_args(graph, {"paper": torch.tensor([1, 5, 7])}, [2] * 5 + [1] * 5)
    torch.library.opcheck(torch.ops.lmgnn.hetero_neighbor_sample.default, (*args, False, 3),
                          test_utils=("test_schema", "test_faketensor"))


# ----------------------------------------------------------------------------- loaders
from lmgnn_fast.sampling import EdgeLoader, LinkLoader, NodeLoader  # noqa: E402


def _graph_with_data():
    graph = make_graph(num_nodes=(200, 120, 10), num_edges=(800, 1200, 200), seed=4)
    train = torch.zeros(200, dtype=torch.bool)
    train[::3] = True
    graph.masks = {"paper": {"train": train, "val": ~train}}
    graph.labels = {"paper": torch.arange(200) % 7}
    graph.edge_masks = {EDGE_TYPES[0]: {"train": torch.arange(800) % 2 == 0}}
    graph.edge_labels = {EDGE_TYPES[0]: torch.arange(800) % 3}
    return graph


def _flat(batches, key):
    return torch.cat([getattr(b, key) if key != "seeds" else b.seeds["paper"] for b in batches])


@pytest.mark.parametrize("prefetch", [0, 2])
def test_node_loader(prefetch):
    graph = _graph_with_data()
    sampler = NeighborSampler(graph, [3, 2])
    loader = NodeLoader(graph, sampler, "paper", batch_size=16, seed=1, prefetch=prefetch)
    want = torch.nonzero(graph.masks["paper"]["train"]).flatten()
    assert len(loader) == 5
    e0 = list(loader)
    e1 = list(loader)  # the next epoch: another order
    assert len(e0) == 5 and torch.equal(_flat(e0, "seeds").sort().values, want)
    assert not torch.equal(_flat(e0, "seeds"), _flat(e1, "seeds"))
    loader.set_epoch(0)
    again = list(loader)
    for a, b in zip(e0, again):
        assert torch.equal(a.seeds["paper"], b.seeds["paper"])
        assert all(torch.equal(x.src_nodes[t], y.src_nodes[t]) for x, y in zip(a.blocks, b.blocks) for t in NODE_TYPES)
    b = e0[0]
    assert torch.equal(b.labels, graph.labels["paper"][b.seeds["paper"]])
    assert all(torch.equal(b.input_nodes[t], b.blocks[0].src_nodes[t]) for t in NODE_TYPES)
    check_blocks(graph, b.blocks, b.seeds, sampler.fanouts, False)


def test_loader_prefetch_matches_and_early_exit():
    graph = _graph_with_data()
    sampler = NeighborSampler(graph, [2])
    a = NodeLoader(graph, sampler, "paper", split="val", batch_size=8, seed=3, prefetch=0)
    b = NodeLoader(graph, sampler, "paper", split="val", batch_size=8, seed=3, prefetch=3)
    for x, y in zip(a, b):
        assert torch.equal(x.blocks[0].src_nodes["paper"], y.blocks[0].src_nodes["paper"])
    it = iter(b)
    next(it)
    it.close()  # stops the producer thread without hanging


@pytest.mark.parametrize("prefetch", [0, 2])
def test_loader_transform_runs_where_batches_are_built(prefetch):
    graph = _graph_with_data()
    sampler = NeighborSampler(graph, [2])
    plain = list(NodeLoader(graph, sampler, "paper", batch_size=8, seed=3, prefetch=prefetch))
    loader = NodeLoader(graph, sampler, "paper", batch_size=8, seed=3, prefetch=prefetch)
    seen = []

    def tag(batch):
        seen.append(threading.current_thread().name)
        batch.tag = len(seen)
        return batch

    loader.transform = tag
    got = list(loader)
    assert [b.tag for b in got] == list(range(1, len(plain) + 1))
    want = "NodeLoader-prefetch" if prefetch else threading.current_thread().name
    assert seen == [want] * len(plain)
    for a, b in zip(plain, got):
        assert torch.equal(a.seeds["paper"], b.seeds["paper"])


def test_edge_loader():
    graph = _graph_with_data()
    sampler = NeighborSampler(graph, [2, 2])
    loader = EdgeLoader(graph, sampler, EDGE_TYPES[0], batch_size=64, seed=0, exclude_self=True)
    assert len(loader) == 7
    seen = []
    src_g, dst_g = graph.coo[EDGE_TYPES[0]]
    for b in loader:
        assert torch.equal(b.seeds["author"][b.src], src_g[b.edge_ids])
        assert torch.equal(b.seeds["paper"][b.dst], dst_g[b.edge_ids])
        assert torch.equal(b.labels, b.edge_ids % 3)
        ex = {EDGE_TYPES[0]: b.edge_ids, EDGE_TYPES[3]: b.edge_ids}
        check_blocks(graph, b.blocks, b.seeds, sampler.fanouts, False, ex)
        seen.append(b.edge_ids)
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(0, 800, 2))


@pytest.mark.parametrize("mode,k", [("uniform", 3), ("joint", 4), ("in_batch", 1)])
def test_link_loader(mode, k):
    graph = _graph_with_data()
    sampler = NeighborSampler(graph, [2, 2])
    et = EDGE_TYPES[1]
    loader = LinkLoader(graph, sampler, et, negative=mode, num_negatives=k, batch_size=100, seed=2)
    src_g, dst_g = graph.coo[et]
    n = 0
    for b in loader:
        B = b.edge_ids.numel()
        n += B
        seeds = b.seeds["paper"]
        assert torch.equal(seeds[b.src], src_g[b.edge_ids]) and torch.equal(seeds[b.dst], dst_g[b.edge_ids])
        want_k = B - 1 if mode == "in_batch" else k
        assert b.neg_dst.shape == (B, want_k) and b.negative_mode == mode
        assert int(b.neg_dst.max()) < seeds.numel()
        if mode == "joint":
            assert torch.equal(b.neg_dst, b.neg_dst[:1].expand(B, -1))
        if mode == "in_batch":
            assert torch.equal(b.neg_dst[0], b.dst[1:]) and torch.equal(b.neg_dst[-1], b.dst[:-1])
        # The batch's own positives never appear in its blocks (this relation is its own reverse
        # only through the eids it names).
        check_blocks(graph, b.blocks, b.seeds, sampler.fanouts, False, {et: b.edge_ids})
    assert n == 1200


def test_link_loader_explicit_edges():
    graph = _graph_with_data()
    sampler = NeighborSampler(graph, [2])
    src, dst = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 199])
    loader = LinkLoader(graph, sampler, EDGE_TYPES[1], edges=(src, dst), num_negatives=2, batch_size=2,
                        shuffle=False, prefetch=0)
    b = next(iter(loader))
    assert b.edge_ids is None
    assert b.seeds["paper"][b.src].tolist() == [1, 2] and b.seeds["paper"][b.dst].tolist() == [4, 5]
    with pytest.raises(ValueError, match="negative sampler must be one of"):
        LinkLoader(graph, sampler, EDGE_TYPES[1], negative="hard")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("replace", [False, True])
def test_cuda_matches_cpu_device_and_pinned(replace):
    graph = make_graph(num_nodes=(3000, 2000, 50), num_edges=(20000, 30000, 3000), seed=3)
    seeds = {"paper": torch.arange(0, 3000, 7), "author": torch.tensor([5, 9])}
    (ip, ix, ei, st, dt, nn, sd, fan), _ = op_args(graph, seeds, [6, 4, 3, 5, 2] * 3)
    pos = [torch.unique(torch.randint(0, e.numel(), (500,))) for e in ei]
    want = hetero_neighbor_sample(ip, ix, ei, st, dt, nn, sd, fan, replace, 77, pos)
    cuda = lambda xs: [x.cuda() for x in xs]  # noqa: E731
    pinned = lambda xs: [x.pin_memory() for x in xs]  # noqa: E731
    got = hetero_neighbor_sample(cuda(ip), cuda(ix), cuda(ei), st, dt, nn, cuda(sd), fan, replace, 77, cuda(pos))
    assert_same(got, want)
    got = hetero_neighbor_sample(pinned(ip), pinned(ix), pinned(ei), st, dt, nn, cuda(sd), fan, replace, 77,
                                 pinned(pos))
    assert_same(got, want)


@pytest.mark.parametrize("replace", [False, True])
def test_large_fanouts_match_reference(replace):
    # Fanouts above 32 take the hash-set membership path of Floyd's algorithm on CPU.
    graph = make_graph(num_nodes=(50, 40, 8), num_edges=(3000, 4000, 400), seed=11)
    seeds = {"paper": torch.tensor([0, 5, 9, 33]), "venue": torch.tensor([1, 6])}
    args, _ = op_args(graph, seeds, [40, 70, 35, 100, 33] + [45] * 5)
    pos = [torch.unique(torch.randint(0, int(e.numel()), (200,), generator=torch.Generator().manual_seed(r)))
           for r, e in enumerate(args[2])]
    for ex in (None, pos):
        got = hetero_neighbor_sample(*args, replace=replace, seed=8, exclude=ex)
        assert_same(got, hetero_neighbor_sample_ref(*args, replace=replace, seed=8, exclude=ex))


_HUGE_FANOUT_SCRIPT = """
import resource, sys, torch
from lmgnn_fast.ops import hetero_neighbor_sample
ip, ix, eid = torch.tensor([0, 2, 3, 3]), torch.tensor([1, 2, 0]), torch.arange(3)
args = ([ip], [ix], [eid], [0], [0], [3], [torch.tensor([0, 1, 2])])
want = hetero_neighbor_sample(*args, [-1, -1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
got = hetero_neighbor_sample(*args, [10 ** 8, 10 ** 8])
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
same = all(torch.equal(a, b) for x, y in zip(want, got) for a, b in
           (zip(x, y) if isinstance(x, list) else [(x, y)]))
print(grown, same)
"""


def test_huge_fanout_allocates_by_degree():
    # A fanout far above every degree takes all neighbours; the call's memory follows the
    # degrees (3 nodes here), not the fanout (10^8 draws once tabulated 800 MB).
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-c", _HUGE_FANOUT_SCRIPT], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    grown_kib, same = res.stdout.split()
    assert same == "True"
    assert int(grown_kib) < 64 * 1024, f"peak memory grew by {int(grown_kib) // 1024} MiB"


@pytest.mark.parametrize("replace", [False, True])
def test_fanout_beyond_draw_table_matches_reference(replace):
    # Draw indices past the tabulated constants (4096) are computed on the fly: the same
    # draws as the reference.
    n, nodes = 6000, 5000
    ip = torch.cat([torch.tensor([0, n]), torch.full((nodes - 1,), n + 3)])
    ix = torch.arange(n + 3) % nodes
    args = ([ip], [ix], [torch.arange(n + 3)], [0], [0], [nodes], [torch.tensor([0, 1])], [5000])
    got = hetero_neighbor_sample(*args, replace=replace, seed=4)
    assert_same(got, hetero_neighbor_sample_ref(*args, replace=replace, seed=4))


def test_partitioned_dedup_matches_single_thread():
    # One node type with > 2^20 sampled edges in a hop: 2 threads split its dedup into hash
    # partitions (any type with >= 2^15 destinations + edges is split); the result must
    # equal the one-thread single pass at this size too (reference equality is covered on
    # smaller graphs above).
    n, E = 200_000, 2_000_000
    g = torch.Generator().manual_seed(12)
    indptr, indices, eid = coo_to_csc(torch.randint(0, n, (E,), generator=g), torch.randint(0, n, (E,), generator=g), n)
    args = ([indptr], [indices.int()], [eid], [0], [0], [n], [torch.randperm(n, generator=g)[:60000]], [12, 8])
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = hetero_neighbor_sample(*args, seed=21)
        torch.set_num_threads(2)
        two = hetero_neighbor_sample(*args, seed=21)
    finally:
        torch.set_num_threads(old)
    assert one[3][0].numel() > (1 << 20)
    assert_same(one, two)


def test_torch_compile_fullgraph():
    graph = make_graph(seed=13)
    (ip, ix, ei, st, dt, nn_, _, fan), _ = op_args(graph, {}, [3] * 5 + [2] * 5)

    @torch.compile(fullgraph=True, dynamic=True, backend="aot_eager")
    def sample(paper_seeds, venue_seeds):
        nodes, num_dst, indptr, indices, eid = torch.ops.lmgnn.hetero_neighbor_sample(
            ip, ix, ei, st, dt, nn_, [paper_seeds, torch.empty(0, dtype=torch.long), venue_seeds], fan, False, 5)
        return nodes, num_dst, indptr, indices, eid

    for ps in (torch.tensor([1, 7, 30]), torch.tensor([2, 4, 8, 16, 59])):
        vs = torch.tensor([3])
        args, _ = op_args(graph, {"paper": ps, "venue": vs}, fan)
        assert_same(sample(ps, vs), hetero_neighbor_sample(*args, seed=5))


# ------------------------------------------------------------- loaders on a real HeteroGraph
@pytest.fixture(scope="module")
def real_graph():
    from lmgnn_fast.datasets import load_dataset
    return load_dataset("synthetic", num_nodes=3000, num_edges=20000, with_text=False, seed=3)


def _real_coo(graph):
    """Per relation, (src, dst) indexed by eid (held-out link-prediction eids map to -1)."""
    out = {}
    for et in graph.edge_types:
        n = int(graph.num_eids[et])
        src, dst = torch.full((n,), -1), torch.full((n,), -1)
        s, d, eid = graph.edges(et, with_eid=True)
        src[eid], dst[eid] = s, d
        out[et] = (src, dst)
    return out


def test_sampler_and_node_loader_on_hetero_graph(real_graph):
    g = real_graph
    assert any(c.indices.dtype == torch.int32 for c in g.csc.values())
    task = next(t for t in g.tasks if t.type == "node_classification")
    sampler = NeighborSampler(g, [4, 3])
    seeds = {task.node_type: torch.arange(0, g.num_nodes[task.node_type], 5)}
    blocks = sampler.sample(seeds, seed=3)
    g.coo = _real_coo(g)
    check_blocks(g, blocks, seeds, sampler.fanouts, False)
    args = ([g.csc[et].indptr for et in g.edge_types], [g.csc[et].indices for et in g.edge_types],
            [g.csc[et].eid for et in g.edge_types], [g.node_types.index(et[0]) for et in g.edge_types],
            [g.node_types.index(et[2]) for et in g.edge_types], [g.num_nodes[t] for t in g.node_types],
            [seeds.get(t, torch.empty(0, dtype=torch.long)) for t in g.node_types],
            [f for row in sampler.fanouts for f in row])
    assert_same(hetero_neighbor_sample(*args, seed=3), hetero_neighbor_sample_ref(*args, seed=3))
    loader = NodeLoader(g, sampler, task.node_type, split="train", batch_size=128, seed=0)
    train = torch.nonzero(g.masks[task.node_type]["train"]).flatten()
    got = []
    for b in loader:
        s = b.seeds[task.node_type]
        assert torch.equal(b.labels, g.labels[task.node_type][s]) and (b.labels >= 0).all()
        got.append(s)
    assert torch.equal(torch.cat(got).sort().values, train)


def test_link_loader_on_hetero_graph_splits(real_graph):
    g = real_graph
    g.coo = _real_coo(g)
    task = next(t for t in g.tasks if t.type == "link_prediction")
    et, rev = tuple(task.edge_type), g.reverse_of[tuple(task.edge_type)]
    sampler = NeighborSampler(g, [3, 2])
    train = LinkLoader(g, sampler, et, split="train", batch_size=256, num_negatives=2, seed=1)
    n = 0
    for b in train:
        n += b.edge_ids.numel()
        assert torch.equal(b.seeds[et[0]][b.src], g.coo[et][0][b.edge_ids])
        assert torch.equal(b.seeds[et[2]][b.dst], g.coo[et][1][b.edge_ids])
        check_blocks(g, b.blocks, b.seeds, sampler.fanouts, False, {et: b.edge_ids, rev: b.edge_ids})
    assert n == int(g.edge_masks[et]["train"].sum())
    for split in ("val", "test"):
        src, dst = g.lp_edges[task.name][split]
        loader = LinkLoader(g, sampler, et, split=split, batch_size=200, shuffle=False, prefetch=0)
        assert len(loader) == -(-src.numel() // 200)
        b = next(iter(loader))
        assert b.edge_ids is None
        assert torch.equal(b.seeds[et[0]][b.src], src[:200]) and torch.equal(b.seeds[et[2]][b.dst], dst[:200])
        check_blocks(g, b.blocks, b.seeds, sampler.fanouts, False)
        # Held-out edges are not in the message-passing graph, so no block samples their eids.
        held = torch.nonzero(g.edge_masks[et][split]).flatten()
        for blk in b.blocks:
            for r in (g.edge_types.index(et), g.edge_types.index(rev)):
                assert not torch.isin(blk.eid[r], held).any()
    with pytest.raises(ValueError, match="no 'val' link-prediction edges"):
        LinkLoader(g, sampler, g.edge_types[1], split="val")


def test_edge_loader_on_hetero_graph(real_graph):
    g = real_graph
    g.coo = _real_coo(g)
    et = g.edge_types[1]
    sampler = NeighborSampler(g, [2])
    loader = EdgeLoader(g, sampler, et, batch_size=512, seed=4, exclude_self=True)
    assert len(loader) == -(-g.num_edges(et) // 512)
    seen = []
    for b in loader:
        assert torch.equal(b.seeds[et[0]][b.src], g.coo[et][0][b.edge_ids])
        assert torch.equal(b.seeds[et[2]][b.dst], g.coo[et][1][b.edge_ids])
        check_blocks(g, b.blocks, b.seeds, sampler.fanouts, False, {et: b.edge_ids, g.reverse_of[et]: b.edge_ids})
        seen.append(b.edge_ids)
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(g.num_edges(et)))
    task = next(t for t in g.tasks if t.type == "link_prediction")
    with pytest.raises(ValueError, match="no 'bogus' split"):
        EdgeLoader(g, sampler, tuple(task.edge_type), split="bogus")


def test_multilabel_node_loader():
    from lmgnn_fast.datasets import load_dataset
    g = load_dataset("attack")
    task = next(t for t in g.tasks if t.multilabel)
    sampler = NeighborSampler(g, [{"uses": 3, "mitigates": 2, "subtechnique-of": -1}, 2])
    loader = NodeLoader(g, sampler, task.node_type, split="val", batch_size=64, shuffle=False)
    b = next(iter(loader))
    s = b.seeds[task.node_type]
    assert b.labels.dtype == torch.float32 and b.labels.shape == (s.numel(), task.num_classes)
    assert torch.equal(b.labels, g.labels[task.node_type][s])
    g.coo = _real_coo(g)
    check_blocks(g, b.blocks, b.seeds, sampler.fanouts, False)


@pytest.mark.parametrize("shard", ["strided", "contiguous"])
@pytest.mark.parametrize("world", [2, 3])
def test_loader_rank_shards(shard, world):
    """Every rank runs len(loader) batches (the global count); the ranks' shares of batch i
    are equal-size slices of the one-process batch i, together covering it (padded by
    wrapping), and each rank's blocks are sampled with the global batch's seed."""
    graph = _graph_with_data()
    sampler = NeighborSampler(graph, [3, 2])
    one = NodeLoader(graph, sampler, "paper", batch_size=16, seed=5, prefetch=0)  # 67 seeds: 4 x 16 + 3
    ranks = [NodeLoader(graph, sampler, "paper", batch_size=16, seed=5, prefetch=2, rank=r, world_size=world,
                        shard=shard) for r in range(world)]
    for ld in [one] + ranks:
        ld.set_epoch(1)
    full = list(one)
    parts = [list(ld) for ld in ranks]
    assert all(len(p) == len(ld) == len(one) == 5 for p, ld in zip(parts, ranks))
    for i, b in enumerate(full):
        items = b.seeds["paper"]
        got = [p[i].seeds["paper"] for p in parts]
        per = -(-items.numel() // world)
        assert all(g.numel() == per for g in got)
        padded = torch.cat([items, items])[:per * world]
        want = [padded[r::world] if shard == "strided" else padded[r * per:(r + 1) * per] for r in range(world)]
        assert all(torch.equal(g, w) for g, w in zip(got, want))
        # sampling is keyed by (seed, layer, node): a rank's seeds get the neighbours they get
        # in the global batch
        ref = _global_edges(b.blocks[-1])
        for r in range(world):
            mine = _global_edges(parts[r][i].blocks[-1])
            assert mine and mine == {e for e in ref if e[1] in set(got[r].tolist())}


def test_loader_owner_shards():
    """shard="owner": every rank runs len(loader) batches; its share of batch i is the items
    of the one-process batch i whose node it owns (edges: the destination's owner), in the
    batch's order, possibly empty, never padded; ``share`` is its fraction of the batch."""
    graph = _graph_with_data()
    sampler = NeighborSampler(graph, [2])
    owners = {t: torch.randint(0, 2, (graph.num_nodes[t],), generator=torch.Generator().manual_seed(9))
              for t in NODE_TYPES}
    owners["paper"][:190] = 0  # rank 1 owns 3 training papers: some batches hold none of its items
    one = NodeLoader(graph, sampler, "paper", batch_size=16, seed=5, prefetch=0)
    ranks = [NodeLoader(graph, sampler, "paper", batch_size=16, seed=5, prefetch=0, rank=r, world_size=2,
                        shard="owner", owners=owners) for r in range(2)]
    full, parts = list(one), [list(ld) for ld in ranks]
    assert all(len(p) == len(full) == 5 for p in parts)
    empty = 0
    for i, b in enumerate(full):
        items = b.seeds["paper"]
        for r in range(2):
            got = parts[r][i]
            want = items[owners["paper"][items] == r]
            assert torch.equal(got.seeds["paper"], want)
            assert got.share == want.numel() / items.numel()
            assert b.share is None
            empty += want.numel() == 0
    assert empty > 0
    et = EDGE_TYPES[0]
    e_one = list(EdgeLoader(graph, sampler, et, batch_size=64, seed=0, prefetch=0))
    e_r = [list(EdgeLoader(graph, sampler, et, batch_size=64, seed=0, prefetch=0, rank=r, world_size=2,
                           shard="owner", owners=owners)) for r in range(2)]
    dst = graph.coo[et][1]
    for i, b in enumerate(e_one):
        for r in range(2):
            assert torch.equal(e_r[r][i].edge_ids, b.edge_ids[owners[et[2]][dst[b.edge_ids]] == r])
    with pytest.raises(ValueError, match="shard='owner' needs owners"):
        NodeLoader(graph, sampler, "paper", world_size=2, shard="owner")


def _global_edges(block):
    """(relation, dst id, src id) of every edge of a block, in global ids."""
    out = set()
    for r, (s, _, d) in enumerate(block.edge_types):
        deg = block.indptr[r].diff()
        dst = block.src_nodes[d][torch.repeat_interleave(torch.arange(deg.numel()), deg)]
        src = block.src_nodes[s][block.indices[r].long()]
        out |= {(r, a, b) for a, b in zip(dst.tolist(), src.tolist())}
    return out


def test_loader_one_rank_and_max_batches_and_bad_ranks():
    graph = _graph_with_data()
    sampler = NeighborSampler(graph, [2])
    et = EDGE_TYPES[1]
    a = LinkLoader(graph, sampler, et, batch_size=100, seed=2, prefetch=0)
    b = LinkLoader(graph, sampler, et, batch_size=100, seed=2, prefetch=0, rank=0, world_size=1, max_batches=3)
    assert len(a) == 12 and len(b) == 3
    for x, y in zip(a, b):
        assert torch.equal(x.edge_ids, y.edge_ids) and torch.equal(x.neg_dst, y.neg_dst)
    assert len(list(b)) == 3
    c = EdgeLoader(graph, sampler, EDGE_TYPES[0], batch_size=64, seed=0, prefetch=0, rank=1, world_size=2)
    d = EdgeLoader(graph, sampler, EDGE_TYPES[0], batch_size=64, seed=0, prefetch=0)
    for x, y in zip(c, d):
        assert torch.equal(x.edge_ids, y.edge_ids[1::2]) and torch.equal(x.labels, y.labels[1::2])
    with pytest.raises(ValueError, match="rank must be in"):
        NodeLoader(graph, sampler, "paper", rank=2, world_size=2)
    with pytest.raises(ValueError, match="shard must be"):
        NodeLoader(graph, sampler, "paper", world_size=2, shard="blocks")
