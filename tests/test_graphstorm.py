"""lmgnn_fast.io.from_graphstorm and ``python -m lmgnn_fast.datasets import-graphstorm``."""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest
import torch

from lmgnn_fast.cli import EXIT_USER_ERROR
from lmgnn_fast.datasets import __main__ as cli
from lmgnn_fast.io import GraphFormatError, from_graphstorm, read_dir

TOKENIZE = {"name": "tokenize_hf", "bert_model": "bert-base-uncased", "max_seq_length": 64}


def _write(root: Path) -> dict:
    """A small paper/author graph in GraphStorm's input layout; returns its config."""
    (root / "nodes").mkdir(parents=True)
    (root / "edges").mkdir()
    (root / "split").mkdir()
    # papers in two CSV files (a glob), authors in Parquet
    pv.write_csv(pa.table({"pid": ["p1", "p2", "p3"], "title": ["graphs", "text", "cats"],
                           "abstract": ["on graphs", "", "on cats"], "venue": ["kdd", "acl", "kdd"],
                           "year": [2001, 2002, 2003]}), root / "nodes" / "paper_0.csv")
    pv.write_csv(pa.table({"pid": ["p4", "p5", "p6", "p7"], "title": ["dogs", "trees", "rivers", "stars"],
                           "abstract": ["a", "b", "c", "d"], "venue": [None, "icml", "acl", "kdd"],
                           "year": [2004, 2005, 2006, 2007]}), root / "nodes" / "paper_1.csv")
    pq.write_table(pa.table({"aid": [10, 20, 30], "name": ["ann", "bob", "cy"],
                             "h_index": [1.0, 2.0, 3.0]}), root / "nodes" / "author.parquet")
    pq.write_table(pa.table({"a": [10, 20, 30, 10], "p": ["p1", "p2", "p3", "p5"],
                             "weight": [1, 2, 3, 4]}), root / "edges" / "writes.parquet")
    pv.write_csv(pa.table({"s": ["p1", "p2", "p3", "p4", "p5", "p1", "p6", "p7", "p7", "p2"],
                           "d": ["p2", "p3", "p4", "p5", "p1", "p3", "p7", "p1", "p2", "p6"]}),
                 root / "edges" / "cites.csv")
    return {
        "version": "gconstruct-v0.1",
        "nodes": [
            {"node_type": "paper", "node_id_col": "pid", "format": {"name": "csv"},
             "files": "nodes/paper_*.csv",
             "features": [{"feature_col": ["title", "abstract"], "feature_name": "text", "transform": TOKENIZE},
                          {"feature_col": "year", "transform": {"name": "max_min_norm"}}],
             "labels": [{"label_col": "venue", "task_type": "classification", "split_pct": [0.5, 0.25, 0.25]}]},
            {"node_type": "author", "node_id_col": "aid", "format": {"name": "parquet"},
             "files": ["nodes/author.parquet"],
             "features": [{"feature_col": "name", "transform": {"name": "bert_hf", "bert_model": "x",
                                                                "max_seq_length": 8}},
                          {"feature_col": "h_index"}]},
        ],
        "edges": [
            {"relation": ["author", "writes", "paper"], "source_id_col": "a", "dest_id_col": "p",
             "format": {"name": "parquet"}, "files": "edges/writes.parquet",
             "features": [{"feature_col": "weight"}]},
            {"relation": ["paper", "cites", "paper"], "source_id_col": "s", "dest_id_col": "d",
             "format": {"name": "csv", "separator": ","}, "files": "edges/cites.csv",
             "labels": [{"task_type": "link_prediction", "split_pct": [0.6, 0.2, 0.2]}]},
        ],
    }


def _save(root: Path, cfg: dict) -> Path:
    path = root / "config.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


@pytest.fixture
def gs(tmp_path):
    root = tmp_path / "gs"
    return root, _write(root)


