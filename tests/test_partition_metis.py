"""partition_graph(method="metis") and partition_stats on a heterogeneous graph with planted
communities: METIS cuts far fewer edges than a random or contiguous partition, keeps the
parts balanced per node type, is deterministic for a seed, and says what is missing when
pymetis is not installed."""
from __future__ import annotations

import sys

import pytest
import torch

from lmgnn_fast.datasets import load_dataset
from lmgnn_fast.partition import homogeneous_adjacency, partition_graph, partition_stats


@pytest.fixture(scope="module")
def planted():
    """3 node types, 4 relations + reverses; 95 % of the edges stay inside one of 4 classes
    (the classes are spread over the ids at random, so id ranges carry no locality)."""
    return load_dataset("synthetic", num_nodes=3000, num_edges=20000, with_text=False, homophily=0.95,
                        num_classes=4, seed=3)


def test_homogeneous_adjacency_is_the_undirected_union_of_the_relations():
    g = load_dataset("synthetic", num_nodes=60, num_edges=200, with_text=False, seed=1)
    xadj, adj, w = homogeneous_adjacency(g)
    off, o = {}, 0
    for t in g.node_types:
        off[t], o = o, o + g.num_nodes[t]
    n = o
    want: dict[tuple[int, int], int] = {}
    for et, c in g.csc.items():
        for v in range(c.indptr.numel() - 1):
            for k in range(int(c.indptr[v]), int(c.indptr[v + 1])):
                a, b = int(c.indices[k]) + off[et[0]], v + off[et[2]]
                if a != b:
                    want[(a, b)] = want.get((a, b), 0) + 1
                    want[(b, a)] = want.get((b, a), 0) + 1
    got = {}
    for u in range(n):
        row = adj[xadj[u]:xadj[u + 1]]
        assert torch.equal(row, torch.sort(row).values)
        for v, x in zip(row.tolist(), w[xadj[u]:xadj[u + 1]].tolist()):
            got[(u, v)] = x
    assert got == want and sum(want.values()) == int(w.sum())


def test_metis_cuts_far_fewer_edges_than_random(planted):
    pytest.importorskip("pymetis")
    g = planted
    stats = {m: partition_stats(g, partition_graph(g, 4, method=m, seed=1)) for m in ("random", "contiguous", "metis")}
    assert stats["random"]["cut_fraction"] > 0.7  # 3/4 of the edges cross 4 random parts
    assert stats["contiguous"]["cut_fraction"] > 0.7
    assert stats["metis"]["cut_fraction"] < 0.15
    assert stats["metis"]["cut"] * 5 < stats["random"]["cut"]
    for t in g.node_types + ["all"]:  # balanced per node type (max_imbalance 1.05 by default)
        assert stats["metis"]["balance"][t] <= 1.05, (t, stats["metis"]["balance"])
        assert sum(stats["metis"]["nodes_per_part"][t]) == (g.num_nodes[t] if t != "all" else 3000)


@pytest.mark.parametrize("num_parts", [1, 2, 3, 5])
def test_metis_assigns_every_node_to_a_part_in_range(planted, num_parts):
    pytest.importorskip("pymetis")
    parts = partition_graph(planted, num_parts, method="metis", seed=0)
    assert set(parts) == set(planted.node_types)
    for t, p in parts.items():
        assert p.num_nodes == planted.num_nodes[t] and p.num_parts == num_parts
        assert int(p.owner.min()) >= 0 and int(p.owner.max()) < num_parts
        assert int(p.counts.sum()) == planted.num_nodes[t]
        if num_parts > 1:
            assert int((p.counts > 0).sum()) == num_parts  # no empty part


def test_metis_is_deterministic_for_a_seed(planted):
    pytest.importorskip("pymetis")
    a = partition_graph(planted, 4, method="metis", seed=7)
    b = partition_graph(planted, 4, method="metis", seed=7)
    assert all(torch.equal(a[t].owner, b[t].owner) for t in planted.node_types)


