"""LoRA in stages 1 and 3 (``lm.lora_r``): only the adapters train, checkpoints hold merged
plain weights, a missing ``peft`` or a bad option is a one-line error."""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file

from _toy_graph import write_toy_dir
from lmgnn_fast.io import read_dir
from lmgnn_fast.lm import LMEncoder, LMLoadError, make_tiny_bert
from lmgnn_fast.train import Config, ConfigError, Trainer
from lmgnn_fast.train.config import apply_overrides

peft = pytest.importorskip("peft")  # the test extra installs it

from lmgnn_fast.lm.lora import add_lora, has_lora, merge_lora  # noqa: E402


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    data = write_toy_dir(str(root / "data"), num_papers=45)
    g = read_dir(data)
    bert = make_tiny_bert([x for t in g.node_types for x in (g.text[t] or [])], str(root / "bert"))
    return {"root": root, "data": data, "bert": bert}


def test_only_adapters_get_gradients_and_merge_is_exact(toy):
    lm = LMEncoder.from_pretrained(toy["bert"])
    plain_keys = set(lm.model.state_dict())
    tok = lm.tokenize(["graph node edge", "protein cell gene enzyme market"], 16)
    params = add_lora(lm.model, 4, 8.0, 0.0, ["query", "value"])
    assert has_lora(lm.model) and params and all(".lora_" in n for n, p in lm.model.named_parameters()
                                                 if p.requires_grad)
    assert len(params) == 2 * 2 * 2  # A and B, query and value, 2 layers
    out = lm.encode(tok, torch.arange(2))
    out.pow(2).sum().backward()
    for n, p in lm.model.named_parameters():
        if ".lora_" in n:
            assert p.grad is not None, n
        else:
            assert p.grad is None, n
    with torch.no_grad():  # a non-zero update, then fold it in
        for p in params:
            p.add_(torch.randn_like(p) * 0.1)
    lm.eval()
    with torch.no_grad():
        before = lm.encode(tok, torch.arange(2))
        merge_lora(lm.model)
        after = lm.encode(tok, torch.arange(2))
    assert not has_lora(lm.model) and set(lm.model.state_dict()) == plain_keys
    assert all(p.requires_grad for p in lm.model.parameters())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


def _cfg(toy, out, *extra):
    c = Config()
    apply_overrides(c, ["--data.name", toy["data"], "--lm.name", toy["bert"], "--lm.max_length", "16",
                        "--gnn.hidden", "16", "--gnn.fanouts", "[4, 4]", "--stage1.max_edges", "32",
                        "--stage1.batch_size", "16", "--stage3.epochs", "1", "--stage3.batch_size", "16",
                        "--stage3.lm_train_nodes", "8", "--run.stages", "1,3", "--run.out_dir", out,
                        "--run.progress", "false", "--run.num_threads", "1", *extra])
    return c


def test_lora_run_trains_only_adapted_layers_and_evaluates(toy, tmp_path):
    from lmgnn_fast.evaluate import evaluate_run

    out = str(tmp_path / "run")
    res = Trainer(_cfg(toy, out, "--lm.lora_r", "4", "--lm.lora_alpha", "8"), log=lambda *a: None).run()
    assert "accuracy" in res["stage1"]["val"] and "accuracy" in res["stage3"]["val"]
    base = LMEncoder.from_pretrained(toy["bert"]).model.state_dict()
    for stage in (1, 3):
        sd = load_file(os.path.join(out, "checkpoints", f"stage{stage}.safetensors"))
        lm = {k[3:]: v for k, v in sd.items() if k.startswith("lm.")}
        assert set(lm) == set(base)  # merged plain weights: loadable without peft
        changed = {k for k in base if not torch.equal(lm[k], base[k])}
        adapted = {k for k in base if k.endswith((".query.weight", ".value.weight"))}
        assert changed == adapted  # exactly the adapted weights moved, nothing else
    m = json.load(open(os.path.join(out, "metrics.json")))
    again = evaluate_run(out)
    for s in ("stage1", "stage3"):
        for split in ("val", "test"):
            assert again[s][split] == pytest.approx(m["stages"][s][split], abs=1e-5)


def test_lora_errors(toy, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"lm.lora_r must be in \[0, 65536\], got -1"):
        _cfg(toy, str(tmp_path / "a"), "--lm.lora_r", "-1").validate()
    with pytest.raises(ConfigError, match=r"lm.lora_r must be in \[0, 65536\], got 100000000000000000000$"):
        _cfg(toy, str(tmp_path / "a"), "--lm.lora_r", str(10**20)).validate()
    # bounded by the LM's width (the tiny BERT's query/value layers are 32 x 32)
    with pytest.raises(LMLoadError, match=r"lm.lora_r must be an integer in \[1, 32\] for this LM .*got 33$"):
        Trainer(_cfg(toy, str(tmp_path / "w"), "--lm.lora_r", "33"), log=lambda *a: None).run()
    with pytest.raises(ConfigError, match="lm.lora_targets must be a non-empty list"):
        _cfg(toy, str(tmp_path / "a"), "--lm.lora_r", "4", "--lm.lora_targets", "[]").validate()
    with pytest.raises(LMLoadError, match="lm.lora_targets: no linear layer of the LM is named 'q_proj'"):
        Trainer(_cfg(toy, str(tmp_path / "b"), "--lm.lora_r", "4", "--lm.lora_targets", "[q_proj]"),
                log=lambda *a: None).run()
    monkeypatch.setitem(sys.modules, "peft", None)  # as if not installed
    with pytest.raises(LMLoadError, match=r"lm.lora_r > 0 needs the peft package.*lmgnn_fast\[lora\]"):
        Trainer(_cfg(toy, str(tmp_path / "c"), "--lm.lora_r", "4"), log=lambda *a: None).run()
