"""Malformed dataset directories: every case a clear GraphFormatError naming file and column,
never a raw pyarrow/KeyError/AttributeError, a memory blow-up or a silently wrong graph; names
never become paths; valid data is never refused; max_nodes works for directories."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pyarrow as pa
import pytest

from lmgnn_fast.io import GraphFormatError, build_graph, load_binary, read_dir, write_dir
from lmgnn_fast.io.directory import full_edges
from lmgnn_fast.io.errors import OptionError, PathError
from lmgnn_fast.io.paths import safe_join

MD = {"node_types": ["p"], "edge_types": [["p", "c", "p"]],
      "tasks": [{"name": "y", "type": "node_classification", "node_type": "p"}]}
NODES = "id,text,label\n0,a,0\n1,b,1\n2,c,0\n3,d,1\n"
EDGES = "src,dst\n0,1\n1,2\n2,3\n"


def make(root, md=None, files=None) -> str:
    """A dataset directory: ``metadata.json`` plus ``files`` (relative path -> str or bytes)."""
    files = {"nodes/p.csv": NODES, "edges/p__c__p.csv": EDGES} if files is None else files
    os.makedirs(os.path.join(root, "nodes"), exist_ok=True)
    os.makedirs(os.path.join(root, "edges"), exist_ok=True)
    with open(os.path.join(root, "metadata.json"), "w") as f:
        f.write(md if isinstance(md, str) else json.dumps(MD if md is None else md))
    for rel, content in files.items():
        with open(os.path.join(root, rel), "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode())
    return str(root)


def task(**kw) -> dict:
    return dict(MD, tasks=[dict(MD["tasks"][0], **kw)])


CASES = {
    # raw pyarrow / Python errors that named no file
    "invalid_utf8_text": (None, {"nodes/p.csv": b"id,text,label\n0,a\xff\xfe,0\n1,b,1\n2,c,0\n3,d,1\n"},
                          "nodes/p.csv, column 'text': cannot read csv file: invalid UTF-8"),
    "invalid_utf8_id": (None, {"nodes/p.csv": b"id,label\nx\xff,0\n1,1\n"},
                        "nodes/p.csv, column 'id': cannot read csv file: invalid UTF-8"),
    "nan_id": (None, {"nodes/p.jsonl": '{"id": NaN, "label": 0}\n{"id": 1, "label": 1}\n'},
               "nodes/p.jsonl, row 0 (line 1), column 'id': node ids must be integers or strings, got nan"),
    "inf_src": (None, {"edges/p__c__p.jsonl": '{"src": 0, "dst": 1}\n{"src": Infinity, "dst": 1}\n'},
                "edges/p__c__p.jsonl, row 1 (line 2), column 'src': edge endpoint ids must be integers or "
                "strings, got inf"),
    "duplicate_id_column": (None, {"nodes/p.csv": "id,id,label\n0,0,0\n1,1,1\n"},
                            "nodes/p.csv, column 'id': column 'id' appears 2 times"),
    "duplicate_label_column": (None, {"nodes/p.csv": "id,label,label\n0,0,0\n1,1,1\n"},
                               "nodes/p.csv, column 'label': column 'label' appears 2 times"),
    "label_names_list": (dict(MD, label_names=["a", "b"]), None,
                         "metadata.json: label_names must map node types or relations (src__rel__dst) to lists "
                         "of class names, got list ['a', 'b']"),
    "label_names_string": (dict(MD, label_names={"p": "ab"}), None,
                           "metadata.json: label_names['p'] must be a list of class names, got 'ab'"),
    "label_names_unknown_key": (dict(MD, label_names={"q": ["a"]}), None,
                                "metadata.json: label_names names unknown node type or relation 'q'"),
    # silently wrong data
    "label_names_duplicate": (dict(MD, label_names={"p": ["a", "a", "b"]}),
                              {"nodes/p.csv": "id,label\n0,a\n1,b\n2,a\n3,b\n"},
                              "metadata.json: label_names['p']: class 'a' is listed twice"),
    "multilabel_no": (task(multilabel="no"), None,
                      "metadata.json: tasks[0]: multilabel must be true or false (a JSON boolean), got 'no'"),
    "multilabel_one": (task(multilabel=1), None, "multilabel must be true or false (a JSON boolean), got 1"),
    "empty_id_cell": (None, {"nodes/p.csv": "id,label\n0,0\n,1\n2,0\n3,1\n"},
                      "nodes/p.csv, row 1 (line 3), column 'id': node id is missing (null)"),
    "empty_src_cell": (None, {"edges/p__c__p.csv": "src,dst\n0,1\n,2\n"},
                       "edges/p__c__p.csv, row 1 (line 3), column 'src': src id is missing (null)"),
    "empty_string_id_jsonl": (None, {"nodes/p.jsonl": '{"id": "a", "label": 0}\n{"id": "", "label": 1}\n'},
                              "nodes/p.jsonl, row 1 (line 2), column 'id': node ids must not be empty"),
    "label_2e9": (None, {"nodes/p.csv": "id,label\n0,0\n1,2000000000\n2,0\n3,1\n"},
                  "nodes/p.csv, row 1 (line 3), column 'label': label 2000000000 is too large: integer classes "
                  "are 0..C-1 with C at most 10,000"),
    "edge_label_2e9": (dict(MD, tasks=[{"name": "e", "type": "edge_classification", "edge_type": ["p", "c", "p"]}]),
                       {"edges/p__c__p.csv": "src,dst,label\n0,1,0\n1,2,2000000000\n"},
                       "edges/p__c__p.csv, row 1 (line 3), column 'label': label 2000000000 is too large"),
    "multilabel_2e9": (task(multilabel=True),
                       {"nodes/p.jsonl": '{"id": 0, "label": [0, 1]}\n{"id": 1, "label": [2000000000]}\n'},
                       "nodes/p.jsonl, row 1 (line 2), column 'label': label 2000000000 is too large"),
    "num_classes_huge": (task(num_classes=10**10), None,
                         "nodes/p.csv, column 'label': num_classes 10,000,000,000 of the task is too large"),
    "num_classes_string": (task(num_classes="3"), None,
                           "metadata.json: tasks[0]: num_classes must be an integer >= 1, got '3'"),
    "label_inf": (None, {"nodes/p.csv": "id,label\n0,0\n1,inf\n2,0\n3,1\n"},
                  "nodes/p.csv, row 1 (line 3), column 'label': labels must be integers or strings, got inf"),
    "label_minus_inf": (None, {"nodes/p.csv": "id,label\n0,0\n1,-inf\n2,0\n3,1\n"},
                        "row 1 (line 3), column 'label': labels must be integers or strings, got -inf"),
    "label_1e30": (None, {"nodes/p.csv": "id,label\n0,0\n1,1e30\n2,0\n3,1\n"},
                   "nodes/p.csv, row 1 (line 3), column 'label': label 1e+30 is too large"),
    "label_minus_1e30": (None, {"nodes/p.csv": "id,label\n0,0\n1,-1e30\n2,0\n3,1\n"},
                         "row 1 (line 3), column 'label': label -1e+30 is negative"),
    "label_nan_multilabel": (task(multilabel=True),
                             {"nodes/p.jsonl": '{"id": 0, "label": 1}\n{"id": 1, "label": NaN}\n'},
                             "nodes/p.jsonl, row 1 (line 2), column 'label': labels must be integers or strings, "
                             "got nan"),
    "text_separator_number": (dict(MD, text_separator=5), None,
                              "metadata.json: text_separator must be a string, got 5"),
    "name_list": (dict(MD, name=["x"]), None, "metadata.json: name must be a string, got ['x']"),
    # names are names
    "node_type_path": (dict(MD, node_types=["../../outside"], edge_types=[], tasks=[]), None,
                       "metadata.json: node_types: node type '../../outside' is not a valid name: use ASCII "
                       "letters, digits, '_' and '-' (not first)"),
    "node_type_dot": (dict(MD, node_types=["p.q"], edge_types=[["p.q", "c", "p.q"]], tasks=[]),
                      {"nodes/p.q.csv": NODES, "edges/p.q__c__p.q.csv": EDGES},
                      "metadata.json: node_types: node type 'p.q' is not a valid name"),
    "relation_slash": (dict(MD, edge_types=[["p", "a/b", "p"]], tasks=[]), None,
                       "metadata.json: edge_types[0]: relation 'a/b' is not a valid name"),
    "node_type_double_underscore": (dict(MD, node_types=["p__q"], edge_types=[], tasks=[]),
                                    {"nodes/p__q.csv": NODES},
                                    "node type 'p__q' is not a valid name: '__' separates the parts of edge file "
                                    "names"),
    "task_name_path": (task(name="../y"), None, "metadata.json: tasks[0]: task name '../y' is not a valid name"),
    "node_type_absolute": (dict(MD, node_types=["/etc/passwd"], edge_types=[], tasks=[]), None,
                           "node type '/etc/passwd' is not a valid name"),
    "node_type_too_long": (dict(MD, node_types=["n" * 81], edge_types=[], tasks=[]), None,
                           "is not a valid name: longer than 80 characters"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_directory_is_a_clear_error(case, tmp_path):
    md, files, message = CASES[case]
    base = {"nodes/p.csv": NODES, "edges/p__c__p.csv": EDGES}
    if files:
        for rel in files:  # a replacement in another format drops the default file
            stem = rel.rsplit(".", 1)[0]
            base = {k: v for k, v in base.items() if k.rsplit(".", 1)[0] != stem}
        base.update(files)
    root = make(tmp_path / "d", md, base)
    with pytest.raises(GraphFormatError, match=re.escape(message)) as info:
        read_dir(root)
    assert "\n" not in str(info.value)


def test_invalid_utf8_in_memory_tables_names_the_table():
    """Tables built in memory skip the readers' UTF-8 check: the builder reports it."""
    data = b"train\xff\xfeval"
    offsets = pa.array([0, 7, 10], type=pa.int32()).buffers()[1]
    bad = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(data)])
    md = {"node_types": ["p"], "edge_types": [], "tasks": []}
    with pytest.raises(GraphFormatError, match=r"nodes/p, column 'split': cannot process the values: Invalid UTF8"):
        build_graph(md, {"p": pa.table({"id": [0, 1], "split": bad})}, {})
    with pytest.raises(GraphFormatError, match=r"nodes/p: invalid UTF-8 in the values"):
        build_graph(md, {"p": pa.table({"id": bad})}, {})


