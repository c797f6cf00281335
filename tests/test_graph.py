import numpy as np
import pyarrow as pa
import pytest
import torch

import lmgnn_fast
from graph_fixtures import CITES, HAS, WRITES, toy_tables
from lmgnn_fast import CSC, Task
from lmgnn_fast.graph import lookup_edge_type
from lmgnn_fast.io import build_graph
from lmgnn_fast.ops import coo_to_csc_ref
from lmgnn_fast.testing import with_devices

REV = lambda et: (et[2], "rev-" + et[1], et[0])  # noqa: E731


def _ref_index(table):
    """Raw id -> dense index, the obvious way (a dict)."""
    return {v: i for i, v in enumerate(table.column("id").to_pylist())}


def _ref_coo(nodes, edges, et):
    s_ix, d_ix = _ref_index(nodes[et[0]]), _ref_index(nodes[et[2]])
    src = torch.tensor([s_ix[v] for v in edges[et].column("src").to_pylist()])
    dst = torch.tensor([d_ix[v] for v in edges[et].column("dst").to_pylist()])
    return src, dst


def _check_csc(c: CSC, src, dst, eids, num_dst):
    """CSC equals the reference built from (src, dst) restricted to ``eids``."""
    indptr, indices, perm = coo_to_csc_ref(src[eids], dst[eids], num_dst)
    assert c.indptr.dtype == torch.long and c.eid.dtype == torch.long
    assert torch.equal(c.indptr, indptr)
    assert torch.equal(c.indices.long(), indices)
    assert torch.equal(c.eid, eids[perm])


@pytest.fixture(scope="module")
def toy():
    md, nodes, edges = toy_tables(0)
    return md, nodes, edges, build_graph(md, nodes, edges)


def test_structure_and_relation_order(toy):
    md, nodes, edges, g = toy
    assert isinstance(g, lmgnn_fast.HeteroGraph)
    assert g.node_types == ["paper", "author", "topic"]
    assert g.edge_types == [WRITES, CITES, HAS, REV(WRITES), REV(CITES), REV(HAS)]
    assert g.num_nodes == {"paper": 60, "author": 25, "topic": 7}
    assert g.relation_id(REV(CITES)) == 4 and g.relation_id("rev-has") == 5
    assert g.reverse_of[WRITES] == REV(WRITES) and g.reverse_of[REV(WRITES)] == WRITES
    assert g.num_eids[CITES] == g.num_eids[REV(CITES)] == 200
    assert [t.name for t in g.tasks] == ["venue", "cites", "role"]
    assert g.task("venue").num_classes == 3 and g.task("role").num_classes == 3
    assert g.task("cites").num_classes is None


def test_csc_matches_reference(toy):
    md, nodes, edges, g = toy
    for et in (WRITES, HAS):
        src, dst = _ref_coo(nodes, edges, et)
        eids = torch.arange(src.numel())
        _check_csc(g.csc[et], src, dst, eids, g.num_nodes[et[2]])
        # reverse: same eids, roles swapped
        _check_csc(g.csc[REV(et)], dst, src, eids, g.num_nodes[et[0]])
        assert g.csc[et].indices.dtype == torch.int32
    # LP relation: only the training edges are in the message-passing graph
    src, dst = _ref_coo(nodes, edges, CITES)
    train = torch.nonzero(g.edge_masks[CITES]["train"]).flatten()
    _check_csc(g.csc[CITES], src, dst, train, 60)
    _check_csc(g.csc[REV(CITES)], dst, src, train, 60)


def test_edges_in_eid_order(toy):
    md, nodes, edges, g = toy
    src, dst = _ref_coo(nodes, edges, WRITES)
    s, d = g.edges(WRITES)
    assert s.dtype == torch.long and torch.equal(s, src) and torch.equal(d, dst)
    s, d = g.edges(REV(WRITES))
    assert torch.equal(s, dst) and torch.equal(d, src)
    # the LP relation holds only its training edges: eids are a sorted subset
    train = torch.nonzero(g.edge_masks[CITES]["train"]).flatten()
    src, dst = _ref_coo(nodes, edges, CITES)
    s, d, eid = g.edges("cites", with_eid=True)
    assert torch.equal(eid, train) and torch.equal(s, src[train]) and torch.equal(d, dst[train])


def test_lookup_edge_type(toy):
    g = toy[3]
    assert lookup_edge_type(g.edge_types, "writes") == WRITES == g.edge_type(list(WRITES))
    assert lookup_edge_type(g.edge_types, 1) == g.edge_types[1]
    with pytest.raises(KeyError, match="relation name 'nope' matches 0 relations"):
        g.edge_type("nope")
    with pytest.raises(KeyError, match=r"relation id 99 out of range \(6 relations\)"):
        g.relation_id(99)
    with pytest.raises(KeyError, match=r"HeteroGraph: unknown relation \('paper', 'x', 'paper'\)"):
        g.num_edges(("paper", "x", "paper"))
    two = [("a", "r", "b"), ("b", "r", "a")]
    with pytest.raises(KeyError, match="relation name 'r' matches 2 relations"):
        lookup_edge_type(two, "r")


