"""Stage 1 — the LM fine-tuned on the graph's task before the R-GCN reads its embeddings.

``stage1.objective`` chooses what it learns:

- ``task`` (default): the target task itself, one pass over its training items per epoch
  (at most ``stage1.max_items``): node or edge classification through a head on the pooled
  LM embedding; link prediction on the target relation's training edges, scored by the
  stage's DistMult (or dot) decoder. Stage 2 then starts from embeddings that already
  separate the task's classes, which the R-GCN combines with the graph.
- ``task+graph``: the same, plus ``lp_weight`` x link prediction over every relation whose
  endpoints carry text, one batch of ``batch_size`` edges per step.
- ``graph``: link prediction over the relations (``max_edges`` per epoch) plus
  ``task_weight`` x the task loss on ``task_batch_size`` items per step.

Link prediction: each step takes a batch of edges ``(s, r, d)`` drawn (seeded, balanced over
relations), encodes every node of the batch plus ``stage1.num_negatives`` uniform negatives
per destination type in one LM forward, and scores each source against *all* nodes of its
destination type in the batch (in-batch and sampled negatives) with a per-relation decoder;
loss: softmax cross-entropy of the true destination (other true destinations of the same
source in the batch are masked).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.data_parallel import rank_slice, shard_batches, wrap_modules
from lmgnn_fast.train.diagnostics import DriftProbe, grad_norm
from lmgnn_fast.train.features import FeatureSource
from lmgnn_fast.train.seeds import derive_seed
from lmgnn_fast.train.stages.stage1_model import Stage1Predictor, build_heads
from lmgnn_fast.train.tasks import GNNTask

__all__ = ["Stage1", "epoch_edges"]


def epoch_edges(ctx: RunContext, epoch: int, max_edges: int):
    """The epoch's training edges ``(rel, src, dst)``: at most ``max_edges`` (0: all) drawn
    (seeded, balanced over relations) from ``ctx.relations``, shuffled."""
    g = torch.Generator().manual_seed(derive_seed(ctx.cfg.run.seed, "stage1-edges", epoch))
    per = math.ceil(max_edges / max(len(ctx.relations), 1)) if max_edges > 0 else None
    rels, srcs, dsts = [], [], []
    for r, et in enumerate(ctx.relations):
        s, d = ctx.graph.edges(et)
        s, d = torch.as_tensor(s).long(), torch.as_tensor(d).long()
        if per is not None and s.numel() > per:
            pick = torch.randperm(s.numel(), generator=g)[:per]
            s, d = s[pick], d[pick]
        rels.append(torch.full((s.numel(),), r, dtype=torch.long))
        srcs.append(s)
        dsts.append(d)
    if not rels:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    rel, s, d = torch.cat(rels), torch.cat(srcs), torch.cat(dsts)
    perm = torch.randperm(rel.numel(), generator=g)
    return rel[perm], s[perm], d[perm]


class Stage1:
    """Stage 1 under the loop's :class:`~lmgnn_fast.train.loop.Stage` protocol.

    Args:
        ctx: the run context.
        features: the feature source (its LM is trained).
        task: the target task (items and edge endpoints for the task loss).
    """

    number = 1

    def __init__(self, ctx: RunContext, features: FeatureSource, task: GNNTask):
        self.ctx, self.features, self.task = ctx, features, task
        c1 = ctx.cfg.stage1
        features.load_lm("pretrained")
        torch.manual_seed(derive_seed(ctx.cfg.run.seed, "stage1-init"))
        self.heads = build_heads(ctx, features.hidden_size)
        lm = features.lm
        lm_params = features.trainable_lm_parameters()
        self.lm_params, self.lm_grad_norm = lm_params, None
        self.probe = DriftProbe(ctx, features) if ctx.cfg.run.diagnostics and ctx.text_types else None
        self.modules = nn.ModuleDict({"lm": lm.model, "s1": self.heads})
        groups = [{"params": lm_params, "lr": c1.lr},
                  {"params": self.heads.decoder.parameters(), "lr": c1.head_lr}]
        if self.heads.task_head is not None:
            groups.append({"params": self.heads.task_head.parameters(), "lr": c1.head_lr})
        self.opt = torch.optim.AdamW(groups, weight_decay=c1.weight_decay, foreach=True)
        self.optimizers = {"opt": self.opt}
        self.use_task = self.heads.task_head is not None
        # objective "task": node/edge classification trains the task head alone; link
        # prediction trains on the target relation (ctx.relations holds only it)
        self.use_lp = c1.lp_weight > 0 and len(ctx.relations) > 0 and not (c1.objective == "task" and self.use_task)
        # one pass over the task's items per epoch (objectives task and task+graph)
        self.task_steps = self.use_task and c1.objective != "graph"
        if not self.use_lp and not self.use_task:
            ctx.log("stage 1: nothing to train (no text relations and task_weight 0); saving the pretrained LM")
        self.epochs = c1.epochs if (self.use_lp or self.use_task) else 0
        self.task_items = task.items("train") if self.use_task else None
        self.num_task_items = 0
        if self.use_task:
            n = self.task_items.numel()
            self.num_task_items = n if not c1.max_items else min(n, c1.max_items)
        self.forward = wrap_modules(self.modules, ctx.dist)

    def start_epoch(self, epoch: int) -> None:
        """Nothing to prepare."""

    def make_batches(self, epoch: int) -> list:
        """This rank's share of the epoch's edge batches ``(rel, src, dst)`` (or, without
        link prediction, one ``None`` per task batch)."""
        c1 = self.ctx.cfg.stage1
        out = []
        if self.task_steps:  # one step per task batch; an edge batch rides along with each
            n_steps = math.ceil(self.num_task_items / c1.task_batch_size)
            if not self.use_lp:
                return shard_batches([None] * n_steps, self.ctx.dist)
            edges = epoch_edges(self.ctx, epoch, n_steps * c1.batch_size)
        elif self.use_lp:  # link prediction only: the target relation (task) or all relations
            edges = epoch_edges(self.ctx, epoch, c1.max_items if c1.objective == "task" else c1.max_edges)
        elif self.use_task:
            return shard_batches([None] * math.ceil(self.task_items.numel() / c1.task_batch_size), self.ctx.dist)
        else:
            return shard_batches(out, self.ctx.dist)
        rel, s, d = edges
        out = [(rel[i:i + c1.batch_size], s[i:i + c1.batch_size], d[i:i + c1.batch_size])
               for i in range(0, rel.numel(), c1.batch_size)]
        return shard_batches(out, self.ctx.dist)

    def step(self, batch, epoch: int, i: int) -> float:
        """One AdamW step (gradients clipped to norm 1) on the batch's weighted loss."""
        loss = self.forward(lambda: self.batch_loss(batch, epoch, i))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.lm_grad_norm = grad_norm(self.lm_params)
        torch.nn.utils.clip_grad_norm_(self.modules.parameters(), 1.0)
        self.opt.step()
        return float(loss.detach())

    def end_epoch(self, epoch: int) -> dict:
        """No validation during stage 1."""
        return {}

    def state_dict(self) -> dict:
        """No state beyond modules and optimizer."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """No state beyond modules and optimizer."""

    def batch_loss(self, batch, epoch: int, i: int):
        """``lp_weight * link loss + task_weight * task loss`` of batch ``i``: every node
        the batch needs goes through the LM in one forward."""
        ctx, c1 = self.ctx, self.ctx.cfg.stage1
        gen = torch.Generator().manual_seed(derive_seed(ctx.cfg.run.seed, "stage1", epoch, i))
        ids_by_type: dict[str, list] = {}
        lp = self._lp_loss(*batch, gen, ids_by_type) if self.use_lp and batch is not None else None
        tl = None
        if self.use_task:
            items = self.task_items
            perm = torch.randperm(items.numel(), generator=torch.Generator().manual_seed(
                derive_seed(ctx.cfg.run.seed, "stage1-task", epoch)))
            nb = max(1, math.ceil((self.num_task_items if self.task_steps else items.numel()) / c1.task_batch_size))
            j = i % nb
            tl = self._task_loss(rank_slice(items[perm[j * c1.task_batch_size:(j + 1) * c1.task_batch_size]],
                                            ctx.dist), ids_by_type)
        uniq, lookup = {}, {}
        for t, parts in ids_by_type.items():
            u = torch.unique(torch.cat(parts))
            uniq[t] = u
            lookup[t] = {int(v): k for k, v in enumerate(u.tolist())}
        rows = self.features.encode_mixed(uniq)
        loss = 0.0
        if lp is not None:
            loss = loss + c1.lp_weight * lp(rows, lookup)
        if tl is not None:
            loss = loss + c1.task_weight * tl(rows, lookup)
        return loss

    def _lp_loss(self, rel, s, d, gen, ids_by_type):
        """Registers the nodes this LP batch needs in ``ids_by_type`` and returns a closure
        computing the loss from the encoded rows."""
        rels, dev, decoder = self.ctx.relations, self.ctx.device, self.heads.decoder
        k = self.ctx.cfg.stage1.num_negatives
        st = [rels[int(r)][0] for r in rel]
        dt = [rels[int(r)][2] for r in rel]
        for t, v in zip(st, s):
            ids_by_type.setdefault(t, []).append(v.view(1))
        for t, v in zip(dt, d):
            ids_by_type.setdefault(t, []).append(v.view(1))
        for t in sorted(set(dt)):
            ids_by_type.setdefault(t, []).append(torch.randint(0, self.ctx.graph.num_nodes[t], (k,), generator=gen))

        def loss(rows, lookup):
            hs = torch.stack([rows[t][lookup[t][int(v)]] for t, v in zip(st, s)])
            q = decoder.query(hs, rel.to(dev))
            total = 0.0
            for t in sorted(set(dt)):
                sel = torch.tensor([x == t for x in dt])
                logits = q[sel.to(dev)] @ rows[t].T
                target = torch.tensor([lookup[t][int(v)] for v in d[sel]], device=dev)
                r_s, s_s = rel[sel], s[sel]
                same = (r_s.unsqueeze(0) == r_s.unsqueeze(1)) & (s_s.unsqueeze(0) == s_s.unsqueeze(1))
                same &= target.cpu().unsqueeze(0) != target.cpu().unsqueeze(1)
                a, b = torch.nonzero(same, as_tuple=True)
                if a.numel():
                    logits = logits.index_put((a.to(dev), target[b.to(dev)]), torch.tensor(float("-inf"), device=dev))
                total = total + F.cross_entropy(logits, target) * (int(sel.sum()) / rel.numel())
            return total

        return loss

    def _task_loss(self, ids, ids_by_type):
        """Registers the nodes of task items ``ids``; returns a closure giving the task loss."""
        task, g, dev, head = self.ctx.task, self.ctx.graph, self.ctx.device, self.heads.task_head
        if task.type == "node_classification":
            ids_by_type.setdefault(task.node_type, []).append(ids)

            def loss(rows, lookup):
                h = rows[task.node_type][torch.tensor([lookup[task.node_type][int(v)] for v in ids], device=dev)]
                return head.loss(head(h), torch.as_tensor(g.labels[task.node_type])[ids].to(dev))
            return loss
        s, d = self.task.edge_endpoints(ids)
        st, _, dt = task.edge_type
        ids_by_type.setdefault(st, []).append(s)
        ids_by_type.setdefault(dt, []).append(d)

        def loss(rows, lookup):
            hs = rows[st][torch.tensor([lookup[st][int(v)] for v in s], device=dev)]
            hd = rows[dt][torch.tensor([lookup[dt][int(v)] for v in d], device=dev)]
            return head.loss(head(hs, hd), torch.as_tensor(g.edge_labels[task.edge_type])[ids].to(dev))
        return loss

    def finish(self) -> dict:
        """Save ``checkpoints/stage1.safetensors`` (LM, LoRA merged, and heads); the LM now
        holds stage 1."""
        self.features.merge_lora()
        state = {f"lm.{k}": v for k, v in self.features.lm.model.state_dict().items()}
        state.update({f"s1.{k}": v for k, v in self.heads.state_dict().items()})
        self.ctx.ckpt.save_stage(1, state, {"relations": repr(self.ctx.relations)})
        self.features.lm_weights_changed("stage1")
        return {"lm_drift": self.probe.measure()} if self.probe is not None else {}

    @staticmethod
    def evaluate(ctx: RunContext, features: FeatureSource, task: GNNTask) -> tuple[dict, None]:
        """Val/test metrics of the stage-1 checkpoint: the LM alone with its task head, or
        for link prediction its decoder, under the same protocol as the GNN stages.

        Returns:
            ``({"val": metrics, "test": metrics}, None)`` (no graph model).
        """
        p = Stage1Predictor(ctx, features, task)
        return {split: p.scores(split)[0] for split in ("val", "test")}, None

    @staticmethod
    def predictor(ctx: RunContext, features: FeatureSource, task: GNNTask) -> "Stage1Predictor":
        """What the outputs read when stage 1 is the run's final model."""
        return Stage1Predictor(ctx, features, task)