def test_node_type_path_is_never_read_or_written(tmp_path):
    """The traversal name is refused before any file outside is touched, on read and write."""
    outside = tmp_path / "outside.csv"
    outside.write_text(NODES)
    root = make(tmp_path / "a" / "d", dict(MD, node_types=["../../../outside"], edge_types=[], tasks=[]))
    with pytest.raises(GraphFormatError, match="is not a valid name"):
        read_dir(root)
    # from in-memory tables too
    with pytest.raises(GraphFormatError, match="node type '../x' is not a valid name"):
        build_graph({"node_types": ["../x"], "edge_types": []},
                                {"../x": pa.table({"id": [0, 1]})}, {})
    # a graph renamed in memory is not written outside the export folder
    g = read_dir(make(tmp_path / "ok", None))
    g.node_types[0] = "../escape"
    g.raw_ids["../escape"] = g.raw_ids["p"]
    with pytest.raises(PathError, match="node type '../escape' is not a valid name"):
        write_dir(g, tmp_path / "export" / "x")
    assert not (tmp_path / "export").exists() and not (tmp_path / "escape.parquet").exists()


def test_safe_join(tmp_path):
    root = tmp_path / "run" / "tokens"
    assert safe_join(root, "paper", ".safetensors") == os.path.join(str(root), "paper.safetensors")
    assert safe_join(root, "rev-cites_2") == os.path.join(str(root), "rev-cites_2")
    for bad in ("../x", "/abs", "a/b", "a.b", "", ".", "..", "-x", "a\\b", 3):
        with pytest.raises(PathError, match="is not a valid name"):
            safe_join(root, bad, ".safetensors", "node type")
    root.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere" / "paper.safetensors", root / "paper.safetensors")
    with pytest.raises(PathError, match="outside"):
        safe_join(root, "paper", ".safetensors")
    assert safe_join(tmp_path / "e", "a__r__b", ".csv", "edge type").endswith("a__r__b.csv")
    with pytest.raises(PathError, match="must be <src_type>__<relation>__<dst_type>"):
        safe_join(tmp_path / "e", "a__b", ".csv", "edge type")