def _load(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return from_graphstorm(path, **kw)


def test_read_config(gs):
    root, cfg = gs
    with pytest.warns(UserWarning, match=r"nodes\[0\]\.features\[1\] \(year: transform 'max_min_norm'\)"):
        g = from_graphstorm(_save(root, cfg))
    assert g.name == "config"
    assert g.node_types == ["paper", "author"]
    assert g.num_nodes == {"paper": 7, "author": 3}
    assert g.raw_ids["paper"] == ["p1", "p2", "p3", "p4", "p5", "p6", "p7"]  # files in sorted order
    assert g.raw_ids["author"].tolist() == [10, 20, 30]
    # two text columns joined (empty parts skipped), bert_hf text too
    assert g.text["paper"][:3] == ["graphs on graphs", "text", "cats on cats"]
    assert g.text["author"] == ["ann", "bob", "cy"]
    assert g.label_names["paper"] == ["acl", "icml", "kdd"]
    assert g.labels["paper"].tolist() == [2, 0, 2, -1, 1, 0, 2]
    # split_pct [0.5, 0.25, 0.25] among the 6 labelled papers: 3 / 1 / 2 (test takes the rest)
    m = g.masks["paper"]
    assert [int(m[s].sum()) for s in ("train", "val", "test")] == [3, 1, 2]
    assert not (m["train"] | m["val"] | m["test"])[3]  # the unlabelled paper is in no split
    assert [t.to_dict() for t in g.tasks] == [
        {"name": "venue", "type": "node_classification", "node_type": "paper", "multilabel": False,
         "num_classes": 3},
        {"name": "cites", "type": "link_prediction", "edge_type": ["paper", "cites", "paper"]}]
    # link prediction: 10 edges, [0.6, 0.2, 0.2] -> 6 / 2 / 2, val/test held out
    em = g.edge_masks[("paper", "cites", "paper")]
    assert [int(em[s].sum()) for s in ("train", "val", "test")] == [6, 2, 2]
    assert g.num_edges(("paper", "cites", "paper")) == 6
    # edges in file order, mapped to the node ids
    s, d = g.edges(("author", "writes", "paper"))
    assert [int(g.raw_ids["author"][i]) for i in s] == [10, 20, 30, 10]
    assert [g.raw_ids["paper"][i] for i in d] == ["p1", "p2", "p3", "p5"]
    assert ("paper", "rev-writes", "author") in g.edge_types


def test_seeded_splits(gs):
    root, cfg = gs
    path = _save(root, cfg)
    a, b, c = _load(path, seed=0), _load(path, seed=0), _load(path, seed=5)
    assert a.diff(b) == []
    diffs = [torch.equal(a.masks["paper"]["train"], g.masks["paper"]["train"]) for g in [_load(path, seed=s)
                                                                                        for s in range(1, 8)]]
    assert not all(diffs)  # the seed moves the split
    assert c.num_nodes == a.num_nodes


def test_default_split_pct_and_options(gs):
    root, cfg = gs
    del cfg["nodes"][0]["labels"][0]["split_pct"]
    g = _load(_save(root, cfg), add_reverse_edges=False, name="papers")
    m = g.masks["paper"]
    assert [int(m[s].sum()) for s in ("train", "val", "test")] == [4, 0, 2]  # floor(4.8), floor(0.6), rest
    assert g.reverse_of == {} and g.name == "papers"


def test_custom_split_files(gs):
    root, cfg = gs
    (root / "split" / "train.json").write_text('"p1"\n"p2"\n"p5"\n')
    (root / "split" / "val.json").write_text('"p6"\n')
    pq.write_table(pa.table({"src": ["p1", "p7"], "dst": ["p2", "p2"]}), root / "split" / "test_edges.parquet")
    (root / "split" / "train_edges.json").write_text('["p2", "p3"]\n["p3", "p4"]\n')
    cfg["nodes"][0]["labels"][0] = {"label_col": "venue", "task_type": "classification",
                                    "custom_split_filenames": {"train": "split/train.json",
                                                               "valid": "split/val.json"}}
    cfg["edges"][1]["labels"][0] = {"task_type": "link_prediction",
                                    "custom_split_filenames": {"train": "split/train_edges.json",
                                                               "test": ["split/test_*.parquet"],
                                                               "column": ["src", "dst"]}}
    g = _load(_save(root, cfg))
    m = g.masks["paper"]
    assert m["train"].tolist() == [True, True, False, False, True, False, False]
    assert m["val"].tolist() == [False, False, False, False, False, True, False]
    assert not m["test"].any()
    em = g.edge_masks[("paper", "cites", "paper")]
    assert np.flatnonzero(em["train"].numpy()).tolist() == [1, 2]
    assert np.flatnonzero(em["test"].numpy()).tolist() == [0, 8]
    assert not em["val"].any()


def test_multilabel_json_and_row_ids(tmp_path):
    root = tmp_path / "ml"
    root.mkdir()
    with open(root / "docs.json", "w") as f:
        for text, tags in [("alpha", "x;y"), ("beta", "y"), ("gamma", ""), ("delta", "z;x")]:
            f.write(json.dumps({"body": text, "tags": tags}) + "\n")
    pv.write_csv(pa.table({"from": [0, 1, 2, 3], "to": [1, 2, 3, 0]}), root / "links.csv")
    cfg = {"nodes": [{"node_type": "doc", "files": "docs.json", "format": {"name": "json"},
                      "features": [{"feature_col": "body", "transform": TOKENIZE}],
                      "labels": [{"label_col": "tags", "task_type": "classification", "separator": ";",
                                  "split_pct": [1.0, 0.0, 0.0]}]}],
           "edges": [{"relation": ["doc", "links", "doc"], "source_id_col": "from", "dest_id_col": "to",
                      "files": ["links.csv"]}]}  # no format: told by the extension
    g = _load(_save(root, cfg))
    assert g.raw_ids["doc"].tolist() == [0, 1, 2, 3]  # no node_id_col: row numbers
    assert g.text["doc"] == ["alpha", "beta", "gamma", "delta"]
    assert g.label_names["doc"] == ["x", "y", "z"]
    assert g.labels["doc"].tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1]]
    assert g.tasks[0].multilabel
    assert g.masks["doc"]["train"].tolist() == [True, True, False, True]  # the untagged doc is unlabelled