def test_node_data(toy):
    md, nodes, edges, g = toy
    assert g.raw_ids["paper"] == nodes["paper"].column("id").to_pylist()
    assert isinstance(g.raw_ids["author"], np.ndarray)
    assert g.raw_ids["author"].tolist() == nodes["author"].column("id").to_pylist()
    assert g.text["paper"] == nodes["paper"].column("text").to_pylist()
    assert g.text["topic"] is None
    assert g.label_names["paper"] == ["acl", "icml", "kdd"]
    want = [g.label_names["paper"].index(v) for v in nodes["paper"].column("label").to_pylist()]
    assert g.labels["paper"].tolist() == want
    assert g.labels["author"] is None
    assert g.edge_label_names[WRITES] == ["first", "last", "middle"]
    assert g.edge_labels[CITES] is None


def test_drawn_splits_are_seeded_80_10_10(toy):
    md, nodes, edges, g = toy
    m = g.masks["paper"]
    assert [int(m[s].sum()) for s in ("train", "val", "test")] == [48, 6, 6]
    assert torch.all(m["train"].int() + m["val"].int() + m["test"].int() == 1)
    em = g.edge_masks[CITES]
    assert [int(em[s].sum()) for s in ("train", "val", "test")] == [160, 20, 20]
    same = build_graph(md, nodes, edges, seed=0)
    other = build_graph(md, nodes, edges, seed=1)
    assert torch.equal(same.masks["paper"]["val"], m["val"])
    assert not torch.equal(other.edge_masks[CITES]["test"], em["test"])
    assert sorted(g.report["drawn_splits"]) == ["edges/author__writes__paper", "edges/paper__cites__paper",
                                                "nodes/paper"]


def test_drawn_splits_only_labelled_nodes():
    md, nodes, edges = toy_tables(1)
    labels = nodes["paper"].column("label").to_pylist()
    labels[:20] = [None] * 20
    nodes["paper"] = nodes["paper"].set_column(2, "label", pa.array(labels, pa.string()))
    g = build_graph(md, nodes, edges)
    in_split = g.masks["paper"]["train"] | g.masks["paper"]["val"] | g.masks["paper"]["test"]
    assert torch.equal(in_split, g.labels["paper"] >= 0)
    assert int(in_split.sum()) == 40


