"""The LM + graph-model ensemble: stage 1's model and stage 2's, their predictions mixed with
a weight chosen on validation.

Stage 1's model reads a node's own text; the graph model reads its neighbourhood. Their
errors differ, so a mixture of the two is often better than either -- and sometimes not: the
runner (:meth:`~lmgnn_fast.train.runner.Trainer.run`) evaluates the mixture for each weight
of :data:`WEIGHTS` on validation and makes it the run's final model only when its
validation value of the task's primary metric is strictly above the best single stage's
(``run.ensemble``). Test values never take part.

How outputs mix (``w`` = the LM member's weight):

- single-label classification: class probabilities, ``p = w softmax(a) + (1 - w) softmax(b)``,
  returned as ``log p`` (so ``argmax`` and ``softmax`` of the result are the mixture's);
- multi-label classification: per-class probabilities, ``p = w sigmoid(a) + (1 - w) sigmoid(b)``,
  returned as ``logit p`` (thresholds apply as to any logit);
- link prediction: scores standardised per member with the mean and std of that member's
  validation scores (positives and valid candidates: the members' scales differ, a dot
  product against a learned decoder), ``w z_a + (1 - w) z_b``.

Both members must read the same LM rows (stage 2 on stage 1's LM: the default recipe), so a
loaded run answers requests with one table (:mod:`lmgnn_fast.inference.ensemble`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lmgnn_fast.train.metrics import classification_metrics, ranking_metrics, ranks_from_scores

__all__ = ["WEIGHTS", "Ensemble", "choose_ensemble", "score_calibration"]

# The LM member's weights tried on validation.
WEIGHTS = (0.2, 0.35, 0.5, 0.65, 0.8)
_EPS = 1e-6


def score_calibration(out: dict) -> tuple[float, float]:
    """``(mean, std)`` of a link-prediction member's scores on a split: its positives and its
    valid candidates (evaluation outputs with ``score``, ``neg_score`` and ``valid``)."""
    neg = out["neg_score"][out["valid"]] if out.get("valid") is not None else out["neg_score"].flatten()
    s = torch.cat([out["score"].flatten().double(), neg.flatten().double()])
    s = s[torch.isfinite(s)]
    if s.numel() < 2:
        return 0.0, 1.0
    return float(s.mean()), max(float(s.std()), _EPS)


@dataclass
class Ensemble:
    """A mixture of two members' outputs (see the module docstring).

    Attributes:
        kind: ``"softmax"`` (single-label), ``"sigmoid"`` (multi-label) or ``"scores"``
            (link prediction).
        weight: the first member's (the LM's) weight, in ``[0, 1]``.
        members: the stages mixed, LM first (``(1, 2)``).
        calibration: per member ``(mean, std)`` of its scores (link prediction).
    """

    kind: str
    weight: float
    members: tuple = (1, 2)
    calibration: list = field(default_factory=lambda: [(0.0, 1.0), (0.0, 1.0)])

    def __post_init__(self):
        if self.kind not in ("softmax", "sigmoid", "scores"):
            raise ValueError(f"ensemble kind must be softmax, sigmoid or scores, got {self.kind!r}")
        if not 0.0 <= float(self.weight) <= 1.0:
            raise ValueError(f"ensemble weight must be in [0, 1], got {self.weight!r}")

    @staticmethod
    def kind_of(task_type: str, multilabel: bool) -> str:
        """The mixing of a task: ``scores`` (link prediction), ``sigmoid`` (multi-label) or
        ``softmax``."""
        if task_type == "link_prediction":
            return "scores"
        return "sigmoid" if multilabel else "softmax"

    def mix(self, a: Tensor, b: Tensor) -> Tensor:
        """The mixture of the members' outputs ``a`` (LM) and ``b`` (graph model), same shape:
        class logits, or link scores (positives ``[P]`` or candidates ``[P, K]``)."""
        if a.shape != b.shape:
            raise ValueError(f"ensemble: the members' outputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        w = float(self.weight)
        a, b = a.float(), b.float()
        if self.kind == "scores":
            (ma, sa), (mb, sb) = self.calibration
            return w * (a - ma) / sa + (1 - w) * (b - mb) / sb
        if self.kind == "sigmoid":
            p = (w * torch.sigmoid(a) + (1 - w) * torch.sigmoid(b)).clamp(_EPS, 1 - _EPS)
            return torch.log(p) - torch.log1p(-p)
        p = w * torch.softmax(a, dim=-1) + (1 - w) * torch.softmax(b, dim=-1)
        return torch.log(p.clamp_min(1e-30))

    def mix_outputs(self, a: dict, b: dict) -> dict:
        """The mixture of two members' evaluation outputs on one split (``ids``/``logits``, or
        ``src``/``dst``/``score``/``neg_score``/``valid``/``rank``), the ranks recomputed."""
        if self.kind != "scores":
            if not torch.equal(a["ids"], b["ids"]):
                raise ValueError("ensemble: the members were evaluated on different items")
            return {"ids": a["ids"], "logits": self.mix(a["logits"], b["logits"])}
        if not (torch.equal(a["src"], b["src"]) and torch.equal(a["dst"], b["dst"])):
            raise ValueError("ensemble: the members were evaluated on different edges")
        pos, neg = self.mix(a["score"], b["score"]), self.mix(a["neg_score"], b["neg_score"])
        return {"src": a["src"], "dst": a["dst"], "score": pos, "neg_score": neg, "valid": a["valid"],
                "rank": ranks_from_scores(pos, neg, a["valid"])}

    def metrics(self, out: dict, target: Tensor | None = None, threshold: float = 0.5) -> dict:
        """Metrics of mixed outputs (:meth:`mix_outputs`): ranking metrics, or classification
        metrics against ``target``."""
        if self.kind == "scores":
            return ranking_metrics(out["rank"])
        return classification_metrics(out["logits"], target, self.kind == "sigmoid", threshold)

    def to_dict(self) -> dict:
        """JSON form (``metrics.json``'s ``ensemble``)."""
        return {"kind": self.kind, "weight": float(self.weight), "members": list(self.members),
                "calibration": [list(map(float, c)) for c in self.calibration]}

    @classmethod
    def from_dict(cls, d: dict) -> "Ensemble":
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a malformed entry (named).
        """
        try:
            cal = [(float(m), float(s)) for m, s in d.get("calibration", [(0.0, 1.0), (0.0, 1.0)])]
            ens = cls(str(d["kind"]), float(d["weight"]), tuple(int(x) for x in d.get("members", (1, 2))), cal)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"ensemble entry {d!r} is malformed: {e}") from None
        if len(ens.calibration) != 2 or any(not (math.isfinite(m) and s > 0) for m, s in ens.calibration):
            raise ValueError(f"ensemble entry {d!r}: calibration must be two (mean, std > 0) pairs")
        return ens


def choose_ensemble(kind: str, val_a: dict, val_b: dict, metric: str, target: Tensor | None = None,
                    threshold: float = 0.5, weights=WEIGHTS) -> tuple[Ensemble, dict]:
    """The weight of :data:`WEIGHTS` whose mixture has the highest validation ``metric``
    (the smaller weight on a tie).

    Args:
        kind: :meth:`Ensemble.kind_of` of the task.
        val_a, val_b: the LM's and the graph model's evaluation outputs on validation.
        metric: the task's primary metric (higher is better).
        target: the validation labels (classification).
        threshold: the multi-label threshold.

    Returns:
        ``(ensemble, its validation metrics)``.
    """
    cal = [score_calibration(val_a), score_calibration(val_b)] if kind == "scores" else [(0.0, 1.0)] * 2
    best, best_m = None, None
    for w in weights:
        ens = Ensemble(kind, w, (1, 2), cal)
        m = ens.metrics(ens.mix_outputs(val_a, val_b), target, threshold)
        v = m.get(metric, float("nan"))
        if best is None or (v == v and (best_m.get(metric) != best_m.get(metric) or v > best_m[metric])):
            best, best_m = ens, m
    return best, best_m
