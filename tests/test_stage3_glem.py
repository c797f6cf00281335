"""Stage 3 with ``stage3.objective glem``: the LM trains on the graph model's predictions,
then the graph model on the refreshed embeddings; the stage keeps its best epoch."""
from __future__ import annotations

import json
import os

import pytest
import torch

from lmgnn_fast.train import Trainer
from lmgnn_fast.train.errors import SimulatedInterrupt
from lmgnn_fast.train.stages.stage3_glem import soft_cross_entropy
from test_train import check_outputs, quiet, small_config, toy  # noqa: F401


def test_soft_cross_entropy_matches_the_definition():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=gen)
    target = torch.softmax(torch.randn(5, 4, generator=gen), -1)
    want = -(target * torch.log_softmax(logits, -1)).sum(-1).mean()
    assert soft_cross_entropy(logits, target) == pytest.approx(float(want), rel=1e-6)
    # one-hot targets: the ordinary cross-entropy
    y = torch.tensor([0, 3, 1, 2, 2])
    assert soft_cross_entropy(logits, torch.nn.functional.one_hot(y, 4).float()) == \
        pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-6)
    # masked candidates (-inf logit, target 0) add nothing and give no NaN
    masked = logits.clone()
    masked[:, 1] = float("-inf")
    t2 = target.clone()
    t2[:, 1] = 0
    t2 = t2 / t2.sum(-1, keepdim=True)
    out = soft_cross_entropy(masked, t2)
    assert torch.isfinite(out)
    keep = [0, 2, 3]
    assert out == pytest.approx(float(-(t2[:, keep] * torch.log_softmax(logits[:, keep], -1)).sum(-1).mean()),
                                rel=1e-6)
    # multi-label: binary cross-entropy against per-class probabilities
    p = torch.sigmoid(torch.randn(5, 4, generator=gen))
    assert soft_cross_entropy(logits, p, multilabel=True) == pytest.approx(
        float(torch.nn.functional.binary_cross_entropy_with_logits(logits, p)), rel=1e-6)


@pytest.mark.parametrize("task,ttype", [("topic", "node_classification"), ("cites", "link_prediction"),
                                        ("role", "edge_classification")])
def test_glem_rounds_train_the_lm_and_keep_the_best_epoch(toy, tmp_path, task, ttype):  # noqa: F811
    out = str(tmp_path / "run")
    over = {"task.name": task, "run.stages": "1,2,3" if ttype != "edge_classification" else "2,3",
            "stage3.objective": "glem", "stage3.epochs": 2, "stage3.gnn_epochs": 2, "stage3.lm_items": 24,
            "stage3.pseudo_min_confidence": 0.0}
    res = Trainer(small_config(toy, out, **over), log=quiet).run()
    m = check_outputs(out, ttype, [int(s) for s in over["run.stages"].split(",")])
    r3 = res["stage3"]
    assert r3["objective"] == "glem"
    hist = m["history"]["stage3"]
    steps = [h for h in hist if "loss" in h]
    lm_steps = [h for h in steps if "lm_grad_norm" in h]
    # every round has LM steps (24 items in batches of 16: 2 per round), and the LM got a gradient
    assert len(lm_steps) == 2 * 2
    assert all(h["lm_grad_norm"] > 0 and torch.isfinite(torch.tensor(h["loss"])) for h in lm_steps)
    if ttype != "link_prediction":  # every non-training item passes confidence 0.0
        assert len(r3["pseudo_items_per_round"]) == 2 and all(c > 0 for c in r3["pseudo_items_per_round"])
    # the checkpoint is the stage's best validation epoch: its value is the best in the history
    key = m["task"]["primary_metric"]
    vals = [h[f"val_{key}"] for h in hist if f"val_{key}" in h]
    assert len(vals) == 2 * 2
    assert m["stages"]["stage3"]["val"][key] == pytest.approx(max(vals), abs=1e-6)
    assert r3["best_epoch"] >= 1 and r3["best_round"] in (0, 1)


def test_pseudo_items_exclude_the_training_split_and_follow_confidence(toy, tmp_path):  # noqa: F811
    """The LM step's pseudo-labelled nodes: outside the training split, at least the teacher
    confidence asked for, never chosen by label (val/test labels replaced do not change them)."""
    from lmgnn_fast.train.stages import STAGES

    out = str(tmp_path / "run")
    over = {"task.name": "topic", "run.stages": "2", "stage3.lm_items": 0}
    tr = Trainer(small_config(toy, out, **over), log=quiet)
    tr.run()
    ctx = tr.ctx
    st = STAGES[3](ctx, tr.features, tr.gnn_task)
    st.start_epoch(0)
    train = set(tr.gnn_task.items("train").tolist())
    conf = st.teacher.max(-1).values
    for thr in (0.0, float(conf.median()), 1.0):
        ctx.cfg.stage3.pseudo_min_confidence = thr
        got = st._pseudo_items()
        assert not (set(got.tolist()) & train)
        want = [i for i in range(conf.numel()) if i not in train and conf[i] >= thr]
        assert got.tolist() == want
    # the labels of the other nodes are not read: scramble them, same pseudo items and targets
    t = ctx.task.node_type
    labels = ctx.graph.labels[t]
    saved = torch.as_tensor(labels).clone()
    try:
        lab = torch.as_tensor(labels)
        others = torch.tensor(sorted(set(range(lab.shape[0])) - train))
        lab[others] = (lab[others] + 1) % ctx.task.num_classes
        ctx.cfg.stage3.pseudo_min_confidence = 0.0
        again = st._pseudo_items()
        assert again.tolist() == [i for i in range(conf.numel()) if i not in train]
        assert torch.equal(st._teacher(), st.teacher)
    finally:
        torch.as_tensor(labels).copy_(saved)


def test_glem_resume_matches_uninterrupted(toy, tmp_path):  # noqa: F811
    over = {"task.name": "topic", "run.stages": "2,3", "stage2.epochs": 2, "stage3.objective": "glem",
            "stage3.epochs": 2, "stage3.gnn_epochs": 2, "stage3.lm_items": 24, "stage3.pseudo_min_confidence": 0.0,
            "run.checkpoint_every": 1}
    ref = Trainer(small_config(toy, str(tmp_path / "ref"), **over), log=quiet).run()
    out = str(tmp_path / "run")
    # stage 2: 2 epochs x 2 batches = steps 1-4; stage 3 round 0: LM steps 5-6, graph steps 7-10;
    # round 1: LM steps 11-12 -> interrupt inside round 1's LM step
    with pytest.raises(SimulatedInterrupt):
        Trainer(small_config(toy, out, **over, **{"run.interrupt_after_steps": 11}), log=quiet).run()
    state = json.load(open(os.path.join(out, "checkpoints", "last.json")))
    assert state["stage"] == 3
    res = Trainer(small_config(toy, out, **over, **{"run.resume": "true"}), log=quiet).run()
    for split in ("val", "test"):
        assert res["stage3"][split] == pytest.approx(ref["stage3"][split], abs=1e-5)
