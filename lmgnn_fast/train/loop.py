"""The training loop: runs any :class:`Stage` for its epochs, with checkpoints and resume.

Semantics (what :func:`run_epochs` guarantees):

- **Epochs.** For ``epoch`` in ``range(start, stage.epochs)``: ``stage.start_epoch(epoch)``,
  then ``stage.step(batch, epoch, i)`` for each batch ``i`` of ``stage.make_batches(epoch)``
  (with the modules in train mode), then ``stage.end_epoch(epoch)``. Each step adds one to
  ``ctx.global_step`` and a ``{"step", "epoch", "loss"}`` record (the loss averaged over
  ranks) to ``ctx.history["stage{k}"]``; each epoch adds a record with its time, its
  ``time_breakdown_s`` and the validation metrics ``end_epoch`` returned.
- **Step-time breakdown.** ``time_breakdown_s`` sums the epoch's host seconds per phase:
  ``sample`` (waiting for the next batch: sampling not hidden by the loader's prefetch),
  the phases a stage reports in its optional ``step_times`` dict after each step (stage 2:
  ``fetch``, ``gnn_forward``, ``gnn_backward``, ``optimizer``), and ``step`` (the rest of
  ``stage.step``). On CUDA, kernels run asynchronously: their time lands in the phase
  where the host waits for them.
- **Early stopping.** ``end_epoch`` returning ``None`` ends the stage after that epoch.
- **Checkpoints.** Inside an epoch every ``run.checkpoint_every`` global steps and, once
  ``run.checkpoint_every_s`` seconds have passed since the last checkpoint, after the next
  step (rank 0's clock decides, for every rank); and after every epoch, the resumable
  state is written: the stage's modules, optimizers and
  :meth:`Stage.state_dict`, the position (epoch, step in epoch, global step), the history
  and the RNG states.
- **Resume.** Given the state of an interrupted run of the same stage, the loop restores all
  of it and continues at the saved position; the skipped batches of that epoch are still
  made (so their draws are the same) but not trained on. A resumed run computes
  bit-identically what the uninterrupted run computes.
- **Interrupts.** ``run.interrupt_after_steps`` raises :class:`SimulatedInterrupt` once the
  global step reaches it (after any checkpoint of that step), to test resuming.
"""
from __future__ import annotations

import sys
import time
from time import perf_counter
from typing import Iterator, Protocol

from torch import Tensor, nn

from lmgnn_fast.train import data_parallel
from lmgnn_fast.train.checkpoint import flatten_state, set_rng_state, unflatten_state
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.errors import SimulatedInterrupt

__all__ = ["Stage", "Batches", "ResumeState", "run_epochs", "show_progress"]

_EXTRA = "__extra__"


class Batches(Protocol):
    """An epoch's batches: a list, or a loader with ``len()``."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator: ...


class Stage(Protocol):
    """What the loop needs from a stage.

    Attributes:
        number: the stage's number; names its history (``"stage{number}"``), log lines and
            checkpoints.
        epochs: epochs to run (0: none).
        modules: everything trained and checkpointed, as one module.
        optimizers: by name; their state is checkpointed.
    """

    number: int
    epochs: int
    modules: nn.Module
    optimizers: dict

    def start_epoch(self, epoch: int) -> None:
        """Called before the batches of ``epoch`` are made."""

    def make_batches(self, epoch: int) -> Batches:
        """This rank's batches of ``epoch`` (the same number on every rank), deterministic
        in ``epoch``."""

    def step(self, batch, epoch: int, i: int) -> float:
        """One optimizer step on batch ``i`` of ``epoch``; returns this rank's loss."""

    def end_epoch(self, epoch: int) -> dict | None:
        """Validation metrics after ``epoch`` (``{}``: none; ``None``: stop early)."""

    def state_dict(self) -> dict:
        """State beyond modules and optimizers that resuming needs (tensors and JSON values,
        nested in dicts and lists)."""

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


class ResumeState:
    """The saved state of an interrupted stage, as ``CheckpointManager.load_last`` returns it.

    Args:
        state: position, history, RNG states and the stage's extra state skeleton.
        model: module tensors (and the extra state's tensors).
        optim: optimizer state dicts by name.
    """

    def __init__(self, state: dict, model: dict[str, Tensor], optim: dict):
        self.state, self.model, self.optim = state, model, optim

    @property
    def stage(self) -> int:
        """The stage that was interrupted."""
        return int(self.state["stage"])


def _restore(stage: Stage, ctx: RunContext, rs: ResumeState, hist: list) -> tuple[int, int]:
    stage.modules.load_state_dict({k: v for k, v in rs.model.items() if not k.startswith(_EXTRA + ".")})
    for name, opt in stage.optimizers.items():
        opt.load_state_dict(rs.optim[name])
    ctx.global_step = rs.state["global_step"]
    hist[:] = rs.state.get("history", [])
    extra = rs.state.get("extra")
    if extra is not None:
        stage.load_state_dict(unflatten_state(extra, {k: v for k, v in rs.model.items() if k.startswith(_EXTRA)}))
    set_rng_state(rs.state["rng"])
    return rs.state["epoch"], rs.state["step"]


