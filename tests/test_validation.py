"""Every bad input gives a GraphFormatError naming the file, row and column at fault."""
import json
import re

import pyarrow as pa
import pytest

from lmgnn_fast import GraphFormatError
from lmgnn_fast.io import build_graph, read_dir

BASE_MD = {
    "node_types": ["paper", "author"],
    "edge_types": [["author", "writes", "paper"], ["paper", "cites", "paper"]],
    "tasks": [{"name": "venue", "type": "node_classification", "node_type": "paper"}],
}
PAPERS = "id,text,label,split\np0,first,kdd,train\np1,second,acl,val\np2,,kdd,test\np3,fourth,,\n"
AUTHORS = "id\n10\n11\n12\n"
WRITES = "src,dst\n10,p0\n11,p1\n12,p2\n10,p3\n"
CITES = "src,dst\np0,p1\np1,p2\np3,p0\n"


def make(tmp_path, md=None, files=None, drop=()):
    """Write a small valid CSV dataset, with ``files`` overriding (path -> text or bytes)."""
    root = tmp_path / "ds"
    (root / "nodes").mkdir(parents=True, exist_ok=True)
    (root / "edges").mkdir(exist_ok=True)
    content = {
        "metadata.json": json.dumps(BASE_MD if md is None else md),
        "nodes/paper.csv": PAPERS,
        "nodes/author.csv": AUTHORS,
        "edges/author__writes__paper.csv": WRITES,
        "edges/paper__cites__paper.csv": CITES,
    }
    content.update(files or {})
    for rel, text in content.items():
        if rel in drop:
            continue
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)
    return root


def fails(root, message, **options):
    with pytest.raises(GraphFormatError, match=re.escape(message)) as info:
        read_dir(root, **options)
    return info.value


def test_valid_fixture_loads(tmp_path):
    g = read_dir(make(tmp_path))
    assert g.num_nodes == {"paper": 4, "author": 3}
    assert g.report["nodes"]["paper"]["empty_text"] == 1
    assert g.masks["paper"]["train"].tolist() == [True, False, False, False]


# ---------------------------------------------------------------- missing / unreadable files
def test_not_a_directory(tmp_path):
    fails(tmp_path / "nope", "not a directory (expected metadata.json, nodes/, edges/)")


def test_missing_metadata(tmp_path):
    e = fails(make(tmp_path, drop={"metadata.json"}), "metadata.json: file not found")
    assert e.file == "metadata.json"


def test_metadata_invalid_json(tmp_path):
    fails(make(tmp_path, files={"metadata.json": '{"node_types": ["paper",\n  "author"\n'}),
          "metadata.json: invalid JSON:")


def test_metadata_not_an_object(tmp_path):
    fails(make(tmp_path, files={"metadata.json": "[1, 2]"}), "metadata.json: metadata must be a JSON object, got list")


def test_missing_node_file(tmp_path):
    e = fails(make(tmp_path, drop={"nodes/author.csv"}),
              "nodes/author.*: file not found (looked for nodes/author.csv, nodes/author.parquet, nodes/author.jsonl)")
    assert e.file == "nodes/author.*"


def test_missing_edge_file(tmp_path):
    fails(make(tmp_path, drop={"edges/paper__cites__paper.csv"}),
          "edges/paper__cites__paper.*: file not found (looked for edges/paper__cites__paper.csv")


def test_two_files_for_one_table(tmp_path):
    fails(make(tmp_path, files={"nodes/author.jsonl": '{"id": 10}\n'}),
          "nodes/author.*: several files for one table (nodes/author.csv, nodes/author.jsonl); keep one")


def test_unreadable_parquet(tmp_path):
    root = make(tmp_path, files={"nodes/author.parquet": b"this is not parquet"}, drop={"nodes/author.csv"})
    e = fails(root, "nodes/author.parquet: cannot read parquet file:")
    assert e.file == "nodes/author.parquet"


def test_malformed_csv(tmp_path):
    fails(make(tmp_path, files={"edges/paper__cites__paper.csv": "src,dst\np0,p1\np1,p2,p3\n"}),
          "edges/paper__cites__paper.csv: cannot read csv file: CSV parse error: Expected 2 columns, got 3")


