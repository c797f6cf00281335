"""The runner: wires the stages of a run in order and writes its outputs.

:class:`Trainer` builds the :class:`RunContext`, the :class:`FeatureSource` and the
:class:`GNNTask` once, then for each configured stage builds the stage object, trains it
under :func:`loop.run_epochs` (resuming an interrupted stage, skipping finished ones on
``--resume``), saves its checkpoint and evaluates it with the same function
``python -m lmgnn_fast.evaluate`` calls (:meth:`Trainer.evaluate_stage`), so a saved run
re-evaluates to the same numbers. At the end it writes ``metrics.json``, ``curves.png``,
embeddings, predictions, the final model's LM rows (``lm_rows/``, what loading the run for
inference reads) and prints the results table.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time

import torch

from lmgnn_fast.train.checkpoint import atomic_write_json, seed_everything
from lmgnn_fast.train.config import Config, ConfigError
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.data import TargetTask
from lmgnn_fast.train.encoder_choice import EncoderChoice, is_auto, resolve_encoder
from lmgnn_fast.train.ensemble import Ensemble, choose_ensemble
from lmgnn_fast.train.errors import TrainingError
from lmgnn_fast.train.features import FeatureSource
from lmgnn_fast.train.loop import ResumeState, run_epochs
from lmgnn_fast.train.outputs import write_lm_rows, write_outputs
from lmgnn_fast.train.selection import select_stage
from lmgnn_fast.train.stages import STAGES
from lmgnn_fast.train.stages.ensemble_predictor import EnsemblePredictor
from lmgnn_fast.train.tasks import GNNTask

__all__ = ["Trainer", "format_table", "out_of_memory_hint"]


class Trainer:
    """A training run: the configured stages in order, then the outputs.

    Args:
        cfg: the full configuration.
        graph: an already loaded graph (default: load ``cfg.data.name``).
        log: where progress lines go (default: print to stdout).

    Attributes:
        ctx: the :class:`RunContext` (config, graph, task, device, checkpoints, history).
        features: the :class:`FeatureSource` (LM, tokens, embedding caches).
        gnn_task: the :class:`GNNTask` (batches, losses and evaluation of the task).
        results: per stage (``"stage{k}"``) its val/test metrics and time.
    """

    def __init__(self, cfg: Config, graph=None, log=None):
        # its own gnn section: with gnn.model auto the run sets the encoder it chose there
        self.ctx = RunContext.create(dataclasses.replace(cfg, gnn=dataclasses.replace(cfg.gnn)), graph=graph,
                                     log=log)
        self.auto_encoder = is_auto(self.ctx.cfg)
        self.features = FeatureSource(self.ctx)
        self.gnn_task = GNNTask(self.ctx)
        self.results: dict[str, dict] = {}
        self.final_stage: int | None = None
        self.ensemble: dict | None = None  # the stage 1 + 2 mixture tried (weights, val/test, chosen)
        self.ensemble_chosen = False
        self._ensemble_predictor = None
        self.per_class: dict | None = None

    @property
    def cfg(self) -> Config:
        """The configuration."""
        return self.ctx.cfg

    @property
    def task(self) -> TargetTask:
        """The resolved target task."""
        return self.ctx.task

    @property
    def stages(self) -> list[int]:
        """The stages this run trains."""
        return self.ctx.stages

    @property
    def dist(self):
        """The distributed context."""
        return self.ctx.dist

    @property
    def ckpt(self):
        """The run directory's checkpoints."""
        return self.ctx.ckpt

    def num_train_items(self) -> int:
        """Number of training items of the task."""
        return self.gnn_task.num_train_items()

    def evaluate_stage(self, stage: int) -> dict:
        """Val/test metrics of the checkpoint of ``stage`` (what ``evaluate`` reports)."""
        return STAGES[stage].evaluate(self.ctx, self.features, self.gnn_task)[0]

    def run(self) -> dict:
        """Run the configured stages; returns ``{"stage{k}": {"val": .., "test": .., "time_s": ..}}``."""
        ctx, cfg = self.ctx, self.ctx.cfg
        ctx.log("lmgnn_fast.train configuration:\n" + cfg.to_yaml())
        if ctx.dist.is_main:
            cfg.save(os.path.join(ctx.out_dir, "config.yaml"))
        ctx.log(f"task {ctx.task.name!r} ({ctx.task.type}), device {ctx.device}"
                + (f", {ctx.dist.world_size} processes" if ctx.dist.is_distributed else ""))
        seed_everything(cfg.run.seed)
        resume = None
        if cfg.run.resume:
            self._load_previous_results()
            last = ctx.ckpt.load_last()
            if last is not None:
                resume = ResumeState(*last)
        else:
            ctx.ckpt.clear_last()
        self._resolve_auto_encoder()
        for number in ctx.stages:
            key = f"stage{number}"
            if cfg.run.resume and key in self.results and ctx.ckpt.has_stage(number) and \
                    (resume is None or resume.stage != number):
                problem = ctx.ckpt.stage_problem(number)
                if problem is None:
                    ctx.log(f"stage {number}: already done, skipping (resume)")
                    continue
                ctx.log(f"resume: the checkpoint of stage {number} is unusable ({problem}); stage {number} "
                        "runs again")
            t0 = time.time()
            own = resume if resume is not None and resume.stage == number else None
            with out_of_memory_hint(cfg, number):
                if number == 2 and self.auto_encoder:
                    res = EncoderChoice(ctx, lambda rs: self._train_stage(2, rs)).run(own)
                else:
                    res = self._train_stage(number, own)
            if own is not None:
                resume = None
            res["time_s"] = round(time.time() - t0, 2)
            self.results[key] = res
            self._write_metrics()
        ctx.ckpt.clear_last()
        self.final_stage = self._select_final_stage()
        self._consider_ensemble()
        self._write_metrics()
        if self.final_stage is not None:
            if self.ensemble_chosen:
                predictor = self._ensemble_predictor
            else:
                predictor = STAGES[self.final_stage].predictor(ctx, self.features, self.gnn_task)
            self.per_class = write_outputs(ctx, self.gnn_task, predictor)
            write_lm_rows(ctx, self.features)
            if self.per_class is not None:
                self._write_metrics()
        ctx.log(format_table(self.results, ctx.task, self.final_stage, self.ensemble))
        return self.results

    def _train_stage(self, number: int, resume) -> dict:
        """Build stage ``number``, run its epochs (from ``resume`` when given), save its
        checkpoint; returns its evaluation plus what ``finish`` reported."""
        stage = STAGES[number](self.ctx, self.features, self.gnn_task)
        run_epochs(stage, self.ctx, resume)
        extra = stage.finish()
        res = self.evaluate_stage(number)
        res.update(extra)
        return res

    def _resolve_auto_encoder(self) -> None:
        """With ``gnn.model auto``: when stage 2 will not train in this run (not among the
        stages, or done and skipped on resume), take the encoder its checkpoint chose; a
        stage 3 with no stage 2 to choose one is a configuration error."""
        ctx = self.ctx
        if not self.auto_encoder:
            return
        trains2 = 2 in ctx.stages and not (ctx.cfg.run.resume and "stage2" in self.results
                                          and ctx.ckpt.has_stage(2) and ctx.ckpt.stage_problem(2) is None)
        if trains2:
            return
        if resolve_encoder(ctx.cfg, ctx.ckpt) is None and 3 in ctx.stages:
            raise ConfigError("gnn.model auto chooses the encoder in stage 2: run stage 2 (run.stages) before "
                              "stage 3, or name the encoder (gnn.model rgcn|rgat|hgt)")

    def _consider_ensemble(self) -> None:
        """With ``run.ensemble`` and ``run.final_stage best``: the mixture of stage 1's and
        stage 2's predictions (:mod:`lmgnn_fast.train.ensemble`), its weight chosen on
        validation; it becomes the final model (``self.ensemble_chosen``; ``final_stage``
        then names stage 2, whose rows are the run's embeddings) when its validation value is
        strictly above the best single stage's. Needs both stages to have a model of the task
        and to read the same LM rows (stage 2 on stage 1's LM)."""
        ctx, cfg, metric = self.ctx, self.ctx.cfg, self.ctx.task.primary_metric
        self.ensemble, self.ensemble_chosen = None, False
        if not cfg.run.ensemble or cfg.run.final_stage != "best" or self.final_stage is None:
            return
        if not (1 in ctx.stages and 2 in ctx.stages and "stage1" in self.results and "stage2" in self.results):
            return
        if not ctx.ckpt.has_stage(1) or not ctx.ckpt.has_stage(2) or \
                ctx.ckpt.stage_metadata(2).get("lm_source", "pretrained") != "stage1":
            return
        t0 = time.time()
        lm_pred = STAGES[1].predictor(ctx, self.features, self.gnn_task)
        val_a = lm_pred.split_outputs("val")
        if val_a is None:  # stage 1 has no model of the task
            return
        test_a = lm_pred.split_outputs("test")
        gnn_pred = STAGES[2].predictor(ctx, self.features, self.gnn_task)
        val_b, test_b = gnn_pred.split_outputs("val"), gnn_pred.split_outputs("test")
        kind = Ensemble.kind_of(ctx.task.type, ctx.task.multilabel)
        y_val = y_test = None
        if kind != "scores":
            y_val, y_test = self.gnn_task.split_labels("val"), self.gnn_task.split_labels("test")
        ens, val = choose_ensemble(kind, val_a, val_b, metric, y_val, cfg.task.threshold)
        test = ens.metrics(ens.mix_outputs(test_a, test_b), y_test, cfg.task.threshold)
        best = (self.results[f"stage{self.final_stage}"].get("val") or {}).get(metric)
        v = val.get(metric)
        self.ensemble_chosen = v is not None and best is not None and v == v and v > best
        self.ensemble = {**ens.to_dict(), "val": val, "test": test, "chosen": self.ensemble_chosen,
                         "time_s": round(time.time() - t0, 2)}
        if self.ensemble_chosen:
            self.final_stage = 2
            self._ensemble_predictor = EnsemblePredictor(lm_pred, gnn_pred, ens)
        ctx.log(f"ensemble of stages 1 and 2 (LM weight {ens.weight}): val {metric} {_fmt(v)} vs best single stage "
                f"{_fmt(best)}: " + ("final model: the ensemble" if self.ensemble_chosen else "not used"))

    def _select_final_stage(self) -> int | None:
        """The stage whose model is the run's result (``run.final_stage``; by default the
        best on validation among the stages that ran, else the last one that ran)."""
        ran = {k: v for k, v in self.results.items()
               if k.startswith("stage") and int(k[len("stage"):]) in self.ctx.stages}
        stage = select_stage(ran, self.ctx.task.primary_metric, self.ctx.cfg.run.final_stage)
        if stage is None and ran:
            stage = max(int(k[len("stage"):]) for k in ran)
        if stage is not None:
            v = (ran[f"stage{stage}"].get("val") or {}).get(self.ctx.task.primary_metric)
            how = "best validation" if self.ctx.cfg.run.final_stage == "best" else "run.final_stage"
            self.ctx.log(f"final model: stage {stage} ({how}" + (f", val {self.ctx.task.primary_metric} {v:.4f})"
                                                              if v is not None else ")"))
        return stage

    def _write_metrics(self) -> None:
        ctx = self.ctx
        if not ctx.dist.is_main:
            return
        m = {"task": {"name": ctx.task.name, "type": ctx.task.type, "primary_metric": ctx.task.primary_metric},
             "final_stage": self.final_stage, "final_model": "ensemble" if self.ensemble_chosen else "stage",
             "stages": self.results, "history": ctx.history}
        if self.ensemble is not None:
            m["ensemble"] = self.ensemble
        if self.per_class is not None:  # the final model's, per named class
            m["per_class"] = {"stage": self.final_stage, **self.per_class}
        atomic_write_json(os.path.join(ctx.out_dir, "metrics.json"), m)
        try:
            from lmgnn_fast.train.plots import plot_curves

            plot_curves(ctx.history, os.path.join(ctx.out_dir, "curves.png"))
        except Exception as e:  # noqa: BLE001 - a plot must never fail a run
            ctx.log(f"warning: could not draw curves.png: {e}")

    def _load_previous_results(self) -> None:
        path = os.path.join(self.ctx.out_dir, "metrics.json")
        if os.path.exists(path):
            with open(path) as f:
                m = json.load(f)
            self.results = m.get("stages", {})
            self.ctx.history.update(m.get("history", {}))


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


