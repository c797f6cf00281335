"""Task heads and link-prediction decoders on top of node embeddings."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NodeHead", "EdgeHead", "LinkDecoder", "contrastive_loss", "bce_link_loss"]


class NodeHead(nn.Module):
    """Linear classifier: ``[N, D] -> [N, C]`` logits (softmax or, multi-label, sigmoid)."""

    def __init__(self, in_dim: int, num_classes: int, multilabel: bool = False, dropout: float = 0.0):
        super().__init__()
        self.multilabel = multilabel
        self.drop = nn.Dropout(dropout)
        self.lin = nn.Linear(in_dim, num_classes)

    def forward(self, h: Tensor) -> Tensor:
        return self.lin(self.drop(h))

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, target.float())
        return F.cross_entropy(logits, target.long())


class EdgeHead(nn.Module):
    """Edge classifier on the endpoint pair: MLP over ``[h_s, h_d, h_s * h_d]``."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int | None = None, dropout: float = 0.0):
        super().__init__()
        hidden = hidden or in_dim
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(3 * in_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, h_src: Tensor, h_dst: Tensor) -> Tensor:
        return self.mlp(torch.cat([h_src, h_dst, h_src * h_dst], dim=-1))

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits, target.long())


class LinkDecoder(nn.Module):
    """Per-relation scorer: DistMult ``<h_s, w_r, h_d>`` or plain dot ``<h_s, h_d>``.

    Args:
        num_relations: relations scored (``w_r`` rows).
        dim: embedding size.
        kind: ``"distmult"`` or ``"dot"``.
    """

    def __init__(self, num_relations: int, dim: int, kind: str = "distmult"):
        super().__init__()
        if kind not in ("distmult", "dot"):
            raise ValueError(f"task.decoder must be 'distmult' or 'dot', got {kind!r}")
        self.kind = kind
        self.rel = nn.Parameter(torch.ones(max(num_relations, 1), dim)) if kind == "distmult" else None

    def query(self, h_src: Tensor, rel: Tensor | int) -> Tensor:
        """``h_s * w_r`` (``[P, D]``), to score against many candidates at once."""
        if self.rel is None:
            return h_src
        w = self.rel[rel] if isinstance(rel, Tensor) else self.rel[rel].unsqueeze(0)
        return h_src * w

    def forward(self, h_src: Tensor, h_dst: Tensor, rel: Tensor | int = 0) -> Tensor:
        """Scores ``[P]`` of pairs ``(h_src[i], h_dst[i])``."""
        return (self.query(h_src, rel) * h_dst).sum(-1)

    def score_candidates(self, h_src: Tensor, h_cand: Tensor, rel: Tensor | int = 0) -> Tensor:
        """Scores ``[P, K]`` of ``h_src [P, D]`` against candidates ``h_cand [P, K, D]``."""
        return torch.einsum("pd,pkd->pk", self.query(h_src, rel), h_cand)


def contrastive_loss(pos: Tensor, neg: Tensor, neg_mask: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy of each positive (``[P]``) against its negatives (``[P, K]``);
    ``neg_mask`` False marks candidates to ignore (e.g. true edges among in-batch ones)."""
    if neg_mask is not None:
        neg = neg.masked_fill(~neg_mask, float("-inf"))
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    return F.cross_entropy(logits, torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device))


def bce_link_loss(pos: Tensor, neg: Tensor, neg_mask: Tensor | None = None) -> Tensor:
    """Binary cross-entropy: positives to 1, negatives to 0 (each side averaged)."""
    lp = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
    nl = F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none")
    if neg_mask is not None:
        nl = nl[neg_mask]
    return lp + (nl.mean() if nl.numel() else nl.sum())