def test_malformed_jsonl(tmp_path):
    root = make(tmp_path, files={"nodes/author.jsonl": '{"id": 10}\n{"id": 11\n'}, drop={"nodes/author.csv"})
    fails(root, "nodes/author.jsonl: cannot read jsonl file:")


# ---------------------------------------------------------------- metadata
def test_relation_with_unknown_node_type(tmp_path):
    md = dict(BASE_MD, edge_types=BASE_MD["edge_types"] + [["paper", "at", "venue"]])
    fails(make(tmp_path, md=md), "metadata.json: edge_types[2]: relation ('paper', 'at', 'venue') names "
                                 "unknown node type 'venue' (node types: ['paper', 'author'])")


def test_malformed_edge_type(tmp_path):
    md = dict(BASE_MD, edge_types=[["author", "writes"]])
    fails(make(tmp_path, md=md), "metadata.json: edge_types[0] must be [src_type, relation, dst_type], "
                                 "got ['author', 'writes']")


def test_relation_listed_twice(tmp_path):
    md = dict(BASE_MD, edge_types=BASE_MD["edge_types"] + [["paper", "cites", "paper"]])
    fails(make(tmp_path, md=md), "edge_types[2]: relation ('paper', 'cites', 'paper') is listed twice")


def test_node_type_listed_twice(tmp_path):
    md = dict(BASE_MD, node_types=["paper", "author", "paper"])
    fails(make(tmp_path, md=md), "node_types: node type 'paper' is listed twice")


def test_task_with_missing_node_type(tmp_path):
    md = dict(BASE_MD, tasks=[{"name": "x", "type": "node_classification", "node_type": "venue"}])
    fails(make(tmp_path, md=md), "metadata.json: tasks[0]: task names unknown node type 'venue' "
                                 "(node types: ['paper', 'author'])")


def test_task_with_missing_relation(tmp_path):
    md = dict(BASE_MD, tasks=[{"name": "x", "type": "link_prediction", "edge_type": ["paper", "cites", "author"]}])
    fails(make(tmp_path, md=md), "metadata.json: tasks[0]: task names unknown relation ('paper', 'cites', 'author')")


def test_task_with_unknown_relation_name(tmp_path):
    md = dict(BASE_MD, tasks=[{"name": "x", "type": "link_prediction", "edge_type": "reads"}])
    fails(make(tmp_path, md=md), "tasks[0]: task names relation 'reads', which matches 0 relations")


def test_task_with_unknown_type(tmp_path):
    md = dict(BASE_MD, tasks=[{"name": "x", "type": "regression", "node_type": "paper"}])
    fails(make(tmp_path, md=md), "tasks[0]: unknown task type 'regression' (use one of ['node_classification', "
                                 "'edge_classification', 'link_prediction'])")


def test_task_name_twice(tmp_path):
    md = dict(BASE_MD, tasks=BASE_MD["tasks"] * 2)
    fails(make(tmp_path, md=md), "tasks[1]: task name 'venue' is used twice")


def test_text_column_missing(tmp_path):
    md = dict(BASE_MD, text_columns={"paper": ["title", "text"]})
    e = fails(make(tmp_path, md=md), "nodes/paper.csv, column 'title': missing text column 'title' named in "
                                     "text_columns (columns: ['id', 'text', 'label', 'split'])")
    assert e.column == "title"


def test_reverse_relation_collision(tmp_path):
    md = dict(BASE_MD, edge_types=BASE_MD["edge_types"] + [["paper", "rev-writes", "author"]])
    root = make(tmp_path, md=md, files={"edges/paper__rev-writes__author.csv": "src,dst\np0,10\n"})
    fails(root, "relation ('paper', 'rev-writes', 'author') exists already, so reverse edges cannot be added")
    assert len(read_dir(root, add_reverse_edges=False).edge_types) == 3


# ---------------------------------------------------------------- columns and empty tables
def test_missing_id_column(tmp_path):
    e = fails(make(tmp_path, files={"nodes/author.csv": "name\n10\n11\n"}),
              "nodes/author.csv: missing column 'id' (columns: ['name'])")
    assert e.file == "nodes/author.csv" and e.row is None


def test_missing_dst_column(tmp_path):
    fails(make(tmp_path, files={"edges/paper__cites__paper.csv": "src,target\np0,p1\n"}),
          "edges/paper__cites__paper.csv: missing column 'dst' (columns: ['src', 'target'])")


