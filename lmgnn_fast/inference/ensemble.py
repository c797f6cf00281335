"""The ensemble of stages 1 and 2 as a :class:`~lmgnn_fast.inference.protocol.TaskModel`: what
a loaded run answers with when its final model is the ensemble (``metrics.json``'s
``final_model``; :mod:`lmgnn_fast.train.ensemble` for the mixture)."""
from __future__ import annotations

import torch
from torch import Tensor

from lmgnn_fast.inference.models import OUTPUT_SEED
from lmgnn_fast.train.ensemble import Ensemble

__all__ = ["EnsembleTaskModel"]


class EnsembleTaskModel:
    """Stage 1's model and stage 2's, both reading the run's LM rows, their outputs mixed.

    Internally a node's row is the LM member's row and the graph member's row side by side;
    :meth:`output_rows` gives the graph model's part, the embeddings the run wrote.

    Args:
        lm: the stage-1 ``LMTaskModel``.
        gnn: the stage-2 ``GNNTaskModel``.
        ensemble: the mixture (weight, calibration).
    """

    stage = 2

    def __init__(self, lm, gnn, ensemble: Ensemble):
        self.lm, self.gnn, self.ensemble = lm, gnn, ensemble
        self._split = lm.hidden_size
        self.hidden_size = gnn.hidden_size

    def embed(self, view, targets: dict[str, Tensor], seed: int = OUTPUT_SEED) -> dict[str, Tensor]:
        """Per node type the LM row and the graph-model row of each target, concatenated."""
        a = self.lm.embed(view, targets, seed)
        b = self.gnn.embed(view, targets, seed)
        return {t: torch.cat([a[t].float(), b[t].float().to(a[t].device)], dim=1) for t in targets}

    def output_rows(self, h: Tensor) -> Tensor:
        """The graph model's part of rows from :meth:`embed`."""
        return h[:, self._split:]

    def _parts(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return h[:, :self._split], h[:, self._split:]

    def _mix(self, a: Tensor | None, b: Tensor | None) -> Tensor | None:
        return None if a is None or b is None else self.ensemble.mix(a, b)

    @torch.no_grad()
    def node_logits(self, h: Tensor) -> Tensor | None:
        """Mixed class scores (node classification)."""
        a, b = self._parts(h)
        return self._mix(self.lm.node_logits(a), self.gnn.node_logits(b))

    @torch.no_grad()
    def pair_scores(self, h_src: Tensor, h_dst: Tensor) -> Tensor | None:
        """Mixed edge classes or link scores."""
        (sa, sb), (da, db) = self._parts(h_src), self._parts(h_dst)
        return self._mix(self.lm.pair_scores(sa, da), self.gnn.pair_scores(sb, db))

    @torch.no_grad()
    def candidate_scores(self, h_src: Tensor, h_cand: Tensor) -> Tensor | None:
        """Mixed link scores of queries against shared candidates."""
        (sa, sb), (ca, cb) = self._parts(h_src), self._parts(h_cand)
        return self._mix(self.lm.candidate_scores(sa, ca), self.gnn.candidate_scores(sb, cb))

    def all_rows(self, node_type: str) -> Tensor:
        """Both members' rows of every node of ``node_type`` of the run's graph, side by side."""
        a = self.lm.table[node_type].float()
        return torch.cat([a, self.gnn.all_rows(node_type).float().to(a.device)], dim=1)

    def evaluation(self, split: str) -> tuple[dict, dict | None]:
        """``(metrics, outputs)`` of the mixture on ``split``, from both members' evaluations."""
        _, a = self.lm.evaluation(split)
        _, b = self.gnn.evaluation(split)
        if a is None or b is None:
            return {}, None
        out = self.ensemble.mix_outputs(a, b)
        target = None if self.ensemble.kind == "scores" else self.gnn.task.split_labels(split)
        return self.ensemble.metrics(out, target, float(self.gnn.ctx.cfg.task.threshold)), out

    def evaluate(self, split: str) -> dict:
        """The mixture's metrics on ``split`` (what the run reported for its ensemble)."""
        return self.evaluation(split)[0]
