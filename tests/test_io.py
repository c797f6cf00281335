import json
import os

import numpy as np
import pyarrow as pa
import pytest
import torch

from graph_fixtures import CITES, WRITES, toy_tables, write_dataset
from lmgnn_fast.io import build_graph, is_binary, load_binary, read_dir, save_binary, write_dir

FORMATS = ["csv", "parquet", "jsonl"]


@pytest.fixture(scope="module")
def toy():
    md, nodes, edges = toy_tables(0)
    return md, nodes, edges, build_graph(md, nodes, edges)


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_dir_equals_build_graph(tmp_path, toy, fmt):
    md, nodes, edges, g = toy
    root = write_dataset(tmp_path / "ds", md, nodes, edges, fmt)
    h = read_dir(root)
    assert h.diff(g) == []
    assert isinstance(h.raw_ids["author"], np.ndarray)  # integer ids stay integers, CSV too
    assert h.raw_ids["paper"][:3] == g.raw_ids["paper"][:3]


@pytest.mark.parametrize("fmt", FORMATS)
def test_save_dir_round_trip(tmp_path, toy, fmt):
    g = toy[3]
    write_dir(g, tmp_path / "out", format=fmt)
    assert sorted(os.listdir(tmp_path / "out" / "edges")) == [
        f"author__writes__paper.{fmt}", f"paper__cites__paper.{fmt}", f"paper__has__topic.{fmt}"]
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    h = read_dir(tmp_path / "out")
    assert h.diff(g) == []
    # overwriting an existing directory
    write_dir(g, tmp_path / "out", format=fmt)
    assert read_dir(tmp_path / "out").equals(g)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_multilabel_and_removed_edges(tmp_path, fmt):
    md = {"node_types": ["t"], "edge_types": [["t", "r", "t"]],
          "tasks": [{"name": "tags", "type": "node_classification", "node_type": "t", "multilabel": True},
                    {"name": "lp", "type": "link_prediction", "edge_type": "r"}]}
    rng = np.random.default_rng(0)
    tags = ["|".join(sorted(set(rng.choice(["a", "b", "c"], 2).tolist()))) for _ in range(30)]
    tags[3] = None  # unlabelled: in no split
    nodes = {"t": pa.table({"id": [f"n{i}" for i in range(30)], "label": tags,
                            "text": [f"node {i}\nsecond line, \"quoted\"" for i in range(30)]})}
    edges = {("t", "r", "t"): pa.table({"src": [f"n{i}" for i in rng.integers(0, 30, 120)],
                                        "dst": [f"n{i}" for i in rng.integers(0, 30, 120)]})}
    g = build_graph(md, nodes, edges, dedup_edges="remove", self_loops="remove")
    assert g.task("tags").multilabel and g.labels["t"].shape == (30, 3)
    write_dir(g, tmp_path / "o", format=fmt)
    h = read_dir(tmp_path / "o")
    assert h.diff(g) == []
    assert h.report["edges"]["t__r__t"]["duplicates"] == 0


@pytest.mark.parametrize("mmap", [True, False])
def test_binary_round_trip(tmp_path, toy, mmap):
    g = toy[3]
    save_binary(g, tmp_path / "bin")
    assert is_binary(tmp_path / "bin")
    h = load_binary(tmp_path / "bin", mmap=mmap)
    assert h.diff(g) == []
    assert h.report == json.loads(json.dumps(g.report))
    assert h.csc[WRITES].indices.dtype == torch.int32
    # the loaded tensors are usable and writable (copy-on-write maps)
    h.csc[WRITES].eid.add_(0)
    assert h.to("cpu").equals(g)


def test_load_binary_rejects_other_folders(tmp_path):
    with pytest.raises(ValueError, match="is not a binary graph cache"):
        load_binary(tmp_path)


