"""Small random heterogeneous text graphs in the directory format, for the data-layer tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

WRITES = ("author", "writes", "paper")
CITES = ("paper", "cites", "paper")
HAS = ("paper", "has", "topic")


def toy_tables(seed: int = 0, n_paper: int = 60, n_author: int = 25, n_topic: int = 7,
               n_writes: int = 150, n_cites: int = 200, n_has: int = 80):
    """metadata, node tables and edge tables of a random paper/author/topic graph.

    Papers have string ids (``p0``, ``p1``, ... in shuffled order), text and string labels;
    authors have non-dense integer ids; topics dense integer ids and no text.
    """
    rng = np.random.default_rng(seed)
    pids = np.array([f"p{i}" for i in rng.permutation(n_paper)], dtype=object)
    aids = rng.choice(10_000, size=n_author, replace=False).astype(np.int64)
    md = {
        "name": "toy",
        "node_types": ["paper", "author", "topic"],
        "edge_types": [list(WRITES), list(CITES), list(HAS)],
        "add_reverse_edges": True,
        "tasks": [
            {"name": "venue", "type": "node_classification", "node_type": "paper"},
            {"name": "cites", "type": "link_prediction", "edge_type": list(CITES)},
            {"name": "role", "type": "edge_classification", "edge_type": list(WRITES)},
        ],
    }
    nodes = {
        "paper": pa.table({"id": pa.array(pids, pa.string()),
                           "text": [f"paper about {w}" for w in rng.choice(["graphs", "text", "cats"], n_paper)],
                           "label": pa.array(rng.choice(["kdd", "acl", "icml"], n_paper).tolist())}),
        "author": pa.table({"id": aids, "text": [f"author {i}" for i in range(n_author)]}),
        "topic": pa.table({"id": np.arange(n_topic)}),
    }
    edges = {
        WRITES: pa.table({"src": aids[rng.integers(0, n_author, n_writes)],
                          "dst": pa.array(pids[rng.integers(0, n_paper, n_writes)], pa.string()),
                          "label": pa.array(rng.choice(["first", "middle", "last"], n_writes).tolist())}),
        CITES: pa.table({"src": pa.array(pids[rng.integers(0, n_paper, n_cites)], pa.string()),
                         "dst": pa.array(pids[rng.integers(0, n_paper, n_cites)], pa.string())}),
        HAS: pa.table({"src": pa.array(pids[rng.integers(0, n_paper, n_has)], pa.string()),
                       "dst": rng.integers(0, n_topic, n_has)}),
    }
    return md, nodes, edges


def write_table(table: pa.Table, path: Path, fmt: str) -> Path:
    path = Path(f"{path}.{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        pv.write_csv(table, path)
    else:
        cols = [table.column(c).to_pylist() for c in table.column_names]
        with open(path, "w") as f:
            for row in zip(*cols):
                f.write(json.dumps({k: v for k, v in zip(table.column_names, row) if v is not None}) + "\n")
    return path


def write_dataset(root: Path, md: dict, nodes: dict, edges: dict, fmt: str = "csv") -> Path:
    """Write tables in the directory format (independently of ``save_dir``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.json").write_text(json.dumps(md, indent=1))
    for t, tab in nodes.items():
        write_table(tab, root / "nodes" / t, fmt)
    for et, tab in edges.items():
        write_table(tab, root / "edges" / "__".join(et), fmt)
    return root