@contextlib.contextmanager
def out_of_memory_hint(cfg: Config, stage: int):
    """Turn an out-of-memory error inside the block into a :class:`TrainingError` naming the
    settings of ``stage`` to lower."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
        oom = isinstance(e, (torch.OutOfMemoryError, MemoryError)) or \
            "out of memory" in str(e) or "can't allocate memory" in str(e)
        if not oom:
            raise
        c = cfg
        hints = {1: [f"stage1.batch_size (now {c.stage1.batch_size})",
                     f"stage1.num_negatives (now {c.stage1.num_negatives})",
                     f"lm.max_length (now {c.lm.max_length})", "or set lm.gradient_checkpointing true"],
                 2: [f"stage2.batch_size (now {c.stage2.batch_size})", f"gnn.fanouts (now {c.gnn.fanouts})",
                     f"lm.encode_batch_size (now {c.lm.encode_batch_size})",
                     f"stage3.cache_capacity (now {c.stage3.cache_capacity})"],
                 3: [f"stage3.lm_train_nodes (now {c.stage3.lm_train_nodes})",
                     f"stage3.batch_size (now {c.stage3.batch_size})",
                     f"lm.max_length (now {c.lm.max_length})", f"gnn.fanouts (now {c.gnn.fanouts})",
                     "or set lm.gradient_checkpointing true"]}[stage]
        raise TrainingError(f"out of memory in stage {stage} on {c.run.device}: lower " + ", ".join(hints)) from e


def format_table(results: dict, task: TargetTask, final_stage: int | None = None,
                 ensemble: dict | None = None) -> str:
    """Markdown table of validation/test metrics per stage (``-``: no such metric); the
    final model's stage is marked with ``*`` (the ensemble's row when it is the final model)."""
    chosen = bool(ensemble and ensemble.get("chosen"))
    if ensemble is not None:
        results = {**results, "ensemble": ensemble}
    order = sorted(k for k in results if k != "ensemble") + (["ensemble"] if "ensemble" in results else [])
    keys = []
    for r in results.values():
        for split in ("val", "test"):
            for k in (r.get(split) or {}):
                if k not in keys:
                    keys.append(k)
    head = "| stage | split | " + " | ".join(keys) + " | time (s) |"
    lines = [f"\nResults: task {task.name} ({task.type})", head, "|" + "---|" * (len(keys) + 3)]
    for stage in order:
        r = results[stage]
        for split in ("val", "test"):
            m = r.get(split) or {}
            vals = " | ".join(f"{m[k]:.4f}" if k in m else "-" for k in keys)
            final = "ensemble" if chosen else f"stage{final_stage}"
            mark = " *" if final_stage is not None and stage == final else ""
            lines.append(f"| {stage}{mark} | {split} | {vals} | {r.get('time_s', '-')} |")
    if chosen:
        lines.append(f"\n* final model: the ensemble of stages 1 and 2 (LM weight {ensemble['weight']}; "
                     "embeddings: stage 2's)")
    elif final_stage is not None:
        lines.append(f"\n* final model (predictions, embeddings): stage {final_stage}")
    return "\n".join(lines)