def test_load_dir_cache(tmp_path, toy):
    md, nodes, edges, g = toy
    root = write_dataset(tmp_path / "ds", md, nodes, edges, "csv")
    a = read_dir(root, cache=True)
    cache_dir = root / ".lmgnn_cache"
    assert len(os.listdir(cache_dir)) == 1
    key = os.listdir(cache_dir)[0]
    b = read_dir(root, cache=True)  # from the cache
    assert a.equals(g) and b.equals(g)
    assert isinstance(b.raw_ids["author"], np.ndarray)
    # other options: another key
    c = read_dir(root, cache=True, seed=3)
    assert len(os.listdir(cache_dir)) == 2 and not c.equals(g)
    # a changed file invalidates the entry
    p = root / "nodes" / "topic.csv"
    p.write_text("id\n0\n1\n2\n3\n4\n5\n6\n7\n")
    d = read_dir(root, cache=True)
    assert d.num_nodes["topic"] == 8
    assert len(os.listdir(cache_dir)) == 3 and key in os.listdir(cache_dir)
    # an explicit cache folder
    e = read_dir(root, cache=str(tmp_path / "elsewhere"))
    assert e.equals(d) and len(os.listdir(tmp_path / "elsewhere")) == 1


def test_csv_ids_keep_their_spelling(tmp_path):
    root = tmp_path / "ds"
    (root / "nodes").mkdir(parents=True)
    (root / "edges").mkdir()
    (root / "metadata.json").write_text(json.dumps({"node_types": ["a", "b"], "edge_types": [["a", "r", "b"]]}))
    (root / "nodes" / "a.csv").write_text("id,text\n007,x\n7,y\n")
    (root / "nodes" / "b.csv").write_text("id\n10\n-3\n0\n")
    (root / "edges" / "a__r__b.csv").write_text("src,dst\n7,0\n007,-3\n")
    g = read_dir(root)
    assert g.raw_ids["a"] == ["007", "7"]
    assert g.raw_ids["b"].tolist() == [10, -3, 0]
    assert [t.tolist() for t in g.edges(("a", "r", "b"))] == [[1, 0], [2, 1]]


def test_types_inferred_from_file_names(tmp_path, toy):
    md, nodes, edges, g = toy
    md = {"name": "toy", "add_reverse_edges": False}
    root = write_dataset(tmp_path / "ds", md, nodes, edges, "parquet")
    h = read_dir(root)
    assert h.node_types == ["author", "paper", "topic"]
    assert h.edge_types == [WRITES, CITES, ("paper", "has", "topic")]
    assert h.tasks == [] and h.masks == {}


def test_text_columns_from_metadata(tmp_path):
    root = tmp_path / "ds"
    (root / "nodes").mkdir(parents=True)
    (root / "edges").mkdir()
    (root / "metadata.json").write_text(json.dumps({
        "node_types": ["p"], "edge_types": [["p", "r", "p"]], "text_columns": {"p": ["title", "abstract"]}}))
    (root / "nodes" / "p.jsonl").write_text(
        '{"id": "a", "title": "Graphs", "abstract": "We study graphs."}\n{"id": "b", "title": "Empty"}\n')
    (root / "edges" / "p__r__p.jsonl").write_text('{"src": "a", "dst": "b"}\n')
    g = read_dir(root)
    assert g.text["p"] == ["Graphs We study graphs.", "Empty"]


def test_large_string_graph_round_trip(tmp_path):
    # a few thousand nodes with string ids and unicode text through every path
    n, e = 3000, 20000
    rng = np.random.default_rng(1)
    ids = [f"node-{i}-é" for i in rng.permutation(n)]
    md = {"node_types": ["x"], "edge_types": [["x", "to", "x"]],
          "tasks": [{"name": "lp", "type": "link_prediction", "edge_type": ["x", "to", "x"]}]}
    nodes = {"x": pa.table({"id": ids, "text": [f"текст {i} 图" for i in range(n)]})}
    edges = {("x", "to", "x"): pa.table({"src": [ids[i] for i in rng.integers(0, n, e)],
                                         "dst": [ids[i] for i in rng.integers(0, n, e)]})}
    g = build_graph(md, nodes, edges)
    save_binary(g, tmp_path / "b")
    assert load_binary(tmp_path / "b").equals(g)
    write_dir(g, tmp_path / "d", format="parquet")
    assert read_dir(tmp_path / "d").equals(g)


def test_save_dir_bad_format(tmp_path, toy):
    with pytest.raises(ValueError, match="format must be one of"):
        write_dir(toy[3], tmp_path / "x", format="xml")
