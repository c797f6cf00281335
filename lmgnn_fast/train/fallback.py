"""Pure-torch R-GCN used by the trainer only when :mod:`lmgnn_fast.nn` is unavailable in a
build. Same contract as ``lmgnn_fast.nn.RGCN`` over blocks, written for clarity, not speed."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmgnn_fast.sampling.block import Block

__all__ = ["FallbackRGCN"]


class _RGCNLayer(nn.Module):
    def __init__(self, node_types, edge_types, dim_in, dim_out, num_bases, aggr):
        super().__init__()
        self.edge_types = edge_types
        self.aggr = aggr
        r = len(edge_types)
        if num_bases:
            self.basis = nn.Parameter(torch.empty(num_bases, dim_in, dim_out))
            self.comp = nn.Parameter(torch.empty(r, num_bases))
            nn.init.xavier_uniform_(self.basis)
            nn.init.xavier_uniform_(self.comp)
            self.weight = None
        else:
            self.weight = nn.Parameter(torch.empty(r, dim_in, dim_out))
            nn.init.xavier_uniform_(self.weight)
        self.root = nn.ModuleDict({t: nn.Linear(dim_in, dim_out) for t in node_types})

    def forward(self, x: dict[str, Tensor], block: Block) -> dict[str, Tensor]:
        w = self.weight if self.weight is not None else torch.einsum("rb,bio->rio", self.comp, self.basis)
        out = {t: self.root[t](x[t][: block.num_dst[t]]) for t in block.node_types}
        for r, (s_t, _, d_t) in enumerate(self.edge_types):
            idx = block.indices[r]
            if idx.numel() == 0:
                continue
            nd = block.num_dst[d_t]
            deg = block.indptr[r][1:] - block.indptr[r][:-1]
            dst = torch.repeat_interleave(torch.arange(nd, device=idx.device), deg)
            agg = torch.zeros(nd, x[s_t].shape[1], device=idx.device, dtype=x[s_t].dtype)
            agg.index_add_(0, dst, x[s_t][idx])
            if self.aggr == "mean":
                agg = agg / deg.clamp_min(1).unsqueeze(1).to(agg.dtype)
            out[d_t] = out[d_t] + agg @ w[r]
        return out


class FallbackRGCN(nn.Module):
    """Per-type input projection, then R-GCN layers over blocks (pure torch)."""

    def __init__(self, node_types, edge_types, in_dims: dict[str, int], hidden: int, num_layers: int,
                 num_bases=None, aggr: str = "mean", dropout: float = 0.0, layer_norm: bool = False):
        super().__init__()
        self.node_types = list(node_types)
        self.proj = nn.ModuleDict({t: nn.Linear(in_dims[t], hidden) for t in node_types})
        self.layers = nn.ModuleList(_RGCNLayer(node_types, list(edge_types), hidden, hidden, num_bases, aggr)
                                    for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.ModuleDict({t: nn.LayerNorm(hidden) for t in node_types})
                                   for _ in range(num_layers)) if layer_norm else None
        self.dropout = dropout

    def forward(self, x: dict[str, Tensor], blocks: list[Block]) -> dict[str, Tensor]:
        h = {t: self.proj[t](x[t]) for t in self.node_types}
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(h, block)
            if i < len(self.layers) - 1:
                if self.norms is not None:
                    h = {t: self.norms[i][t](v) for t, v in h.items()}
                h = {t: F.dropout(F.relu(v), self.dropout, self.training) for t, v in h.items()}
        return h