def test_task_names(gs):
    root, cfg = gs
    # a label column that is not a name, and two tasks that would share one
    pv.write_csv(pa.table({"a": [10, 20, 30, 10], "p": ["p1", "p2", "p3", "p5"], "venue type": ["x", "y", "x", "y"]}),
                 root / "edges" / "writes.csv")
    cfg["edges"][0].update(files="edges/writes.csv", format={"name": "csv"},
                           labels=[{"label_col": "venue type", "task_type": "classification"}])
    cfg["nodes"][0]["labels"][0]["label_col"] = "venue"
    g = _load(_save(root, cfg))
    assert [t.name for t in g.tasks] == ["venue", "venue_type", "cites"]
    cfg["edges"][0]["labels"][0]["label_col"] = "venue"
    pv.write_csv(pa.table({"a": [10, 20, 30, 10], "p": ["p1", "p2", "p3", "p5"], "venue": ["x", "y", "x", "y"]}),
                 root / "edges" / "writes.csv")
    g = _load(_save(root, cfg))
    assert [t.name for t in g.tasks] == ["paper__venue", "author__writes__paper__venue", "cites"]
    assert g.task("author__writes__paper__venue").type == "edge_classification"
    assert g.edge_labels[("author", "writes", "paper")].tolist() == [0, 1, 0, 1]


