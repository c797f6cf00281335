"""The two implementations of :class:`~lmgnn_fast.inference.protocol.TaskModel`: the stage-1
model (LM rows, task head or link decoder) and the graph model of stages 2 and 3 (R-GCN
over the LM rows, its head), built from a run's checkpoint with the trainer's own builders
and evaluated with the trainer's own evaluation functions (so ``evaluate`` reproduces the
training's metrics)."""
from __future__ import annotations

import torch
from torch import Tensor

from lmgnn_fast.inference.view import GraphView, PredictError
from lmgnn_fast.train import builders
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.stages.common import OUTPUT_SEED, gnn_state
from lmgnn_fast.train.stages.stage1_model import has_task_model, load_heads, stage1_scores
from lmgnn_fast.train.tasks import GNNTask

__all__ = ["LMTaskModel", "GNNTaskModel", "load_task_model", "OUTPUT_SEED"]


def _unique(idx: Tensor) -> tuple[Tensor, Tensor]:
    return torch.unique(idx.long(), return_inverse=True)


class LMTaskModel:
    """Stage 1's model: a node's row is the LM's pooled embedding of its text; the task head
    scores classes, the link decoder (the target relation's) scores links.

    Args:
        ctx, task: the run's context and task.
        heads: the stage-1 heads (``Stage1Heads``) of the checkpoint.
        table: per text node type, the LM rows of the run's nodes ``[N_t, H]``.
    """

    stage = 1

    def __init__(self, ctx: RunContext, task: GNNTask, heads, table: dict[str, Tensor]):
        self.ctx, self.task, self.heads, self.table = ctx, task, heads, table
        self.hidden_size = int(next(iter(table.values())).shape[1]) if table else 0
        t = ctx.task
        self._rel = ctx.relations.index(t.edge_type) if t.type == "link_prediction" and has_task_model(ctx, heads) \
            else None

    def embed(self, view: GraphView, targets: dict[str, Tensor], seed: int = OUTPUT_SEED) -> dict[str, Tensor]:
        """LM rows of the target nodes (no graph: ``seed`` is unused)."""
        out = {}
        for t, idx in targets.items():
            if t not in self.table:
                raise PredictError(f"node type {t!r} has no text: the stage-1 model (the LM) has no rows for it")
            out[t] = view.lm_rows(t, idx)
        return out

    @torch.no_grad()
    def node_logits(self, h: Tensor) -> Tensor | None:
        """The task head's class scores (node classification with a task head)."""
        if self.ctx.task.type != "node_classification" or self.heads.task_head is None:
            return None
        return self.heads.task_head(h).float().cpu()

    @torch.no_grad()
    def pair_scores(self, h_src: Tensor, h_dst: Tensor) -> Tensor | None:
        """Edge classes (task head) or link scores (the target relation's decoder)."""
        t = self.ctx.task
        if t.type == "edge_classification" and self.heads.task_head is not None:
            return self.heads.task_head(h_src, h_dst).float().cpu()
        if t.type == "link_prediction" and self._rel is not None:
            return self.heads.decoder(h_src, h_dst, self._rel).float().cpu()
        return None

    @torch.no_grad()
    def candidate_scores(self, h_src: Tensor, h_cand: Tensor) -> Tensor | None:
        """Link scores of queries against shared candidates (the target relation's decoder)."""
        if self.ctx.task.type != "link_prediction" or self._rel is None:
            return None
        return (self.heads.decoder.query(h_src, self._rel) @ h_cand.T).float().cpu()

    def output_rows(self, h: Tensor) -> Tensor:
        """The rows a request gets from rows of :meth:`embed` (the same)."""
        return h

    def evaluation(self, split: str) -> tuple[dict, dict | None]:
        """Stage 1's ``(metrics, outputs)`` on ``split`` (the trainer's ``stage1_scores``)."""
        return stage1_scores(self.ctx, self.task, self.heads, lambda t, ids: self.table[t][ids.to(
            self.table[t].device)], split)

    def evaluate(self, split: str) -> dict:
        """Stage 1's metrics on ``split`` (the trainer's ``stage1_scores``)."""
        return self.evaluation(split)[0]


