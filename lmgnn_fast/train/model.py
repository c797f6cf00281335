"""The graph model: node input features, R-GCN encoder, task head."""
from __future__ import annotations

from torch import Tensor, nn

from lmgnn_fast.train import _deps
from lmgnn_fast.train.data import TargetTask
from lmgnn_fast.train.heads import EdgeHead, LinkDecoder, NodeHead

__all__ = ["GraphModel"]


class GraphModel(nn.Module):
    """R-GCN over sampled blocks plus the task head.

    Node types with text get their input rows from the LM (through the embedding cache or
    the LM itself in stage 3); node types without text get a learnable embedding of size
    ``featureless_dim``. Text rows pass a per-type ``LayerNorm`` first (``gnn.feature_norm``).

    Args:
        graph: the ``HeteroGraph``.
        task: the target task.
        lm_dim: LM hidden size (input size of text node types).
        text_types: node types whose features come from the LM.
        cfg: the ``gnn`` and ``task`` config sections (``GNNConfig``, ``TaskConfig``).
    """

    def __init__(self, graph, task: TargetTask, lm_dim: int, text_types: list[str], gnn_cfg, task_cfg,
                 featureless_dim: int = 64):
        super().__init__()
        self.node_types = list(graph.node_types)
        self.text_types = list(text_types)
        self.task = task
        self.embed = nn.ModuleDict({t: nn.Embedding(graph.num_nodes[t], featureless_dim)
                                    for t in self.node_types if t not in self.text_types})
        for e in self.embed.values():
            nn.init.normal_(e.weight, std=0.1)
        norm = getattr(gnn_cfg, "feature_norm", "layer")
        if norm not in ("layer", "none"):
            from lmgnn_fast.train.config import ConfigError

            raise ConfigError(f"gnn.feature_norm must be 'layer' or 'none', got {norm!r}")
        self.feature_norm = nn.ModuleDict({t: nn.LayerNorm(lm_dim) for t in self.text_types}
                                          if norm == "layer" else {})
        in_dims = {t: (lm_dim if t in self.text_types else featureless_dim) for t in self.node_types}
        self.encoder = _deps.make_encoder(self.node_types, list(graph.edge_types), in_dims, gnn_cfg.hidden,
                                          gnn_cfg.num_layers, num_bases=gnn_cfg.num_bases, aggr=gnn_cfg.aggr,
                                          dropout=gnn_cfg.dropout, layer_norm=gnn_cfg.layer_norm)
        h = gnn_cfg.hidden
        if task.type == "node_classification":
            self.head = NodeHead(h, task.num_classes, multilabel=task.multilabel, dropout=gnn_cfg.dropout)
        elif task.type == "edge_classification":
            self.head = EdgeHead(h, task.num_classes, dropout=gnn_cfg.dropout)
        else:
            self.head = LinkDecoder(1, h, kind=task_cfg.decoder)

    def featureless(self, t: str, ids: Tensor) -> Tensor:
        return self.embed[t](ids)

    def forward(self, x: dict[str, Tensor], blocks) -> dict[str, Tensor]:
        """``x``: per node type ``[num_src_t, F_t]`` inputs of ``blocks[0]`` (types without
        text are filled in here); returns per type ``[num_dst_t, hidden]`` for the last
        block's destination nodes."""
        x = dict(x)
        for t, ln in self.feature_norm.items():
            if t in x:
                x[t] = ln(x[t])
        for t in self.node_types:
            if t not in self.text_types:
                x[t] = self.embed[t](blocks[0].src_nodes[t].to(self.embed[t].weight.device))
        return self.encoder(x, blocks)
