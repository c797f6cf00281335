"""Stage 3, ``stage3.objective glem`` — the LM and the graph model train on each other.

After stage 2 the graph model fits its training labels (loss near zero), so joint training
on those labels alone sends almost no gradient into the LM. Here stage 3 gives the LM a
signal it has not seen: the graph model's predictions. Each of ``stage3.epochs`` *rounds*
(after GLEM, Zhao et al. 2023, "Learning on Large-scale Text-attributed Graphs via
Variational Inference") has two steps:

1. **LM step (M).** The current graph model (eval mode) is the *teacher*: its output
   distribution on every item of the task is computed once. The LM, with stage 1's task head
   (or decoder), trains on the gold training labels plus ``stage3.pseudo_weight`` x the
   teacher's soft targets — node classification: the nodes of the task's type outside the
   training split whose teacher confidence is at least ``stage3.pseudo_min_confidence``
   (their true labels are never read); edge classification: likewise the edges of the
   relation; link prediction: for each training edge, the teacher's distribution over the
   batch's candidate destinations (distillation; the LM learns which negatives the graph
   finds plausible). At most ``stage3.lm_items`` LM texts per round (auto: the stage-1 CPU
   budget on a CPU, every item on a GPU).
2. **Graph step (E).** Every embedding cache is refreshed with the new LM; the graph model
   continues training on the gold labels over the new rows for up to
   ``stage3.gnn_epochs`` epochs, validating after each (the round's remaining epochs are
   skipped after ``stage2.patience`` epochs without a new best of the stage).

The stage keeps the LM and graph model of its best validation epoch, so it never hands over
a model worse on validation than the best it saw (the first graph epoch of the first round
starts from stage 2's weights on the new LM rows).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmgnn_fast.train.budget import CPU_STAGE1_TEXTS
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.data import edge_endpoints_all
from lmgnn_fast.train.data_parallel import shard_batches, wrap_modules
from lmgnn_fast.train.diagnostics import DriftProbe, grad_norm
from lmgnn_fast.train.features import FeatureSource
from lmgnn_fast.train.seeds import derive_seed
from lmgnn_fast.train.stages.common import GNNCheckpointReader, start_stage3
from lmgnn_fast.train.stages.stage1_model import build_heads, load_heads
from lmgnn_fast.train.tasks import GNNTask

__all__ = ["Stage3GLEM", "soft_cross_entropy"]

# sampling seed of the teacher's outputs (fixed, like the evaluation's)
_TEACHER_SEED = 777


def soft_cross_entropy(logits: Tensor, target: Tensor, multilabel: bool = False) -> Tensor:
    """Cross-entropy of ``logits [N, C]`` against soft targets ``target [N, C]`` (rows of
    probabilities; multi-label: a probability per class, binary cross-entropy). Masked
    entries (``-inf`` logits with target 0) contribute nothing."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, target)
    logp = torch.log_softmax(logits, dim=-1)
    logp = torch.where(target > 0, logp, torch.zeros_like(logp))
    return -(target * logp).sum(-1).mean()


