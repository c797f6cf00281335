"""Edge classification and link prediction declared on the same relation."""
from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
import torch

from _toy_graph import write_toy_dir
from conftest import quiet, small_config
from lmgnn_fast.io import read_dir
from lmgnn_fast.train import Trainer


@pytest.fixture(scope="module")
def ec_lp_dir(tmp_path_factory):
    path = write_toy_dir(str(tmp_path_factory.mktemp("eclp") / "data"), num_papers=45)
    meta_path = os.path.join(path, "metadata.json")
    meta = json.load(open(meta_path))
    meta["tasks"].append({"name": "writes_lp", "type": "link_prediction",
                          "edge_type": ["author", "writes", "paper"]})
    json.dump(meta, open(meta_path, "w"))
    return path


def test_endpoints_of_held_out_edges_come_from_the_full_edge_list(ec_lp_dir):
    g = read_dir(ec_lp_dir)
    et = ("author", "writes", "paper")
    masks = g.edge_masks[et]
    assert masks["val"].any() and masks["test"].any()
    src, dst = g.all_edges(et)
    with open(os.path.join(ec_lp_dir, "edges", "author__writes__paper.csv")) as f:
        rows = [line.strip().split(",")[:2] for line in f.readlines()[1:]]
    assert src.numel() == len(rows)
    for split in ("val", "test"):
        eids = torch.nonzero(masks[split]).flatten()
        s, d = g.lp_edges["writes_lp"][split]
        assert torch.equal(src[eids], s) and torch.equal(dst[eids], d)
    mp_src, mp_dst, mp_eid = g.edges(et, with_eid=True)
    assert not torch.isin(torch.nonzero(masks["val"]).flatten(), mp_eid).any()  # held out of message passing
    assert torch.equal(src[mp_eid], mp_src) and torch.equal(dst[mp_eid], mp_dst)
    assert (src >= 0).all() and (dst >= 0).all()


def test_edge_classification_trains_when_link_prediction_holds_out_its_relation(toy, ec_lp_dir, tmp_path):
    out = str(tmp_path / "run")
    cfg = small_config(toy, out, **{"data.name": ec_lp_dir, "task.name": "role", "run.stages": "1,2",
                                    "stage2.epochs": 1})
    res = Trainer(cfg, log=quiet).run()
    for s in ("stage1", "stage2"):
        assert set(res[s]["test"]) and all(0.0 <= v <= 1.0 for v in res[s]["test"].values())
    pred = pq.read_table(os.path.join(out, "predictions.parquet")).to_pydict()
    assert {"val", "test"} <= set(pred["split"])
    assert all(str(a).startswith("a") for a in pred["src"]) and all(str(p).startswith("p") for p in pred["dst"])
