"""Attention encoders beside R-GCN: ``HGT`` (Hu et al. 2020) and ``RGAT`` (relation-wise
dot-product graph attention), each one ``lmgnn::hetero_attention`` call per layer.

Both run over the sampler's blocks with the layout R-GCN uses
(:func:`~lmgnn_fast.ops.layout.layout_from_block`: node types concatenated, relations as
``(relation, destination)`` pairs). Relation-specific key transforms are folded into one
query per destination and relation, so keys and values are computed once per source row;
relation-specific output transforms are applied to the per-relation aggregates of the
destinations (aggregate, then transform: the transforms cost ``N_dst`` rows per relation,
not ``N_src`` or ``E``).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from lmgnn_fast.graph import EdgeType
from lmgnn_fast.nn.norm import LayerNorm
from lmgnn_fast.nn.rgcn import ACTIVATIONS
from lmgnn_fast.ops.attention import hetero_attention, hetero_attention_ref
from lmgnn_fast.ops.kernels import kernel_available
from lmgnn_fast.ops.layout import RelLayout, layout_from_block
from lmgnn_fast.sampling.block import Block

__all__ = ["HGT", "HGTConv", "RGAT", "RGATConv"]


def _glorot(t: Tensor) -> None:
    bound = math.sqrt(6.0 / (t.shape[-2] + t.shape[-1]))
    with torch.no_grad():
        t.uniform_(-bound, bound)


class _RelationalAttention(nn.Module):
    """What both attention layers share: relations into each node type, per-type rows of a
    block, the attention op (or its reference) and the query scatter."""

    def __init__(self, in_channels: int, out_channels: int, node_types: Sequence[str],
                 edge_types: Sequence[EdgeType], heads: int, use_kernel: Optional[bool]):
        super().__init__()
        name = type(self).__name__
        if heads < 1 or out_channels % heads:
            raise ValueError(f"{name}: out_channels ({out_channels}) must be a positive multiple of heads ({heads})")
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.head_dim = out_channels // heads
        self.node_types = list(node_types)
        self.edge_types = [tuple(e) for e in edge_types]
        self.num_relations = len(self.edge_types)
        self.use_kernel = use_kernel
        unknown = sorted({t for e in self.edge_types for t in (e[0], e[2])} - set(self.node_types))
        if unknown:
            raise ValueError(f"{name}: edge types name node types {unknown} that are not in node_types")
        # relations into each node type (relation ids in order), as non-persistent buffers
        # so they follow .to(device) without entering the state dict; the k-th relation into
        # a type has slot k in the op's q and out, so those are [N_dst, S, H, D] with S the
        # most relations into one type, not R (``hetero_attention``'s rel_slot)
        self._rels = {}
        slot = [0] * self.num_relations
        for i, t in enumerate(self.node_types):
            rels = [r for r, e in enumerate(self.edge_types) if e[2] == t]
            for k, r in enumerate(rels):
                slot[r] = k
            self.register_buffer(f"_rels_{i}", torch.tensor(rels, dtype=torch.long), persistent=False)
            self._rels[t] = f"_rels_{i}"
        self.num_slots = max([len(self.relations_into(t)) for t in self.node_types] + [0])
        self.register_buffer("_rel_slot", torch.tensor(slot, dtype=torch.long), persistent=False)

    def relations_into(self, t: str) -> Tensor:
        """Relation ids whose destination type is ``t`` (int64, on the module's device)."""
        return getattr(self, self._rels[t])

    def _layout(self, block: Block) -> RelLayout:
        if [tuple(e) for e in block.edge_types] != self.edge_types:
            raise ValueError(f"{type(self).__name__}: the block's relations {list(block.edge_types)} are not the "
                             f"layer's {self.edge_types} (relation id = index)")
        return layout_from_block(block)

    def _attend(self, per_type: dict, k: Tensor, v: Tensor, layout: RelLayout, scope: str, like: Tensor) -> dict:
        """The attention op on the queries ``{t: [num_dst[t], |R_t|, H, D]}`` (the relations
        into ``t``, in order) -> ``{t: [num_dst[t], |R_t|, H, Dv]}`` per destination type."""
        S, H, D = self.num_slots, self.heads, self.head_dim
        parts = []
        for t in layout.node_types:  # the destination rows, type by type: q [N_dst, S, H, D]
            n = layout.num_dst_per_type[t]
            if n == 0:
                continue
            qt = per_type.get(t)
            if qt is None:
                qt = like.new_zeros((n, S, H, D))
            elif qt.shape[1] < S:  # slots no relation into t uses (never read)
                qt = torch.cat([qt, qt.new_zeros((n, S - qt.shape[1], H, D))], 1)
            parts.append(qt)
        q = parts[0] if len(parts) == 1 else (torch.cat(parts, 0) if parts else like.new_zeros((0, S, H, D)))
        use = self.use_kernel is not False and kernel_available(q.device)
        fn = hetero_attention if use else hetero_attention_ref
        agg = fn(q, k, v, layout, scale=1.0, scope=scope, rel_slot=self._rel_slot)
        sizes = [layout.num_dst_per_type[t] for t in layout.node_types]
        out = {}
        for t, a in zip(layout.node_types, agg.split(sizes, 0)):  # split: its backward is one cat, no zero fill
            nr = len(self.relations_into(t))
            out[t] = a if nr == S else a[:, :nr]
        return out

    def _dst_types(self, layout: RelLayout):
        """``(t, offset, rows, relations into t)`` for the node types with destinations."""
        for t in layout.node_types:
            n = layout.num_dst_per_type[t]
            if n:
                yield t, layout.dst_offset[t], n, self.relations_into(t)


def _rows(x: Tensor, n: int) -> Tensor:
    """The first ``n`` rows of ``x`` — ``x`` itself when it has ``n`` (no slice, whose backward
    would fill a zero gradient of ``x``'s size)."""
    return x if x.shape[0] == n else x[:n]


class _TypedLinear(torch.autograd.Function):
    """``cat([x_t @ W_t^T + b_t for each type t])`` written into one output (no concatenation
    copy); the backward hands out per-type row blocks of the gradient (views)."""

    @staticmethod
    def forward(ctx, n_types: int, *args):
        xs, ws, bs = args[:n_types], args[n_types:2 * n_types], args[2 * n_types:]
        out = xs[0].new_empty((sum(x.shape[0] for x in xs), ws[0].shape[0]))
        off = 0
        for x, w, b in zip(xs, ws, bs):
            seg = out[off:off + x.shape[0]]
            if b is None:
                torch.mm(x, w.t(), out=seg)
            else:
                torch.addmm(b, x, w.t(), out=seg)
            off += x.shape[0]
        ctx.n_types, ctx.has_bias = n_types, [b is not None for b in bs]
        ctx.save_for_backward(*xs, *ws)
        return out

    @staticmethod
    def backward(ctx, g):
        n = ctx.n_types
        saved = ctx.saved_tensors
        xs, ws = saved[:n], saved[n:]
        nig = ctx.needs_input_grad[1:]
        gx, gw, gb = [None] * n, [None] * n, [None] * n
        off = 0
        for i, (x, w) in enumerate(zip(xs, ws)):
            gs = g[off:off + x.shape[0]]
            off += x.shape[0]
            if nig[i]:
                gx[i] = gs @ w
            if nig[n + i]:
                gw[i] = gs.t() @ x
            if ctx.has_bias[i] and nig[2 * n + i]:
                gb[i] = gs.sum(0)
        return (None, *gx, *gw, *gb)


def _typed_rows(lins: nn.ModuleDict, x: dict, layout: RelLayout, counts: dict, what: str, width: int,
                like: Tensor) -> Tensor:
    """``cat([lins[t](x[t][:counts[t]]) for t in layout.node_types])``: ``[sum(counts), width]``,
    one output buffer (:class:`_TypedLinear`)."""
    xs, ws, bs = [], [], []
    for t in layout.node_types:
        n = counts[t]
        if n == 0:
            continue
        if t not in x:
            raise KeyError(f"attention layer: no features for node type '{t}' ({n} {what} rows in the block)")
        if x[t].shape[0] < n:
            raise ValueError(f"attention layer: features of node type '{t}' have {x[t].shape[0]} rows, the block "
                             f"needs {n} {what} rows")
        xs.append(_rows(x[t], n))
        ws.append(lins[t].weight)
        bs.append(lins[t].bias)
    if not xs:
        return like.new_zeros((0, width))
    return _TypedLinear.apply(len(xs), *xs, *ws, *bs)


class HGTConv(_RelationalAttention):
    r"""One heterogeneous graph transformer layer (Hu et al., WWW 2020), one fused attention
    call per layer.

    For destination ``i`` of type ``τ`` and head ``h`` (``D = out_channels / heads``)::

        k_j = K_{τ(j)} x_j,   v_j = V_{τ(j)} x_j,   q_i = Q_τ x_i            (per node type)
        logit_e = mu[r, h] / sqrt(D) * <q_i[h], W_att[r, h]^T k_j[h]>      (e = j -> i of relation r)
        alpha_e = softmax over every in-edge of i (all relations together)
        m_i[h] = sum_r (sum_{e in N_r(i)} alpha_e v_j[h]) @ W_msg[r, h]
        out_i  = dropout(A_τ(gelu(m_i)));  out_i = s * out_i + (1 - s) * x_i,  s = sigmoid(skip_τ)

    (the gated skip where ``in_channels == out_channels``), then an optional ``LayerNorm``.
    ``W_att`` and ``mu`` are folded into the query, ``q[i, r] = W_att[r] q_i * mu[r] /
    sqrt(D)``, so keys and values are computed once per source row and shared by all its
    relations; ``W_msg`` is applied to the per-relation aggregates of the destinations. The
    parameters map one to one onto ``torch_geometric.nn.HGTConv``'s (``load_pyg_state``),
    which computes the same function (GELU before ``A``, as there and in the paper).

    Args:
        in_channels, out_channels: F_in, F_out (F_out divisible by ``heads``).
        node_types, edge_types: the graph's; relation id = index in ``edge_types``.
        heads: attention heads H.
        dropout: on ``A``'s output.
        layer_norm: LayerNorm after the skip.
        use_kernel: ``None``: the fused op where it has a kernel for the device, else its
            reference; ``False``: always the reference.

    Shapes:
        ``forward(x, block)``: ``x[t]`` ``[num_src[t], F_in]`` (the block's source rows of
        type ``t``; its destinations are the first ``num_dst[t]``) -> ``{t: [num_dst[t], F_out]}``.
    """

    def __init__(self, in_channels: int, out_channels: int, node_types: Sequence[str],
                 edge_types: Sequence[EdgeType], heads: int = 4, dropout: float = 0.0, layer_norm: bool = False,
                 use_kernel: Optional[bool] = None):
        super().__init__(in_channels, out_channels, node_types, edge_types, heads, use_kernel)
        F, H, D, R = out_channels, heads, self.head_dim, self.num_relations
        self.k_lin = nn.ModuleDict({t: nn.Linear(in_channels, F) for t in self.node_types})
        self.q_lin = nn.ModuleDict({t: nn.Linear(in_channels, F) for t in self.node_types})
        self.v_lin = nn.ModuleDict({t: nn.Linear(in_channels, F) for t in self.node_types})
        self.a_lin = nn.ModuleDict({t: nn.Linear(F, F) for t in self.node_types})
        self.w_att = nn.Parameter(torch.empty(R, H, D, D))
        self.w_msg = nn.Parameter(torch.empty(R, H, D, D))
        self.mu = nn.Parameter(torch.empty(R, H))
        self.skip = nn.Parameter(torch.empty(len(self.node_types)))
        self.norm = nn.ModuleDict({t: LayerNorm(F) for t in self.node_types}) if layer_norm else None
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lins in (self.k_lin, self.q_lin, self.v_lin, self.a_lin):
            for lin in lins.values():
                lin.reset_parameters()
        _glorot(self.w_att)
        _glorot(self.w_msg)
        nn.init.ones_(self.mu)
        nn.init.ones_(self.skip)
        for n in (self.norm or {}).values():
            n.reset_parameters()

    def forward(self, x: dict, block: Block) -> dict:
        layout = self._layout(block)
        like = self.w_att
        H, D = self.heads, self.head_dim
        k = _typed_rows(self.k_lin, x, layout, layout.num_src_per_type, "source", self.out_channels, like)
        v = _typed_rows(self.v_lin, x, layout, layout.num_src_per_type, "source", self.out_channels, like)
        w_att = self.w_att * (self.mu / math.sqrt(D))[:, :, None, None]  # mu[r, h] / sqrt(D) folded in
        xd = {t: _rows(x[t], n) for t, _, n, _ in self._dst_types(layout)}  # destination rows: one slice per type
        q = {}
        for t, _, n, rels in self._dst_types(layout):
            if rels.numel():
                qt = self.q_lin[t](xd[t]).view(n, H, D)
                q[t] = torch.einsum("nhe,rhde->nrhd", qt, w_att[rels])  # q[i, r, h] = W_att[r, h] q_i[h] * ...
        agg = self._attend(q, k.view(-1, H, D), v.view(-1, H, D), layout, "per_dst", like)
        out = {}
        for t in layout.node_types:
            n = layout.num_dst_per_type[t]
            x_t = xd[t] if n else like.new_zeros((0, self.in_channels))
            rels = self.relations_into(t)
            if n and rels.numel():
                m = torch.einsum("nrhd,rhde->nhe", agg[t], self.w_msg[rels]).reshape(n, self.out_channels)
            else:
                m = like.new_zeros((n, self.out_channels))
            o = self.dropout(self.a_lin[t](nn.functional.gelu(m)))
            if self.in_channels == self.out_channels:
                s = torch.sigmoid(self.skip[self.node_types.index(t)])
                o = s * o + (1 - s) * x_t
            if self.norm is not None:
                o = self.norm[t](o)
            out[t] = o
        return out

    @torch.no_grad()
    def load_pyg_state(self, pyg_conv) -> None:
        """Copy the weights of a ``torch_geometric.nn.HGTConv`` with the same node types, edge
        types (in the same order), sizes and heads, so that both compute the same function."""
        R, H, F = self.num_relations, self.heads, self.out_channels
        for t in self.node_types:
            lin = pyg_conv.kqv_lin.lins[t]
            for i, mine in enumerate((self.k_lin[t], self.q_lin[t], self.v_lin[t])):
                mine.weight.copy_(lin.weight[i * F:(i + 1) * F])
                mine.bias.copy_(lin.bias[i * F:(i + 1) * F])
            self.a_lin[t].weight.copy_(pyg_conv.out_lin.lins[t].weight)
            self.a_lin[t].bias.copy_(pyg_conv.out_lin.lins[t].bias)
            self.skip[self.node_types.index(t)] = pyg_conv.skip[t].reshape(())
        # PyG's relation weights: type h * R + r, applied as k @ W (W [D, D])
        self.w_att.copy_(pyg_conv.k_rel.weight.view(H, R, *pyg_conv.k_rel.weight.shape[1:]).transpose(0, 1))
        self.w_msg.copy_(pyg_conv.v_rel.weight.view(H, R, *pyg_conv.v_rel.weight.shape[1:]).transpose(0, 1))
        for r, e in enumerate(self.edge_types):
            self.mu[r] = pyg_conv.p_rel["__".join(e)].reshape(H)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, heads={self.heads}, relations={self.num_relations}"


class RGATConv(_RelationalAttention):
    r"""Relation-wise graph attention with dot-product scores, one fused attention call per
    layer.

    For destination ``i`` of type ``τ``, relation ``r`` and head ``h`` (``D = out_channels / heads``)::

        q_{i,r} = W_q[r] x_i / sqrt(D)                 (per relation)
        k_j = v_j = K_{τ(j)} x_j                         (per source type, shared by its relations)
        alpha_e = softmax of <q_{i,r}[h], k_j[h]> over the in-edges of i of relation r
        out_i = Root_τ(x_i) + sum_r (sum_{e in N_r(i)} alpha_e v_j) @ W_o[r]

    The softmax runs per ``(destination, relation)`` like R-GCN's per-relation mean, and the
    relations are summed like R-GCN's (and ``HeteroConv(aggr="sum")``'s) — a destination
    without edges of ``r`` gets nothing from it, one without any edge gets ``Root_τ(x_i)``
    (weight and bias). ``W_o[r]`` acts on the concatenated heads of the per-relation
    aggregate, so heads mix per relation, as ``GATConv``'s concatenated heads would be mixed
    by the next layer.

    One projection per source type serves as key and value (``share_kv``, the default), as
    GAT's ``W h_j`` serves its scores and its messages: the layer's cost is dominated by the
    projection of every source row (``N_src >> N_dst`` in sampled blocks), so sharing halves
    it; the relation-specific parts (``W_q[r]``, ``W_o[r]``) act on the destinations.
    ``share_kv=False`` adds a separate ``V_τ`` (parameter ``v_lin``).

    Args:
        in_channels, out_channels: F_in, F_out (F_out divisible by ``heads``).
        node_types, edge_types: the graph's; relation id = index in ``edge_types``.
        heads: attention heads H.
        share_kv: one projection per source type for keys and values (``False``: two).
        use_kernel: ``None``: the fused op where it has a kernel for the device, else its
            reference; ``False``: always the reference.

    Shapes:
        ``forward(x, block)``: ``x[t]`` ``[num_src[t], F_in]`` -> ``{t: [num_dst[t], F_out]}``.
    """

    def __init__(self, in_channels: int, out_channels: int, node_types: Sequence[str],
                 edge_types: Sequence[EdgeType], heads: int = 4, share_kv: bool = True,
                 use_kernel: Optional[bool] = None):
        super().__init__(in_channels, out_channels, node_types, edge_types, heads, use_kernel)
        F, R = out_channels, self.num_relations
        self.share_kv = share_kv
        self.w_q = nn.Parameter(torch.empty(R, in_channels, F))
        self.k_lin = nn.ModuleDict({t: nn.Linear(in_channels, F, bias=False) for t in self.node_types})
        self.v_lin = None if share_kv else nn.ModuleDict({t: nn.Linear(in_channels, F, bias=False)
                                                          for t in self.node_types})
        self.w_o = nn.Parameter(torch.empty(R, F, F))
        self.root = nn.ModuleDict({t: nn.Linear(in_channels, F) for t in self.node_types})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot(self.w_q)
        _glorot(self.w_o)
        for lins in (self.k_lin, self.v_lin or {}, self.root):
            for lin in lins.values():
                lin.reset_parameters()

    def forward(self, x: dict, block: Block) -> dict:
        layout = self._layout(block)
        like = self.w_q
        H, D, F = self.heads, self.head_dim, self.out_channels
        k = _typed_rows(self.k_lin, x, layout, layout.num_src_per_type, "source", F, like)
        v = k if self.v_lin is None else _typed_rows(self.v_lin, x, layout, layout.num_src_per_type, "source", F,
                                                     like)
        xd = {t: _rows(x[t], n) for t, _, n, _ in self._dst_types(layout)}  # destination rows: one slice per type
        q = {}
        for t, _, n, rels in self._dst_types(layout):
            if rels.numel():
                w = self.w_q[rels].permute(1, 0, 2).reshape(self.in_channels, -1) / math.sqrt(D)  # [F_in, |R_t| F]
                q[t] = (xd[t] @ w).view(n, rels.numel(), H, D)
        kh = k.view(-1, H, D)
        vh = kh if v is k else v.view(-1, H, D)  # one tensor: the op returns one gradient for both
        agg = self._attend(q, kh, vh, layout, "per_dst_rel", like)
        out = {}
        for t in layout.node_types:
            n = layout.num_dst_per_type[t]
            if n == 0:
                out[t] = like.new_zeros((0, F))
                continue
            o = self.root[t](xd[t])
            rels = self.relations_into(t)
            if rels.numel():
                o = o + agg[t].reshape(n, -1) @ self.w_o[rels].reshape(-1, F)  # [n, |R_t| * F] @ [|R_t| * F, F]
            out[t] = o
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, heads={self.heads}, relations={self.num_relations}, "
                f"share_kv={self.share_kv}")