def test_given_splits():
    md, nodes, edges = toy_tables(2)
    split = (["train", "val", "test", None, ""] * 12)
    nodes["paper"] = nodes["paper"].append_column("split", pa.array(split, pa.string()))
    e = edges[CITES].num_rows
    esplit = (["train"] * 8 + ["valid", "test"]) * (e // 10)
    edges[CITES] = edges[CITES].append_column("split", pa.array(esplit))
    g = build_graph(md, nodes, edges)
    assert g.masks["paper"]["train"].tolist() == [s == "train" for s in split]
    assert g.masks["paper"]["val"].tolist() == [s == "val" for s in split]
    assert g.edge_masks[CITES]["val"].tolist() == [s == "valid" for s in esplit]
    assert "nodes/paper" not in g.report["drawn_splits"]


def _lp_graph(seed=3, **options):
    md, nodes, edges = toy_tables(seed, n_cites=400)
    return build_graph(md, nodes, edges, **options)


def test_transductive_link_prediction_csc():
    g = _lp_graph()
    lp = g.lp_edges["cites"]
    em = g.edge_masks[CITES]
    held = torch.nonzero(em["val"] | em["test"]).flatten()
    assert held.numel() == 80
    for et in (CITES, REV(CITES)):
        eids = set(g.csc[et].eid.tolist())
        assert not eids & set(held.tolist())
        assert eids == set(torch.nonzero(em["train"]).flatten().tolist())
    # no val/test pair (in either direction of the reverse) is an edge of the MP graph
    mp_fwd = set(zip(*(t.tolist() for t in g.edges(CITES))))
    mp_rev = set(zip(*(t.tolist() for t in g.edges(REV(CITES)))))
    train_pairs = set(zip(*(t.tolist() for t in lp["train"])))
    for split in ("val", "test"):
        s, d = lp[split]
        assert s.numel() == int(em[split].sum())
        for a, b in zip(s.tolist(), d.tolist()):
            if (a, b) in train_pairs:  # the same pair also appears as a training edge
                continue
            assert (a, b) not in mp_fwd and (b, a) not in mp_rev
    assert mp_fwd == train_pairs
    # the other relations keep all their edges
    assert g.num_edges(WRITES) == g.num_edges(REV(WRITES)) == g.num_eids[WRITES]


def test_transductive_link_prediction_sampling():
    sampling = pytest.importorskip("lmgnn_fast.sampling")
    if not hasattr(sampling, "NeighborSampler"):
        pytest.skip("the neighbour sampler is not in this tree yet")
    g = _lp_graph(4)
    em = g.edge_masks[CITES]
    held = set(torch.nonzero(em["val"] | em["test"]).flatten().tolist())
    sampler = sampling.NeighborSampler(g, [-1, -1])
    seeds = {t: torch.arange(n) for t, n in g.num_nodes.items()}
    blocks = sampler.sample(seeds)
    seen = 0
    for b in blocks:
        for r in (g.relation_id(CITES), g.relation_id(REV(CITES))):
            eids = set(b.eid[r].tolist())
            seen += len(eids)
            assert not eids & held
    assert seen > 0


def test_no_reverse_edges_and_int64():
    md, nodes, edges = toy_tables(5)
    md["add_reverse_edges"] = False
    g = build_graph(md, nodes, edges, index_dtype="int64")
    assert g.edge_types == [WRITES, CITES, HAS] and g.reverse_of == {}
    assert all(c.indices.dtype == torch.long for c in g.csc.values())
    g2 = build_graph(md, nodes, edges, add_reverse_edges=True)
    assert len(g2.edge_types) == 6


def _small(src, dst, n=4, **md_extra):
    md = {"node_types": ["v"], "edge_types": [["v", "e", "v"]], **md_extra}
    return md, {"v": pa.table({"id": list(range(n))})}, {("v", "e", "v"): pa.table({"src": src, "dst": dst})}


@pytest.mark.parametrize("dedup", ["keep", "remove"])
@pytest.mark.parametrize("loops", ["keep", "remove"])
def test_duplicates_and_self_loops_policies(dedup, loops):
    src = [0, 1, 0, 2, 2, 0, 3]
    dst = [1, 2, 1, 2, 2, 1, 0]
    g = build_graph(*_small(src, dst), dedup_edges=dedup, self_loops=loops, add_reverse_edges=False)
    rep = g.report["edges"]["v__e__v"]
    assert rep["rows"] == 7 and rep["self_loops"] == 2
    keep = np.ones(7, bool)
    if loops == "remove":
        keep[[3, 4]] = False
    seen = set()
    n_dup = 0
    for i in range(7):
        if not keep[i]:
            continue
        if (src[i], dst[i]) in seen:
            n_dup += 1
            if dedup == "remove":
                keep[i] = False
        seen.add((src[i], dst[i]))
    assert rep["duplicates"] == n_dup
    assert rep["edges"] == keep.sum() and rep["removed"] == 7 - keep.sum()
    s, d = g.edges(("v", "e", "v"))
    assert s.tolist() == [src[i] for i in range(7) if keep[i]]
    assert d.tolist() == [dst[i] for i in range(7) if keep[i]]


def test_bad_policy():
    with pytest.raises(ValueError, match="dedup_edges must be 'keep' or 'remove', got 'drop'"):
        build_graph(*_small([0], [1]), dedup_edges="drop")


def test_text_columns_and_empty_text():
    md = {"node_types": ["p"], "edge_types": [["p", "r", "p"]],
          "text_columns": {"p": ["title", "abstract"]}, "text_separator": ". "}
    nodes = {"p": pa.table({"id": ["a", "b", "c", "d"], "title": ["T1", None, "", "T4"],
                            "abstract": ["A1", "A2", None, ""]})}
    edges = {("p", "r", "p"): pa.table({"src": ["a"], "dst": ["b"]})}
    g = build_graph(md, nodes, edges)
    assert g.text["p"] == ["T1. A1", "A2", "", "T4"]
    assert g.report["nodes"]["p"]["empty_text"] == 1
    md["text_columns"] = {"p": "abstract"}
    g = build_graph(md, nodes, edges)
    assert g.text["p"] == ["A1", "A2", "", ""]
    assert g.report["nodes"]["p"]["empty_text"] == 2


@pytest.mark.parametrize("form", ["pipe", "list"])
def test_multilabel(form):
    raw = [["x", "y"], ["z"], None, [], ["y"]]
    if form == "pipe":
        col = pa.array(["x|y", "z", None, "", " y "])
        expect_labelled = [True, True, False, False, True]
    else:
        col = pa.array(raw, pa.list_(pa.string()))
        expect_labelled = [True, True, False, True, True]
    md = {"node_types": ["p"], "edge_types": [["p", "r", "p"]],
          "tasks": [{"name": "tags", "type": "node_classification", "node_type": "p", "multilabel": form == "pipe"}]}
    nodes = {"p": pa.table({"id": list(range(5)), "label": col})}
    g = build_graph(md, nodes, {("p", "r", "p"): pa.table({"src": [0], "dst": [1]})})
    assert g.label_names["p"] == ["x", "y", "z"]
    y = g.labels["p"]
    assert y.dtype == torch.float32 and y.shape == (5, 3)
    assert y.tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 1, 0]]
    t = g.task("tags")
    assert t.multilabel and t.num_classes == 3
    in_split = g.masks["p"]["train"] | g.masks["p"]["val"] | g.masks["p"]["test"]
    assert in_split.tolist() == expect_labelled


