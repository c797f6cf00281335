"""What the GNN stages (2 and 3) share: evaluating a saved graph model."""
from __future__ import annotations

import torch

from lmgnn_fast.nn import GraphModel
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.features import FeatureSource
from lmgnn_fast.train.tasks import GNNTask

__all__ = ["gnn_state", "evaluate_gnn_checkpoint"]


def gnn_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The graph model's tensors (``gnn.*``) of a stage checkpoint, prefix removed."""
    return {k[4:]: v for k, v in sd.items() if k.startswith("gnn.")}


def evaluate_gnn_checkpoint(ctx: RunContext, features: FeatureSource, task: GNNTask,
                            stage: int) -> tuple[dict, GraphModel]:
    """Val/test metrics of the graph model saved by ``stage`` (2 or 3).

    The LM is the one the stage ran with (stage 3's own, or the ``lm_source`` stage 2
    recorded); the caches are refreshed when they do not hold its rows.

    Returns:
        ``({"val": metrics, "test": metrics}, model)``.
    """
    sd = ctx.ckpt.load_stage(stage)
    features.load_lm("stage3" if stage == 3 else ctx.ckpt.stage_metadata(stage).get("lm_source", "pretrained"))
    features.ensure_cache()
    model = task.new_model(features.hidden_size)
    model.load_state_dict(gnn_state(sd))
    res = {split: task.scores(model, split, features.cache_features)[0] for split in ("val", "test")}
    return res, model
