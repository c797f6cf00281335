"""The final model when it is the ensemble of stages 1 and 2 (:mod:`lmgnn_fast.train.ensemble`):
what the run's outputs read."""
from __future__ import annotations

import torch

from lmgnn_fast.train.ensemble import Ensemble

__all__ = ["EnsemblePredictor"]


class EnsemblePredictor:
    """Stage 1's and stage 2's predictors, their outputs mixed by ``ensemble``.

    Predictions mix; embeddings are the graph model's rows (stage 2's), the rows a
    downstream user of the run's embeddings gets from its graph model.

    Args:
        lm: stage 1's predictor (``Stage1Predictor``).
        gnn: stage 2's predictor (``GNNPredictor``), reading the same LM rows.
        ensemble: the mixture.
    """

    stage = 2

    def __init__(self, lm, gnn, ensemble: Ensemble):
        self.lm, self.gnn, self.ensemble = lm, gnn, ensemble

    def embed(self, t: str, ids: torch.Tensor) -> torch.Tensor | None:
        """The graph model's rows of nodes ``ids`` of type ``t``."""
        return self.gnn.embed(t, ids)

    @torch.no_grad()
    def logits(self, items: torch.Tensor) -> torch.Tensor:
        """Mixed class scores ``[len(items), C]`` (classification tasks)."""
        return self.ensemble.mix(self.lm.logits(items), self.gnn.logits(items))

    def split_outputs(self, split: str) -> dict | None:
        """The mixture of both members' evaluation outputs on ``split``."""
        a, b = self.lm.split_outputs(split), self.gnn.split_outputs(split)
        if a is None or b is None:
            return None
        return self.ensemble.mix_outputs(a, b)
