"""Metrics, the link-prediction protocol, heads, config and checkpoints of the trainer."""
from __future__ import annotations

import json
import os

import pytest
import torch

from lmgnn_fast.nn.heads import LinkDecoder, bce_link_loss, contrastive_loss
from lmgnn_fast.train.checkpoint import CheckpointManager, load_tensors, save_tensors
from lmgnn_fast.train.config import Config, ConfigError, apply_overrides, load_config
from lmgnn_fast.train.metrics import (
    accuracy,
    eval_negatives,
    macro_f1,
    multilabel_f1,
    ranking_metrics,
    ranks_from_scores,
)


def test_classification_metrics_against_direct_counts():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (200,), generator=g)
    y = torch.randint(0, 4, (200,), generator=g)
    assert accuracy(pred, y) == pytest.approx(float((pred == y).float().mean()))
    f1s = []
    for c in range(4):
        tp = ((pred == c) & (y == c)).sum().item()
        p, t = (pred == c).sum().item(), (y == c).sum().item()
        f1s.append(2 * tp / (p + t))
    assert macro_f1(pred, y, 4) == pytest.approx(sum(f1s) / 4, abs=1e-6)
    P = torch.rand(50, 6, generator=g) > 0.5
    T = torch.rand(50, 6, generator=g) > 0.5
    tp, fp, fn = (P & T).sum().item(), (P & ~T).sum().item(), (~P & T).sum().item()
    micro, _ = multilabel_f1(P, T)
    assert micro == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-6)


def test_ranking_protocol():
    pos = torch.tensor([1.0, 0.0, 5.0])
    neg = torch.tensor([[2.0, 0.0, 1.0], [-1.0, -2.0, -3.0], [9.0, 9.0, 9.0]])
    valid = torch.tensor([[True, True, True], [True, True, True], [False, False, True]])
    ranks = ranks_from_scores(pos, neg, valid)
    assert ranks.tolist() == [2.5, 1.0, 2.0]  # ties count half; filtered candidates ignored
    m = ranking_metrics(ranks)
    assert m["mrr"] == pytest.approx((1 / 2.5 + 1 + 1 / 2) / 3)
    assert m["hits@1"] == pytest.approx(1 / 3) and m["hits@3"] == 1.0
    # fixed, seeded candidates; known true edges filtered
    s, d = torch.tensor([0, 1]), torch.tensor([1, 2])
    known = torch.tensor([0 * 5 + 1, 1 * 5 + 2, 0 * 5 + 3])
    n1, v1 = eval_negatives(s, d, 5, 50, seed=3, known=known)
    n2, v2 = eval_negatives(s, d, 5, 50, seed=3, known=known)
    assert torch.equal(n1, n2) and torch.equal(v1, v2)
    keys = s.unsqueeze(1) * 5 + n1
    assert torch.equal(~v1, torch.isin(keys, known))


def test_link_losses_and_decoder():
    dec = LinkDecoder(3, 8)
    hs, hd = torch.randn(4, 8), torch.randn(4, 8)
    rel = torch.tensor([0, 1, 2, 0])
    torch.testing.assert_close(dec(hs, hd, rel), (hs * dec.rel[rel] * hd).sum(-1))
    cand = torch.randn(4, 5, 8)
    torch.testing.assert_close(dec.score_candidates(hs, cand, rel)[:, 2], dec(hs, cand[:, 2], rel))
    pos, neg = torch.randn(4), torch.randn(4, 5)
    ref = -torch.log_softmax(torch.cat([pos[:, None], neg], 1), 1)[:, 0].mean()
    torch.testing.assert_close(contrastive_loss(pos, neg), ref)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[:, 0] = False
    torch.testing.assert_close(contrastive_loss(pos, neg, mask), contrastive_loss(pos, neg[:, 1:]))
    assert bce_link_loss(pos, neg, mask) > 0


def test_config_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("stage2: {epochs: 7}\ngnn: {fanouts: [3, 2]}\n")
    c = load_config(str(p), ["--seed", "4", "--stage2.lr=0.5", "--resume", "--task.edge_type", "[a, r, b]"])
    assert (c.stage2.epochs, c.gnn.fanouts, c.run.seed, c.stage2.lr, c.run.resume) == (7, [3, 2], 4, 0.5, True)
    assert c.task.edge_type == ["a", "r", "b"]
    c.save(str(tmp_path / "saved.yaml"))
    assert load_config(str(tmp_path / "saved.yaml")).to_dict() == c.to_dict()
    for bad, msg in ((["--nope", "1"], "unknown config key"), (["--gnn.nope", "1"], "gnn has"),
                     (["--xx.seed", "1"], "unknown config section"), (["--run.resume", "maybe"], "true or false")):
        with pytest.raises(ConfigError, match=msg):
            apply_overrides(Config(), bad)
    p.write_text("stage9: {epochs: 1}\n")
    with pytest.raises(ConfigError, match="unknown config section 'stage9'"):
        load_config(str(p))
    with pytest.raises(ConfigError, match="run.stages"):
        _ = apply_overrides(Config(), ["--stages", "1,4"]).stage_list


def test_checkpoints_atomic_and_resumable(tmp_path):
    m = torch.nn.Linear(3, 4)
    opt = torch.optim.AdamW(m.parameters())
    m(torch.randn(2, 3)).sum().backward()
    opt.step()
    cm = CheckpointManager(str(tmp_path))
    cm.save_last({"stage": 2, "epoch": 1, "step": 3, "global_step": 9}, m.state_dict(), {"opt": opt})
    cm.save_last({"stage": 2, "epoch": 1, "step": 4, "global_step": 10}, m.state_dict(), {"opt": opt})
    files = sorted(os.listdir(cm.dir))  # two generations: the newest and the previous one
    assert files == ["last-2-10.safetensors", "last-2-9.safetensors", "last.json", "prev.json"]
    state, model, optim = cm.load_last()
    assert state["global_step"] == 10 and torch.equal(state["rng"]["rng.torch"], torch.get_rng_state())
    torch.testing.assert_close(model["weight"], m.weight.detach())
    opt2 = torch.optim.AdamW(m.parameters())
    opt2.load_state_dict(optim["opt"])
    torch.testing.assert_close(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    # a stale temporary file from a killed writer does not disturb loading
    (tmp_path / "checkpoints" / "last-2-11.safetensors.tmp-999").write_bytes(b"partial")
    assert cm.load_last()[0]["step"] == 4
    save_tensors(str(tmp_path / "x.safetensors"), {"a": torch.arange(3)}, {"k": "v"})
    t, meta = load_tensors(str(tmp_path / "x.safetensors"))
    assert t["a"].tolist() == [0, 1, 2] and meta["k"] == "v"
    json.loads((tmp_path / "checkpoints" / "last.json").read_text())
