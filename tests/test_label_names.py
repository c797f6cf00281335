"""Class names in ``predictions.parquet`` and per-class metrics in ``metrics.json``."""
from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
import torch

from _toy_graph import write_toy_dir
from lmgnn_fast.io import read_dir
from lmgnn_fast.lm import make_tiny_bert
from lmgnn_fast.train import Config, Trainer
from lmgnn_fast.train.config import apply_overrides
from lmgnn_fast.train.metrics import classification_metrics, per_class_metrics

NAMES = ["graphs", "biology", "finance"]
ROLES = ["first", "other"]


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    root = tmp_path_factory.mktemp("names")
    data = write_toy_dir(str(root / "data"), num_papers=45)
    md_path = os.path.join(data, "metadata.json")
    md = json.load(open(md_path))
    md["label_names"] = {"paper": NAMES, "author__writes__paper": ROLES}
    json.dump(md, open(md_path, "w"))
    g = read_dir(data)
    bert = make_tiny_bert([x for t in g.node_types for x in (g.text[t] or [])], str(root / "bert"))
    return {"root": root, "data": data, "bert": bert}


def _train(named, out, task):
    c = Config()
    apply_overrides(c, ["--data.name", named["data"], "--lm.name", named["bert"], "--lm.max_length", "16",
                        "--gnn.hidden", "16", "--gnn.fanouts", "[4, 4]", "--stage2.epochs", "2",
                        "--stage2.batch_size", "16", "--run.stages", "2", "--task.name", task,
                        "--run.out_dir", out, "--run.progress", "false", "--run.num_threads", "1"])
    Trainer(c, log=lambda *a: None).run()
    return json.load(open(os.path.join(out, "metrics.json"))), \
        pq.read_table(os.path.join(out, "predictions.parquet")).to_pydict()


@pytest.mark.parametrize("task,names", [("topic", NAMES), ("role", ROLES)])
def test_names_beside_indices_and_per_class_metrics(named, tmp_path, task, names):
    from lmgnn_fast.evaluate import evaluate_run

    out = str(tmp_path / "run")
    m, pred = _train(named, out, task)
    assert pred["label_names"] == [names[i] for i in pred["label"]]
    assert pred["pred_names"] == [names[i] for i in pred["pred"]]
    assert len(set(pred["label"])) == len(names)
    pc = m["per_class"]
    assert pc["stage"] == m["final_stage"] == 2 and list(pc["val"]) == names
    for split in ("val", "test"):
        rows = [i for i, s in enumerate(pred["split"]) if s == split]
        per = pc[split]
        assert sum(v["support"] for v in per.values()) == len(rows)
        for k, name in enumerate(names):  # recomputed from the rows of predictions.parquet
            tp = sum(pred["pred"][i] == k and pred["label"][i] == k for i in rows)
            n_pred = sum(pred["pred"][i] == k for i in rows)
            n_true = sum(pred["label"][i] == k for i in rows)
            assert per[name]["support"] == n_true
            assert per[name]["recall"] == pytest.approx(tp / n_true if n_true else 0.0)
            assert per[name]["precision"] == pytest.approx(tp / n_pred if n_pred else 0.0)
        f1s = [v["f1"] for n, v in per.items()
               if v["support"] or any(pred["pred"][i] == names.index(n) for i in rows)]
        assert f1s and sum(f1s) / len(f1s) == pytest.approx(m["stages"]["stage2"][split]["macro_f1"], abs=1e-6)
    # the existing keys stay as they were: evaluate reproduces them
    again = evaluate_run(out)
    for split in ("val", "test"):
        assert again["stage2"][split] == pytest.approx(m["stages"]["stage2"][split], abs=1e-5)


def test_per_class_metrics_multilabel_and_unlabelled():
    logits = torch.tensor([[2.0, -1.0, 3.0], [-2.0, 1.0, -1.0], [1.0, 1.0, -3.0]])
    target = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0]]).float()
    per = per_class_metrics(logits, target, True, ["a", "b", "c"])
    assert per["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert per["b"]["precision"] == 0.5 and per["b"]["recall"] == 1.0 and per["b"]["support"] == 1
    assert per["c"]["precision"] == 1.0 and per["c"]["recall"] == 0.5
    macro = classification_metrics(logits, target, True)["macro_f1"]
    assert sum(v["f1"] for v in per.values()) / 3 == pytest.approx(macro)
    # single-label: an unlabelled item (-1) counts for no class
    per1 = per_class_metrics(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, -1]), False, ["x", "y"])
    assert per1["x"]["support"] == 1 and per1["y"]["support"] == 0 and per1["y"]["precision"] == 0.0
