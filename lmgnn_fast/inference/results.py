"""What a loaded run answers: node predictions, pair scores, top-k link candidates.

Each result knows its columns (the writer's :func:`~lmgnn_fast.inference.writer.class_columns`
for class scores) and its JSON form (what ``lmgnn_fast.serve`` returns).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lmgnn_fast.inference.writer import class_columns

__all__ = ["NodePredictions", "PairPredictions", "LinkCandidates"]


@dataclass
class NodePredictions:
    """What the run's model gives for the requested nodes of one type.

    Attributes:
        node_type: the node type.
        ids: raw ids, in request order (new nodes first, then ``ids=``).
        embedding: ``[N, H]`` float32: the graph model's output rows (the LM's pooled rows
            when the model is stage 1's).
        logits: ``[N, C]`` head outputs for the task's node type of a node classification
            task, else ``None``.
        multilabel: the task is multi-label (``prob`` is a sigmoid, ``pred`` a list of classes).
        threshold: the multi-label decision threshold (``task.threshold``).
        label_names: the task's class names (index = class id), or ``None``.
    """

    node_type: str
    ids: list
    embedding: Tensor
    logits: Tensor | None = None
    multilabel: bool = False
    threshold: float = 0.5
    label_names: list | None = None
    kind = "nodes"

    def columns(self) -> dict:
        """``pred``, ``prob`` (and ``pred_names``) per node; ``{}`` without class scores."""
        if self.logits is None:
            return {}
        return class_columns(self.logits, self.multilabel, self.threshold, self.label_names)

    @property
    def prob(self) -> Tensor | None:
        """``[N, C]`` class probabilities (softmax; sigmoid when multi-label)."""
        if self.logits is None:
            return None
        return torch.sigmoid(self.logits) if self.multilabel else torch.softmax(self.logits, -1)

    @property
    def pred(self) -> list | None:
        """Per node the predicted class id (multi-label: the list of class ids)."""
        return self.columns().get("pred")

    @property
    def pred_names(self) -> list | None:
        """:attr:`pred` as class names (``None`` without names)."""
        return self.columns().get("pred_names")

    def to_json(self, embeddings: bool = False) -> dict:
        """``{"node_type", "id", "pred", "prob", "pred_names"}`` (+ ``"embedding"``)."""
        out = {"node_type": self.node_type, "id": list(self.ids), **self.columns()}
        if embeddings or self.logits is None:
            out["embedding"] = self.embedding.tolist()
        return out


@dataclass
class PairPredictions:
    """Scores of ``(src, dst)`` pairs of one relation.

    Attributes:
        edge_type: the relation ``(src_type, rel, dst_type)``.
        src, dst: raw ids of the pairs' ends, in request order.
        logits: ``[P, C]`` edge classes (edge classification), else ``None``.
        score: ``[P]`` link scores (link prediction; higher = more likely), else ``None``.
        label_names: the edge classes' names, or ``None``.
    """

    edge_type: tuple
    src: list
    dst: list
    logits: Tensor | None = None
    score: Tensor | None = None
    label_names: list | None = None
    kind = "pairs"

    def columns(self) -> dict:
        """``pred``, ``prob`` (and ``pred_names``), or ``score``, per pair."""
        if self.logits is not None:
            return class_columns(self.logits, False, 0.5, self.label_names)
        return {"score": self.score.float().tolist()} if self.score is not None else {}

    def to_json(self) -> dict:
        """``{"edge_type", "src", "dst", "pred", "prob", "pred_names" | "score"}``."""
        return {"edge_type": list(self.edge_type), "src": list(self.src), "dst": list(self.dst), **self.columns()}


@dataclass
class LinkCandidates:
    """The best-scored destinations of source nodes under the link-prediction model.

    Attributes:
        edge_type: the task's relation.
        src: raw ids of the source nodes, in request order.
        dst: per source, the raw ids of its top destinations, best first (at most ``k``;
            fewer when fewer candidates remain after filtering).
        score: ``[Q, k]`` their scores (``-inf`` past a source's candidates).
    """

    edge_type: tuple
    src: list
    dst: list
    score: Tensor
    kind = "top_k"

    def to_json(self) -> dict:
        """``{"edge_type", "src", "dst": [[...]], "score": [[...]]}``."""
        return {"edge_type": list(self.edge_type), "src": list(self.src), "dst": [list(d) for d in self.dst],
                "score": [s[:len(d)] for s, d in zip(self.score.float().tolist(), self.dst)]}