def test_wrong_id_column_type(tmp_path):
    root = make(tmp_path, files={"nodes/author.jsonl": '{"id": [1, 2]}\n{"id": [3]}\n'},
                drop={"nodes/author.csv"})
    fails(root, "nodes/author.jsonl, column 'id': node ids must be integers or strings, "
                "got column type list<item: int64>")


def test_fractional_id(tmp_path):
    root = make(tmp_path, files={"nodes/author.jsonl": '{"id": 10}\n{"id": 11.5}\n'}, drop={"nodes/author.csv"})
    fails(root, "nodes/author.jsonl, row 1 (line 2), column 'id': node ids must be integers or strings, got 11.5")


def test_fractional_label(tmp_path):
    papers = "id,label\np0,1\np1,0.5\np2,2\np3,1\n"
    fails(make(tmp_path, files={"nodes/paper.csv": papers}),
          "nodes/paper.csv, row 1 (line 3), column 'label': labels must be integers or strings, got 0.5")


def test_negative_label(tmp_path):
    papers = "id,label\np0,1\np1,-1\np2,-4\np3,1\n"
    fails(make(tmp_path, files={"nodes/paper.csv": papers}),
          "nodes/paper.csv, row 2 (line 4), column 'label': label -4 is negative "
          "(use -1 or leave empty for unlabelled)")


def test_empty_node_table(tmp_path):
    fails(make(tmp_path, files={"nodes/author.csv": "id\n"}), "nodes/author.csv: the node table of 'author' is empty")


def test_empty_edge_table(tmp_path):
    fails(make(tmp_path, files={"edges/paper__cites__paper.csv": "src,dst\n"}),
          "edges/paper__cites__paper.csv: the edge table of relation ('paper', 'cites', 'paper') is empty")


def test_empty_file(tmp_path):
    fails(make(tmp_path, files={"nodes/author.csv": ""}), "nodes/author.csv: cannot read csv file: Empty CSV file")


# ---------------------------------------------------------------- ids
def test_edge_src_not_in_node_table(tmp_path):
    e = fails(make(tmp_path, files={"edges/author__writes__paper.csv": "src,dst\n10,p0\n11,p1\n99,p2\n"}),
              "edges/author__writes__paper.csv, row 2 (line 4), column 'src': id 99 is not in the node table "
              "of 'author' (nodes/author.csv)")
    assert (e.file, e.row, e.column, e.line) == ("edges/author__writes__paper.csv", 2, "src", 4)


def test_edge_dst_not_in_node_table(tmp_path):
    fails(make(tmp_path, files={"edges/paper__cites__paper.csv": "src,dst\np0,p1\np1,p9\n"}),
          "edges/paper__cites__paper.csv, row 1 (line 3), column 'dst': id 'p9' is not in the node table "
          "of 'paper' (nodes/paper.csv)")


def test_missing_edge_endpoint(tmp_path):
    root = make(tmp_path, files={"edges/paper__cites__paper.jsonl": '{"src": "p0", "dst": "p1"}\n{"src": "p1"}\n'},
                drop={"edges/paper__cites__paper.csv"})
    fails(root, "edges/paper__cites__paper.jsonl, row 1 (line 2), column 'dst': dst id is missing (null)")


def test_duplicate_node_ids(tmp_path):
    e = fails(make(tmp_path, files={"nodes/author.csv": "id\n10\n11\n12\n11\n"}),
              "nodes/author.csv, row 3 (line 5), column 'id': duplicate node id 11 (first seen in row 1)")
    assert e.row == 3


def test_duplicate_string_node_ids(tmp_path):
    papers = "id,label\np0,a\np1,b\np0,c\np3,a\n"
    fails(make(tmp_path, files={"nodes/paper.csv": papers}),
          "nodes/paper.csv, row 2 (line 4), column 'id': duplicate node id 'p0' (first seen in row 0)")


def test_null_node_id(tmp_path):
    root = make(tmp_path, files={"nodes/author.jsonl": '{"id": 10}\n{"text": "no id"}\n'}, drop={"nodes/author.csv"})
    fails(root, "nodes/author.jsonl, row 1 (line 2), column 'id': node id is missing (null)")