def test_errors_point_at_user_files_and_columns(gs):
    root, cfg = gs
    pv.write_csv(pa.table({"pid": ["p9", "p2"], "title": ["x", "y"], "abstract": ["", ""],
                           "venue": ["kdd", "kdd"], "year": [1, 2]}), root / "nodes" / "paper_2.csv")
    with pytest.raises(GraphFormatError, match=r"^nodes/paper_2\.csv, row 1 \(line 3\), column 'pid': "
                                                r"duplicate node id 'p2'"):
        _load(_save(root, cfg))
    (root / "nodes" / "paper_2.csv").unlink()
    pv.write_csv(pa.table({"s": ["p1", "p2"], "d": ["p2", "p99"]}), root / "edges" / "cites.csv")
    with pytest.raises(GraphFormatError, match=r"^edges/cites\.csv, row 1 \(line 3\), column 'd': id 'p99' is "
                                                r"not in the node table of 'paper' "
                                                r"\(nodes/paper_0\.csv, nodes/paper_1\.csv\)$"):
        _load(_save(root, cfg))


def _set(path: str, value):
    def mutate(cfg):
        keys = path.split(".")
        d = cfg
        for k in keys[:-1]:
            d = d[int(k)] if k.isdigit() else d[k]
        last = keys[-1]
        if value is _DEL:
            del d[int(last) if last.isdigit() else last]
        else:
            d[int(last) if last.isdigit() else last] = value
    return mutate


_DEL = object()

BAD = [
    (_set("nodes.1.format", {"name": "hdf5"}), r"config\.json: nodes\[1\]\.format\.name: HDF5 input is not supported"),
    (_set("nodes.1.format", {"name": "orc"}), r"nodes\[1\]\.format\.name: unknown format 'orc'"),
    (_set("nodes.0.format", {"name": "csv", "separator": ";;"}), r"nodes\[0\]\.format\.separator: must be one"),
    (_set("nodes.0.labels.0.task_type", "regression"),
     r"nodes\[0\]\.labels\[0\]\.task_type: task type 'regression' is not supported on nodes"),
    (_set("edges.1.labels.0.task_type", "regression"), r"edges\[1\]\.labels\[0\]\.task_type: .*not supported"),
    (_set("nodes.0.labels.0.label_col", _DEL), r"nodes\[0\]\.labels\[0\]\.label_col: a classification task needs"),
    (lambda c: c["nodes"][0]["labels"].append(dict(c["nodes"][0]["labels"][0])),
     r"nodes\[0\]\.labels\[1\]: only one label entry"),
    (_set("nodes.0.labels.0.split_pct", [0.8, 0.3, 0.1]), r"nodes\[0\]\.labels\[0\]\.split_pct: must be 3"),
    (_set("nodes.0.files", "nodes/nothing_*.csv"), r"nodes\[0\]\.files: no file matches 'nodes/nothing_\*\.csv'"),
    (_set("nodes.1.files", ["nodes/missing.parquet"]), r"nodes\[1\]\.files: file not found: 'nodes/missing"),
    (_set("nodes.1.files", _DEL), r"nodes\[1\]: missing 'files'"),
    (_set("nodes.1.node_id_col", "author_id"),
     r"nodes/author\.parquet: missing column 'author_id' \(node_id_col\) named in nodes\[1\]"),
    (_set("nodes.0.features.0.feature_col", ["title", "summary"]),
     r"nodes/paper_0\.csv: missing column 'summary' \(feature_col\)"),
    (_set("edges.0.source_id_col", _DEL), r"edges\[0\]\.source_id_col: must be a column name"),
    (_set("edges.0.relation", ["author", "writes", "venue"]),
     r"edges\[0\]\.relation: node type 'venue' has no entry in 'nodes'"),
    (_set("edges.0.relation", ["author", "writes"]), r"edges\[0\]\.relation: must be \[source type"),
    (_set("edges.0.relation", ["author", "writes/x", "paper"]),
     r"edges\[0\]\.relation: relation 'writes/x' is not a valid name"),
    (_set("nodes.1.node_type", "the authors"), r"nodes\[1\]\.node_type: node type 'the authors' is not a valid"),
    (lambda c: c["nodes"].append(dict(c["nodes"][1])), r"nodes\[2\]: node type 'author' appears again"),
    (lambda c: c["edges"].append(dict(c["edges"][0])), r"edges\[2\]: relation .* appears twice"),
    (lambda c: c.pop("nodes"), r"nodes: must be a non-empty list"),
    (lambda c: c.update(graph={"nodes": []}) or c.pop("nodes"), r"graph: this is a GSProcessing config"),
    (_set("nodes.0.labels.0.custom_split_filenames", {"column": "id"}),
     r"custom_split_filenames: must be an object with at least one of"),
]


