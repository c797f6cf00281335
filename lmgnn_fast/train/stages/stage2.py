"""Stage 2 — R-GCN + task head on frozen LM embeddings.

``encode_all`` with the stage-1 LM (the pretrained one when stage 1 was not run) fills one
embedding cache per text node type; the R-GCN trains over sampled blocks reading its input
rows from the caches. The epoch with the best validation metric is kept (early stopping
after ``stage2.patience`` epochs without improvement). On CPU the input rows of a batch are
read from the caches in the loader's background thread, beside the previous step's compute
(the caches do not change during stage 2, and a CPU cache read is a plain table gather) —
except with ``run.partitioned``, where sampling and row fetches are collectives issued in
step order from the main thread (the loader has no prefetch thread, so no transform is set).
"""
from __future__ import annotations

import time

import torch
from torch import nn

from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.data_parallel import wrap_modules
from lmgnn_fast.train.features import FeatureSource
from lmgnn_fast.train.stages.common import GNNCheckpointReader
from lmgnn_fast.train.tasks import GNNTask

__all__ = ["Stage2"]


class Stage2(GNNCheckpointReader):
    """Stage 2 under the loop's :class:`~lmgnn_fast.train.loop.Stage` protocol.

    Args:
        ctx: the run context.
        features: the feature source (caches filled with the stage's LM).
        task: the target task (batches, loss, validation).
    """

    number = 2

    def __init__(self, ctx: RunContext, features: FeatureSource, task: GNNTask):
        self.ctx, self.features, self.task = ctx, features, task
        c2 = ctx.cfg.stage2
        self.source = features.lm_source_for(2)
        features.load_lm(self.source)
        features.ensure_cache()
        self.model = task.new_model(features.hidden_size)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=c2.lr, weight_decay=c2.weight_decay, foreach=True)
        self.optimizers = {"opt": self.opt}
        self.modules = nn.ModuleDict({"gnn": self.model})
        self.epochs = c2.epochs
        self.loader = task.train_loader(c2.batch_size, "stage2")
        if ctx.device.type == "cpu" and self.loader.prefetch > 0 and ctx.text_types:
            self.loader.transform = self._fetch_rows
        self.best_value, self.best_epoch, self.best_state = None, -1, None
        self.forward = wrap_modules(self.modules, ctx.dist)

    def start_epoch(self, epoch: int) -> None:
        """Nothing to prepare."""

    def make_batches(self, epoch: int):
        """The training loader at ``epoch`` (this rank's share of each shuffled batch)."""
        self.loader.set_epoch(epoch)
        return self.loader

    def _fetch_rows(self, batch):
        """The loader's transform: the batch with its input rows (``batch.input_rows``)."""
        batch.input_rows = self.features.cache_features(batch.blocks[0])
        return batch

    def step(self, batch, epoch: int, i: int) -> float:
        """One AdamW step on the task loss of the batch; its host seconds per phase go to
        ``self.step_times`` (the loop's step-time breakdown; ``fetch`` is 0 where the loader
        fetched the rows in its background thread)."""
        clock = time.perf_counter
        times = {"fetch": 0.0}
        rows = getattr(batch, "input_rows", None)

        def feats(block):
            if rows is not None:
                return rows
            t = clock()
            x = self.features.cache_features(block)
            times["fetch"] += clock() - t
            return x

        t0 = clock()
        loss = self.forward(lambda: self.task.batch_loss(self.model, batch, feats))
        t1 = clock()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = clock()
        self.opt.step()
        t3 = clock()
        times.update(gnn_forward=t1 - t0 - times["fetch"], gnn_backward=t2 - t1, optimizer=t3 - t2)
        self.step_times = times
        return float(loss.detach())

    def end_epoch(self, epoch: int) -> dict | None:
        """Validation metrics; keeps the best epoch's weights; ``None`` after ``patience``
        epochs without improvement."""
        c2 = self.ctx.cfg.stage2
        val, _ = self.task.scores(self.model, "val", self.features.cache_features)
        v = val.get(self.ctx.task.primary_metric, float("nan"))
        if self.best_value is None or v > self.best_value:
            self.best_value, self.best_epoch = v, epoch
            self.best_state = {k: t.detach().clone() for k, t in self.model.state_dict().items()}
        elif c2.patience and epoch - self.best_epoch >= c2.patience:
            self.ctx.log(f"stage 2: no validation improvement for {c2.patience} epochs, stopping")
            return None
        return val

    def state_dict(self) -> dict:
        """The best epoch so far: its value, number and weights."""
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        """Restore the best epoch so far."""
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.best_state = state["best_state"] or None

    def finish(self) -> dict:
        """Keep the best epoch's weights and save ``checkpoints/stage2.safetensors``."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.ctx.ckpt.save_stage(2, {f"gnn.{k}": v for k, v in self.model.state_dict().items()},
                                 {"lm_source": self.source, "best_epoch": str(self.best_epoch),
                                  "gnn_model": self.ctx.cfg.gnn.model})
        return {}
