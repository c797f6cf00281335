"""Evaluation metrics and the link-prediction ranking protocol.

**Link-prediction protocol** (the one used in validation during training and by
``python -m lmgnn_fast.evaluate``): every positive edge ``(s, r, d)`` of the split is ranked
against ``K`` (``task.eval_negatives``, default 100) corrupted destinations ``(s, r, d')``,
with ``d'`` drawn uniformly from the destination node type by a generator seeded with
``(run.seed, split)`` — the same candidates every time the split is evaluated. Candidates
that form a known true edge of the relation (in its train, val or test edges, both
directions taken as given) are *filtered*: they are dropped from the ranking. The rank of
the positive is ``1 + #{negatives scoring higher} + #{negatives scoring equal} / 2``; MRR is
the mean of ``1/rank``, Hits@k the fraction with ``rank <= k`` (k = 1, 3, 10).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["accuracy", "macro_f1", "multilabel_f1", "ranks_from_scores", "ranking_metrics",
           "classification_metrics", "per_class_metrics", "eval_negatives", "PRIMARY_METRIC"]

# The validation metric used for model selection, per task type (higher is better).
PRIMARY_METRIC = {"node_classification": "accuracy", "edge_classification": "accuracy",
                  "link_prediction": "mrr", "node_classification_multilabel": "micro_f1"}


def accuracy(pred: Tensor, target: Tensor) -> float:
    """Fraction of ``pred == target`` (both ``[N]`` int)."""
    if target.numel() == 0:
        return float("nan")
    return float((pred == target).float().mean())


def macro_f1(pred: Tensor, target: Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``target`` or ``pred``."""
    if target.numel() == 0:
        return float("nan")
    pred, target = pred.long(), target.long()
    tp = torch.bincount(target[pred == target], minlength=num_classes).float()
    n_pred = torch.bincount(pred, minlength=num_classes).float()
    n_true = torch.bincount(target, minlength=num_classes).float()
    present = (n_pred + n_true) > 0
    f1 = 2 * tp / (n_pred + n_true).clamp_min(1)
    return float(f1[present].mean())


def multilabel_f1(pred: Tensor, target: Tensor) -> tuple[float, float]:
    """(micro-F1, macro-F1) for ``[N, C]`` boolean predictions and targets; macro averages
    over the classes with at least one positive in ``target`` or ``pred``."""
    if target.shape[0] == 0:
        return float("nan"), float("nan")
    pred, target = pred.bool(), target.bool()
    tp = (pred & target).sum(0).float()
    fp = (pred & ~target).sum(0).float()
    fn = (~pred & target).sum(0).float()
    micro = float(2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()).clamp_min(1))
    present = (tp + fp + fn) > 0
    per = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    macro = float(per[present].mean()) if bool(present.any()) else 0.0
    return micro, macro


def classification_metrics(logits: Tensor, target: Tensor, multilabel: bool,
                           threshold: float = 0.5) -> dict[str, float]:
    """Accuracy and macro-F1 (single-label) or micro/macro-F1 and exact-match accuracy
    (multi-label, sigmoid > ``threshold``) from ``[N, C]`` logits."""
    if multilabel:
        pred = torch.sigmoid(logits.float()) > threshold
        micro, macro = multilabel_f1(pred, target)
        exact = float((pred == target.bool()).all(1).float().mean()) if target.shape[0] else float("nan")
        return {"micro_f1": micro, "macro_f1": macro, "subset_accuracy": exact}
    pred = logits.argmax(-1)
    return {"accuracy": accuracy(pred, target), "macro_f1": macro_f1(pred, target, logits.shape[-1])}


def per_class_metrics(logits: Tensor, target: Tensor, multilabel: bool, names: list[str],
                      threshold: float = 0.5) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of every class, keyed by its name.

    Args:
        logits: ``[N, C]`` head outputs.
        target: ``[N]`` class ids (single-label) or ``[N, C]`` multi-hot.
        multilabel: sigmoid > ``threshold`` per class instead of the argmax.
        names: ``C`` class names (index = class id).

    Returns:
        ``{name: {"precision", "recall", "f1", "support"}}`` (``support``: items of the class
        in ``target``; precision/recall of a class never predicted / never present are 0).
        The mean F1 over the classes present in ``target`` or the predictions is
        :func:`classification_metrics`' ``macro_f1``.
    """
    c = logits.shape[-1]
    if multilabel:
        pred, true = torch.sigmoid(logits.float()) > threshold, target.bool()
    else:
        pred = torch.nn.functional.one_hot(logits.argmax(-1), c).bool()
        true = torch.nn.functional.one_hot(target.long().clamp_min(0), c).bool() & (target.long() >= 0).unsqueeze(1)
    tp = (pred & true).sum(0).float()
    n_pred, n_true = pred.sum(0).float(), true.sum(0).float()
    prec, rec = tp / n_pred.clamp_min(1), tp / n_true.clamp_min(1)
    f1 = 2 * tp / (n_pred + n_true).clamp_min(1)
    return {str(names[k]) if k < len(names) else str(k):
            {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]), "support": int(n_true[k])}
            for k in range(c)}


def eval_negatives(src: Tensor, dst: Tensor, num_dst_nodes: int, k: int, seed: int,
                   known: set | Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The fixed, filtered negative candidates of the protocol.

    Args:
        src, dst: ``[P]`` int64 positive edges.
        num_dst_nodes: nodes of the destination type.
        k: candidates per positive.
        seed: generator seed (the caller mixes in the split).
        known: true edges to filter, as a 1-D int64 tensor of keys ``s * num_dst_nodes + d``.

    Returns:
        ``(neg [P, K] int64, valid [P, K] bool)`` — ``valid`` is False for filtered candidates.
    """
    g = torch.Generator().manual_seed(int(seed))
    neg = torch.randint(0, max(num_dst_nodes, 1), (src.numel(), k), generator=g)
    valid = torch.ones_like(neg, dtype=torch.bool)
    if known is not None and known.numel() and neg.numel():
        keys = src.unsqueeze(1) * num_dst_nodes + neg
        srt, _ = torch.sort(known)
        pos = torch.searchsorted(srt, keys.reshape(-1)).clamp_max(srt.numel() - 1)
        hit = (srt[pos] == keys.reshape(-1)).view_as(keys)
        valid &= ~hit
    return neg, valid


def ranks_from_scores(pos: Tensor, neg: Tensor, valid: Tensor | None = None) -> Tensor:
    """Rank of each positive among its candidates (``[P]`` float; 1 = best).

    ``pos: [P]``, ``neg: [P, K]``, ``valid: [P, K]`` (filtered candidates excluded)."""
    if valid is None:
        valid = torch.ones_like(neg, dtype=torch.bool)
    pos = pos.float().unsqueeze(1)
    neg = neg.float()
    higher = ((neg > pos) & valid).sum(1).float()
    equal = ((neg == pos) & valid).sum(1).float()
    return 1.0 + higher + 0.5 * equal


def ranking_metrics(ranks: Tensor) -> dict[str, float]:
    """MRR and Hits@1/3/10 from ``[P]`` ranks."""
    if ranks.numel() == 0:
        return {"mrr": float("nan"), "hits@1": float("nan"), "hits@3": float("nan"), "hits@10": float("nan")}
    r = ranks.float()
    return {"mrr": float((1.0 / r).mean()), "hits@1": float((r <= 1).float().mean()),
            "hits@3": float((r <= 3).float().mean()), "hits@10": float((r <= 10).float().mean())}