@pytest.mark.parametrize("mutate, match", BAD)
def test_bad_config(gs, mutate, match):
    root, cfg = gs
    cfg = copy.deepcopy(cfg)
    mutate(cfg)
    with pytest.raises(GraphFormatError, match=match):
        _load(_save(root, cfg))


def test_bad_json_and_split_files(gs):
    root, cfg = gs
    path = root / "config.json"
    path.write_text('{"nodes": [\n  {"node_type": "paper",}\n]}')
    with pytest.raises(GraphFormatError, match=r"config\.json: invalid JSON at line 2"):
        from_graphstorm(path)
    with pytest.raises(GraphFormatError, match=r"config file not found"):
        from_graphstorm(root / "nope.json")
    split = {"label_col": "venue", "task_type": "classification",
             "custom_split_filenames": {"train": "split/train.json", "test": "split/test.json"}}
    cfg["nodes"][0]["labels"][0] = split
    (root / "split" / "train.json").write_text('"p1"\n"p42"\n')
    (root / "split" / "test.json").write_text('"p1"\n')
    with pytest.raises(GraphFormatError, match=r"split/train\.json, row 1 \(line 2\): node \('p42'\) is not "
                                                r"a node of 'paper'"):
        _load(_save(root, cfg))
    (root / "split" / "train.json").write_text('"p1"\n"p2"\n')
    with pytest.raises(GraphFormatError, match=r"split/test\.json: node \('p1'\) is listed in both the train "
                                                r"and the test split files"):
        _load(_save(root, cfg))
    (root / "split" / "test.json").write_text('"p4"\n')  # p4 has no venue
    with pytest.raises(GraphFormatError, match=r"nodes/paper_1\.csv, row 0 \(line 2\), column 'venue': node 'p4' "
                                                r"is in split 'test' but has no label"):
        _load(_save(root, cfg))
    (root / "split" / "test.json").write_text('{"id": "p4"}\n')
    with pytest.raises(GraphFormatError, match=r"split/test\.json, row 0 \(line 1\): each line must hold a node id"):
        _load(_save(root, cfg))
    cfg["nodes"][0]["labels"][0]["custom_split_filenames"]["test"] = "split/test.parquet"
    pq.write_table(pa.table({"x": ["p4"]}), root / "split" / "test.parquet")
    with pytest.raises(GraphFormatError, match=r"custom_split_filenames\.column: a Parquet split file needs one id"):
        _load(_save(root, cfg))


def test_cli_import_graphstorm(gs, tmp_path, capsys):
    root, cfg = gs
    path = _save(root, cfg)
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["import-graphstorm", str(path), str(out), "--format", "csv", "--seed", "3",
                         "--name", "papers"]) == 0
        assert "wrote" in capsys.readouterr().out
        g = from_graphstorm(path, seed=3, name="papers")
    h = read_dir(out)
    assert h.diff(g) == []
    assert (out / "nodes" / "paper.csv").is_file()
    assert cli.main(["import-graphstorm", str(path), str(out)]) == EXIT_USER_ERROR
    assert "--overwrite" in capsys.readouterr().err
    path.write_text(json.dumps(dict(cfg, nodes=[dict(cfg["nodes"][0], format={"name": "hdf5"})])))
    assert cli.main(["import-graphstorm", str(path), str(out), "--overwrite"]) == EXIT_USER_ERROR
    assert "HDF5 input is not supported" in capsys.readouterr().err