class Stage3GLEM(GNNCheckpointReader):
    """Stage 3 with ``stage3.objective glem`` under the loop's ``Stage`` protocol.

    Epoch ``e`` of the loop is step ``e % (1 + gnn_epochs)`` of round ``e // (1 +
    gnn_epochs)``: step 0 trains the LM, steps 1.. the graph model.

    Args:
        ctx: the run context.
        features: the feature source (its LM is trained, its caches refreshed).
        task: the target task.
    """

    number = 3

    def __init__(self, ctx: RunContext, features: FeatureSource, task: GNNTask):
        self.ctx, self.features, self.task = ctx, features, task
        c3 = ctx.cfg.stage3
        self.model = start_stage3(ctx, features, task)
        torch.manual_seed(derive_seed(ctx.cfg.run.seed, "stage3-heads"))
        # stage 1's heads match the LM it trained; new ones when stage 1 did not run
        self.heads = load_heads(ctx, ctx.ckpt.load_stage(1), features.hidden_size).train() \
            if ctx.ckpt.has_stage(1) else build_heads(ctx, features.hidden_size)
        self.lm = features.lm
        self.lm_params = features.trainable_lm_parameters()
        self.lm_grad_norm = None
        self.probe = DriftProbe(ctx, features) if ctx.cfg.run.diagnostics else None
        c1 = ctx.cfg.stage1
        self.opt_lm = torch.optim.AdamW([{"params": self.lm_params, "lr": c3.lm_lr},
                                         {"params": self.heads.parameters(), "lr": c1.head_lr}],
                                        weight_decay=0.01, foreach=True)
        self.opt_gnn = torch.optim.AdamW(self.model.parameters(), lr=ctx.cfg.stage2.lr, foreach=True)
        self.optimizers = {"lm": self.opt_lm, "gnn": self.opt_gnn}
        self.modules = nn.ModuleDict({"lm": self.lm.model, "s1": self.heads, "gnn": self.model})
        self.period = 1 + c3.gnn_epochs
        self.epochs = c3.epochs * self.period
        self.loader = task.train_loader(ctx.cfg.stage2.batch_size, "stage3")
        self.forward = wrap_modules(self.modules, ctx.dist)
        t = ctx.task
        if t.type == "link_prediction":
            self.rel = ctx.relations.index(t.edge_type) if t.edge_type in ctx.relations else 0
        self.teacher: Tensor | None = None  # per round: probabilities, or the teacher's rows
        self.teacher_round = -1
        self._all_ends: tuple[Tensor, Tensor] | None = None
        self.best_value, self.best_epoch, self.best_state = None, -1, None
        self.round_best = None
        self.lm_nodes_seen = 0
        self.cache_epoch = -1  # the loop epoch whose LM filled the caches (-1: stage 1's)
        self.pseudo_counts: dict[str, int] = {}  # round -> pseudo-labelled items
        self.lm_items = self._lm_items()

    # ----------------------------------------------------------------- schedule
    def _phase(self, epoch: int) -> tuple[int, int]:
        return divmod(epoch, self.period)

    def _lm_items(self) -> int:
        """Task items per LM step: ``stage3.lm_items``, or auto (CPU: the stage-1 budget of
        LM texts; GPU: every item)."""
        c3, t = self.ctx.cfg.stage3, self.ctx.task
        if c3.lm_items is not None:
            return int(c3.lm_items)
        if self.ctx.device.type != "cpu":
            return 0
        per = {"link_prediction": 2 + self.ctx.cfg.stage1.num_negatives / max(1, self.ctx.cfg.stage1.batch_size),
               "edge_classification": 2.0}.get(t.type, 1.0)
        return int(CPU_STAGE1_TEXTS / per)

    def start_epoch(self, epoch: int) -> None:
        """LM step: the teacher's targets from the current graph model. Graph step: the LM
        frozen, the caches refreshed with the current LM once per round."""
        rnd, phase = self._phase(epoch)
        lm_step = phase == 0
        for p in self.lm_params:
            p.requires_grad_(lm_step)
        if lm_step:
            self.round_best = None
            if self.teacher_round != rnd:  # (a resumed LM step keeps its saved teacher)
                self.teacher, self.teacher_round = self._teacher(), rnd
            self.lm_grad_norm = None
        else:
            self.lm_grad_norm = None
            self._refresh(epoch - phase)

    def _refresh(self, lm_epoch: int) -> None:
        """Fill the caches with the LM as it was after loop epoch ``lm_epoch`` (its LM
        step) unless they already hold it."""
        if self.cache_epoch == lm_epoch:
            return
        self.features.lm_weights_changed("stage3-training")
        self.features.encode_all(self.ctx.global_step)
        self.cache_epoch = lm_epoch

    # ----------------------------------------------------------------- teacher
    @torch.no_grad()
    def _teacher(self) -> Tensor:
        """The graph model's soft targets: node classification ``[N_type, C]`` probabilities,
        edge classification ``[E_rel, C]``, link prediction the output rows of the source
        and destination types ``[N_src + N_dst, hidden]``."""
        ctx, task, t, feats = self.ctx, self.task, self.ctx.task, self.features.cache_features
        self.model.eval()
        if t.type == "node_classification":
            ids = torch.arange(ctx.graph.num_nodes[t.node_type])
            logits = self.model.head(task.embed_nodes(self.model, t.node_type, ids, feats, _TEACHER_SEED)).float()
            return (torch.sigmoid(logits) if t.multilabel else torch.softmax(logits, -1)).cpu()
        st, _, dt = t.edge_type
        if t.type == "edge_classification":
            s, d = self._ends()
            ok = s >= 0
            hs = task.embed_unique(self.model, st, s.clamp(min=0), feats, _TEACHER_SEED)
            hd = task.embed_unique(self.model, dt, d.clamp(min=0), feats, _TEACHER_SEED + 1)
            p = torch.softmax(self.model.head(hs, hd).float(), -1).cpu()
            p[~ok] = 0
            return p
        hs = task.embed_nodes(self.model, st, torch.arange(ctx.graph.num_nodes[st]), feats, _TEACHER_SEED)
        hd = task.embed_nodes(self.model, dt, torch.arange(ctx.graph.num_nodes[dt]), feats, _TEACHER_SEED + 1)
        return torch.cat([hs, hd]).float().cpu()

    def _ends(self) -> tuple[Tensor, Tensor]:
        """``(src, dst)`` of every edge of the task's relation by edge id (read once)."""
        if self._all_ends is None:
            self._all_ends = edge_endpoints_all(self.ctx.graph, self.ctx.task.edge_type)
        return self._all_ends

    def _pseudo_items(self) -> Tensor:
        """Items outside the training split whose teacher confidence passes the threshold
        (classification tasks; their labels are never read)."""
        t, thr = self.ctx.task, self.ctx.cfg.stage3.pseudo_min_confidence
        n = self.teacher.shape[0]
        train = torch.zeros(n, dtype=torch.bool)
        train[self.task.items("train")] = True
        conf = self.teacher.max(-1).values if not t.multilabel else \
            torch.maximum(self.teacher, 1 - self.teacher).min(-1).values
        keep = ~train & (conf >= thr)
        if t.type == "edge_classification":
            keep &= self._ends()[0] >= 0
        return torch.nonzero(keep).flatten()

    # ----------------------------------------------------------------- batches
    def make_batches(self, epoch: int):
        """LM step: this rank's share of the round's item batches ``(items, is_pseudo)``.
        Graph step: the training loader (empty once the round has stopped improving)."""
        ctx = self.ctx
        rnd, phase = self._phase(epoch)
        if phase > 0:
            if self.round_best is not None and ctx.cfg.stage2.patience and \
                    epoch - self.round_best >= ctx.cfg.stage2.patience:
                return []
            self.loader.set_epoch(epoch)
            return self.loader
        bs = ctx.cfg.stage1.task_batch_size
        g = torch.Generator().manual_seed(derive_seed(ctx.cfg.run.seed, "stage3-glem", rnd))
        if ctx.task.type == "link_prediction":
            s, d = self.task.items("train")
            idx = torch.randperm(s.numel(), generator=g)
            if self.lm_items:
                idx = idx[:self.lm_items]
            bs = ctx.cfg.stage1.batch_size
            batches = [idx[i:i + bs] for i in range(0, idx.numel(), bs)]
            self.pseudo_counts[str(rnd)] = 0
            return shard_batches(batches, ctx.dist)
        gold = self.task.items("train")
        pseudo = self._pseudo_items()
        self.pseudo_counts[str(rnd)] = int(pseudo.numel())
        gold = gold[torch.randperm(gold.numel(), generator=g)]
        pseudo = pseudo[torch.randperm(pseudo.numel(), generator=g)]
        if self.lm_items:  # gold first, up to half the budget; pseudo-labelled items fill the rest
            ng = min(gold.numel(), max(self.lm_items // 2, self.lm_items - pseudo.numel()))
            gold, pseudo = gold[:ng], pseudo[:max(0, self.lm_items - ng)]
        items = torch.cat([gold, pseudo])
        flag = torch.cat([torch.zeros(gold.numel(), dtype=torch.bool), torch.ones(pseudo.numel(), dtype=torch.bool)])
        perm = torch.randperm(items.numel(), generator=g)
        items, flag = items[perm], flag[perm]
        batches = [(items[i:i + bs], flag[i:i + bs]) for i in range(0, items.numel(), bs)]
        return shard_batches(batches, ctx.dist)

    # ----------------------------------------------------------------- steps
    def step(self, batch, epoch: int, i: int) -> float:
        """One step of the LM (LM step) or of the graph model (graph step)."""
        _, phase = self._phase(epoch)
        if phase > 0:
            loss = self.forward(lambda: self.task.batch_loss(self.model, batch, self.features.cache_features))
            self.opt_gnn.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_gnn.step()
            return float(loss.detach())
        loss = self.forward(lambda: self._lm_loss(batch, epoch, i))
        self.opt_lm.zero_grad(set_to_none=True)
        loss.backward()
        self.lm_grad_norm = grad_norm(self.lm_params)
        torch.nn.utils.clip_grad_norm_(list(self.lm_params) + list(self.heads.parameters()), 1.0)
        self.opt_lm.step()
        return float(loss.detach())

    def _lm_loss(self, batch, epoch: int, i: int) -> Tensor:
        ctx, t, dev, w = self.ctx, self.ctx.task, self.ctx.device, self.ctx.cfg.stage3.pseudo_weight
        if t.type == "link_prediction":
            return self._lm_link_loss(batch, epoch, i)
        items, is_pseudo = batch
        head = self.heads.task_head
        if t.type == "node_classification":
            rows = self.features.encode_mixed({t.node_type: items})[t.node_type]
            logits = head(rows)
            y = torch.as_tensor(ctx.graph.labels[t.node_type])
        else:
            s, d = self.task.edge_endpoints(items)
            st, _, dt = t.edge_type
            if st == dt:
                both = self.features.encode_mixed({st: torch.cat([s, d])})[st]
                hs, hd = both[:s.numel()], both[s.numel():]
            else:
                r = self.features.encode_mixed({st: s, dt: d})
                hs, hd = r[st], r[dt]
            logits = head(hs, hd)
            y = torch.as_tensor(ctx.graph.edge_labels[t.edge_type])
        self.lm_nodes_seen += int(items.numel()) * (1 if t.type == "node_classification" else 2)
        gold, pseudo = ~is_pseudo, is_pseudo
        loss = logits.sum() * 0.0
        if gold.any():
            loss = loss + head.loss(logits[gold.to(dev)], y[items[gold]].to(dev)) * (int(gold.sum()) / items.numel())
        if pseudo.any() and w > 0:
            target = self.teacher[items[pseudo]].to(dev)
            loss = loss + w * soft_cross_entropy(logits[pseudo.to(dev)].float(), target, t.multilabel) \
                * (int(pseudo.sum()) / items.numel())
        return loss

    def _lm_link_loss(self, idx: Tensor, epoch: int, i: int) -> Tensor:
        """Link prediction: each training edge's true destination against the batch's
        destinations plus uniform negatives (other true destinations of the same source
        masked), cross-entropy to the truth plus ``pseudo_weight`` x cross-entropy to the
        teacher's distribution over the same candidates."""
        ctx, t, dev = self.ctx, self.ctx.task, self.ctx.device
        st, _, dt = t.edge_type
        s_all, d_all = self.task.items("train")
        s, d = s_all[idx], d_all[idx]
        gen = torch.Generator().manual_seed(derive_seed(ctx.cfg.run.seed, "stage3-glem-neg", epoch, i))
        neg = torch.randint(0, ctx.graph.num_nodes[dt], (ctx.cfg.stage1.num_negatives,), generator=gen)
        cand = torch.unique(torch.cat([d, neg]))
        if st == dt:
            u = torch.unique(torch.cat([s, cand]))
            rows = self.features.encode_mixed({st: u})[st]
            pos_of = {int(v): k for k, v in enumerate(u.tolist())}
            hs = rows[torch.tensor([pos_of[int(v)] for v in s], device=dev)]
            hc = rows[torch.tensor([pos_of[int(v)] for v in cand], device=dev)]
        else:
            r = self.features.encode_mixed({st: s, dt: cand})
            hs, hc = r[st], r[dt]
        self.lm_nodes_seen += int(s.numel() + cand.numel())
        dec = self.heads.decoder
        logits = dec.query(hs, self.rel) @ hc.T  # [B, K]
        target = torch.searchsorted(cand, d)
        # other true destinations of the same source among the candidates
        same = (s.unsqueeze(1) == s.unsqueeze(0)) & (d.unsqueeze(1) != d.unsqueeze(0))
        mask = torch.zeros(logits.shape, dtype=torch.bool)
        a, b = torch.nonzero(same, as_tuple=True)
        mask[a, target[b]] = True
        logits = logits.masked_fill(mask.to(dev), float("-inf"))
        loss = F.cross_entropy(logits, target.to(dev))
        w = ctx.cfg.stage3.pseudo_weight
        if w > 0:
            n_src = ctx.graph.num_nodes[st]
            ts, tc = self.teacher[s].to(dev), self.teacher[n_src + cand].to(dev)
            with torch.no_grad():
                t_logits = self.model.head.score_candidates(ts, tc.unsqueeze(0).expand(ts.shape[0], -1, -1)).float()
                t_logits = t_logits.masked_fill(mask.to(dev), float("-inf"))
                p = torch.softmax(t_logits, -1)
            loss = loss + w * soft_cross_entropy(logits.float(), p)
        return loss

    # ----------------------------------------------------------------- epochs
    def end_epoch(self, epoch: int) -> dict:
        """Graph step: validate, keep the stage's best LM and graph model. LM step: no
        validation (the caches are refreshed at the next graph step)."""
        _, phase = self._phase(epoch)
        if phase == 0:
            return {}
        if self.round_best is None:
            self.round_best = epoch
        val, _ = self.task.scores(self.model, "val", self.features.cache_features)
        v = val.get(self.ctx.task.primary_metric, float("nan"))
        if self.best_value is None or v > self.best_value:
            self.best_value, self.best_epoch, self.round_best = v, epoch, epoch
            self.best_state = {"gnn": {k: x.detach().clone() for k, x in self.model.state_dict().items()},
                               "lm": {k: x.detach().clone() for k, x in self.lm.model.state_dict().items()},
                               "cache_epoch": self.cache_epoch}
        return val

    def state_dict(self) -> dict:
        """Best epoch (value, number, weights), the round's teacher, counters."""
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "best_state": self.best_state,
                "teacher": self.teacher, "teacher_round": self.teacher_round, "round_best": self.round_best,
                "lm_nodes_seen": self.lm_nodes_seen, "pseudo_counts": dict(self.pseudo_counts)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; the caches are refilled from the restored LM."""
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.best_state = state["best_state"] or None
        self.teacher, self.teacher_round = state["teacher"], state["teacher_round"]
        self.round_best = state["round_best"]
        self.lm_nodes_seen, self.pseudo_counts = state["lm_nodes_seen"], dict(state["pseudo_counts"])
        self.cache_epoch = -2  # unknown: refresh at the next graph step

    def finish(self) -> dict:
        """Keep the best epoch's LM and graph model; save ``checkpoints/stage3.safetensors``."""
        cache_current = True
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state["gnn"])
            self.lm.model.load_state_dict(self.best_state["lm"])
            cache_current = self.best_state["cache_epoch"] == self.cache_epoch
        self.features.merge_lora()
        self.lm.model.requires_grad_(True)
        state = {f"lm.{k}": v for k, v in self.lm.model.state_dict().items()}
        state.update({f"gnn.{k}": v for k, v in self.model.state_dict().items()})
        self.ctx.ckpt.save_stage(3, state, {"lm_source": "stage3", "objective": "glem",
                                            "best_epoch": str(self.best_epoch)})
        self.features.lm_weights_changed("stage3", cache_current=cache_current and self.cache_epoch >= 0)
        out = {"objective": "glem", "best_epoch": self.best_epoch,
               "best_round": self.best_epoch // self.period if self.best_epoch >= 0 else -1,
               "pseudo_items_per_round": [self.pseudo_counts[k] for k in sorted(self.pseudo_counts, key=int)],
               "lm_nodes_per_round": self.lm_nodes_seen / max(1, self.ctx.cfg.stage3.epochs)}
        if self.probe is not None:
            out["lm_drift"] = self.probe.measure()
        return out
