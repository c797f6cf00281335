"""The one protocol a run's model answers through, whatever stage produced it.

The stage-1 model (the LM's pooled rows with its task head or link decoder), the graph
models of stages 2 and 3 (R-GCN over the LM rows with their head) and the ensemble of
stages 1 and 2 all implement :class:`TaskModel`; :class:`~lmgnn_fast.inference.run.LoadedRun` turns requests (raw ids,
new nodes and edges) into calls of it, and ``evaluate`` reports its metrics.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["TaskModel"]


@runtime_checkable
class TaskModel(Protocol):
    """A run's model of its task.

    Attributes:
        stage: the stage that trained it (1, 2 or 3).
        hidden_size: width of the rows :meth:`embed` returns.
    """

    stage: int
    hidden_size: int

    def embed(self, view, targets: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
        """Output rows of nodes.

        Args:
            view: a :class:`~lmgnn_fast.inference.view.GraphView` (the run's graph, plus a
                request's new nodes and edges).
            targets: per node type, node indices into ``view`` ``[N_t]`` (may repeat).
            seed: the sampling seed (graph models).

        Returns:
            Per node type ``[N_t, hidden_size]`` rows, in ``targets`` order.
        """

    def node_logits(self, h: Tensor) -> Tensor | None:
        """Class scores ``[N, C]`` of rows of the task's node type (node classification),
        else ``None``."""

    def pair_scores(self, h_src: Tensor, h_dst: Tensor) -> Tensor | None:
        """Scores of pairs of rows of the task's relation: class scores ``[P, C]`` (edge
        classification) or link scores ``[P]`` (link prediction); ``None`` when the model has
        no such head."""

    def candidate_scores(self, h_src: Tensor, h_cand: Tensor) -> Tensor | None:
        """Link scores ``[Q, K]`` of query rows ``[Q, H]`` against shared candidate rows
        ``[K, H]`` (link prediction), else ``None``."""

    def output_rows(self, h: Tensor) -> Tensor:
        """The rows a request gets (embeddings) from rows of :meth:`embed`: the same rows,
        or the graph model's part of an ensemble's."""

    def evaluation(self, split: str) -> tuple[dict, dict | None]:
        """``(metrics, outputs)`` on ``split``: :meth:`evaluate`'s metrics and the outputs
        they are computed from (``None`` when the model has none for the task)."""

    def evaluate(self, split: str) -> dict:
        """Metrics on ``split`` (``"val"``/``"test"``) under the training's evaluation
        protocol (``{}`` when the model has none for the task)."""