def test_files_outside_the_config_folder(gs, tmp_path, capsys):
    """Relative paths, globs and folders stay inside the config's folder: '..' and symbolic
    links leading out are refused before the file is read, its content never echoed; an
    absolute path (documented) may name a file elsewhere, but an error about it does not
    echo its header either."""
    import os

    root, cfg = gs
    secret = tmp_path / "secret.csv"
    secret.write_text("root:x:0:0:SECRET-HEADER,more\n1,2\n")
    refused = "resolves outside the config's folder; relative paths must stay inside it"
    cases = []
    # '..' to the file, a glob reaching out, a symbolic link leading out (alone or in a glob / folder)
    cases.append(("nodes.0.files", "../secret.csv", r"nodes\[0\]\.files: '../secret.csv' " + refused))
    cases.append(("nodes.0.files", "../secre*.csv", r"nodes\[0\]\.files: '../secre\*.csv' \(its entry "
                                                    r"'secret.csv'\) " + refused))
    (root / "split").mkdir(exist_ok=True)
    os.symlink(secret, root / "split" / "train.json")
    cases.append(("nodes.0.labels.0.custom_split_filenames", {"train": "split/train.json"},
                  r"custom_split_filenames\.train: 'split/train.json' " + refused))
    cases.append(("nodes.0.files", "nodes/paper_9.csv", r"nodes\[0\]\.files: 'nodes/paper_9.csv' " + refused))
    cases.append(("nodes.0.files", "nodes/paper_*.csv", r"'nodes/paper_\*.csv' \(its entry 'paper_9.csv'\) "
                                                        + refused))
    cases.append(("nodes.0.files", "nodes", r"'nodes' \(its entry 'paper_9.csv'\) " + refused))
    for i, (key, value, match) in enumerate(cases):
        if i == 3:
            os.symlink(secret, root / "nodes" / "paper_9.csv")
        c = copy.deepcopy(cfg)
        _set(key, value)(c)
        with pytest.raises(GraphFormatError, match=match) as info:
            _load(_save(root, c))
        assert "SECRET" not in str(info.value) and str(tmp_path / "secret") not in str(info.value)
    # through the command line: one line, exit 2, nothing of the outside file
    c = copy.deepcopy(cfg)
    _set("nodes.0.files", "../secret.csv")(c)
    assert cli.main(["import-graphstorm", str(_save(root, c)), str(tmp_path / "out")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert refused in err and "SECRET" not in err and len(err.strip().splitlines()) == 1
    # an absolute path is allowed (documented), and its header is not echoed in an error
    c = copy.deepcopy(cfg)
    _set("nodes.0.files", str(secret))(c)
    with pytest.raises(GraphFormatError, match=r"secret.csv: missing column 'pid' \(node_id_col\), .* named in "
                                               r"nodes\[0\]$") as info:
        _load(_save(root, c))
    assert "SECRET" not in str(info.value)
    good = tmp_path / "papers.csv"
    good.write_bytes((root / "nodes" / "paper_0.csv").read_bytes())
    os.remove(root / "nodes" / "paper_9.csv")
    c = copy.deepcopy(cfg)
    _set("nodes.0.files", [str(good), "nodes/paper_1.csv"])(c)
    assert _load(_save(root, c)).num_nodes["paper"] == 7
    # a link that stays inside is fine
    os.symlink(root / "nodes" / "paper_0.csv", root / "nodes" / "paper_9.csv")
    c = copy.deepcopy(cfg)
    _set("nodes.0.files", ["nodes/paper_9.csv", "nodes/paper_1.csv"])(c)
    assert _load(_save(root, c)).num_nodes["paper"] == 7