def test_symlinks_leaving_the_dataset_are_refused(tmp_path):
    outside = tmp_path / "secret.csv"
    outside.write_text(NODES)
    root = make(tmp_path / "d", None, {"edges/p__c__p.csv": EDGES})
    os.symlink(outside, os.path.join(root, "nodes", "p.csv"))
    with pytest.raises(GraphFormatError, match=r"nodes/p.csv: resolves to .*secret.csv, outside the dataset "
                                               r"directory; symbolic links must stay inside it"):
        read_dir(root)
    # a link that stays inside is fine
    os.remove(os.path.join(root, "nodes", "p.csv"))
    with open(os.path.join(root, "p_real.csv"), "w") as f:
        f.write(NODES)
    os.symlink(os.path.join(root, "p_real.csv"), os.path.join(root, "nodes", "p.csv"))
    assert read_dir(root).num_nodes["p"] == 4
    # metadata.json and a whole folder linked out
    root2 = make(tmp_path / "d2", None)
    os.remove(os.path.join(root2, "metadata.json"))
    (tmp_path / "md.json").write_text(json.dumps(MD))
    os.symlink(tmp_path / "md.json", os.path.join(root2, "metadata.json"))
    with pytest.raises(GraphFormatError, match="metadata.json: resolves to .*outside the dataset directory"):
        read_dir(root2)
    root3 = make(tmp_path / "d3", None, {"nodes/p.csv": NODES})
    os.rmdir(os.path.join(root3, "edges"))
    (tmp_path / "edges_out").mkdir()
    (tmp_path / "edges_out" / "p__c__p.csv").write_text(EDGES)
    os.symlink(tmp_path / "edges_out", os.path.join(root3, "edges"))
    with pytest.raises(GraphFormatError, match="edges/p__c__p.csv: resolves to .*outside"):
        read_dir(root3)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_large_text_cell_is_read(tmp_path, fmt):
    big = "word " * (2 * 1024 * 1024 // 5 + 7)  # a bit over 2 MiB, beyond the reader's 1 MiB block
    if fmt == "csv":
        content = f"id,text,label\n0,{big},0\n1,b,1\n2,c,0\n3,d,1\n"
    else:
        content = "".join(json.dumps({"id": i, "text": t, "label": i % 2}) + "\n"
                          for i, t in enumerate([big, "b", "c", "d"]))
    root = make(tmp_path / "d", None, {f"nodes/p.{fmt}": content, "edges/p__c__p.csv": EDGES})
    g = read_dir(root)
    assert g.text["p"][0] == big and g.text["p"][1] == "b"


def test_19_digit_ids_are_integers(tmp_path):
    ids = [1000000000000000000, 9223372036854775807, -9223372036854775808]
    nodes = "id,label\n" + "".join(f"{v},{i % 2}\n" for i, v in enumerate(ids))
    edges = f"src,dst\n{ids[0]},{ids[1]}\n{ids[2]},{ids[0]}\n"
    g = read_dir(make(tmp_path / "a", None, {"nodes/p.csv": nodes, "edges/p__c__p.csv": edges}))
    assert isinstance(g.raw_ids["p"], np.ndarray) and g.raw_ids["p"].dtype == np.int64
    assert g.raw_ids["p"].tolist() == ids
    # beyond int64: the whole column keeps its spelling (strings), and edges still match
    big = ["9223372036854775808", "12345678901234567890", "7"]
    nodes = "id,label\n" + "".join(f"{v},{i % 2}\n" for i, v in enumerate(big))
    edges = f"src,dst\n{big[0]},{big[2]}\n{big[1]},{big[0]}\n"
    g = read_dir(make(tmp_path / "b", None, {"nodes/p.csv": nodes, "edges/p__c__p.csv": edges}))
    assert g.raw_ids["p"] == big
    assert g.num_edges(("p", "c", "p")) == 2


def test_multilabel_boolean_is_honoured(tmp_path):
    files = {"nodes/p.csv": "id,label\n0,a|b\n1,b\n2,a\n3,b\n", "edges/p__c__p.csv": EDGES}
    g = read_dir(make(tmp_path / "t", task(multilabel=True), files))
    assert g.task("y").multilabel and g.labels["p"].shape == (4, 2)
    files = {"nodes/p.csv": "id,label\n0,a\n1,b\n2,a\n3,b\n", "edges/p__c__p.csv": EDGES}
    g = read_dir(make(tmp_path / "f", task(multilabel=False), files))
    assert not g.task("y").multilabel and g.labels["p"].tolist() == [0, 1, 0, 1]


def test_class_count_bound_grows_with_rows(tmp_path):
    """Integer classes up to the table's row count are accepted beyond the 10,000 floor."""
    n = 10_050
    nodes = "id,label\n" + "".join(f"{i},{i}\n" for i in range(n))
    g = read_dir(make(tmp_path / "d", None, {"nodes/p.csv": nodes, "edges/p__c__p.csv": EDGES}))
    assert g.task("y").num_classes == n


def test_loader_options_are_checked(tmp_path):
    root = make(tmp_path / "d", None)
    with pytest.raises(OptionError, match=r"read_dir: unknown option 'bogus' \(options: add_reverse_edges, "
                                          r"dedup_edges, index_dtype, seed, self_loops, split_ratios\)"):
        read_dir(root, bogus=1)
    for opt, value, message in [("split_ratios", (0.5, 0.5), "split_ratios must be 3 non-negative numbers"),
                                ("seed", -1, "seed must be an integer >= 0, got -1"),
                                ("seed", "x", "seed must be an integer >= 0, got 'x'"),
                                ("add_reverse_edges", "no", "add_reverse_edges must be true or false, got 'no'"),
                                ("index_dtype", "int8", "index_dtype must be 'auto', 'int32' or 'int64'")]:
        with pytest.raises(OptionError, match=re.escape(message)):
            read_dir(root, **{opt: value})


def test_max_nodes_for_a_directory(tmp_path):
    from _toy_graph import write_toy_dir
    from lmgnn_fast.datasets import load_dataset
    from lmgnn_fast.train import builders

    root = write_toy_dir(str(tmp_path / "toy"), num_papers=45)
    full = load_dataset(root)
    a = load_dataset(root, max_nodes=30, seed=1)
    assert sum(a.num_nodes.values()) == 30
    assert a.equals(load_dataset(root, max_nodes=30, seed=1))  # seeded
    assert not a.equals(load_dataset(root, max_nodes=30, seed=2))
    assert [t.name for t in a.tasks] == [t.name for t in full.tasks]
    # kept nodes keep their ids, texts and labels; edges are those among kept nodes
    pos = {v: i for i, v in enumerate(full.raw_ids["paper"])}
    for i, v in enumerate(a.raw_ids["paper"]):
        assert a.text["paper"][i] == full.text["paper"][pos[v]]
        assert int(a.labels["paper"][i]) == int(full.labels["paper"][pos[v]])
    kept = set(a.raw_ids["paper"])
    ids = full.raw_ids["paper"]
    s, d = full_edges(a, ("paper", "cites", "paper"))
    fs, fd = full_edges(full, ("paper", "cites", "paper"))
    want = {(ids[x], ids[y]) for x, y in zip(fs, fd) if ids[x] in kept and ids[y] in kept}
    got = {(a.raw_ids["paper"][x], a.raw_ids["paper"][y]) for x, y in zip(s, d)}
    assert got == want and len(got) > 0
    # the trainer's loader passes data.options through
    g = builders.load_graph(root, {"max_nodes": 20, "seed": 0})
    assert sum(g.num_nodes.values()) == 20
    assert load_dataset(root, max_nodes=10_000).equals(full)
    with pytest.raises(OptionError, match="max_nodes must be an integer >= 1, got -3"):
        load_dataset(root, max_nodes=-3)


def _cache_of(root) -> str:
    base = os.path.join(root, ".lmgnn_cache")
    (key,) = os.listdir(base)
    return os.path.join(base, key)


@pytest.mark.parametrize("damage", ["object_dtype", "pickle_free_garbage", "string_dtype", "missing"])
def test_damaged_binary_cache_array_is_a_clear_error(tmp_path, damage):
    """An array file of a binary cache that is not a plain numeric .npy (an object array, a
    non-.npy file, strings, a missing file) is a GraphFormatError naming it, never a raw
    ValueError or an unpickling."""
    root = make(tmp_path / "d", None)
    read_dir(root, cache=True)
    arr = os.path.join(_cache_of(root), "arrays", "n0.labels.npy")
    if damage == "object_dtype":
        np.save(arr, np.array([{"a": 1}, None, "x", 3], dtype=object), allow_pickle=True)
        match = r"n0.labels.npy: not a plain numeric .npy array \(.*\); write the cache again with save_binary$"
    elif damage == "pickle_free_garbage":
        with open(arr, "wb") as f:
            f.write(b"\x93NUMPY garbage")
        match = r"n0.labels.npy: not a plain numeric .npy array"
    elif damage == "string_dtype":
        np.save(arr, np.array(["a", "b", "c", "d"]))
        match = r"n0.labels.npy: array of dtype <U1 where a numeric one is expected"
    else:
        os.remove(arr)
        match = r"n0.labels.npy: missing array file named in graph.json"
    for mmap in (True, False):
        with pytest.raises(GraphFormatError, match=match):
            load_binary(_cache_of(root), mmap=mmap)
    with pytest.raises(GraphFormatError, match=match):
        read_dir(root, cache=True)


def test_binary_cache_names_are_checked_on_load(tmp_path):
    root = make(tmp_path / "d", None)
    read_dir(root, cache=True)
    path = os.path.join(_cache_of(root), "graph.json")
    head = json.load(open(path))
    for change, match in [
        (lambda h: h["nodes"][0].update(type="../../x"), r"nodes\[0\].type: node type '../../x' is not a valid"),
        (lambda h: h["relations"][0].update(edge_type=["p", "c/../../x", "p"]),
         r"relations\[0\].edge_type: relation 'c/../../x' is not a valid name"),
        (lambda h: h["tasks"][0].update(name="../y"), r"tasks\[0\].name: task name '../y' is not a valid"),
        (lambda h: h["nodes"][0].pop("ids"), r"graph.json: not a valid binary graph cache \(KeyError"),
    ]:
        bad = json.loads(json.dumps(head))
        change(bad)
        with open(path, "w") as f:
            json.dump(bad, f)
        with pytest.raises(GraphFormatError, match=match):
            load_binary(_cache_of(root))
    with open(path, "w") as f:
        json.dump(head, f)
    assert load_binary(_cache_of(root)).num_nodes["p"] == 4
