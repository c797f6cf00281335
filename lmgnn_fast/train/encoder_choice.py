"""``gnn.model auto``: the graph encoder chosen per graph on validation.

Which encoder suits a graph depends on the graph: on some of the developer tasks HGT's
per-type attention is well ahead of R-GCN on validation, on others R-GCN is (the tables in
``benchmarks/RESULTS.md``). With ``gnn.model auto``, stage 2 trains one graph model per
encoder of ``gnn.auto_models`` — each exactly as a run with ``gnn.model <that encoder>``
trains it: the same LM rows, the same seeded initialisation, batches and epochs — and keeps
the one with the highest validation value of the task's primary metric (ties: the earlier in
the list). The run then goes on as a run with the chosen encoder does: its stage-2
checkpoint, its history, its global step and its RNG state are restored, so stage 3 and
every later step compute what they would compute in that run. The test values of every
encoder are reported (``metrics.json``: ``stages.stage2.encoders``) but never used.

Resuming: each finished encoder is recorded in ``checkpoints/stage2-auto.json`` with its
checkpoint (``stage2-auto-<encoder>.safetensors``: model, RNG state); a resumed run skips
the finished encoders and continues the interrupted one from its last checkpoint. The
chosen encoder is stored in the stage-2 checkpoint's metadata (``gnn_model``), which is how
stage 3 of a resumed run, inference and evaluation find it (:func:`resolve_encoder`).
"""
from __future__ import annotations

import json
import os
import time

from lmgnn_fast.distributed import barrier
from lmgnn_fast.train.checkpoint import atomic_write_json, load_tensors, rng_state, save_tensors, set_rng_state
from lmgnn_fast.train.config import ConfigError

__all__ = ["AUTO", "ENCODERS", "is_auto", "resolve_encoder", "EncoderChoice"]

AUTO = "auto"
ENCODERS = ("rgcn", "rgat", "hgt")
_PROGRESS = "stage2-auto.json"


def is_auto(cfg) -> bool:
    """Whether the run chooses its graph encoder on validation."""
    return cfg.gnn.model == AUTO


def resolve_encoder(cfg, ckpt) -> str | None:
    """Set ``cfg.gnn.model`` to the encoder stage 2 chose when it is ``auto`` and stage 2 has
    finished in the run directory of ``ckpt``; returns the encoder in use (``None``: not
    chosen yet)."""
    if not is_auto(cfg):
        return cfg.gnn.model
    if not ckpt.has_stage(2):
        return None
    chosen = ckpt.stage_metadata(2).get("gnn_model")
    if chosen not in ENCODERS:
        raise ConfigError(f"gnn.model is 'auto' but the stage-2 checkpoint {ckpt.stage_path(2)} does not say which "
                          f"encoder was chosen (metadata gnn_model {chosen!r}); run stage 2 again")
    cfg.gnn.model = chosen
    return chosen


