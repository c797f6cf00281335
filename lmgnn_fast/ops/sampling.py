"""Heterogeneous neighbour sampling: ``lmgnn::hetero_neighbor_sample``.

The op samples ``L`` hops of neighbours over a graph stored as one CSC per relation and
returns one block per hop, outermost first (see :class:`lmgnn_fast.sampling.Block`). It is
not differentiable. :func:`hetero_neighbor_sample_ref` is a vectorised pure-torch twin that
draws with the same counter-based random numbers, so both return identical tensors.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lmgnn_fast.ops.random import as_int64, philox_like, uniform_below

SampleOutput = tuple[list[Tensor], Tensor, list[Tensor], list[Tensor], list[Tensor]]


@torch.library.register_fake("lmgnn::hetero_neighbor_sample")
def _hetero_neighbor_sample_fake(indptr, indices, eid, src_type, dst_type, num_nodes, seeds, fanouts,
                                 replace=False, seed=0, exclude=None, node_type_names=None):
    T, R = len(num_nodes), len(indptr)
    torch._check(R > 0 and len(fanouts) % R == 0,
                 lambda: "hetero_neighbor_sample: fanouts must hold one fanout per relation per hop")
    L = len(fanouts) // R
    ctx = torch.library.get_ctx()
    like = seeds[0]

    def vec(n) -> Tensor:
        return like.new_empty((n,), dtype=torch.long)

    # Block l's destinations are block l + 1's sources (the seeds for the last block), so
    # each indptr is sized from another output; indices and eid of a relation share a size.
    sizes = [[ctx.new_dynamic_size() for _ in range(T)] for _ in range(L)]
    nodes = [vec(sizes[l][t]) for l in range(L) for t in range(T)]
    num_dst = torch.empty((L * T,), dtype=torch.long, device="cpu")
    indptr_out, indices_out, eid_out = [], [], []
    for l in range(L):
        for r in range(R):
            d = dst_type[r]
            n_dst = seeds[d].shape[0] if l == L - 1 else sizes[l + 1][d]
            indptr_out.append(vec(n_dst + 1))
            e = ctx.new_dynamic_size()
            indices_out.append(vec(e))
            eid_out.append(vec(e))
    return nodes, num_dst, indptr_out, indices_out, eid_out


def hetero_neighbor_sample(
    indptr: list[Tensor],
    indices: list[Tensor],
    eid: list[Tensor],
    src_type: list[int],
    dst_type: list[int],
    num_nodes: list[int],
    seeds: list[Tensor],
    fanouts: list[int],
    replace: bool = False,
    seed: int = 0,
    exclude: list[Tensor] | None = None,
    node_type_names: list[str] | None = None,
) -> SampleOutput:
    """Samples ``L`` hops of neighbours over per-relation CSC graphs.

    Relation ``r`` goes from node type ``src_type[r]`` to ``dst_type[r]``. Hop 0 samples
    the in-neighbours of the seeds, hop ``h`` those of every node of hop ``h - 1`` (the
    block convention: a block's destinations are the previous block's sources).

    Args:
        indptr: R tensors  # [num_nodes[dst_type[r]] + 1] int64 CSC row pointers
        indices: R tensors  # [E_r] int32/int64 source ids
        eid: R tensors  # [E_r] int64 edge ids (returned for the sampled edges)
        src_type, dst_type: R node type ids.
        num_nodes: T node counts.
        seeds: T tensors  # [S_t] unique int32/int64 seed ids per type (may be empty)
        fanouts: L*R ints, row-major ``[hop][relation]``; ``-1`` takes all neighbours.
        replace: draw with replacement.
        seed: random seed; the output is a pure function of the inputs and this seed.
        exclude: R tensors  # [X_r] sorted unique int64 CSC *positions* never drawn
        node_type_names: T names used in error messages.

    Returns:
        nodes: L*T tensors, block-major (outermost first)  # [N_{l,t}] int64 global ids,
            destinations first
        num_dst: Tensor  # [L*T] int64 (CPU), destinations per block and type
        indptr: L*R tensors  # [num_dst[l, dst_type[r]] + 1] int64
        indices: L*R tensors  # [E_{l,r}] int64 local ids into ``nodes[l, src_type[r]]``
        eid: L*R tensors  # [E_{l,r}] int64 edge ids

    Example:
        >>> ip, ix = torch.tensor([0, 2, 3]), torch.tensor([1, 0, 0])
        >>> out = hetero_neighbor_sample([ip], [ix], [torch.arange(3)], [0], [0], [2],
        ...                              [torch.tensor([0])], [-1])
        >>> out[0][0].tolist(), out[3][0].tolist()
        ([0, 1], [1, 0])
    """
    return torch.ops.lmgnn.hetero_neighbor_sample(
        list(indptr), list(indices), list(eid), [int(t) for t in src_type], [int(t) for t in dst_type],
        [int(n) for n in num_nodes], list(seeds), [int(f) for f in fanouts], bool(replace),
        as_int64(seed), None if exclude is None else list(exclude),
        None if node_type_names is None else [str(n) for n in node_type_names])


# ---------------------------------------------------------------------------------------
# Pure-torch reference (draws with the Python port of ``utils/random.h``).

def _sample_relation_ref(indptr, indices, eid, ex, v, k, replace, seed, a):
    """Sampled (node row, CSC position) pairs of one relation for destinations ``v``."""
    dev = v.device
    p0, p1 = indptr[v], indptr[v + 1]
    if ex is None or ex.numel() == 0:
        ex = torch.empty(0, dtype=torch.long, device=dev)
    lo = torch.searchsorted(ex, p0)
    m = (p1 - p0) - (torch.searchsorted(ex, p1) - lo)
    if k < 0:
        take_all = torch.ones_like(m, dtype=torch.bool)
    else:
        take_all = (m <= k) if not replace else torch.zeros_like(m, dtype=torch.bool)
    rows_all = torch.nonzero(take_all & (m > 0)).flatten()
    deg = (p1 - p0)[rows_all]
    row_a = torch.repeat_interleave(rows_all, deg)
    pos_a = p0[row_a] + torch.arange(int(deg.sum()), device=dev) - torch.repeat_interleave(
        torch.cumsum(deg, 0) - deg, deg)
    keep = ~torch.isin(pos_a, ex)
    row_a, pos_a = row_a[keep], pos_a[keep]

    rows_d = torch.nonzero(~take_all & (m > 0) & (k > 0)).flatten()
    n_d = rows_d.numel()
    idx = torch.empty((n_d, max(k, 0)), dtype=torch.long, device=dev)
    md, vd = m[rows_d], v[rows_d]
    seed_t = torch.tensor(seed, dtype=torch.long, device=dev)
    a_t = torch.tensor(a, dtype=torch.long, device=dev)
    for c in range(max(k, 0) if n_d else 0):
        word = philox_like(seed_t, a_t, vd, torch.tensor(c, dtype=torch.long, device=dev))
        if replace:
            t = uniform_below(word, md)
        else:
            j = md - k + c
            t = uniform_below(word, j + 1)
            t = torch.where((idx[:, :c] == t[:, None]).any(1), j, t)
        idx[:, c] = t
    idx = idx.sort(dim=1).values
    # i-th eligible position: the fixed point of pos = p0 + i + #(excluded <= pos).
    base = p0[rows_d][:, None] + idx
    pos_d = base
    if ex.numel():
        lo_d = lo[rows_d][:, None]
        while True:
            nxt = base + torch.searchsorted(ex, pos_d, right=True) - lo_d
            if torch.equal(nxt, pos_d):
                break
            pos_d = nxt
    row_d = rows_d[:, None].expand_as(idx).reshape(-1)
    rows = torch.cat([row_a, row_d])
    pos = torch.cat([pos_a, pos_d.reshape(-1)])
    order = torch.sort(rows * (int(indptr[-1]) + 1) + pos, stable=True).indices
    rows, pos = rows[order], pos[order]
    counts = torch.bincount(rows, minlength=v.numel())
    return counts, indices[pos].long(), eid[pos]


def hetero_neighbor_sample_ref(
    indptr: list[Tensor], indices: list[Tensor], eid: list[Tensor], src_type: list[int],
    dst_type: list[int], num_nodes: list[int], seeds: list[Tensor], fanouts: list[int],
    replace: bool = False, seed: int = 0, exclude: list[Tensor] | None = None,
    node_type_names: list[str] | None = None,
) -> SampleOutput:
    """Pure-torch reference of :func:`hetero_neighbor_sample` (same output, bit for bit)."""
    T, R = len(num_nodes), len(indptr)
    L = len(fanouts) // R
    seed = as_int64(seed)
    cur = [s.long() for s in seeds]
    nodes_out: list = [None] * (L * T)
    num_dst = torch.empty(L * T, dtype=torch.long)
    ip_out: list = [None] * (L * R)
    ix_out: list = [None] * (L * R)
    eid_out: list = [None] * (L * R)
    for h in range(L):
        blk = L - 1 - h
        src_glob = []
        for r in range(R):
            v = cur[dst_type[r]]
            k = int(fanouts[h * R + r])
            ex = None if exclude is None else exclude[r]
            if k == 0 or v.numel() == 0:
                counts = torch.zeros(v.numel(), dtype=torch.long, device=v.device)
                g = e = torch.empty(0, dtype=torch.long, device=v.device)
            else:
                counts, g, e = _sample_relation_ref(indptr[r], indices[r], eid[r], ex, v, k, replace,
                                                    seed, h * R + r)
            ptr = torch.zeros(v.numel() + 1, dtype=torch.long, device=v.device)
            ptr[1:] = torch.cumsum(counts, 0)
            ip_out[blk * R + r], eid_out[blk * R + r] = ptr, e
            src_glob.append(g)
        nxt = []
        for t in range(T):
            rels = [r for r in range(R) if src_type[r] == t]
            keys = torch.cat([cur[t]] + [src_glob[r] for r in rels])
            uniq, inv = torch.unique(keys, return_inverse=True)
            first = torch.full((uniq.numel(),), keys.numel(), dtype=torch.long, device=keys.device)
            first.scatter_reduce_(0, inv, torch.arange(keys.numel(), device=keys.device), "amin")
            order = torch.argsort(first)
            local_of = torch.empty_like(order)
            local_of[order] = torch.arange(order.numel(), device=keys.device)
            local = local_of[inv]
            off = cur[t].numel()
            for r in rels:
                n = src_glob[r].numel()
                ix_out[blk * R + r] = local[off:off + n]
                off += n
            nodes_out[blk * T + t] = uniq[order]
            num_dst[blk * T + t] = cur[t].numel()
            nxt.append(uniq[order])
        cur = nxt
    return nodes_out, num_dst, ip_out, ix_out, eid_out
