"""The relation-sorted layout that ``lmgnn::rgcn_aggregate`` reads, built once per block.

Node types are concatenated, in the block's ``node_types`` order, into one source space
(``x_src = cat([x[t] for t in node_types])``, ``N_src`` rows) and one destination space
(``cat([x[t][:num_dst[t]] ...])``, ``N_dst`` rows); ``src_offset[t]`` / ``dst_offset[t]`` are
where type ``t`` starts. Edges are grouped into *pairs* — the non-empty
``(relation, destination)`` segments — sorted by relation, then destination.

This is the contract between :func:`lmgnn_fast.ops.rgcn_aggregate` (and its reference) and
its callers (``nn.RGCNConv``). The builders run on any device: where the extension has no
kernel for it they sort with the pure-torch :func:`~lmgnn_fast.ops.convert.coo_to_csc_ref`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from lmgnn_fast.ops.convert import coo_to_csc, coo_to_csc_ref, csc_to_coo
from lmgnn_fast.ops.kernels import kernel_available


def _coo_to_csc(src: Tensor, dst: Tensor, num_dst: int) -> tuple[Tensor, Tensor, Tensor]:
    if kernel_available(src.device):
        return coo_to_csc(src, dst, num_dst)
    return coo_to_csc_ref(src, dst, num_dst)


@dataclass
class RelLayout:
    """Relation-sorted CSC over a homogeneous index space (see ``csrc/ops/rgcn_aggregate.cpp``).

    Attributes:
        col: Tensor  # [E] source row of every edge, edges grouped by pair
        pair_ptr: Tensor  # [P + 1] int64, edges of pair p: col[pair_ptr[p]:pair_ptr[p+1]]
        pair_dst: Tensor  # [P] destination row of each pair
        rel_ptr: Tensor  # [R + 1] int64, pairs of relation r: rel_ptr[r]:rel_ptr[r+1]
        dst_ptr: Tensor  # [N_dst + 1] int64, CSR destination -> its pairs
        dst_pairs: Tensor  # [P] pair ids, grouped by destination, relation order within
        src_ptr: Tensor  # [N_src + 1] int64, CSR source -> its edges
        src_pairs: Tensor  # [E] pair id of every edge, grouped by source
        num_src / num_dst: rows of the source / destination spaces.
        node_types: types in concatenation order (empty for a homogeneous graph).
        src_offset / dst_offset: where each type starts (``{}`` for homogeneous).
    """

    col: Tensor
    pair_ptr: Tensor
    pair_dst: Tensor
    rel_ptr: Tensor
    dst_ptr: Tensor
    dst_pairs: Tensor
    src_ptr: Tensor
    src_pairs: Tensor
    num_src: int
    num_dst: int
    node_types: list = field(default_factory=list)
    src_offset: dict = field(default_factory=dict)
    dst_offset: dict = field(default_factory=dict)
    num_src_per_type: dict = field(default_factory=dict)
    num_dst_per_type: dict = field(default_factory=dict)

    @property
    def num_pairs(self) -> int:
        return int(self.pair_dst.numel())

    @property
    def num_edges(self) -> int:
        return int(self.col.numel())

    @property
    def num_relations(self) -> int:
        return int(self.rel_ptr.numel()) - 1

    def to(self, device) -> "RelLayout":
        kw = {k: getattr(self, k).to(device) for k in _TENSORS}
        return RelLayout(**kw, num_src=self.num_src, num_dst=self.num_dst,
                         node_types=list(self.node_types), src_offset=dict(self.src_offset),
                         dst_offset=dict(self.dst_offset),
                         num_src_per_type=dict(self.num_src_per_type),
                         num_dst_per_type=dict(self.num_dst_per_type))


_TENSORS = ("col", "pair_ptr", "pair_dst", "rel_ptr", "dst_ptr", "dst_pairs", "src_ptr", "src_pairs")


def _index_dtype(index_dtype: Optional[torch.dtype], num_src: int, num_dst: int, num_edges: int):
    if index_dtype is not None:
        if index_dtype not in (torch.int32, torch.int64):
            raise ValueError(f"layout: index_dtype must be torch.int32 or torch.int64, got {index_dtype}")
        return index_dtype
    return torch.int32 if max(num_src, num_dst, num_edges) < 2**31 - 1 else torch.int64


def build_layout(seg_counts: Tensor, seg_dst: Tensor, seg_rel: Tensor, col: Tensor, num_src: int,
                 num_dst: int, num_relations: int,
                 index_dtype: Optional[torch.dtype] = None) -> RelLayout:
    """Build the layout from ``(relation, destination)`` segments in relation order.

    Args:
        seg_counts: Tensor  # [S] int64 edges per segment (zeros allowed: dropped)
        seg_dst: Tensor  # [S] destination row of each segment
        seg_rel: Tensor  # [S] relation of each segment, non-decreasing
        col: Tensor  # [E] source row of every edge, grouped by segment
        num_src, num_dst, num_relations: sizes of the index spaces.
        index_dtype: int32 / int64 for the id arrays; ``None`` picks int32 when ids fit.
    """
    device = col.device
    seg_counts = seg_counts.long()
    if int(seg_counts.sum()) != col.numel():
        raise ValueError(f"layout: segment counts sum to {int(seg_counts.sum())} but there are "
                         f"{col.numel()} edges")
    if col.numel() and (int(col.min()) < 0 or int(col.max()) >= num_src):
        bad = int(col.min()) if int(col.min()) < 0 else int(col.max())
        raise IndexError(f"layout: source id {bad} out of range ({num_src} source rows)")
    keep = seg_counts > 0
    cnt = seg_counts[keep]
    pair_dst = seg_dst[keep].long()
    pair_rel = seg_rel[keep].long()
    P = int(cnt.numel())
    pair_ptr = torch.zeros(P + 1, dtype=torch.long, device=device)
    torch.cumsum(cnt, 0, out=pair_ptr[1:])
    rel_ptr = torch.zeros(num_relations + 1, dtype=torch.long, device=device)
    torch.cumsum(torch.bincount(pair_rel, minlength=num_relations), 0, out=rel_ptr[1:])
    pair_ids = torch.arange(P, dtype=torch.long, device=device)
    dst_ptr, dst_pairs, _ = _coo_to_csc(pair_ids, pair_dst, num_dst)
    _, edge_pair = csc_to_coo(pair_ptr, col)
    src_ptr, src_pairs, _ = _coo_to_csc(edge_pair, col.long(), num_src)
    it = _index_dtype(index_dtype, num_src, num_dst, int(col.numel()))
    return RelLayout(col=col.to(it).contiguous(), pair_ptr=pair_ptr, pair_dst=pair_dst.to(it),
                     rel_ptr=rel_ptr, dst_ptr=dst_ptr, dst_pairs=dst_pairs.to(it), src_ptr=src_ptr,
                     src_pairs=src_pairs.to(it), num_src=num_src, num_dst=num_dst)


def layout_from_coo(edge_index: Tensor, edge_type: Tensor, num_src: int, num_dst: int,
                    num_relations: int, index_dtype: Optional[torch.dtype] = None) -> RelLayout:
    """Layout of a homogeneous graph given as PyG COO (one ``coo_to_csc`` call).

    Args:
        edge_index: Tensor  # [2, E] (source row, destination row)
        edge_type: Tensor  # [E] relation ids in [0, num_relations)
    """
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"layout: edge_index must be [2, E], got {tuple(edge_index.shape)}")
    if edge_type.shape != edge_index.shape[1:]:
        raise ValueError(f"layout: edge_type must be [E = {edge_index.shape[1]}], got {tuple(edge_type.shape)}")
    src, dst = edge_index[0].long(), edge_index[1].long()
    et = edge_type.long()
    if et.numel():
        for name, t, n in (("edge_type", et, num_relations), ("destination", dst, num_dst)):
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= n:
                raise IndexError(f"layout: {name} id {lo if lo < 0 else hi} out of range ({n})")
    key = et * num_dst + dst
    indptr, col, _ = _coo_to_csc(src, key, num_relations * num_dst)
    device = edge_index.device
    seg_dst = torch.arange(num_dst, device=device).repeat(num_relations)
    seg_rel = torch.arange(num_relations, device=device).repeat_interleave(num_dst)
    return build_layout(indptr.diff(), seg_dst, seg_rel, col, num_src, num_dst, num_relations, index_dtype)


def _block_segments(block, r: int, ns: dict, nd: dict):
    """Checked CSC of relation ``r`` of ``block``: ``(counts [nd[d]], local sources [E])``."""
    s, rel, d = block.edge_types[r]
    device = block.device
    indptr = block.indptr[r].to(device).long()
    if indptr.numel() != nd[d] + 1:
        raise ValueError(f"layout: relation {r} {(s, rel, d)} has indptr of {indptr.numel()} "
                         f"entries, expected num_dst['{d}'] + 1 = {nd[d] + 1}")
    idx = block.indices[r].to(device).long()[int(indptr[0]):int(indptr[-1])]
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= ns[s]):
        bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
        raise IndexError(f"layout: relation {r} {(s, rel, d)} holds source id {bad} out of range "
                         f"for node type '{s}' ({ns[s]} nodes)")
    return indptr.diff(), idx


def _block_sizes(block) -> tuple[dict, dict]:
    ns = {t: block.num_src(t) if t in block.src_nodes else 0 for t in block.node_types}
    nd = {t: int(block.num_dst.get(t, 0)) for t in block.node_types}
    return ns, nd


def _layout_with_positions(block, src_pos, dst_pos, num_src: int, num_dst: int, index_dtype):
    """The layout of ``block`` with source row ``src_pos(t, local ids)`` and destination row
    ``dst_pos(t, local ids)`` for the nodes of type ``t``."""
    ns, nd = _block_sizes(block)
    device = block.device
    counts, seg_dst, seg_rel, cols = [], [], [], []
    for r, (s, _, d) in enumerate(block.edge_types):
        cnt, idx = _block_segments(block, r, ns, nd)
        counts.append(cnt)
        seg_dst.append(dst_pos(d, torch.arange(nd[d], device=device)))
        seg_rel.append(torch.full((nd[d],), r, dtype=torch.long, device=device))
        cols.append(src_pos(s, idx))
    cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0, dtype=torch.long, device=device)  # noqa: E731
    return build_layout(cat(counts), cat(seg_dst), cat(seg_rel), cat(cols), num_src, num_dst,
                        len(block.edge_types), index_dtype)


def layout_from_block(block, index_dtype: Optional[torch.dtype] = None) -> RelLayout:
    """Layout of a sampler :class:`~lmgnn_fast.sampling.Block`, cached in ``block.derived``."""
    key = ("rgcn_layout", index_dtype)
    hit = block.derived.get(key)
    if hit is not None:
        return hit
    types = list(block.node_types)
    ns, nd = _block_sizes(block)
    src_off, dst_off = {}, {}
    s_total = d_total = 0
    for t in types:
        src_off[t], dst_off[t] = s_total, d_total
        s_total += ns[t]
        d_total += nd[t]
    layout = _layout_with_positions(block, lambda t, i: i + src_off[t], lambda t, i: i + dst_off[t],
                                    s_total, d_total, index_dtype)
    layout.node_types, layout.src_offset, layout.dst_offset = types, src_off, dst_off
    layout.num_src_per_type, layout.num_dst_per_type = ns, nd
    block.derived[key] = layout
    return layout


@dataclass
class StackedLayouts:
    """Layouts of a block sequence over one row numbering shared by all its layers.

    Attributes:
        layouts: one :class:`RelLayout` per block; layer ``i`` reads its sources from rows
            ``[0, layouts[i].num_src)`` and writes rows ``[0, layouts[i].num_dst)``, which are
            the next layer's sources, and its root term reads rows ``[0, num_dst)`` of its input.
        node_types: the blocks' node types.
        input_slices: ``(t, lo, hi)`` in row order: the input is
            ``cat([x[t][lo:hi] for t, lo, hi in input_slices])``, ``num_input`` rows.
        num_input: rows of the input (``layouts[0].num_src``).
        output_slices: ``{t: (start, n)}``: the last layer's destinations of type ``t`` are
            its output rows ``[start, start + n)``.
    """

    layouts: list
    node_types: list
    input_slices: list
    num_input: int
    output_slices: dict


def layouts_from_blocks(blocks, index_dtype: Optional[torch.dtype] = None) -> StackedLayouts:
    """Layouts of ``blocks`` (input layer first) over one shared row numbering, so that a
    multi-layer encoder runs on one tensor per layer with no copies between layers.

    The sampler's node sets are nested per type: ``blocks[i]``'s destinations of type ``t``
    are the first ``num_dst[t]`` of its sources, and ``blocks[i + 1]``'s sources are the first
    rows of those. Rows are numbered deepest level first: the last layer's destinations (by
    type), then the rest of its sources, then the rest of the layer before, and so on; every
    layer's sources and destinations are then leading rows of that numbering. Cached in
    ``blocks[0].derived`` (for this exact sequence of blocks).

    Raises:
        ValueError: a block's sources of some type outnumber the previous block's
            destinations, or the blocks disagree on node types or relations.
    """
    key = ("rgcn_stacked_layouts", index_dtype)
    hit = blocks[0].derived.get(key) if blocks else None
    if hit is not None and hit[0] == tuple(id(b) for b in blocks):
        return hit[1]
    if not blocks:
        raise ValueError("layouts_from_blocks: no blocks")
    types = list(blocks[0].node_types)
    for i, b in enumerate(blocks[1:], 1):
        if list(b.node_types) != types or list(b.edge_types) != list(blocks[0].edge_types):
            raise ValueError(f"layouts_from_blocks: block {i} has other node types or relations than block 0")
    # cuts[t]: sizes of the nested row sets of type t, outermost first (sources, destinations of each block)
    cuts = {t: [] for t in types}
    for i, b in enumerate(blocks):
        ns, nd = _block_sizes(b)
        for t in types:
            if cuts[t] and ns[t] > cuts[t][-1]:
                raise ValueError(f"layouts_from_blocks: block {i} has {ns[t]} source nodes of type '{t}', "
                                 f"more than the {cuts[t][-1]} destinations of block {i - 1}")
            if nd[t] > ns[t]:
                raise ValueError(f"layouts_from_blocks: block {i} has {nd[t]} destinations of type '{t}' "
                                 f"but only {ns[t]} sources")
            cuts[t] += [ns[t], nd[t]]
    device = blocks[0].device
    levels = 2 * len(blocks)
    pos = {t: torch.empty(cuts[t][0], dtype=torch.long, device=device) for t in types}
    input_slices, start, level_start = [], 0, {}
    for k in range(levels - 1, -1, -1):  # deepest level first
        for t in types:
            lo, hi = (cuts[t][k + 1] if k + 1 < levels else 0), cuts[t][k]
            if k == levels - 1:
                level_start[t] = start
            if hi > lo:
                pos[t][lo:hi] = torch.arange(start, start + hi - lo, device=device)
                input_slices.append((t, lo, hi))
                start += hi - lo
    layouts = []
    for i, b in enumerate(blocks):
        n_src = sum(cuts[t][2 * i] for t in types)
        n_dst = sum(cuts[t][2 * i + 1] for t in types)
        layouts.append(_layout_with_positions(b, lambda t, j: pos[t][j], lambda t, j: pos[t][j], n_src, n_dst,
                                              index_dtype))
    out = StackedLayouts(layouts=layouts, node_types=types, input_slices=input_slices, num_input=start,
                         output_slices={t: (level_start[t], cuts[t][-1]) for t in types})
    blocks[0].derived[key] = (tuple(id(b) for b in blocks), out)
    return out


__all__ = ["RelLayout", "StackedLayouts", "build_layout", "layout_from_block", "layout_from_coo",
           "layouts_from_blocks"]