class GNNTaskModel:
    """A graph model of stage 2 or 3: the R-GCN over sampled neighbourhoods, its input rows
    from the LM table (text node types) and its learned rows (the others), and its head.

    Args:
        ctx, task: the run's context and task.
        model: the loaded ``GraphModel`` (eval mode, on the device).
        table: per text node type, the LM rows of the run's nodes ``[N_t, H]``.
        stage: 2 or 3.
        fanouts: the sampling fanouts per layer (``-1``: every neighbour).
    """

    def __init__(self, ctx: RunContext, task: GNNTask, model, table: dict[str, Tensor], stage: int,
                 fanouts: list[int]):
        self.ctx, self.task, self.model, self.table = ctx, task, model, table
        self.stage = stage
        self.fanouts = list(fanouts)
        self.hidden_size = int(ctx.cfg.gnn.hidden)

    @torch.no_grad()
    def embed(self, view: GraphView, targets: dict[str, Tensor], seed: int = OUTPUT_SEED) -> dict[str, Tensor]:
        """R-GCN rows of the target nodes: one sampling call (``seed``) over ``view`` for all
        of them, one graph-model pass."""
        seeds, inverse = {}, {}
        for t, idx in targets.items():
            seeds[t], inverse[t] = _unique(idx)
        sampler = builders.make_sampler(view, self.fanouts, seed=self.ctx.cfg.run.seed)
        blocks = [b.to(self.ctx.device) for b in sampler.sample(seeds, seed=seed)]
        h = self.model(view.features(blocks[0]), blocks)
        return {t: h[t][inverse[t].to(h[t].device)] for t in targets}

    @torch.no_grad()
    def node_logits(self, h: Tensor) -> Tensor | None:
        """The head's class scores (node classification)."""
        if self.ctx.task.type != "node_classification":
            return None
        return self.model.head(h).float().cpu()

    @torch.no_grad()
    def pair_scores(self, h_src: Tensor, h_dst: Tensor) -> Tensor | None:
        """Edge classes (edge classification) or link scores (link prediction)."""
        if self.ctx.task.type == "node_classification":
            return None
        return self.model.head(h_src, h_dst).float().cpu()

    @torch.no_grad()
    def candidate_scores(self, h_src: Tensor, h_cand: Tensor) -> Tensor | None:
        """Link scores of queries against shared candidates (link prediction)."""
        if self.ctx.task.type != "link_prediction":
            return None
        return (self.model.head.query(h_src, 0) @ h_cand.T).float().cpu()

    def all_rows(self, node_type: str) -> Tensor:
        """The rows of every node of ``node_type`` of the run's graph, as the run's outputs
        compute them (chunks of ``run.eval_batch_size``, the outputs' sampling seed)."""
        return self.task.embed_nodes(self.model, node_type, torch.arange(self.ctx.graph.num_nodes[node_type]),
                                     self._features, OUTPUT_SEED)

    def _features(self, block) -> dict[str, Tensor]:
        return {t: self.table[t][block.src_nodes[t].to(self.table[t].device)] for t in self.table}

    def output_rows(self, h: Tensor) -> Tensor:
        """The rows a request gets from rows of :meth:`embed` (the same)."""
        return h

    def evaluation(self, split: str) -> tuple[dict, dict]:
        """The stage's ``(metrics, outputs)`` on ``split`` (the trainer's ``GNNTask.scores``)."""
        return self.task.scores(self.model, split, self._features)

    def evaluate(self, split: str) -> dict:
        """The stage's metrics on ``split`` (the trainer's ``GNNTask.scores``)."""
        return self.evaluation(split)[0]


def load_task_model(ctx: RunContext, task: GNNTask, stage: int, table: dict[str, Tensor], lm_dim: int,
                    fanouts: list[int]):
    """The model of ``stage`` from its checkpoint in ``ctx``'s run directory.

    Args:
        ctx, task: the run's context and task.
        stage: 1, 2 or 3.
        table: the LM rows per text node type (the model's inputs).
        lm_dim: the LM's width.
        fanouts: sampling fanouts of the graph model.
    """
    sd = ctx.ckpt.load_stage(stage)
    if stage == 1:
        return LMTaskModel(ctx, task, load_heads(ctx, sd, lm_dim), table)
    model = builders.make_graph_model(ctx.cfg, ctx.graph, ctx.task, lm_dim, ctx.text_types)
    model.load_state_dict(gnn_state(sd))
    model.to(ctx.device).eval()
    return GNNTaskModel(ctx, task, model, table, stage, fanouts)
