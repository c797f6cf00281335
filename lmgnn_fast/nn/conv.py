"""``RGCNConv``: one relational graph convolution, fused into one ``lmgnn::rgcn_aggregate`` call."""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from lmgnn_fast.nn.layout import (RelLayout, concat_dst, concat_src, layout_from_block,
                                  layout_from_coo, split_dst)
from lmgnn_fast.ops.aggregate import rgcn_aggregate
from lmgnn_fast.sampling.block import Block


def kernel_available(device: torch.device) -> bool:
    """Whether ``lmgnn::rgcn_aggregate`` has a kernel for ``device`` in this build."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        import lmgnn_fast

        return bool(lmgnn_fast.build_info()["cuda"])
    return False


def _glorot(t: Tensor) -> None:
    fan = t.shape[-2] + t.shape[-1]
    bound = math.sqrt(6.0 / fan)
    with torch.no_grad():
        t.uniform_(-bound, bound)


class RGCNConv(nn.Module):
    r"""Relational graph convolution (Schlichtkrull et al.), one fused op call per layer.

    ``out_i = x_i W_root + b + sum_r norm_{i,r} sum_{j in N_r(i)} x_j W_r`` with
    ``norm = 1/|N_r(i)|`` (``aggr="mean"``) or 1 (``"sum"``) and ``W_r`` full or
    ``sum_b comp[r, b] * weight[b]`` (``num_bases``). Parameter names and shapes match
    ``torch_geometric.nn.RGCNConv`` (``weight``, ``comp``, ``root``, ``bias``), so a PyG
    state dict loads as is.

    Call it in one of two ways:

    * **Block** — ``conv(x_src, x_dst, block)``: ``x_src`` a dict ``{node_type: [num_src[t],
      F_in]}`` (rows in ``block.src_nodes[t]`` order) and ``x_dst`` a dict of the destination
      rows (``None``: the dst prefix of ``x_src``); returns ``{node_type: [num_dst[t], F_out]}``.
      Or homogeneous tensors in the layout's concatenated order (types in
      ``block.node_types`` order): ``x_src [N_src, F_in]``, ``x_dst [N_dst, F_in]`` (required)
      -> ``[N_dst, F_out]``.
    * **PyG drop-in** — ``conv(x, edge_index, edge_type)``: ``x [N, F_in]`` or a pair
      ``(x_src [N_src, F_in], x_dst [N_dst, F_in])``, ``edge_index [2, E]`` (source,
      destination), ``edge_type [E]``; returns ``[N_dst, F_out]``. The COO is converted once
      per call (one ``coo_to_csc``).

    Args:
        in_channels, out_channels: F_in, F_out.
        num_relations: R.
        num_bases: B for the basis decomposition, ``None`` for full weights.
        aggr: ``"mean"`` or ``"sum"`` (per relation).
        root_weight: add ``x_i W_root``.
        bias: add ``b``.
        use_kernel: ``None`` uses the fused op where it has a kernel for the input's device
            and the pure-torch per-relation path elsewhere; ``False`` forces the pure path.
    """

    def __init__(self, in_channels: int, out_channels: int, num_relations: int,
                 num_bases: Optional[int] = None, aggr: str = "mean", root_weight: bool = True,
                 bias: bool = True, use_kernel: Optional[bool] = None):
        super().__init__()
        if aggr not in ("mean", "sum"):
            raise ValueError(f"RGCNConv: aggr must be 'mean' or 'sum', got {aggr!r}")
        if num_bases is not None and num_bases <= 0:
            raise ValueError(f"RGCNConv: num_bases must be positive, got {num_bases}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_relations, self.num_bases, self.aggr = num_relations, num_bases, aggr
        self.use_kernel = use_kernel
        if num_bases is None:
            self.weight = nn.Parameter(torch.empty(num_relations, in_channels, out_channels))
            self.register_parameter("comp", None)
        else:
            self.weight = nn.Parameter(torch.empty(num_bases, in_channels, out_channels))
            self.comp = nn.Parameter(torch.empty(num_relations, num_bases))
        self.root = nn.Parameter(torch.empty(in_channels, out_channels)) if root_weight else None
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot(self.weight)
        if self.comp is not None:
            _glorot(self.comp)
        if self.root is not None:
            _glorot(self.root)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    # ------------------------------------------------------------------ core
    def relation_weights(self) -> Tensor:
        """``[R, F_in, F_out]``: ``weight`` or ``comp @ bases``."""
        if self.comp is None:
            return self.weight
        return torch.einsum("rb,bio->rio", self.comp, self.weight)

    def _use_kernel(self, x: Tensor) -> bool:
        if self.use_kernel is False:
            return False
        return kernel_available(x.device)

    def _fused(self, x_src: Tensor, x_dst: Optional[Tensor], layout: RelLayout) -> Tensor:
        if layout.num_relations != self.num_relations:
            raise ValueError(f"RGCNConv: the graph has {layout.num_relations} relations, the layer "
                             f"{self.num_relations}")
        root = self.root if x_dst is not None else None
        return rgcn_aggregate(x_src, layout, self.weight, self.comp, x_dst if root is not None else None,
                              root, self.bias, self.aggr)

    def _finish(self, out: Tensor, x_dst: Optional[Tensor]) -> Tensor:
        if self.root is not None and x_dst is not None:
            out = out + x_dst @ self.root
        if self.bias is not None:
            out = out + self.bias
        return out

    # ------------------------------------------------------------------ pure torch
    def _block_ref(self, x_src: dict, x_dst: dict, block: Block) -> dict:
        w = self.relation_weights()
        out = {}
        for t in block.node_types:
            nd = int(block.num_dst.get(t, 0))
            like = w
            out[t] = like.new_zeros((nd, self.out_channels)) if nd else None
        for r, (s, _, d) in enumerate(block.edge_types):
            nd = int(block.num_dst.get(d, 0))
            indptr = block.indptr[r].long()
            if nd == 0 or int(indptr[-1] - indptr[0]) == 0:
                continue
            deg = indptr.diff()
            dst = torch.repeat_interleave(torch.arange(nd, device=deg.device), deg)
            src = block.indices[r].long()[int(indptr[0]):int(indptr[-1])]
            msg = x_src[s][src] @ w[r]
            acc = msg.new_zeros((nd, self.out_channels)).index_add(0, dst, msg)
            if self.aggr == "mean":
                acc = acc / deg.clamp(min=1).to(acc.dtype)[:, None]
            out[d] = out[d] + acc
        res = {}
        for t in block.node_types:
            nd = int(block.num_dst.get(t, 0))
            o = out[t] if out[t] is not None else w.new_zeros((0, self.out_channels))
            if nd:
                o = self._finish(o, x_dst[t][:nd] if x_dst is not None and t in x_dst else None)
            res[t] = o
        return res

    def _coo_ref(self, x_src: Tensor, x_dst: Tensor, edge_index: Tensor, edge_type: Tensor) -> Tensor:
        w = self.relation_weights()
        out = x_src.new_zeros((x_dst.shape[0], self.out_channels))
        for r in range(self.num_relations):
            m = edge_type == r
            src, dst = edge_index[0][m], edge_index[1][m]
            acc = out.new_zeros(out.shape).index_add(0, dst, x_src[src] @ w[r])
            if self.aggr == "mean":
                deg = torch.bincount(dst, minlength=out.shape[0]).clamp(min=1).to(out.dtype)
                acc = acc / deg[:, None]
            out = out + acc
        return self._finish(out, x_dst)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Union[Tensor, dict, tuple], arg2=None, arg3=None):
        if isinstance(arg3, Block):
            return self._forward_block(x, arg2, arg3)
        if arg2 is None or arg3 is None:
            raise TypeError("RGCNConv: call as conv(x_src, x_dst, block) or conv(x, edge_index, edge_type)")
        return self._forward_coo(x, arg2, arg3)

    def _forward_block(self, x_src, x_dst, block: Block):
        if isinstance(x_src, dict):
            if x_dst is None:
                x_dst = x_src
            if not self._use_kernel(next(iter(x_src.values()))):
                return self._block_ref(x_src, x_dst, block)
            layout = layout_from_block(block)
            out = self._fused(concat_src(x_src, layout), concat_dst(x_dst, layout), layout)
            return split_dst(out, layout)
        if x_dst is None and self.root is not None:
            raise ValueError("RGCNConv: with homogeneous tensors and a block, pass x_dst [N_dst, F_in] "
                             "(the destination rows in the layout's order)")
        layout = layout_from_block(block)
        if x_src.shape[0] != layout.num_src:
            raise ValueError(f"RGCNConv: x_src has {x_src.shape[0]} rows, the block {layout.num_src} sources")
        if not self._use_kernel(x_src):
            xs = {t: x_src[layout.src_offset[t]:layout.src_offset[t] + layout.num_src_per_type[t]]
                  for t in layout.node_types}
            xd = None if x_dst is None else {
                t: x_dst[layout.dst_offset[t]:layout.dst_offset[t] + layout.num_dst_per_type[t]]
                for t in layout.node_types}
            res = self._block_ref(xs, xd, block)
            return torch.cat([res[t] for t in layout.node_types], 0)
        return self._fused(x_src, x_dst, layout)

    def _forward_coo(self, x, edge_index: Tensor, edge_type: Tensor) -> Tensor:
        x_src, x_dst = x if isinstance(x, (tuple, list)) else (x, x)
        if not self._use_kernel(x_src):
            return self._coo_ref(x_src, x_dst, edge_index.long(), edge_type.long())
        layout = layout_from_coo(edge_index, edge_type, x_src.shape[0], x_dst.shape[0], self.num_relations)
        return self._fused(x_src, x_dst, layout)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, num_relations={self.num_relations}, "
                f"num_bases={self.num_bases}, aggr={self.aggr!r}")
