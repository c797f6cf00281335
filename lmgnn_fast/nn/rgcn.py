"""``RGCN``: a multi-layer R-GCN encoder over the sampler's blocks."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from lmgnn_fast.graph import EdgeType
from lmgnn_fast.nn.conv import RGCNConv
from lmgnn_fast.nn.norm import LayerNorm
from lmgnn_fast.ops.layout import layouts_from_blocks
from lmgnn_fast.sampling.block import Block

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu, "gelu": nn.functional.gelu, "elu": nn.functional.elu,
    "leaky_relu": nn.functional.leaky_relu, "tanh": torch.tanh, "identity": lambda t: t,
}


class RGCN(nn.Module):
    """R-GCN encoder for a heterogeneous graph whose node types have different input sizes.

    Every node type's features go through their own ``Linear(in_channels[t], hidden)``, then
    ``num_layers`` :class:`RGCNConv` layers run over ``blocks`` (outermost first, one per
    layer); between layers: layer norm (optional), activation, dropout.

    Args:
        in_channels: ``{node_type: F_in[t]}`` or one int for every type.
        hidden_channels: width of the projection and of the hidden layers.
        out_channels: width of the last layer.
        node_types: all node types (the graph's order).
        edge_types: all relations; relation id = index.
        num_layers: number of RGCNConv layers (= number of blocks per batch).
        num_bases: basis decomposition per layer (``None``: full weights).
        dropout: dropout probability after each hidden layer (and the projection).
        activation: ``relu``, ``gelu``, ``elu``, ``leaky_relu``, ``tanh`` or ``identity``.
        layer_norm: LayerNorm after each hidden layer.
        aggr: ``"mean"`` or ``"sum"``.
        use_kernel: passed to every layer (``False``: the pure-torch path).

    Shapes:
        ``forward(x, blocks)``: ``x[t]`` is ``[blocks[0].num_src(t), F_in[t]]`` (rows in
        ``blocks[0].src_nodes[t]`` order); returns ``{t: [blocks[-1].num_dst[t], out]}``.
    """

    def __init__(self, in_channels: Union[int, dict], hidden_channels: int, out_channels: int,
                 node_types: Sequence[str], edge_types: Sequence[EdgeType], num_layers: int = 2,
                 num_bases: Optional[int] = None, dropout: float = 0.0, activation: str = "relu",
                 layer_norm: bool = False, aggr: str = "mean", use_kernel: Optional[bool] = None):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"RGCN: num_layers must be >= 1, got {num_layers}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"RGCN: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.node_types = list(node_types)
        self.edge_types = [tuple(e) for e in edge_types]
        if not isinstance(in_channels, dict):
            in_channels = {t: int(in_channels) for t in self.node_types}
        missing = [t for t in self.node_types if t not in in_channels]
        if missing:
            raise ValueError(f"RGCN: in_channels has no size for node types {missing}")
        self.proj = nn.ModuleDict({t: nn.Linear(in_channels[t], hidden_channels) for t in self.node_types})
        dims = [hidden_channels] * num_layers + [out_channels]
        self.convs = nn.ModuleList(
            RGCNConv(dims[i], dims[i + 1], len(self.edge_types), num_bases=num_bases, aggr=aggr,
                     use_kernel=use_kernel) for i in range(num_layers))
        self.norms = nn.ModuleList(LayerNorm(hidden_channels) for _ in range(num_layers - 1)) if layer_norm else None
        self.act = ACTIVATIONS[activation]
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        for m in list(self.proj.values()) + list(self.convs):
            m.reset_parameters()
        for n in self.norms or []:
            n.reset_parameters()

    def forward(self, x: dict, blocks: Sequence[Block]) -> dict:
        if len(blocks) != len(self.convs):
            raise ValueError(f"RGCN: got {len(blocks)} blocks for {len(self.convs)} layers")
        # One row numbering for all layers (ops.layouts_from_blocks): each layer reads its
        # sources and root rows as leading rows of the previous layer's output, in place.
        stack = layouts_from_blocks(blocks)
        h0 = {}
        for t in self.node_types:
            n = blocks[0].num_src(t) if t in blocks[0].src_nodes else 0
            if n == 0:
                continue
            if t not in x:
                raise KeyError(f"RGCN: no input features for node type '{t}' ({n} source nodes in blocks[0])")
            h0[t] = self.dropout(self.act(self.proj[t](x[t][:n])))
        parts = []
        for t, lo, hi in stack.input_slices:
            if t not in h0:
                raise KeyError(f"RGCN: node type '{t}' has {hi - lo} source nodes in the blocks but is not one "
                               f"of the encoder's node types")
            parts.append(h0[t][lo:hi])
        proj_w = next(iter(self.proj.values())).weight
        h = torch.cat(parts, 0) if parts else proj_w.new_zeros((0, proj_w.shape[0]))
        for i, (conv, layout) in enumerate(zip(self.convs, stack.layouts)):
            x_src = h if h.shape[0] == layout.num_src else h[:layout.num_src]  # no slice (and its backward) when whole
            h = conv.aggregate_rows(x_src, h[:layout.num_dst], layout)
            if i < len(self.convs) - 1:
                if self.norms is not None:
                    h = self.norms[i](h)
                h = self.dropout(self.act(h))
        return {t: h[o:o + n] for t, (o, n) in stack.output_slices.items()}