def _save(stage: Stage, ctx: RunContext, hist: list, epoch: int, step: int) -> None:
    tensors: dict[str, Tensor] = {}
    extra = flatten_state(stage.state_dict(), _EXTRA, tensors)
    sd = dict(stage.modules.state_dict())
    sd.update(tensors)
    ctx.ckpt.save_last({"stage": stage.number, "epoch": epoch, "step": step, "global_step": ctx.global_step,
                        "history": hist, "extra": extra}, sd, stage.optimizers)


def _checkpoint_due(ctx: RunContext, last_save: float) -> bool:
    """Whether a mid-epoch checkpoint is due after this step (``run.checkpoint_every`` steps,
    or ``run.checkpoint_every_s`` seconds on rank 0's clock since ``last_save``)."""
    cfg = ctx.cfg.run
    if cfg.checkpoint_every and ctx.global_step % cfg.checkpoint_every == 0:
        return True
    if not cfg.checkpoint_every_s:
        return False
    due = ctx.dist.is_main and time.monotonic() - last_save >= cfg.checkpoint_every_s
    if ctx.dist.is_distributed:  # every rank takes the same decision
        due = data_parallel.mean_over_ranks(float(due), ctx.dist) > 0
    return bool(due)


def show_progress(cfg) -> bool:
    """Whether progress bars are drawn: ``run.progress`` and stderr is a terminal. Written to
    a file or a pipe (a CI log, ``nohup``), a bar's every refresh would be a line of its own,
    so there the per-epoch log lines are the progress."""
    try:
        return bool(cfg.progress) and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


def run_epochs(stage: Stage, ctx: RunContext, resume: ResumeState | None = None) -> None:
    """Train ``stage`` for its epochs (see the module docstring for the guarantees).

    Args:
        stage: the stage.
        ctx: the run context (config, checkpoints, history, global step, log).
        resume: the saved state of an interrupted run of this stage, or ``None``.
    """
    from tqdm.auto import tqdm

    n, cfg = stage.number, ctx.cfg.run
    hist = ctx.history.setdefault(f"stage{n}", [])
    start_epoch, start_step = 0, 0
    if resume is not None:
        start_epoch, start_step = _restore(stage, ctx, resume, hist)
        ctx.log(f"stage {n}: resuming at epoch {start_epoch}, step {start_step} (global step {ctx.global_step})")
    last_save = time.monotonic()
    for epoch in range(start_epoch, stage.epochs):
        stage.start_epoch(epoch)
        batches = stage.make_batches(epoch)
        stage.modules.train()
        bar = tqdm(total=len(batches), desc=f"stage {n} epoch {epoch + 1}/{stage.epochs}", leave=False,
                   disable=not show_progress(cfg) or not ctx.dist.is_main, unit="batch", file=sys.stderr)
        bar.update(start_step if epoch == start_epoch else 0)
        t0 = time.time()
        breakdown: dict[str, float] = {}
        t_wait = perf_counter()
        for i, batch in enumerate(batches):
            if epoch == start_epoch and i < start_step:
                t_wait = perf_counter()
                continue
            t_step = perf_counter()
            breakdown["sample"] = breakdown.get("sample", 0.0) + t_step - t_wait
            loss = stage.step(batch, epoch, i)
            step_s = perf_counter() - t_step
            for k, v in (getattr(stage, "step_times", None) or {}).items():
                breakdown[k] = breakdown.get(k, 0.0) + v
                step_s -= v
            breakdown["step"] = breakdown.get("step", 0.0) + step_s
            loss = data_parallel.mean_over_ranks(loss, ctx.dist)
            ctx.global_step += 1
            data_parallel.maybe_fail(ctx.dist, ctx.global_step)
            rec = {"step": ctx.global_step, "epoch": epoch, "loss": float(loss)}
            if getattr(stage, "lm_grad_norm", None) is not None:  # stages that train the LM
                rec["lm_grad_norm"] = stage.lm_grad_norm
            hist.append(rec)
            bar.set_postfix(loss=f"{float(loss):.4f}")
            bar.update(1)
            if i + 1 < len(batches) and _checkpoint_due(ctx, last_save):
                _save(stage, ctx, hist, epoch, i + 1)
                last_save = time.monotonic()
            if cfg.interrupt_after_steps and ctx.global_step >= cfg.interrupt_after_steps:
                bar.close()
                raise SimulatedInterrupt(f"interrupted after {ctx.global_step} steps (run.interrupt_after_steps)")
            t_wait = perf_counter()
        bar.close()
        epoch_time = time.time() - t0
        val = stage.end_epoch(epoch)
        rec = {"step": ctx.global_step, "epoch": epoch, "epoch_time_s": epoch_time,
               "time_breakdown_s": {k: round(v, 6) for k, v in breakdown.items()}}
        if val:
            rec.update({f"val_{k}": v for k, v in val.items()})
            ctx.log(f"stage {n} epoch {epoch + 1}: " + ", ".join(f"val {k} {v:.4f}" for k, v in val.items())
                    + f" ({epoch_time:.1f}s)")
        hist.append(rec)
        _save(stage, ctx, hist, epoch + 1, 0)
        last_save = time.monotonic()
        start_step = 0
        if val is None:
            break
