"""Learning-signal diagnostics of the LM stages (1 and 3).

- The LM's gradient norm of every step (before clipping), recorded beside the loss in the
  stage's history (``lm_grad_norm``) and in ``metrics.json``: how much signal reaches the LM.
- With ``run.diagnostics``, how far the stage moves the LM's embeddings: a fixed, seeded
  sample of at most :data:`PROBE_NODES` nodes per text type is encoded at the start and at
  the end of the stage; per type, the mean cosine of each node's row to its start row, the
  mean ratio of the row norms (end / start), and the mean pairwise cosine of the rows at the
  start and at the end (how spread out the embedding is).
"""
from __future__ import annotations

import torch
from torch import Tensor

from lmgnn_fast.train.seeds import derive_seed

__all__ = ["PROBE_NODES", "DriftProbe", "grad_norm"]

PROBE_NODES = 64


def grad_norm(params) -> float:
    """The L2 norm of the gradients of ``params`` taken together (0 when none has one)."""
    norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _mean_pairwise_cos(rows: Tensor) -> float:
    u = torch.nn.functional.normalize(rows.float(), dim=1)
    n = u.shape[0]
    if n < 2:
        return float("nan")
    sim = u @ u.T
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


class DriftProbe:
    """Encodes a fixed sample of nodes per text type now; :meth:`measure` compares the rows
    of the LM at that later time with these.

    Args:
        ctx: the run context (graph, text types, seed).
        features: the feature source whose LM is probed (``encode_ids``: no grad).
    """

    def __init__(self, ctx, features):
        self.features = features
        self.ids, self.start = {}, {}
        for t in ctx.text_types:
            n = ctx.graph.num_nodes[t]
            g = torch.Generator().manual_seed(derive_seed(ctx.cfg.run.seed, "drift-probe", t))
            self.ids[t] = torch.randperm(n, generator=g)[:PROBE_NODES]
        self.start = self._encode()

    def _encode(self) -> dict[str, Tensor]:
        model = self.features.lm.model
        was_training = model.training
        model.eval()
        try:
            return {t: self.features.encode_ids(t, ids).float().cpu() for t, ids in self.ids.items()}
        finally:
            model.train(was_training)

    def measure(self) -> dict[str, dict[str, float]]:
        """Per text type: ``cos_to_start``, ``norm_ratio``, ``pairwise_cos_start``,
        ``pairwise_cos_end`` (see the module docstring)."""
        end = self._encode()
        out = {}
        for t, a in self.start.items():
            b = end[t]
            out[t] = {"cos_to_start": round(float(torch.nn.functional.cosine_similarity(a, b).mean()), 6),
                      "norm_ratio": round(float((b.norm(dim=1) / a.norm(dim=1).clamp_min(1e-12)).mean()), 4),
                      "pairwise_cos_start": round(_mean_pairwise_cos(a), 4),
                      "pairwise_cos_end": round(_mean_pairwise_cos(b), 4)}
        return out
