"""``RGCNConv``: one relational graph convolution, fused into one ``lmgnn::rgcn_aggregate`` call."""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from lmgnn_fast.ops.aggregate import rgcn_aggregate, rgcn_aggregate_ref
from lmgnn_fast.ops.kernels import kernel_available
from lmgnn_fast.ops.layout import RelLayout, layout_from_block, layout_from_coo, layouts_from_blocks
from lmgnn_fast.sampling.block import Block


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
            and its pure-torch reference (:func:`~lmgnn_fast.ops.rgcn_aggregate_ref`, same
            layout) elsewhere; ``False`` forces the reference.
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

    def aggregate_rows(self, x_src: Tensor, x_dst: Optional[Tensor], layout: RelLayout) -> Tensor:
        """The layer on rows already in ``layout``'s numbering: the fused op where it has a
        kernel for the input's device (and ``use_kernel`` allows), else its pure-torch
        reference.

        Args:
            x_src: Tensor  # [layout.num_src, F_in]
            x_dst: Tensor  # [layout.num_dst, F_in] root rows (ignored without a root weight)
            layout: the :class:`~lmgnn_fast.ops.layout.RelLayout` of the layer.

        Returns:
            Tensor  # [layout.num_dst, F_out]
        """
        if layout.num_relations != self.num_relations:
            raise ValueError(f"RGCNConv: the graph has {layout.num_relations} relations, the layer "
                             f"{self.num_relations}")
        root = self.root if x_dst is not None else None
        x_root = x_dst if root is not None else None
        if self._use_kernel(x_src):
            return rgcn_aggregate(x_src, layout, self.weight, self.comp, x_root, root, self.bias, self.aggr)
        return rgcn_aggregate_ref(x_src, layout, self.weight, self.comp, x_root, root, self.bias, self.aggr)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Union[Tensor, dict, tuple], x_dst_or_edge_index=None, block_or_edge_type=None):
        """Apply the layer to a sampled block or to a PyG-style COO graph.

        Args:
            x: source features: ``{node_type: [num_src[t], F_in]}`` or ``[N_src, F_in]`` with
                a block; ``[N, F_in]`` or ``(x_src [N_src, F_in], x_dst [N_dst, F_in])`` with
                a COO graph.
            x_dst_or_edge_index: with a block, the destination features (a dict like ``x``,
                ``None`` for its dst prefix; a ``[N_dst, F_in]`` tensor with tensor ``x``);
                with a COO graph, ``edge_index``: Tensor  # [2, E] (source, destination)
            block_or_edge_type: the :class:`~lmgnn_fast.sampling.Block`, or ``edge_type``:
                Tensor  # [E] relation ids in ``[0, num_relations)``

        Returns:
            ``{node_type: [num_dst[t], F_out]}`` for dict features, else Tensor  # [N_dst, F_out]

        Raises:
            TypeError: the arguments fit neither form.
        """
        if isinstance(block_or_edge_type, Block):
            return self._forward_block(x, x_dst_or_edge_index, block_or_edge_type)
        if x_dst_or_edge_index is None or block_or_edge_type is None:
            raise TypeError("RGCNConv: call as conv(x_src, x_dst, block) or conv(x, edge_index, edge_type)")
        return self._forward_coo(x, x_dst_or_edge_index, block_or_edge_type)

    def _forward_block(self, x_src, x_dst, block: Block):
        if isinstance(x_src, dict) and x_dst is None:
            # Destinations are the dst prefix of the sources: number the rows destinations
            # first (the encoder's shared numbering), so one concatenation serves both and
            # the root rows are a leading slice of it (no second copy, no second backward).
            stack = layouts_from_blocks([block])
            lay = stack.layouts[0]
            counts: dict = {}
            for t, _, hi in stack.input_slices:
                counts[t] = max(counts.get(t, 0), hi)
            _check_rows(x_src, stack.node_types, counts, "source")
            parts = [x_src[t][lo:hi] for t, lo, hi in stack.input_slices]
            if parts:
                h = torch.cat(parts, 0)
            else:
                like = next(iter(x_src.values()))
                h = like.new_zeros((0, like.shape[1]))
            out = self.aggregate_rows(h, h[:lay.num_dst], lay)
            return {t: out[o:o + n] for t, (o, n) in stack.output_slices.items()}
        layout = layout_from_block(block)
        if isinstance(x_src, dict):
            out = self.aggregate_rows(_concat(x_src, layout, layout.num_src_per_type, "source"),
                                  _concat(x_dst, layout, layout.num_dst_per_type, "destination"), layout)
            return {t: out[layout.dst_offset[t]: layout.dst_offset[t] + layout.num_dst_per_type[t]]
                    for t in layout.node_types}
        if x_dst is None and self.root is not None:
            raise ValueError("RGCNConv: with homogeneous tensors and a block, pass x_dst [N_dst, F_in] "
                             "(the destination rows in the layout's order)")
        if x_src.shape[0] != layout.num_src:
            raise ValueError(f"RGCNConv: x_src has {x_src.shape[0]} rows, the block {layout.num_src} sources")
        return self.aggregate_rows(x_src, x_dst, layout)

    def _forward_coo(self, x, edge_index: Tensor, edge_type: Tensor) -> Tensor:
        x_src, x_dst = x if isinstance(x, (tuple, list)) else (x, x)
        layout = layout_from_coo(edge_index, edge_type, x_src.shape[0], x_dst.shape[0], self.num_relations)
        return self.aggregate_rows(x_src, x_dst, layout)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, num_relations={self.num_relations}, "
                f"num_bases={self.num_bases}, aggr={self.aggr!r}")


def _check_rows(x: dict, node_types, counts: dict, what: str) -> None:
    """Every type with rows in the block has features, at least ``counts[t]`` rows."""
    for t in node_types:
        n = counts.get(t, 0)
        if n == 0:
            continue
        if t not in x:
            raise KeyError(f"RGCNConv: no features for node type '{t}' ({n} {what} rows in the block)")
        if x[t].shape[0] < n:
            raise ValueError(f"RGCNConv: features of node type '{t}' have {x[t].shape[0]} rows, "
                             f"the block needs {n} {what} rows")


def _concat(x: dict, layout: RelLayout, counts: dict, what: str) -> Tensor:
    """Per node type features (at least ``counts[t]`` rows each) -> the layout's
    concatenated rows ``[sum(counts), F]``."""
    _check_rows(x, layout.node_types, counts, what)
    parts = [x[t][: counts[t]] for t in layout.node_types if counts[t] > 0]
    if not parts:
        like = next(iter(x.values()))
        return like.new_zeros((0, like.shape[1]))
    return torch.cat(parts, 0)