def test_integer_labels_and_label_names():
    md = {"node_types": ["p"], "edge_types": [["p", "r", "p"]],
          "tasks": [{"type": "node_classification", "node_type": "p", "num_classes": 6}]}
    nodes = {"p": pa.table({"id": list(range(5)), "label": [3, None, 0, -1, 1]})}
    g = build_graph(md, nodes, {("p", "r", "p"): pa.table({"src": [0], "dst": [1]})})
    assert g.labels["p"].tolist() == [3, -1, 0, -1, 1]
    assert g.label_names["p"] == [str(i) for i in range(6)] and g.task("p").num_classes == 6
    md["label_names"] = {"p": ["z", "a"]}
    md["tasks"] = [{"type": "node_classification", "node_type": "p"}]
    nodes = {"p": pa.table({"id": list(range(3)), "label": ["a", "z", "a"]})}
    g = build_graph(md, nodes, {("p", "r", "p"): pa.table({"src": [0], "dst": [1]})})
    assert g.labels["p"].tolist() == [1, 0, 1] and g.label_names["p"] == ["z", "a"]


def test_mixed_id_types_match_by_spelling():
    # integer node ids, string edge endpoints: matched by decimal spelling, "07" is not 7
    md = {"node_types": ["v"], "edge_types": [["v", "e", "v"]]}
    nodes = {"v": pa.table({"id": [5, 7, 9]})}
    g = build_graph(md, nodes, {("v", "e", "v"): pa.table({"src": ["5", "9"], "dst": ["7", "7"]})})
    assert [t.tolist() for t in g.edges(("v", "e", "v"))] == [[0, 2], [1, 1]]
    with pytest.raises(lmgnn_fast.GraphFormatError, match="id '07' is not in the node table"):
        build_graph(md, nodes, {("v", "e", "v"): pa.table({"src": ["5"], "dst": ["07"]})})


def test_degrees_and_stats(toy):
    md, nodes, edges, g = toy
    src, dst = _ref_coo(nodes, edges, WRITES)
    assert torch.equal(g.degrees(WRITES), torch.bincount(dst, minlength=60))
    assert torch.equal(g.degrees(WRITES, "out"), torch.bincount(src, minlength=25))
    assert torch.equal(g.degrees(REV(WRITES)), torch.bincount(src, minlength=25))
    st = g.degree_stats()[WRITES]
    deg = torch.bincount(dst, minlength=60).double()
    assert st["edges"] == 150 and st["max"] == int(deg.max()) and st["mean"] == pytest.approx(float(deg.mean()))
    assert st["zero"] == int((deg == 0).sum())
    with pytest.raises(ValueError, match="direction must be 'in' or 'out'"):
        g.degrees(WRITES, "both")


def test_repr(toy):
    g = toy[3]
    text = repr(g)
    assert "paper: 60" in text and "author: 25" in text and "topic: 7" in text
    assert "0: (author, writes, paper): 150" in text
    assert "4: (paper, rev-cites, paper): 160" in text
    assert "venue: node_classification on paper, 3 classes" in text
    assert "cites: link_prediction on (paper, cites, paper)" in text


@with_devices
def test_to_device(toy, device):
    g = toy[3]
    h = g.to(device)
    assert h.device.type == device
    for et in g.edge_types:
        for a, b in zip(g.csc[et], h.csc[et]):
            assert b.device.type == device and torch.equal(a, b.cpu())
    assert h.masks["paper"]["train"].device.type == device
    assert h.lp_edges["cites"]["test"][0].device.type == device
    assert h.text is not g.text and h.text == g.text
    assert h.to("cpu").equals(g)


def test_pin_memory(toy):
    g = toy[3]
    p = g.pin_memory()
    assert p.equals(g)
    if torch.cuda.is_available():
        assert p.csc[WRITES].indices.is_pinned()


def test_equals_and_diff(toy):
    md, nodes, edges, g = toy
    assert g.equals(build_graph(md, nodes, edges))
    other = build_graph(md, nodes, edges, seed=7)
    assert not other.equals(g)
    assert "masks[paper]" in other.diff(g)


def test_task_dataclass():
    t = Task("x", "link_prediction", edge_type=("a", "r", "b"))
    assert t.to_dict() == {"name": "x", "type": "link_prediction", "edge_type": ["a", "r", "b"]}
