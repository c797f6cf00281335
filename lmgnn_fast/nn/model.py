"""The graph model: node input features, graph encoder (R-GCN, RGAT or HGT), task head."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lmgnn_fast.nn.attention import HGT, RGAT
from lmgnn_fast.nn.heads import EdgeHead, LinkDecoder, NodeHead
from lmgnn_fast.nn.norm import LayerNorm
from lmgnn_fast.nn.rgcn import RGCN

__all__ = ["GraphModel"]

TASK_TYPES = ("node_classification", "edge_classification", "link_prediction")
ENCODERS = ("rgcn", "rgat", "hgt")


class GraphModel(nn.Module):
    """A graph encoder over sampled blocks (R-GCN, RGAT or HGT) plus the task head.

    Node types with text get their input rows from outside (the LM, through the embedding
    cache or the LM itself); node types without text get a learnable embedding of size
    ``featureless_dim``. Text rows pass a per-type ``LayerNorm`` first when
    ``feature_norm == "layer"``.

    Args:
        node_types: all node types (the graph's order).
        edge_types: all relations ``(src, rel, dst)``; relation id = index.
        num_nodes: ``{node_type: count}`` (rows of the learnable embeddings).
        task_type: ``node_classification``, ``edge_classification`` or ``link_prediction``.
        num_classes: classes of the classification head (unused for link prediction).
        multilabel: node classification with several labels per node.
        lm_dim: input size of the text node types.
        text_types: node types whose inputs come from outside.
        hidden: encoder width (and size of the output rows).
        num_layers: encoder layers (= blocks per batch).
        num_bases: basis decomposition of the relation weights (``None``: full; R-GCN only).
        aggr: ``"mean"`` or ``"sum"`` (R-GCN only).
        dropout: dropout of the encoder and the head.
        layer_norm: LayerNorm between encoder layers.
        feature_norm: ``"layer"`` or ``"none"``.
        decoder: link prediction scorer, ``"distmult"`` or ``"dot"``.
        link_loss: link prediction loss, ``"contrastive"`` or ``"bce"``.
        featureless_dim: size of the learnable embeddings.
        encoder: ``"rgcn"`` (:class:`~lmgnn_fast.nn.RGCN`), ``"rgat"``
            (:class:`~lmgnn_fast.nn.RGAT`) or ``"hgt"`` (:class:`~lmgnn_fast.nn.HGT`).
        heads: attention heads of RGAT and HGT (``hidden`` divisible by it).
    """

    def __init__(self, node_types: Sequence[str], edge_types: Sequence[tuple], num_nodes: dict[str, int],
                 task_type: str, num_classes: int | None, multilabel: bool, lm_dim: int,
                 text_types: Sequence[str], hidden: int, num_layers: int, num_bases: int | None = None,
                 aggr: str = "mean", dropout: float = 0.0, layer_norm: bool = False,
                 feature_norm: str = "layer", decoder: str = "distmult", link_loss: str = "contrastive",
                 featureless_dim: int = 64, encoder: str = "rgcn", heads: int = 4):
        super().__init__()
        if task_type not in TASK_TYPES:
            raise ValueError(f"GraphModel: task_type must be one of {', '.join(TASK_TYPES)}, got {task_type!r}")
        if feature_norm not in ("layer", "none"):
            raise ValueError(f"GraphModel: feature_norm must be 'layer' or 'none', got {feature_norm!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"GraphModel: encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        self.node_types = list(node_types)
        self.text_types = list(text_types)
        self.embed = nn.ModuleDict({t: nn.Embedding(num_nodes[t], featureless_dim)
                                    for t in self.node_types if t not in self.text_types})
        for e in self.embed.values():
            nn.init.normal_(e.weight, std=0.1)
        self.feature_norm = nn.ModuleDict({t: LayerNorm(lm_dim) for t in self.text_types}
                                          if feature_norm == "layer" else {})
        in_dims = {t: (lm_dim if t in self.text_types else featureless_dim) for t in self.node_types}
        edge_types = [tuple(e) for e in edge_types]
        if encoder == "rgcn":
            self.encoder = RGCN(in_dims, hidden, hidden, self.node_types, edge_types, num_layers=num_layers,
                                num_bases=num_bases, dropout=dropout, layer_norm=layer_norm, aggr=aggr)
        else:
            cls = RGAT if encoder == "rgat" else HGT
            self.encoder = cls(in_dims, hidden, hidden, self.node_types, edge_types, num_layers=num_layers,
                               heads=heads, dropout=dropout, layer_norm=layer_norm)
        if task_type == "node_classification":
            self.head = NodeHead(hidden, num_classes, multilabel=multilabel, dropout=dropout)
        elif task_type == "edge_classification":
            self.head = EdgeHead(hidden, num_classes, dropout=dropout)
        else:
            self.head = LinkDecoder(1, hidden, kind=decoder, loss=link_loss)

    def forward(self, x: dict[str, Tensor], blocks) -> dict[str, Tensor]:
        """Node embeddings of the last block's destination nodes.

        Args:
            x: per text node type ``[blocks[0].num_src(t), lm_dim]`` input rows (types
                without text are filled in here from their embeddings).
            blocks: the sampled blocks, outermost first.

        Returns:
            Per node type ``[blocks[-1].num_dst[t], hidden]``.
        """
        x = dict(x)
        for t, ln in self.feature_norm.items():
            if t in x:
                x[t] = ln(x[t])
        for t in self.node_types:
            if t not in self.text_types:
                x[t] = self.embed[t](blocks[0].src_nodes[t].to(self.embed[t].weight.device))
        return self.encoder(x, blocks)
