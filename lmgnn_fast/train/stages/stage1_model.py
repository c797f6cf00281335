"""Stage 1's model of the task: the LM's pooled embedding with a classification head (node
or edge classification) or a per-relation link decoder, as trained by ``stage1.Stage1``
and read back from its checkpoint for evaluation and outputs."""
from __future__ import annotations

import torch
from torch import nn

from lmgnn_fast.nn import EdgeHead, LinkDecoder, NodeHead
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.features import FeatureSource
from lmgnn_fast.train.metrics import classification_metrics, ranking_metrics, ranks_from_scores
from lmgnn_fast.train.tasks import GNNTask

__all__ = ["Stage1Heads", "build_heads", "Stage1Predictor"]


class Stage1Heads(nn.Module):
    """The stage-1 heads on LM embeddings: a per-relation link decoder and, with a task
    weight, the target task's classification head.

    Args:
        hidden: LM width.
        num_relations: relations the decoder scores.
        decoder: ``"distmult"`` or ``"dot"``.
        task_type, num_classes, multilabel: the target task.
        with_task_head: build the classification head (node or edge classification only).
    """

    def __init__(self, hidden: int, num_relations: int, decoder: str, task_type: str, num_classes: int | None,
                 multilabel: bool, with_task_head: bool):
        super().__init__()
        self.decoder = LinkDecoder(num_relations, hidden, kind=decoder)
        self.task_head = None
        if with_task_head:
            if task_type == "node_classification":
                self.task_head = NodeHead(hidden, num_classes, multilabel=multilabel, dropout=0.1)
            elif task_type == "edge_classification":
                self.task_head = EdgeHead(hidden, num_classes, dropout=0.1)


def build_heads(ctx: RunContext, hidden: int) -> Stage1Heads:
    t = ctx.task
    return Stage1Heads(hidden, len(ctx.relations), ctx.cfg.task.decoder, t.type, t.num_classes, t.multilabel,
                       ctx.cfg.stage1.task_weight > 0).to(ctx.device)


class Stage1Predictor:
    """The stage-1 checkpoint as a model of the task: the LM's pooled embedding, its task
    head (node/edge classification) or its decoder (link prediction, the target relation
    when stage 1 trained on it).

    Args:
        ctx, features, task: the run's context, feature source and task.
    """

    stage = 1

    def __init__(self, ctx: RunContext, features: FeatureSource, task: GNNTask):
        self.ctx, self.features, self.task = ctx, features, task
        sd = ctx.ckpt.load_stage(1)
        features.load_lm("stage1")
        heads = build_heads(ctx, features.hidden_size)
        hs_state = {k[3:]: v for k, v in sd.items() if k.startswith("s1.")}
        if heads.task_head is None:
            hs_state = {k: v for k, v in hs_state.items() if not k.startswith("task_head.")}
        strict = heads.task_head is None or any(k.startswith("task_head.") for k in hs_state)
        heads.load_state_dict(hs_state, strict=strict)
        heads.eval()
        features.lm.eval()
        self.heads = heads
        t = ctx.task
        self.has_metric = (t.edge_type in ctx.relations) if t.type == "link_prediction" else heads.task_head is not None

    def embed(self, t: str, ids: torch.Tensor) -> torch.Tensor | None:
        """LM rows ``[len(ids), hidden]`` of nodes ``ids`` of type ``t`` (``None``: no text)."""
        return self.features.encode_ids(t, ids) if t in self.ctx.text_types else None

    @torch.no_grad()
    def logits(self, items: torch.Tensor) -> torch.Tensor:
        """Task-head outputs ``[len(items), C]``: node ids of the task's type, or edge ids."""
        t, enc = self.ctx.task, self.features.encode_ids
        if t.type == "node_classification":
            return self.heads.task_head(enc(t.node_type, items)).float().cpu()
        s, d = self.task.edge_endpoints(items)
        return self.heads.task_head(enc(t.edge_type[0], s), enc(t.edge_type[2], d)).float().cpu()

    @torch.no_grad()
    def scores(self, split: str) -> tuple[dict, dict | None]:
        """``(metrics, outputs)`` on ``split``; ``({}, None)`` when stage 1 has no model of
        the task (no task head; link prediction without the target relation)."""
        if not self.has_metric:
            return {}, None
        ctx, t, g, enc, heads = self.ctx, self.ctx.task, self.ctx.graph, self.features.encode_ids, self.heads
        items = self.task.items(split)
        if t.type == "link_prediction":
            r = ctx.relations.index(t.edge_type)
            s, d = items
            neg, valid = self.task.lp_candidates(split, s, d)
            hs, hd = enc(t.edge_type[0], s), enc(t.edge_type[2], d)
            hn = enc(t.edge_type[2], neg.reshape(-1)).view(neg.shape[0], neg.shape[1], -1)
            pos = heads.decoder(hs, hd, r).float().cpu()
            ranks = ranks_from_scores(pos, heads.decoder.score_candidates(hs, hn, r).float().cpu(), valid)
            return ranking_metrics(ranks), {"src": s, "dst": d, "score": pos, "rank": ranks}
        logits = self.logits(items)
        if t.type == "node_classification":
            y = torch.as_tensor(g.labels[t.node_type])[items]
            return classification_metrics(logits, y, t.multilabel, ctx.cfg.task.threshold), \
                {"ids": items, "logits": logits}
        y = torch.as_tensor(g.edge_labels[t.edge_type])[items]
        return classification_metrics(logits, y, False), {"ids": items, "logits": logits}

    def split_outputs(self, split: str) -> dict | None:
        """The evaluation's own outputs on ``split``."""
        return self.scores(split)[1]
