"""What the GNN stages (2 and 3) share: evaluating a saved graph model."""
from __future__ import annotations

import torch

from lmgnn_fast.nn import GraphModel
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.features import FeatureSource
from lmgnn_fast.train.tasks import GNNTask

__all__ = ["OUTPUT_SEED", "gnn_state", "start_stage3", "load_gnn_checkpoint", "evaluate_gnn_checkpoint", "GNNPredictor",
           "GNNCheckpointReader"]

# Sampling seed of the output rows that no evaluation computes (embeddings, and predictions
# of items outside the val/test splits); val/test predictions are the evaluation's own.
OUTPUT_SEED = 12345


def gnn_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The graph model's tensors (``gnn.*``) of a stage checkpoint, prefix removed."""
    return {k[4:]: v for k, v in sd.items() if k.startswith("gnn.")}


def start_stage3(ctx: RunContext, features: FeatureSource, task: GNNTask) -> GraphModel:
    """Where stage 3 starts (either objective): the LM it starts from in ``features`` with its
    rows in the caches, and a graph model holding stage 2's weights when stage 2 ran."""
    features.load_lm(features.lm_source_for(3))
    features.ensure_cache()
    model = task.new_model(features.hidden_size)
    if ctx.ckpt.has_stage(2):
        model.load_state_dict(gnn_state(ctx.ckpt.load_stage(2)))
    return model


def load_gnn_checkpoint(ctx: RunContext, features: FeatureSource, task: GNNTask, stage: int) -> GraphModel:
    """The graph model saved by ``stage`` (2 or 3), with the LM it ran with (stage 3's own,
    or the ``lm_source`` stage 2 recorded) in ``features`` and its rows in the caches."""
    sd = ctx.ckpt.load_stage(stage)
    features.load_lm("stage3" if stage == 3 else ctx.ckpt.stage_metadata(stage).get("lm_source", "pretrained"))
    features.ensure_cache()
    model = task.new_model(features.hidden_size)
    model.load_state_dict(gnn_state(sd))
    return model


def evaluate_gnn_checkpoint(ctx: RunContext, features: FeatureSource, task: GNNTask,
                            stage: int) -> tuple[dict, GraphModel]:
    """Val/test metrics of the graph model saved by ``stage`` (2 or 3).

    Returns:
        ``({"val": metrics, "test": metrics}, model)``.
    """
    model = load_gnn_checkpoint(ctx, features, task, stage)
    res = {split: task.scores(model, split, features.cache_features)[0] for split in ("val", "test")}
    return res, model


class GNNPredictor:
    """What the outputs of a run whose final model is a graph model (stage 2 or 3) read.

    Args:
        ctx, features, task: the run's context, feature source and task.
        stage: 2 or 3 (its checkpoint is loaded).
    """

    def __init__(self, ctx: RunContext, features: FeatureSource, task: GNNTask, stage: int):
        self.stage, self.ctx, self.task, self.features = stage, ctx, task, features
        self.model = load_gnn_checkpoint(ctx, features, task, stage)
        self.model.eval()

    def embed(self, t: str, ids: torch.Tensor) -> torch.Tensor:
        """R-GCN output rows ``[len(ids), hidden]`` of nodes ``ids`` of type ``t``."""
        return self.task.embed_nodes(self.model, t, ids, self.features.cache_features, OUTPUT_SEED)

    @torch.no_grad()
    def logits(self, items: torch.Tensor) -> torch.Tensor:
        """Head outputs ``[len(items), C]``: node ids of the task's type, or edge ids."""
        t, feats = self.ctx.task, self.features.cache_features
        if t.type == "node_classification":
            return self.model.head(self.embed(t.node_type, items)).float().cpu()
        s, d = self.task.edge_endpoints(items)
        hs = self.task.embed_unique(self.model, t.edge_type[0], s, feats, OUTPUT_SEED)
        hd = self.task.embed_unique(self.model, t.edge_type[2], d, feats, OUTPUT_SEED + 1)
        return self.model.head(hs, hd).float().cpu()

    def split_outputs(self, split: str) -> dict:
        """The evaluation's own outputs on ``split`` (those its metrics are computed from)."""
        return self.task.scores(self.model, split, self.features.cache_features)[1]


class GNNCheckpointReader:
    """What stages 2 and 3 share about their saved checkpoint: its evaluation and its use as
    the run's final model (a subclass sets ``number``)."""

    number: int

    @classmethod
    def evaluate(cls, ctx: RunContext, features: FeatureSource, task: GNNTask) -> tuple[dict, GraphModel]:
        """Val/test metrics of this stage's checkpoint, and the loaded model."""
        return evaluate_gnn_checkpoint(ctx, features, task, cls.number)

    @classmethod
    def predictor(cls, ctx: RunContext, features: FeatureSource, task: GNNTask) -> GNNPredictor:
        """What the outputs read when this stage is the run's final model."""
        return GNNPredictor(ctx, features, task, cls.number)