def test_metis_balances_training_seeds_and_degree(planted):
    pytest.importorskip("pymetis")
    g = planted
    train = g.masks["t0"]["train"]
    p = partition_graph(g, 4, method="metis", seed=1, balance=("nodes", "train"))
    per_part = torch.bincount(p["t0"].owner[train], minlength=4)
    assert float(per_part.max()) / float(per_part.float().mean()) < 1.25
    q = partition_graph(g, 4, method="metis", seed=1, balance="degree")
    assert partition_stats(g, q)["cut_fraction"] < 0.2
    with pytest.raises(ValueError, match="balance must name one or more of"):
        partition_graph(g, 2, method="metis", balance=("edges",))


def test_num_parts_out_of_range(planted):
    for method in ("metis", "random", "contiguous"):
        with pytest.raises(ValueError, match=r"num_parts must be in \[1, 3000\].*got 0"):
            partition_graph(planted, 0, method=method)
        with pytest.raises(ValueError, match=r"num_parts must be in \[1, 3000\].*got 3001"):
            partition_graph(planted, 3001, method=method)


def test_missing_pymetis_names_the_package_and_the_extra(planted, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymetis", None)  # import pymetis -> ImportError
    with pytest.raises(ImportError, match=r"needs the 'pymetis' package.*pip install 'lmgnn_fast\[partition\]'"):
        partition_graph(planted, 2, method="metis")


def test_partition_stats_counts_cut_edges_and_balance():
    from lmgnn_fast.partition import NodePartition

    g = load_dataset("synthetic", num_nodes=90, num_edges=400, with_text=False, seed=2)
    parts = {t: NodePartition.random(g.num_nodes[t], 3, seed=i) for i, t in enumerate(g.node_types)}
    s = partition_stats(g, parts)
    cut, by_type = 0, {t: 0 for t in g.node_types}
    for et, c in g.csc.items():
        src, dst = g.edges(et)
        k = int((parts[et[0]].owner[src] != parts[et[2]].owner[dst]).sum())
        r = s["relations"]["__".join(et)]
        assert r["cut"] == k and r["edges"] == c.indices.numel()
        cut += k
        by_type[et[2]] += k
    assert s["cut"] == cut and s["edges"] == g.num_edges()
    assert {t: v["cut"] for t, v in s["node_types"].items()} == by_type
    assert sum(v["edges"] for v in s["node_types"].values()) == g.num_edges()
    assert s["cut_fraction"] == pytest.approx(cut / g.num_edges())
    assert s["balance"]["t0"] == 1.0  # 30 nodes over 3 parts
    lopsided = {t: NodePartition(torch.zeros(g.num_nodes[t], dtype=torch.long), 3) for t in g.node_types}
    s = partition_stats(g, lopsided)
    assert s["cut"] == 0 and s["balance"]["all"] == pytest.approx(3.0)
    assert s["nodes_per_part"]["all"] == [90, 0, 0]


@pytest.mark.parametrize("num_parts", [2, 4, 8])
def test_metis_parts_are_balanced_per_node_type_on_a_larger_graph(num_parts):
    pytest.importorskip("pymetis")
    g = load_dataset("synthetic", num_nodes=20000, num_edges=120000, with_text=False, seed=4)
    loose = partition_stats(g, partition_graph(g, num_parts, method="metis", max_imbalance=100.0))  # METIS alone
    for limit in (1.05, 1.01):
        s = partition_stats(g, partition_graph(g, num_parts, method="metis", max_imbalance=limit))
        assert max(s["balance"].values()) <= limit, s["balance"]
        assert s["cut_fraction"] < 0.5 * (1 - 1 / num_parts)  # random cuts 1 - 1/P
        assert s["cut"] <= 1.15 * loose["cut"]  # the moves cost little cut
    if num_parts == 8:
        assert max(loose["balance"].values()) > 1.05  # the rebalancing had work to do
    with pytest.raises(ValueError, match="max_imbalance must be >= 1.0, got 0.9"):
        partition_graph(g, 2, method="metis", max_imbalance=0.9)
