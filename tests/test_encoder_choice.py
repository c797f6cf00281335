"""gnn.model auto: stage 2 trains each candidate encoder and keeps the best on validation;
the run then equals the run with the chosen encoder, resumes, and loads for inference."""
import json
import os

import pytest
import torch

from lmgnn_fast.train.config import ConfigError
from lmgnn_fast.train.errors import SimulatedInterrupt

BASE = ["--gnn.heads", "2", "--gnn.hidden", "16", "--gnn.fanouts", "[4, 4]", "--task.name", "topic",
        "--stage2.epochs", "6", "--stage2.batch_size", "16", "--stage2.lr", "0.01", "--stage2.patience", "0"]
STAGE3 = ["--stage3.epochs", "1", "--stage3.gnn_epochs", "2", "--stage3.lm_items", "24", "--stage3.batch_size", "16"]


def _config(toy, out, extra):
    from lmgnn_fast.train import Config
    from lmgnn_fast.train.config import apply_overrides

    c = Config()
    c.data.name, c.lm.name, c.lm.max_length = toy["data"], toy["bert"], 16
    c.run.out_dir, c.run.progress, c.run.num_threads = str(out), False, 1
    apply_overrides(c, BASE + list(extra))
    return c


def _train(toy, out, extra):
    from lmgnn_fast.train import Trainer

    Trainer(_config(toy, out, extra), log=lambda *a: None).run()
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def _stage_tensors(out, stage):
    from lmgnn_fast.train.checkpoint import load_tensors

    return load_tensors(os.path.join(out, "checkpoints", f"stage{stage}.safetensors"))


