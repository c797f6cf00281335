"""The training loop and its ``Stage`` protocol, on a toy stage (no graph, no LM)."""
from __future__ import annotations

import time
import types

import pytest
import torch
from torch import nn

from lmgnn_fast.distributed import DistContext
from lmgnn_fast.train.config import Config
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.data_parallel import RankZeroCheckpoints
from lmgnn_fast.train.errors import SimulatedInterrupt
from lmgnn_fast.train.loop import ResumeState, run_epochs


class ToyStage:
    """Linear regression with noisy steps (global RNG), a best-epoch tracker and a counter
    as extra state, and optional early stopping."""

    number = 2

    def __init__(self, epochs: int = 3, stop_after: int | None = None):
        torch.manual_seed(0)
        self.model = nn.Linear(4, 1)
        self.modules = nn.ModuleDict({"m": self.model})
        self.opt = torch.optim.Adam(self.model.parameters(), lr=0.05)
        self.optimizers = {"opt": self.opt}
        self.epochs = epochs
        self.stop_after = stop_after
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(40, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
        self.seen = 0
        self.best = {"value": None, "weights": None}
        self.started: list[int] = []

    def start_epoch(self, epoch):
        self.started.append(epoch)

    def make_batches(self, epoch):
        perm = torch.randperm(40, generator=torch.Generator().manual_seed(100 + epoch))
        return [perm[i:i + 8] for i in range(0, 40, 8)]

    def step(self, batch, epoch, i):
        noise = 0.01 * torch.randn(batch.numel())  # the loop must restore the global RNG on resume
        loss = ((self.model(self.x[batch]).squeeze(1) - self.y[batch] - noise) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.seen += batch.numel()
        return float(loss.detach())

    def end_epoch(self, epoch):
        with torch.no_grad():
            v = -float(((self.model(self.x).squeeze(1) - self.y) ** 2).mean())
        if self.best["value"] is None or v > self.best["value"]:
            self.best = {"value": v, "weights": {k: t.clone() for k, t in self.model.state_dict().items()}}
        if self.stop_after is not None and epoch >= self.stop_after:
            return None
        return {"neg_mse": v}

    def state_dict(self):
        return {"seen": self.seen, "best": self.best}

    def load_state_dict(self, state):
        self.seen = state["seen"]
        self.best = state["best"]


def make_ctx(out_dir: str, **run) -> RunContext:
    cfg = Config()
    cfg.run.out_dir = out_dir
    cfg.run.progress = False
    cfg.run.checkpoint_every = 3
    for k, v in run.items():
        setattr(cfg.run, k, v)
    dist = DistContext(device=torch.device("cpu"))
    return RunContext(cfg=cfg, graph=None, task=None, relations=[], text_types=[], stages=[2],
                      device=dist.device, dist=dist, ckpt=RankZeroCheckpoints(out_dir, dist), out_dir=out_dir,
                      log=lambda *a: None)


def _losses(ctx):
    return [(r["step"], r["epoch"], r.get("loss"), r.get("val_neg_mse")) for r in ctx.history["stage2"]]


@pytest.mark.parametrize("interrupt_at", [7, 10, 13])
def test_interrupted_stage_resumes_bit_identically(tmp_path, interrupt_at):
    """5 batches per epoch, checkpoints every 3 steps and after each epoch: interrupting at
    step 7 resumes mid-epoch (from step 6), at 10 from the end of epoch 2, at 13 from 12."""
    torch.manual_seed(5)
    ref_ctx = make_ctx(str(tmp_path / "ref"))
    ref = ToyStage()
    run_epochs(ref, ref_ctx)
    assert ref.started == [0, 1, 2] and ref_ctx.global_step == 15 and ref.seen == 120

    torch.manual_seed(5)
    ctx = make_ctx(str(tmp_path / "run"), interrupt_after_steps=interrupt_at)
    with pytest.raises(SimulatedInterrupt, match=f"after {interrupt_at} steps"):
        run_epochs(ToyStage(), ctx)
    assert ctx.global_step == interrupt_at

    torch.manual_seed(999)  # the resumed run must not depend on the state it starts in
    lines = []
    ctx2 = make_ctx(str(tmp_path / "run"))
    ctx2.log = lines.append
    last = ctx2.ckpt.load_last()
    assert last is not None and last[0]["stage"] == 2
    stage = ToyStage()
    run_epochs(stage, ctx2, ResumeState(*last))
    assert any("resuming at epoch" in line for line in lines)
    assert ctx2.global_step == 15
    for k, v in ref.model.state_dict().items():
        assert torch.equal(stage.model.state_dict()[k], v), k
    assert stage.seen == ref.seen
    assert stage.best["value"] == ref.best["value"]
    for k, v in ref.best["weights"].items():
        assert torch.equal(stage.best["weights"][k], v)
    assert _losses(ctx2) == _losses(ref_ctx)


def test_early_stop_and_history(tmp_path):
    ctx = make_ctx(str(tmp_path / "run"), checkpoint_every=0)
    stage = ToyStage(epochs=5, stop_after=1)
    run_epochs(stage, ctx)
    assert stage.started == [0, 1]  # end_epoch returned None after epoch 1
    assert ctx.global_step == 10
    recs = ctx.history["stage2"]
    assert [r["step"] for r in recs if "loss" in r] == list(range(1, 11))
    ends = [r for r in recs if "epoch_time_s" in r]
    assert [r["epoch"] for r in ends] == [0, 1] and "val_neg_mse" in ends[0] and "val_neg_mse" not in ends[1]
    for r in ends:  # the step-time breakdown: loader wait and the rest of the step, in seconds
        assert set(r["time_breakdown_s"]) == {"sample", "step"} and min(r["time_breakdown_s"].values()) >= 0
    state = ctx.ckpt.load_last()[0]  # the end-of-epoch checkpoint of the last epoch run
    assert (state["epoch"], state["step"], state["global_step"]) == (2, 0, 10)


def test_zero_epochs_trains_nothing(tmp_path):
    ctx = make_ctx(str(tmp_path / "run"))
    stage = ToyStage(epochs=0)
    before = {k: v.clone() for k, v in stage.model.state_dict().items()}
    run_epochs(stage, ctx)
    assert ctx.global_step == 0 and stage.started == [] and ctx.history["stage2"] == []
    assert all(torch.equal(before[k], v) for k, v in stage.model.state_dict().items())


def _checkpoint_steps(ctx, monkeypatch) -> list[int]:
    saved = []
    real = ctx.ckpt.save_last
    monkeypatch.setattr(ctx.ckpt, "save_last", lambda state, *a: (saved.append(state["global_step"]), real(state, *a)))
    run_epochs(ToyStage(epochs=2), ctx)
    return saved


def test_checkpoints_by_time_and_by_steps(tmp_path, monkeypatch):
    """5 batches per epoch: the end of each epoch always checkpoints; mid-epoch ones come
    every ``checkpoint_every`` steps and once ``checkpoint_every_s`` seconds have passed."""
    off = make_ctx(str(tmp_path / "off"), checkpoint_every=0, checkpoint_every_s=0)
    assert _checkpoint_steps(off, monkeypatch) == [5, 10]
    slow = make_ctx(str(tmp_path / "slow"), checkpoint_every=0, checkpoint_every_s=3600)
    assert _checkpoint_steps(slow, monkeypatch) == [5, 10]
    steps = make_ctx(str(tmp_path / "steps"), checkpoint_every=3, checkpoint_every_s=3600)
    assert _checkpoint_steps(steps, monkeypatch) == [3, 5, 6, 9, 10]
    clock = iter(range(0, 10_000, 7))  # each read of the clock is 7 s later
    monkeypatch.setattr("lmgnn_fast.train.loop.time",
                        types.SimpleNamespace(time=time.time, monotonic=lambda: next(clock)))
    timed = make_ctx(str(tmp_path / "timed"), checkpoint_every=0, checkpoint_every_s=10)
    # clock reads: start 0; step 1 7 (<10); step 2 14 (save, reset 21); step 3 28 (7 <10); step 4 35 (save, 42)
    assert _checkpoint_steps(timed, monkeypatch) == [2, 4, 5, 7, 9, 10]


class _Stream:
    """A text stream that says whether it is a terminal."""

    def __init__(self, tty: bool):
        self.tty, self.parts = tty, []

    def isatty(self):
        return self.tty

    def write(self, s):
        self.parts.append(s)
        return len(s)

    def flush(self):
        pass


@pytest.mark.parametrize("tty", [False, True])
def test_progress_bars_only_on_a_terminal(tmp_path, monkeypatch, tty):
    """Written to a file or pipe (a CI log), the loop draws no bar: every refresh would be a
    line of the log. On a terminal, with run.progress, it does."""
    import sys

    from lmgnn_fast.train.loop import show_progress

    err = _Stream(tty)
    monkeypatch.setattr(sys, "stderr", err)
    ctx = make_ctx(str(tmp_path / "run"), progress=True, checkpoint_every=0)
    assert show_progress(ctx.cfg.run) is tty
    run_epochs(ToyStage(epochs=2), ctx)
    drawn = "".join(err.parts)
    assert ("stage 2 epoch 1/2" in drawn) is tty
    if not tty:
        assert drawn == ""
    ctx.cfg.run.progress = False
    assert show_progress(ctx.cfg.run) is False
