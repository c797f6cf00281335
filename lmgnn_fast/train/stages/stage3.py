"""Stage 3 — LM and R-GCN trained end to end, with the embedding cache.

Per batch, at most ``stage3.lm_train_nodes`` of the sampled input nodes that carry text go
through the LM with gradients — the seeds first (they are the prefix of each type's input
nodes), then a seeded random choice of the others; every other input row is read from the
cache. The recomputed rows are written back (cache version = the global step). A full
refresh (``encode_all``) runs every ``stage3.refresh_every`` epochs and always before the
final evaluation. The first ``stage3.warmup_epochs`` epochs train the GNN alone (LM
frozen). ``lm_train_nodes: -1`` sends every sampled text node through the LM (no cache
reads) — the baseline the cache is measured against.
"""
from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.data_parallel import wrap_modules
from lmgnn_fast.train.diagnostics import DriftProbe, grad_norm
from lmgnn_fast.train.features import FeatureSource
from lmgnn_fast.train.seeds import derive_seed
from lmgnn_fast.train.stages.common import GNNCheckpointReader, start_stage3
from lmgnn_fast.train.tasks import GNNTask

__all__ = ["Stage3"]


class Stage3(GNNCheckpointReader):
    """Stage 3 under the loop's :class:`~lmgnn_fast.train.loop.Stage` protocol.

    Args:
        ctx: the run context.
        features: the feature source (its LM is trained, its caches read and refreshed).
        task: the target task (batches, loss, validation).
    """

    number = 3

    def __init__(self, ctx: RunContext, features: FeatureSource, task: GNNTask):
        self.ctx, self.features, self.task = ctx, features, task
        c3 = ctx.cfg.stage3
        self.model = start_stage3(ctx, features, task)
        self.lm = features.lm
        self.lm_params = features.trainable_lm_parameters()  # LoRA adapters or every weight
        self.lm_grad_norm = None
        self.probe = DriftProbe(ctx, features) if ctx.cfg.run.diagnostics else None
        self.opt_lm = torch.optim.AdamW(self.lm_params, lr=c3.lm_lr, weight_decay=0.01, foreach=True)
        self.opt_gnn = torch.optim.AdamW(self.model.parameters(), lr=c3.gnn_lr, foreach=True)
        self.optimizers = {"lm": self.opt_lm, "gnn": self.opt_gnn}
        self.modules = nn.ModuleDict({"lm": self.lm.model, "gnn": self.model})
        self.epochs = c3.epochs
        self.loader = task.train_loader(c3.batch_size, "stage3", max_batches=c3.max_steps_per_epoch)
        self.warm = False
        self.lm_nodes_seen = 0
        self.refreshed_epoch = -1
        self.forward = wrap_modules(self.modules, ctx.dist)

    def start_epoch(self, epoch: int) -> None:
        """Freeze the LM during the warm-up epochs."""
        self.warm = epoch < self.ctx.cfg.stage3.warmup_epochs
        for p in self.lm_params:
            p.requires_grad_(not self.warm)

    def make_batches(self, epoch: int):
        """The training loader at ``epoch`` (this rank's share of each shuffled batch; cut
        after ``stage3.max_steps_per_epoch`` when set)."""
        self.loader.set_epoch(epoch)
        return self.loader

    def step(self, batch, epoch: int, i: int) -> float:
        """One step of both optimizers (the LM's skipped while warming up; its gradients
        clipped to norm 1)."""
        loss = self.forward(lambda: self.task.batch_loss(self.model, batch, self.features.cache_features,
                                                         lm_hook=self.lm_rows))
        self.opt_lm.zero_grad(set_to_none=True)
        self.opt_gnn.zero_grad(set_to_none=True)
        loss.backward()
        self.lm_grad_norm = grad_norm(self.lm_params)
        torch.nn.utils.clip_grad_norm_(self.lm_params, 1.0)
        if not self.warm:
            self.opt_lm.step()
        self.opt_gnn.step()
        return float(loss.detach())

    def lm_rows(self, blocks, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """Replace the cached input rows of at most ``lm_train_nodes`` text nodes of the batch
        (seeds first, then a seeded random choice) by LM rows computed with gradients, and
        write those rows back into the caches."""
        ctx, c3, text_types = self.ctx, self.ctx.cfg.stage3, self.ctx.text_types
        if self.warm or c3.lm_train_nodes == 0:
            return x
        first, last = blocks[0], blocks[-1]
        cand_t, cand_p = [], []
        for j, t in enumerate(text_types):
            ns = first.num_src(t)
            cand_t.append(torch.full((ns,), j, dtype=torch.long))
            cand_p.append(torch.arange(ns))
        ct, cp = torch.cat(cand_t), torch.cat(cand_p)
        is_seed = torch.cat([torch.arange(first.num_src(t)) < last.num_dst[t] for t in text_types])
        g = torch.Generator().manual_seed(derive_seed(ctx.cfg.run.seed, "s3-lm", ctx.global_step))
        rest = torch.nonzero(~is_seed).flatten()
        rest = rest[torch.randperm(rest.numel(), generator=g)]
        order = torch.cat([torch.nonzero(is_seed).flatten(), rest])
        if c3.lm_train_nodes > 0:
            order = order[:c3.lm_train_nodes]
        chosen = {t: cp[order][ct[order] == j] for j, t in enumerate(text_types)}
        ids = {t: first.src_nodes[t][p.to(first.src_nodes[t].device)].cpu() for t, p in chosen.items()}
        rows = self.features.encode_mixed(ids)
        self.lm_nodes_seen += sum(int(v.numel()) for v in ids.values())
        x = dict(x)
        for t, p in chosen.items():
            if p.numel():
                xt = x[t].clone()
                xt[p.to(ctx.device)] = rows[t].to(xt.dtype)
                x[t] = xt
            self.features.write_back(t, ids[t], rows[t], ctx.global_step)  # every rank: caches stay identical
        return x

    def end_epoch(self, epoch: int) -> dict:
        """Refresh the caches every ``refresh_every`` epochs (not while warming up), then
        validate."""
        c3 = self.ctx.cfg.stage3
        if c3.refresh_every and (epoch + 1) % c3.refresh_every == 0 and not self.warm:
            t0 = time.time()
            self.features.lm_weights_changed("stage3-training")
            self.features.encode_all(self.ctx.global_step)
            self.refreshed_epoch = epoch
            self.ctx.log(f"stage 3: cache refreshed in {time.time() - t0:.1f}s")
        val, _ = self.task.scores(self.model, "val", self.features.cache_features)
        return val

    def state_dict(self) -> dict:
        """LM nodes seen so far and the epoch of the last cache refresh."""
        return {"lm_nodes_seen": self.lm_nodes_seen, "refreshed_epoch": self.refreshed_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restore the counters of :meth:`state_dict`."""
        self.lm_nodes_seen = state["lm_nodes_seen"]
        self.refreshed_epoch = state["refreshed_epoch"]

    def finish(self) -> dict:
        """Save ``checkpoints/stage3.safetensors`` (LM, LoRA merged, and GNN); returns the
        stage's timing figures (epoch times, steps per epoch, LM nodes per epoch)."""
        c3 = self.ctx.cfg.stage3
        self.features.merge_lora()
        self.lm.model.requires_grad_(True)
        state = {f"lm.{k}": v for k, v in self.lm.model.state_dict().items()}
        state.update({f"gnn.{k}": v for k, v in self.model.state_dict().items()})
        self.ctx.ckpt.save_stage(3, state, {"lm_source": "stage3"})
        # the cache is current when the last refresh ran after the final epoch
        self.features.lm_weights_changed("stage3", cache_current=self.refreshed_epoch == c3.epochs - 1
                                         and self.features.cache_source == "stage3-training")
        ep = [r["epoch_time_s"] for r in self.ctx.history.get("stage3", []) if "epoch_time_s" in r]
        out = {"epoch_time_s": ep, "steps_per_epoch": len(self.loader),
               "lm_nodes_per_epoch": self.lm_nodes_seen / max(len(ep), 1)}
        if self.probe is not None:
            out["lm_drift"] = self.probe.measure()
        return out
