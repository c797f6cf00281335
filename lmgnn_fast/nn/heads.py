"""Task heads and link-prediction decoders on top of node embeddings.

Each head owns its loss (``head.loss(...)``), so a training step reads
``head.loss(head(h), target)`` whatever the task.
"""
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
        """Logits ``[N, C]`` of node embeddings ``h [N, D]``."""
        return self.lin(self.drop(h))

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy of ``logits [N, C]`` against ``target`` (``[N]`` classes, or
        ``[N, C]`` 0/1 for multi-label: binary cross-entropy per class)."""
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
        """Logits ``[P, C]`` of endpoint embeddings ``h_src, h_dst [P, D]``."""
        return self.mlp(torch.cat([h_src, h_dst, h_src * h_dst], dim=-1))

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy of ``logits [N, C]`` against classes ``target [N]``."""
        return F.cross_entropy(logits, target.long())


class LinkDecoder(nn.Module):
    """Per-relation scorer: DistMult ``<h_s, w_r, h_d>`` or plain dot ``<h_s, h_d>``.

    Args:
        num_relations: relations scored (``w_r`` rows).
        dim: embedding size.
        kind: ``"distmult"`` or ``"dot"``.
        loss: ``"contrastive"`` (softmax over the positive and its negatives) or ``"bce"``
            (binary cross-entropy), used by :meth:`loss`.
    """

    def __init__(self, num_relations: int, dim: int, kind: str = "distmult", loss: str = "contrastive"):
        super().__init__()
        if kind not in ("distmult", "dot"):
            raise ValueError(f"LinkDecoder: kind must be 'distmult' or 'dot', got {kind!r}")
        if loss not in ("contrastive", "bce"):
            raise ValueError(f"LinkDecoder: loss must be 'contrastive' or 'bce', got {loss!r}")
        self.kind = kind
        self.loss_kind = loss
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

    def loss(self, pos: Tensor, neg: Tensor, neg_mask: Tensor | None = None) -> Tensor:
        """Loss of positive scores ``pos [P]`` against negative scores ``neg [P, K]``
        (``neg_mask [P, K]`` False: ignore that candidate), by the decoder's ``loss``."""
        fn = contrastive_loss if self.loss_kind == "contrastive" else bce_link_loss
        return fn(pos, neg, neg_mask)


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
