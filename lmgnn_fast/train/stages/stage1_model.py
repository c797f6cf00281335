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

__all__ = ["Stage1Heads", "build_heads", "load_heads", "has_task_model", "stage1_logits", "stage1_scores",
           "Stage1Predictor"]


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
        self.heads = load_heads(ctx, sd, features.hidden_size)
        features.lm.eval()
        self.has_metric = has_task_model(ctx, self.heads)

    def embed(self, t: str, ids: torch.Tensor) -> torch.Tensor | None:
        """LM rows ``[len(ids), hidden]`` of nodes ``ids`` of type ``t`` (``None``: no text)."""
        return self.features.encode_ids(t, ids) if t in self.ctx.text_types else None

    def logits(self, items: torch.Tensor) -> torch.Tensor:
        """Task-head outputs ``[len(items), C]``: node ids of the task's type, or edge ids."""
        return stage1_logits(self.ctx, self.task, self.heads, self.features.encode_ids, items)

    def scores(self, split: str) -> tuple[dict, dict | None]:
        """``(metrics, outputs)`` on ``split``; ``({}, None)`` when stage 1 has no model of
        the task (no task head; link prediction without the target relation)."""
        return stage1_scores(self.ctx, self.task, self.heads, self.features.encode_ids, split)

    def split_outputs(self, split: str) -> dict | None:
        """The evaluation's own outputs on ``split``."""
        return self.scores(split)[1]


def load_heads(ctx: RunContext, sd: dict, hidden: int) -> Stage1Heads:
    """The stage-1 heads of checkpoint tensors ``sd`` (keys ``s1.*``), in eval mode on the
    device (a run whose stage 1 had no task weight has no task head)."""
    heads = build_heads(ctx, hidden)
    hs_state = {k[3:]: v for k, v in sd.items() if k.startswith("s1.")}
    if heads.task_head is None:
        hs_state = {k: v for k, v in hs_state.items() if not k.startswith("task_head.")}
    strict = heads.task_head is None or any(k.startswith("task_head.") for k in hs_state)
    heads.load_state_dict(hs_state, strict=strict)
    return heads.eval()


def has_task_model(ctx: RunContext, heads: Stage1Heads) -> bool:
    """Whether the stage-1 heads model the target task: a task head (node or edge
    classification), the target relation among the decoder's (link prediction)."""
    t = ctx.task
    return (t.edge_type in ctx.relations) if t.type == "link_prediction" else heads.task_head is not None


@torch.no_grad()
def stage1_logits(ctx: RunContext, task: GNNTask, heads: Stage1Heads, enc, items: torch.Tensor) -> torch.Tensor:
    """Task-head outputs ``[len(items), C]`` of the stage-1 model: node ids of the task's
    type, or edge ids (``enc`` as in :func:`stage1_scores`)."""
    t = ctx.task
    if t.type == "node_classification":
        return heads.task_head(enc(t.node_type, items)).float().cpu()
    s, d = task.edge_endpoints(items)
    return heads.task_head(enc(t.edge_type[0], s), enc(t.edge_type[2], d)).float().cpu()


@torch.no_grad()
def stage1_scores(ctx: RunContext, task: GNNTask, heads: Stage1Heads, enc, split: str) -> tuple[dict, dict | None]:
    """``(metrics, outputs)`` of the stage-1 model on ``split`` under the evaluation protocol
    of the GNN stages; ``({}, None)`` when it has no model of the task.

    Args:
        ctx, task: the run's context and task.
        heads: the stage-1 heads (:func:`load_heads`).
        enc: ``enc(node_type, ids) -> [len(ids), hidden]``, the LM rows of nodes.
        split: ``"val"`` or ``"test"``.
    """
    if not has_task_model(ctx, heads):
        return {}, None
    t, g = ctx.task, ctx.graph
    items = task.items(split)
    if t.type == "link_prediction":
        r = ctx.relations.index(t.edge_type)
        s, d = items
        neg, valid = task.lp_candidates(split, s, d)
        hs, hd = enc(t.edge_type[0], s), enc(t.edge_type[2], d)
        hn = enc(t.edge_type[2], neg.reshape(-1)).view(neg.shape[0], neg.shape[1], -1)
        pos = heads.decoder(hs, hd, r).float().cpu()
        negs = heads.decoder.score_candidates(hs, hn, r).float().cpu()
        ranks = ranks_from_scores(pos, negs, valid)
        return ranking_metrics(ranks), {"src": s, "dst": d, "score": pos, "rank": ranks, "neg_score": negs,
                                        "valid": valid}
    logits = stage1_logits(ctx, task, heads, enc, items)
    if t.type == "node_classification":
        y = torch.as_tensor(g.labels[t.node_type])[items]
        return classification_metrics(logits, y, t.multilabel, ctx.cfg.task.threshold), \
            {"ids": items, "logits": logits}
    y = torch.as_tensor(g.edge_labels[t.edge_type])[items]
    return classification_metrics(logits, y, False), {"ids": items, "logits": logits}