def test_in_memory_tables_are_named(tmp_path):
    md = {"node_types": ["v"], "edge_types": [["v", "e", "v"]]}
    with pytest.raises(GraphFormatError, match=re.escape("edges/v__e__v, row 1, column 'dst': id 5 is not in "
                                                         "the node table of 'v' (nodes/v)")):
        build_graph(md, {"v": pa.table({"id": [0, 1]})},
                                {("v", "e", "v"): pa.table({"src": [0, 1], "dst": [1, 5]})})
    with pytest.raises(GraphFormatError, match=re.escape("nodes/v: no node table for node type 'v'")):
        build_graph(md, {}, {})


# ---------------------------------------------------------------- labels and splits
def test_labels_missing_for_training_nodes(tmp_path):
    papers = "id,label,split\np0,kdd,train\np1,,train\np2,acl,test\np3,kdd,val\n"
    e = fails(make(tmp_path, files={"nodes/paper.csv": papers}),
              "nodes/paper.csv, row 1 (line 3), column 'label': node 'p1' is in split 'train' but has no label "
              "(task 'venue')")
    assert e.column == "label"


def test_label_column_missing_for_task(tmp_path):
    fails(make(tmp_path, files={"nodes/paper.csv": "id,text\np0,a\np1,b\np2,c\np3,d\n"}),
          "nodes/paper.csv, column 'label': missing column 'label', needed by node classification task 'venue'")


def test_unknown_node_split(tmp_path):
    papers = "id,label,split\np0,kdd,train\np1,acl,dev\np2,acl,test\np3,kdd,val\n"
    e = fails(make(tmp_path, files={"nodes/paper.csv": papers}),
              "nodes/paper.csv, row 1 (line 3), column 'split': unknown split 'dev': use 'train', 'val', 'test' "
              "or leave it empty")
    assert (e.row, e.column) == (1, "split")


def test_unknown_edge_split(tmp_path):
    fails(make(tmp_path, files={"edges/paper__cites__paper.csv": "src,dst,split\np0,p1,train\np1,p2,holdout\n"}),
          "edges/paper__cites__paper.csv, row 1 (line 3), column 'split': unknown split 'holdout'")


def test_unknown_class_with_label_names(tmp_path):
    md = dict(BASE_MD, label_names={"paper": ["kdd", "icml"]})
    fails(make(tmp_path, md=md), "nodes/paper.csv, row 1 (line 3), column 'label': unknown class 'acl' "
                                 "(classes: ['kdd', 'icml'])")


def test_edge_classification_label_missing(tmp_path):
    md = dict(BASE_MD, tasks=[{"name": "role", "type": "edge_classification", "edge_type": "writes"}])
    root = make(tmp_path, md=md, files={"edges/author__writes__paper.csv":
                                        "src,dst,label,split\n10,p0,first,train\n11,p1,,val\n"})
    fails(root, "edges/author__writes__paper.csv, row 1 (line 3), column 'label': edge is in split 'val' but has no "
                "label (task 'role')")


def test_edge_row_numbers_survive_removed_edges(tmp_path):
    # rows keep their file numbering when duplicates / self-loops were dropped before the check
    md = dict(BASE_MD, tasks=[{"name": "role", "type": "edge_classification", "edge_type": "writes"}])
    root = make(tmp_path, md=md, files={"edges/author__writes__paper.csv":
                                        "src,dst,label,split\n10,p0,a,train\n10,p0,a,train\n11,p1,,val\n"})
    fails(root, "edges/author__writes__paper.csv, row 2 (line 4), column 'label'", dedup_edges="remove")


def test_duplicates_and_self_loops_reported(tmp_path):
    root = make(tmp_path, files={"edges/paper__cites__paper.csv": "src,dst\np0,p1\np0,p1\np2,p2\np1,p0\n"})
    g = read_dir(root)
    assert g.report["edges"]["paper__cites__paper"] == {"rows": 4, "duplicates": 1, "self_loops": 1,
                                                        "removed": 0, "edges": 4}
    g = read_dir(root, dedup_edges="remove", self_loops="remove")
    assert g.report["edges"]["paper__cites__paper"] == {"rows": 4, "duplicates": 1, "self_loops": 1,
                                                        "removed": 2, "edges": 2}
    assert g.num_edges(("paper", "cites", "paper")) == 2