class EncoderChoice:
    """Stage 2 once per candidate encoder, keeping the best on validation.

    Args:
        ctx: the run context (``ctx.cfg.gnn.model`` is ``auto``; it is set to each candidate
            in turn and finally to the chosen one).
        train: ``train(resume) -> dict``: builds stage 2 for ``ctx.cfg.gnn.model``, runs its
            epochs (from ``resume`` when given), saves its checkpoint and returns its
            ``{"val": .., "test": ..}`` metrics.
    """

    def __init__(self, ctx, train):
        self.ctx, self.train = ctx, train
        self.candidates = [str(m) for m in ctx.cfg.gnn.auto_models]
        self.path = os.path.join(ctx.ckpt.dir, _PROGRESS)

    def _file(self, name: str) -> str:
        return os.path.join(self.ctx.ckpt.dir, f"stage2-auto-{name}.safetensors")

    def _load_progress(self) -> dict | None:
        try:
            with open(self.path) as f:
                p = json.load(f)
        except (OSError, ValueError):
            return None
        if p.get("candidates") != self.candidates:
            return None  # another list of encoders: start over
        p["done"] = {k: v for k, v in p.get("done", {}).items() if os.path.exists(self._file(k))}
        return p

    def _save_progress(self, progress: dict) -> None:
        if self.ctx.dist.is_main:
            atomic_write_json(self.path, progress)
        barrier(self.ctx.dist)

    def run(self, resume=None) -> dict:
        """Train every candidate not yet finished, keep the best; returns the chosen
        encoder's stage-2 metrics plus ``gnn_model`` and ``encoders`` (each candidate's
        val/test metrics, best epoch and time)."""
        ctx, metric = self.ctx, self.ctx.task.primary_metric
        progress = self._load_progress() if resume is not None or ctx.cfg.run.resume else None
        if progress is None:
            progress = {"candidates": self.candidates, "start_step": ctx.global_step, "done": {}}
            self._save_progress(progress)
        done = progress["done"]
        for name in self.candidates:
            if name in done:
                ctx.log(f"stage 2 (gnn.model auto): {name} already trained, skipping (resume)")
                continue
            ctx.cfg.gnn.model = name
            ctx.history["stage2"] = []
            # the global step at which this candidate's training began (resumed: before its checkpoint)
            first_step = ctx.global_step if resume is None else \
                int(progress.get("next_first_step", progress["start_step"]))
            ctx.log(f"stage 2 (gnn.model auto): training the {name} encoder "
                    f"({self.candidates.index(name) + 1} of {len(self.candidates)})")
            t0 = time.time()
            res = self.train(resume)
            resume = None
            meta = ctx.ckpt.stage_metadata(2)
            if ctx.dist.is_main:
                tensors, _ = load_tensors(ctx.ckpt.stage_path(2))
                tensors.update(rng_state())
                save_tensors(self._file(name), tensors, {k: v for k, v in meta.items() if k != "checksum"})
            ctx.ckpt.clear_last()  # the next candidate must not resume from this one's state
            done[name] = {"val": res.get("val"), "test": res.get("test"), "best_epoch": meta.get("best_epoch"),
                          "time_s": round(time.time() - t0, 2), "steps": ctx.global_step - first_step,
                          "history": ctx.history.get("stage2", [])}
            progress["next_first_step"] = ctx.global_step
            self._save_progress(progress)
        chosen = self._choose(done, metric)
        tensors, meta = load_tensors(self._file(chosen))
        set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")})
        ctx.ckpt.save_stage(2, {k: v for k, v in tensors.items() if not k.startswith("rng.")},
                            {k: v for k, v in meta.items() if k not in ("checksum", "stage")})
        ctx.cfg.gnn.model = chosen
        ctx.history["stage2"] = done[chosen]["history"]
        # the step count of the run with the chosen encoder (stage 3 derives draws from it)
        ctx.global_step = int(progress["start_step"]) + int(done[chosen]["steps"])
        vals = ", ".join(f"{n} {_val(done[n], metric):.4f}" for n in self.candidates)
        ctx.log(f"stage 2 (gnn.model auto): chose {chosen} on validation {metric} ({vals})")
        encoders = {n: {k: v for k, v in done[n].items() if k != "history"} for n in self.candidates}
        out = {"val": done[chosen]["val"], "test": done[chosen]["test"], "gnn_model": chosen, "encoders": encoders}
        barrier(ctx.dist)
        if ctx.dist.is_main:
            for n in self.candidates:
                if os.path.exists(self._file(n)):
                    os.remove(self._file(n))
            os.remove(self.path)
        return out

    def _choose(self, done: dict, metric: str) -> str:
        best, best_v = None, None
        for n in self.candidates:
            v = _val(done[n], metric)
            if v == v and (best_v is None or v > best_v):
                best, best_v = n, v
        return best if best is not None else self.candidates[0]


def _val(rec: dict, metric: str) -> float:
    v = (rec.get("val") or {}).get(metric)
    return float("nan") if v is None else float(v)