class _AttentionEncoder(nn.Module):
    """Input projections per node type, then one attention layer per block."""

    def __init__(self, in_channels: Union[int, dict], hidden_channels: int, node_types: Sequence[str],
                 num_layers: int, activation: str, dropout: float):
        super().__init__()
        name = type(self).__name__
        if num_layers < 1:
            raise ValueError(f"{name}: num_layers must be >= 1, got {num_layers}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"{name}: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.node_types = list(node_types)
        if not isinstance(in_channels, dict):
            in_channels = {t: int(in_channels) for t in self.node_types}
        missing = [t for t in self.node_types if t not in in_channels]
        if missing:
            raise ValueError(f"{name}: in_channels has no size for node types {missing}")
        self.proj = nn.ModuleDict({t: nn.Linear(in_channels[t], hidden_channels) for t in self.node_types})
        self.act = ACTIVATIONS[activation]
        self.dropout = nn.Dropout(dropout)

    def _inputs(self, x: dict, blocks: Sequence[Block]) -> dict:
        if len(blocks) != len(self.convs):
            raise ValueError(f"{type(self).__name__}: got {len(blocks)} blocks for {len(self.convs)} layers")
        h = {}
        for t in self.node_types:
            n = blocks[0].num_src(t) if t in blocks[0].src_nodes else 0
            if n == 0:
                continue
            if t not in x:
                raise KeyError(f"{type(self).__name__}: no input features for node type '{t}' ({n} source nodes "
                               f"in blocks[0])")
            h[t] = self.dropout(self.act(self.proj[t](_rows(x[t], n))))
        return h


class HGT(_AttentionEncoder):
    """Heterogeneous graph transformer encoder over the sampler's blocks: per node type
    ``Linear(in_channels[t], hidden)`` + activation + dropout, then ``num_layers``
    :class:`HGTConv` layers (their own GELU, dropout, gated skip and optional LayerNorm).

    Args:
        in_channels: ``{node_type: F_in[t]}`` or one int for every type.
        hidden_channels: width of the projection and of the hidden layers.
        out_channels: width of the last layer.
        node_types: all node types (the graph's order).
        edge_types: all relations; relation id = index.
        num_layers: number of layers (= blocks per batch).
        heads: attention heads (``hidden_channels`` and ``out_channels`` divisible by it).
        dropout: dropout of the projection and inside every layer.
        activation: of the input projection (see ``nn.rgcn.ACTIVATIONS``).
        layer_norm: LayerNorm at the end of every layer but the last.
        use_kernel: passed to every layer (``False``: the pure-torch path).

    Shapes:
        ``forward(x, blocks)``: ``x[t]`` ``[blocks[0].num_src(t), F_in[t]]``; returns
        ``{t: [blocks[-1].num_dst[t], out_channels]}``.
    """

    def __init__(self, in_channels: Union[int, dict], hidden_channels: int, out_channels: int,
                 node_types: Sequence[str], edge_types: Sequence[EdgeType], num_layers: int = 2, heads: int = 4,
                 dropout: float = 0.0, activation: str = "relu", layer_norm: bool = False,
                 use_kernel: Optional[bool] = None):
        super().__init__(in_channels, hidden_channels, node_types, num_layers, activation, dropout)
        dims = [hidden_channels] * num_layers + [out_channels]
        self.convs = nn.ModuleList(
            HGTConv(dims[i], dims[i + 1], self.node_types, edge_types, heads=heads, dropout=dropout,
                    layer_norm=layer_norm and i < num_layers - 1, use_kernel=use_kernel) for i in range(num_layers))

    def reset_parameters(self) -> None:
        for m in list(self.proj.values()) + list(self.convs):
            m.reset_parameters()

    def forward(self, x: dict, blocks: Sequence[Block]) -> dict:
        h = self._inputs(x, blocks)
        for conv, block in zip(self.convs, blocks):
            h = conv(h, block)
        return h


class RGAT(_AttentionEncoder):
    """Relation-wise graph attention encoder over the sampler's blocks: per node type
    ``Linear(in_channels[t], hidden)`` + activation + dropout, then ``num_layers``
    :class:`RGATConv` layers with LayerNorm (optional), activation and dropout between them
    (as :class:`~lmgnn_fast.nn.RGCN`).

    Args: as :class:`HGT` (``layer_norm`` between layers), plus ``share_kv`` (see
    :class:`RGATConv`).

    Shapes:
        ``forward(x, blocks)``: ``x[t]`` ``[blocks[0].num_src(t), F_in[t]]``; returns
        ``{t: [blocks[-1].num_dst[t], out_channels]}``.
    """

    def __init__(self, in_channels: Union[int, dict], hidden_channels: int, out_channels: int,
                 node_types: Sequence[str], edge_types: Sequence[EdgeType], num_layers: int = 2, heads: int = 4,
                 dropout: float = 0.0, activation: str = "relu", layer_norm: bool = False, share_kv: bool = True,
                 use_kernel: Optional[bool] = None):
        super().__init__(in_channels, hidden_channels, node_types, num_layers, activation, dropout)
        dims = [hidden_channels] * num_layers + [out_channels]
        self.convs = nn.ModuleList(
            RGATConv(dims[i], dims[i + 1], self.node_types, edge_types, heads=heads, share_kv=share_kv,
                     use_kernel=use_kernel) for i in range(num_layers))
        self.norms = nn.ModuleList(LayerNorm(hidden_channels) for _ in range(num_layers - 1)) if layer_norm else None

    def reset_parameters(self) -> None:
        for m in list(self.proj.values()) + list(self.convs):
            m.reset_parameters()
        for n in self.norms or []:
            n.reset_parameters()

    def forward(self, x: dict, blocks: Sequence[Block]) -> dict:
        h = self._inputs(x, blocks)
        for i, (conv, block) in enumerate(zip(self.convs, blocks)):
            h = conv(h, block)
            if i < len(self.convs) - 1:
                if self.norms is not None:
                    h = {t: self.norms[i](v) for t, v in h.items()}
                h = {t: self.dropout(self.act(v)) for t, v in h.items()}
        return h
