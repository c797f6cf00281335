"""Pure-torch stand-ins used by the trainer only when the package's own sampler, R-GCN or
cache are unavailable. Same contracts (``Block``, ``EmbeddingCache`` methods), written for
clarity rather than speed."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmgnn_fast.sampling.block import Block

__all__ = ["FallbackNeighborSampler", "FallbackRGCN", "FallbackEmbeddingTable"]


def _ordered_unique(x: Tensor) -> tuple[Tensor, Tensor]:
    """Unique values of ``x`` in first-occurrence order, and the index of each element."""
    if x.numel() == 0:
        return x, x
    uniq, inv = torch.unique(x, return_inverse=True)
    first = torch.full((uniq.numel(),), x.numel(), dtype=torch.long)
    first.scatter_reduce_(0, inv, torch.arange(x.numel()), reduce="amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    return uniq[order], rank[inv]


class FallbackNeighborSampler:
    """Uniform neighbour sampling without replacement over the graph's CSC relations."""

    def __init__(self, graph, fanouts: list[int], seed: int = 0):
        self.graph = graph
        self.fanouts = list(fanouts)
        self.seed = seed
        self.node_types = list(graph.node_types)
        self.edge_types = list(graph.edge_types)

    def sample(self, seeds: dict[str, Tensor], seed: int | None = None,
               exclude: dict | None = None) -> list[Block]:
        """Blocks, outermost first; the seeds (unique per type) are the last block's
        destination nodes in the given order. ``exclude`` maps a relation to global edge ids
        that must not be sampled."""
        g = torch.Generator().manual_seed(int(self.seed if seed is None else seed))
        dst = {t: seeds.get(t, torch.empty(0, dtype=torch.long)).long().cpu() for t in self.node_types}
        blocks = []
        for fanout in reversed(self.fanouts):
            per_rel = []
            srcs = {t: [dst[t]] for t in self.node_types}
            for et in self.edge_types:
                s_t, _, d_t = et
                csc = self.graph.csc[et]
                indptr, indices = csc.indptr.long(), csc.indices.long()
                eids = csc.eid.long()
                d = dst[d_t]
                start = indptr[d]
                deg = indptr[d + 1] - start
                seg = torch.repeat_interleave(torch.arange(d.numel()), deg)
                pos = start[seg] + (torch.arange(seg.numel()) - (torch.cumsum(deg, 0) - deg)[seg])
                if exclude and et in exclude and pos.numel():
                    keep = ~torch.isin(eids[pos], exclude[et].long().cpu())
                    seg, pos = seg[keep], pos[keep]
                if fanout >= 0 and pos.numel():
                    key = seg.double() + torch.rand(seg.numel(), generator=g, dtype=torch.double)
                    order = torch.argsort(key)
                    seg, pos = seg[order], pos[order]
                    counts = torch.bincount(seg, minlength=d.numel())
                    rank = torch.arange(seg.numel()) - (torch.cumsum(counts, 0) - counts)[seg]
                    keep = rank < fanout
                    seg, pos = seg[keep], pos[keep]
                per_rel.append((seg, indices[pos], eids[pos]))
                srcs[s_t].append(indices[pos])
            src_nodes, local = {}, {}
            for t in self.node_types:
                src_nodes[t], local[t] = _ordered_unique(torch.cat(srcs[t]))
            offs = {t: dst[t].numel() for t in self.node_types}
            cursor = {t: dst[t].numel() for t in self.node_types}
            indptrs, idxs, eidl = [], [], []
            for (s_t, _, d_t), (seg, src_g, e) in zip(self.edge_types, per_rel):
                n = src_g.numel()
                idxs.append(local[s_t][cursor[s_t]:cursor[s_t] + n])
                cursor[s_t] += n
                ip = torch.zeros(dst[d_t].numel() + 1, dtype=torch.long)
                ip[1:] = torch.cumsum(torch.bincount(seg, minlength=dst[d_t].numel()), 0)
                indptrs.append(ip)
                eidl.append(e)
            blocks.append(Block(self.node_types, self.edge_types, src_nodes, offs, indptrs, idxs, eidl))
            dst = src_nodes
        return blocks[::-1]


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


class FallbackEmbeddingTable:
    """A plain device tensor with the ``EmbeddingCache`` methods the trainer uses."""

    def __init__(self, num_rows: int, dim: int, device, dtype=torch.float32):
        self.table = torch.zeros(num_rows, dim, device=device, dtype=dtype)
        self.version = torch.full((num_rows,), -1, dtype=torch.long, device=device)
        self._stats = {"hits": 0, "misses": 0, "bytes": 0}

    def gather(self, ids: Tensor) -> Tensor:
        ids = ids.to(self.table.device).long()
        self._stats["hits"] += int(ids.numel())
        return self.table[ids]

    def update(self, ids: Tensor, rows: Tensor, step: int = 0) -> None:
        ids = ids.to(self.table.device).long()
        self.table[ids] = rows.detach().to(self.table.dtype)
        self.version[ids] = int(step)

    def stale(self, ids: Tensor, max_age: int, step: int) -> Tensor:
        return (step - self.version[ids.to(self.table.device).long()]) > max_age

    def stats(self) -> dict:
        return dict(self._stats)

    def reset_stats(self) -> None:
        self._stats = {"hits": 0, "misses": 0, "bytes": 0}