def _assert_same_tensors(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_auto_keeps_the_best_encoder_on_validation_and_equals_that_run(toy, tmp_path):
    from lmgnn_fast.inference import load_run

    auto = _train(toy, tmp_path / "auto", ["--gnn.model", "auto", "--gnn.auto_models", "[rgcn, hgt]",
                                            "--run.stages", "2"])
    s2 = auto["stages"]["stage2"]
    enc = s2["encoders"]
    assert sorted(enc) == ["hgt", "rgcn"]
    vals = {n: enc[n]["val"]["accuracy"] for n in enc}
    chosen = s2["gnn_model"]
    # the highest validation accuracy, ties to the first in gnn.auto_models
    assert chosen == ("rgcn" if vals["rgcn"] >= vals["hgt"] else "hgt")
    assert s2["val"] == enc[chosen]["val"] and s2["test"] == enc[chosen]["test"]
    # each candidate is trained exactly as a run with that encoder trains it
    for name in ("rgcn", "hgt"):
        single = _train(toy, tmp_path / name, ["--gnn.model", name, "--run.stages", "2"])
        assert single["stages"]["stage2"]["val"] == enc[name]["val"], name
        assert single["stages"]["stage2"]["test"] == enc[name]["test"], name
    tensors, meta = _stage_tensors(tmp_path / "auto", 2)
    assert meta["gnn_model"] == chosen
    _assert_same_tensors(tensors, _stage_tensors(tmp_path / chosen, 2)[0])
    # nothing of the choice is left behind; the history is the chosen run's
    assert not [f for f in os.listdir(tmp_path / "auto" / "checkpoints") if f.startswith("stage2-auto")]
    single = json.load(open(tmp_path / chosen / "metrics.json"))
    assert [r.get("loss") for r in auto["history"]["stage2"]] == [r.get("loss") for r in single["history"]["stage2"]]
    # the run's config still says auto; loading it rebuilds the chosen encoder
    assert "model: auto" in open(tmp_path / "auto" / "config.yaml").read()
    run = load_run(str(tmp_path / "auto"), log=lambda *a: None)
    assert type(run.model.model.encoder).__name__ == chosen.upper()
    assert torch.isfinite(run.predict_known("paper", ["p0", "p1"]).embedding).all()


def test_auto_then_stage3_equals_the_run_with_the_chosen_encoder(toy, tmp_path):
    # the candidates in the other order too: the choice does not depend on being first
    auto = _train(toy, tmp_path / "auto", ["--gnn.model", "auto", "--gnn.auto_models", "[hgt, rgcn]",
                                            "--run.stages", "2,3"] + STAGE3)
    chosen = auto["stages"]["stage2"]["gnn_model"]
    single = _train(toy, tmp_path / "single", ["--gnn.model", chosen, "--run.stages", "2,3"] + STAGE3)
    for key in ("val", "test"):
        assert auto["stages"]["stage3"][key] == single["stages"]["stage3"][key]
    _assert_same_tensors(_stage_tensors(tmp_path / "auto", 3)[0], _stage_tensors(tmp_path / "single", 3)[0])
    assert auto["final_stage"] == single["final_stage"]


@pytest.mark.parametrize("where", ["first", "second"])  # interrupted in the first candidate, in the second
def test_auto_resumes_where_it_was_interrupted(toy, tmp_path, where):
    from lmgnn_fast.train import Trainer

    extra = ["--gnn.model", "auto", "--run.stages", "2", "--run.checkpoint_every", "1"]
    whole = _train(toy, tmp_path / "whole", extra)
    steps = sum(1 for r in whole["history"]["stage2"] if "loss" in r)  # one candidate's steps
    assert steps >= 4
    interrupt_at = steps // 2 if where == "first" else steps + steps // 2
    out = tmp_path / "cut"
    c = _config(toy, out, extra + ["--run.interrupt_after_steps", str(interrupt_at)])
    with pytest.raises(SimulatedInterrupt):
        Trainer(c, log=lambda *a: None).run()
    done = json.load(open(out / "checkpoints" / "stage2-auto.json"))["done"]
    assert sorted(done) == ([] if interrupt_at < steps else ["rgcn"])
    c = _config(toy, out, extra + ["--run.resume", "true"])
    Trainer(c, log=lambda *a: None).run()
    again = json.load(open(out / "metrics.json"))
    assert again["stages"]["stage2"]["encoders"].keys() == whole["stages"]["stage2"]["encoders"].keys()
    for n, rec in whole["stages"]["stage2"]["encoders"].items():
        assert again["stages"]["stage2"]["encoders"][n]["val"] == rec["val"], n
    assert again["stages"]["stage2"]["gnn_model"] == whole["stages"]["stage2"]["gnn_model"]
    _assert_same_tensors(_stage_tensors(out, 2)[0], _stage_tensors(tmp_path / "whole", 2)[0])


def test_stage3_alone_takes_the_encoder_stage2_chose(toy, tmp_path):
    out = tmp_path / "run"
    first = _train(toy, out, ["--gnn.model", "auto", "--run.stages", "2"])
    chosen = first["stages"]["stage2"]["gnn_model"]
    later = _train(toy, out, ["--gnn.model", "auto", "--run.stages", "3"] + STAGE3)
    assert "stage3" in later["stages"]
    tensors, _ = _stage_tensors(out, 3)
    # HGT's parameters have names R-GCN's have not, and the other way round
    has_hgt = any(k.endswith(".w_att") for k in tensors)
    assert has_hgt == (chosen == "hgt"), sorted(tensors)[:20]


def test_bad_auto_settings_are_named(toy, tmp_path):
    from lmgnn_fast.train import Trainer
    from lmgnn_fast.train.config_checks import config_problems

    c = _config(toy, tmp_path / "x", ["--gnn.model", "auto"])
    c.gnn.auto_models = ["rgcn", "gat"]
    assert any("gnn.auto_models must be a list of distinct encoders" in p and "'gat'" in p
               for p in config_problems(c))
    c.gnn.auto_models = ["rgcn", "rgcn"]
    assert any("gnn.auto_models" in p for p in config_problems(c))
    c.gnn.auto_models, c.gnn.hidden, c.gnn.heads = ["rgcn", "hgt"], 30, 4
    assert any("gnn.hidden (30) must be divisible by gnn.heads (4)" in p for p in config_problems(c))
    # stage 3 with nothing to have chosen the encoder
    c = _config(toy, tmp_path / "empty", ["--gnn.model", "auto", "--run.stages", "3"] + STAGE3)
    with pytest.raises(ConfigError, match="gnn.model auto chooses the encoder in stage 2"):
        Trainer(c, log=lambda *a: None).run()
