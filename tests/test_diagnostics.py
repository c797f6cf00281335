"""Learning-signal diagnostics: the LM's gradient norm per step, the embeddings' drift."""
from __future__ import annotations

import json
import math
import os

import torch

from _toy_graph import write_toy_dir
from lmgnn_fast.io import read_dir
from lmgnn_fast.lm import make_tiny_bert
from lmgnn_fast.train import Config, Trainer
from lmgnn_fast.train.diagnostics import grad_norm


def test_grad_norm_of_several_parameters():
    a, b, c = (torch.zeros(3, requires_grad=True) for _ in range(3))
    a.grad, b.grad = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 4.0, 0.0])
    assert grad_norm([a, b, c]) == 5.0  # c has no gradient
    assert grad_norm([c]) == 0.0


def test_stages_record_lm_gradient_norm_and_drift(tmp_path):
    data = write_toy_dir(str(tmp_path / "data"), num_papers=30)
    g = read_dir(data)
    bert = make_tiny_bert([x for t in g.node_types for x in (g.text[t] or [])], str(tmp_path / "bert"))
    c = Config()
    c.data.name, c.lm.name, c.lm.max_length = data, bert, 16
    c.gnn.hidden, c.gnn.fanouts = 16, [4, 4]
    c.task.name = "topic"
    c.stage2.epochs, c.stage2.batch_size = 1, 16
    c.stage3.batch_size, c.stage3.lm_train_nodes = 16, 8
    c.stage1.lr = c.stage3.lm_lr = 1e-3
    out = str(tmp_path / "run")
    c.run.out_dir, c.run.progress, c.run.num_threads, c.run.diagnostics = out, False, 1, True
    Trainer(c, log=lambda *a: None).run()
    m = json.load(open(os.path.join(out, "metrics.json")))
    hist = m["history"]
    s1 = [r["lm_grad_norm"] for r in hist["stage1"] if "loss" in r]
    assert s1 and all(math.isfinite(x) and x > 0 for x in s1)
    assert all("lm_grad_norm" not in r for r in hist["stage2"])
    assert [r for r in hist["stage3"] if r.get("lm_grad_norm", 0) > 0]
    for stage in ("stage1", "stage3"):
        drift = m["stages"][stage]["lm_drift"]
        assert set(drift) == set(g.node_types) - {t for t in g.node_types if not g.text[t]}
        for d in drift.values():
            assert -1 <= d["cos_to_start"] < 1  # the LM moved
            assert d["norm_ratio"] > 0
    # off by default: no drift in metrics
    c.run.diagnostics, c.run.out_dir, c.run.stages = False, str(tmp_path / "run2"), "1"
    Trainer(c, log=lambda *a: None).run()
    m2 = json.load(open(os.path.join(str(tmp_path / "run2"), "metrics.json")))
    assert "lm_drift" not in m2["stages"]["stage1"]
