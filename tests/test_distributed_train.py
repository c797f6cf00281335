"""The trainer under ``torchrun``: 2 gloo processes on CPU against a single process.

Tolerance: with the same global batch, the 2-process run sees the same batches, sampled
blocks, negatives and embedding rows as the single process (the refresh and evaluation
run the very same batches, only on different ranks). What differs is the order of float
additions: the loss/gradient of a global batch is the mean of two half-batch means,
averaged by DDP's all-reduce, instead of one mean over the batch. That is a rounding-level
difference (~1e-7 relative per step), which Adam can amplify a little over a few steps;
we allow 1e-4 absolute on losses and on metrics (metrics are computed from gathered
scores exactly as in one process, so any larger gap would be a real bug — one flipped
prediction changes accuracy by 1/8 here).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from _toy_graph import write_toy_dir
from lmgnn_fast.io import read_dir
from lmgnn_fast.lm import make_tiny_bert
from lmgnn_fast.train.shared_copy import remove_stale

TOL = 1e-4


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist_toy")
    data = write_toy_dir(str(root / "data"), num_papers=40)  # 24 training papers

    g = read_dir(data)
    texts = [x for t in g.node_types for x in (g.text[t] or [])]
    bert = make_tiny_bert(texts, str(root / "bert"))
    return {"root": root, "data": data, "bert": bert}


def _config(toy, path, stages: str, task: str = "topic") -> str:
    with open(path, "w") as f:
        f.write(f"data: {{name: {toy['data']}}}\n"
                f"lm: {{name: {toy['bert']}, max_length: 16, encode_batch_size: 16}}\n"
                "gnn: {hidden: 16, fanouts: [4, 4], dropout: 0.0}\n"
                f"task: {{name: {task}, eval_negatives: 20}}\n"
                "stage1: {max_edges: 32, batch_size: 16, task_batch_size: 8}\n"
                "stage2: {epochs: 3, batch_size: 8, patience: 0}\n"
                "stage3: {epochs: 1, batch_size: 8, lm_train_nodes: 8}\n"
                f"run: {{stages: '{stages}', device: cpu, progress: false, num_threads: 1, eval_batch_size: 16,"
                " checkpoint_every: 0, dist_timeout: 60}\n")
    return str(path)


def _env(**extra):
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])})
    env.update(extra)
    return env


def _run(args, nproc: int, timeout: float = 120, **env):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                "--monitor-interval=0.5"] if nproc > 1 else [sys.executable]
    t0 = time.time()
    p = subprocess.run(launcher + ["-m", "lmgnn_fast.train"] + args, capture_output=True, text=True,
                       timeout=timeout, env=_env(**env))
    return p, time.time() - t0


def _losses(m, stage):
    return [r["loss"] for r in m["history"][f"stage{stage}"] if "loss" in r]


def test_two_processes_match_one_process_and_write_once(toy, tmp_path):
    cfg = _config(toy, tmp_path / "run.yaml", "2")
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    p1, _ = _run(["--config", cfg, "--run.out_dir", one], 1)
    assert p1.returncode == 0, p1.stderr[-3000:]
    p2, _ = _run(["--config", cfg, "--run.out_dir", two], 2)
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert "2 processes" in p2.stdout
    m1 = json.load(open(os.path.join(one, "metrics.json")))
    m2 = json.load(open(os.path.join(two, "metrics.json")))
    # same number of optimizer steps (3 epochs x 3 global batches of 8), same losses
    l1, l2 = _losses(m1, 2), _losses(m2, 2)
    assert len(l1) == len(l2) == 9
    assert l2 == pytest.approx(l1, abs=TOL)
    for split in ("val", "test"):
        assert m2["stages"]["stage2"][split] == pytest.approx(m1["stages"]["stage2"][split], abs=TOL)
    # rank 0 alone logs and writes: one results table, one config dump, no stray files
    assert p2.stdout.count("Results: task") == 1
    assert p2.stdout.count("lmgnn_fast.train configuration") == 1
    for d in (one, two):
        names = sorted(os.listdir(d))
        assert not [n for n in names if ".tmp" in n], names
        assert {"metrics.json", "config.yaml", "curves.png", "predictions.parquet"} <= set(names)
        assert sorted(os.listdir(os.path.join(d, "checkpoints"))) == ["stage2.safetensors"]
    import pyarrow.parquet as pq

    pr1 = pq.read_table(os.path.join(one, "predictions.parquet")).to_pydict()
    pr2 = pq.read_table(os.path.join(two, "predictions.parquet")).to_pydict()
    assert pr1["id"] == pr2["id"] and pr1["pred"] == pr2["pred"]


def test_shared_copy_changes_nothing(toy, tmp_path):
    """One copy per machine (the default) against a copy per rank: the same numbers, bit
    for bit, through stage 2's refresh and stage 3's write-backs; no file left behind."""
    cfg = _config(toy, tmp_path / "run.yaml", "2,3")
    shm = tmp_path / "shm"
    runs = {}
    for share in ("true", "false"):
        out = str(tmp_path / share)
        p, _ = _run(["--config", cfg, "--run.out_dir", out, "--run.share_memory", share,
                     "--run.shared_dir", str(shm)], 2)
        assert p.returncode == 0, p.stderr[-3000:]
        assert ("one copy per machine: 2 local ranks" in p.stdout) == (share == "true")
        runs[share] = json.load(open(os.path.join(out, "metrics.json")))
    on, off = runs["true"], runs["false"]
    for s in (2, 3):
        assert _losses(on, s) and _losses(on, s) == _losses(off, s)
        for split in ("val", "test"):
            assert on["stages"][f"stage{s}"][split] == off["stages"][f"stage{s}"][split]
    assert os.listdir(shm) == []


def test_two_processes_all_stages_link_prediction_and_resume(toy, tmp_path):
    """Stages 1-3 under DDP (LM + GNN), interrupted mid-stage-3 and resumed with 2 ranks."""
    cfg = _config(toy, tmp_path / "run.yaml", "1,2,3", task="cites")
    out = str(tmp_path / "run")
    p, _ = _run(["--config", cfg, "--run.out_dir", out, "--run.checkpoint_every", "1",
                 "--run.interrupt_after_steps", "13"], 2)
    assert p.returncode != 0 and "interrupted after 13 steps" in p.stderr
    p, _ = _run(["--config", cfg, "--run.out_dir", out, "--resume"], 2)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming" in p.stdout
    m = json.load(open(os.path.join(out, "metrics.json")))
    for s in (1, 2, 3):
        assert 0.0 < m["stages"][f"stage{s}"]["val"]["mrr"] <= 1.0
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == [f"stage{s}.safetensors" for s in (1, 2, 3)]


def test_two_processes_choose_the_encoder_as_one_process(toy, tmp_path):
    """gnn.model auto under DDP: every rank trains the same candidates, they agree on the
    choice (the one process's), and only the chosen model's checkpoint is left."""
    cfg = _config(toy, tmp_path / "run.yaml", "2,3")
    runs = {}
    for n in (1, 2):
        out = str(tmp_path / str(n))
        p, _ = _run(["--config", cfg, "--run.out_dir", out, "--gnn.model", "auto", "--gnn.heads", "2"], n)
        assert p.returncode == 0, p.stderr[-3000:]
        assert p.stdout.count("stage 2 (gnn.model auto): chose") == 1
        runs[n] = json.load(open(os.path.join(out, "metrics.json")))
        assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["stage2.safetensors", "stage3.safetensors"]
    one, two = runs[1]["stages"]["stage2"], runs[2]["stages"]["stage2"]
    assert two["gnn_model"] == one["gnn_model"] and sorted(two["encoders"]) == ["hgt", "rgcn"]
    for name in ("rgcn", "hgt"):
        assert two["encoders"][name]["val"] == pytest.approx(one["encoders"][name]["val"], abs=TOL)
    assert "stage3" in runs[2]["stages"]


def test_killed_rank_stops_the_job(toy, tmp_path):
    cfg = _config(toy, tmp_path / "run.yaml", "2")
    shm = tmp_path / "shm"
    p, elapsed = _run(["--config", cfg, "--run.out_dir", str(tmp_path / "run"), "--run.shared_dir", str(shm)], 2,
                      timeout=90, LMGNN_TEST_FAIL_RANK="1:2")
    assert p.returncode != 0
    assert elapsed < 60  # torchrun tears the job down; no rank waits out a collective forever
    assert "exiting abruptly at step 2" in p.stderr
    assert "FAILED" in p.stderr or "ChildFailedError" in p.stderr
    # the shared pieces were unlinked once mapped: at most the job folder's marker is left,
    # and the next job's leader removes it (its leader process is gone)
    left = [os.path.join(d, f) for d, _, fs in os.walk(shm) for f in fs]
    assert all(os.path.basename(f) == "job" for f in left), left
    remove_stale(str(shm))
    assert os.listdir(shm) == []
