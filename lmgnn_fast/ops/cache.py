"""Embedding-cache operators: hash-map lookup, fused gather, admission/eviction, write-through.

The cache state is a handful of tensors on the cache's device (see ``csrc/ops/cache_common.h``
and :class:`lmgnn_fast.cache.EmbeddingCache`, which owns them):

- ``keys, vals``: ``[H]`` int64 open-addressing hash map node id -> slot (``-1`` empty,
  ``-2`` tombstone), ``H`` a power of two >= 2 * capacity, linear probing;
- ``slot_ids``: ``[C]`` int64 slot -> node id (``-1`` free); ``meta``: ``[C]`` int64 policy
  word (CLOCK reference bit or LRU last-use tick); ``rows``: ``[C, D]`` cached rows;
- ``state``: ``[4]`` int64 (CLOCK hand, tombstones, tick, LFU accesses since the last aging);
- ``sketch`` (policy ``lfu`` only): ``[4, W]`` int32 count-min sketch of access counts.

None of these ops is differentiable (cache reads feed frozen or detached embeddings).
"""
from __future__ import annotations

import torch
from torch import Tensor

from lmgnn_fast.ops.random import U64_MASK, mix64

_EMPTY = -1

__all__ = ["cache_lookup", "cache_gather", "cache_admit", "cache_admit_lfu", "cache_update",
           "cache_lookup_ref", "cache_gather_ref", "cache_admit_ref", "cache_admit_lfu_ref",
           "cache_update_ref", "sketch_hash_ref", "SKETCH_DEPTH"]

SKETCH_DEPTH = 4


# ----------------------------------------------------------------------------- fakes
@torch.library.register_fake("lmgnn::cache_lookup")
def _cache_lookup_fake(ids: Tensor, keys: Tensor, vals: Tensor, num_rows: int) -> Tensor:
    torch._check(ids.dim() == 1, lambda: "cache_lookup: ids must be 1-D")
    return ids.new_empty(ids.shape, dtype=torch.long)


@torch.library.register_fake("lmgnn::cache_gather")
def _cache_gather_fake(ids: Tensor, keys: Tensor, vals: Tensor, rows: Tensor, table: Tensor):
    torch._check(ids.dim() == 1, lambda: "cache_gather: ids must be 1-D")
    torch._check(rows.dim() == 2 and table.dim() == 2, lambda: "cache_gather: rows and table must be 2-D")
    out = rows.new_empty((ids.shape[0], rows.shape[1]))
    return out, ids.new_empty(ids.shape, dtype=torch.long)


@torch.library.register_fake("lmgnn::cache_admit")
def _cache_admit_fake(ids, slots, out, keys, vals, slot_ids, meta, rows, state, policy, check=True):
    return ids.new_empty((), dtype=torch.long)


@torch.library.register_fake("lmgnn::cache_admit_lfu")
def _cache_admit_lfu_fake(ids, slots, out, keys, vals, slot_ids, meta, rows, state, sketch, period,
                          check=True):
    return ids.new_empty((), dtype=torch.long)


@torch.library.register_fake("lmgnn::cache_update")
def _cache_update_fake(ids, values, step, table, versions, keys, vals, rows):
    return None


# ----------------------------------------------------------------------------- wrappers
def cache_lookup(ids: Tensor, keys: Tensor, vals: Tensor, num_rows: int) -> Tensor:
    """Slot of every id in the cache's hash map.

    Args:
        ids: Tensor  # [N] int32/int64 node ids in [0, num_rows)
        keys, vals: Tensor  # [H] int64 hash map (same device as ids)
        num_rows: rows of the table (ids outside [0, num_rows) raise IndexError).

    Returns:
        slots: Tensor  # [N] int64, -1 where the id is not cached
    """
    return torch.ops.lmgnn.cache_lookup(ids, keys, vals, num_rows)


def cache_gather(ids: Tensor, keys: Tensor, vals: Tensor, rows: Tensor,
                 table: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of ``ids`` in one pass: hits from the cached rows, misses from the table.

    Args:
        ids: Tensor  # [N] int32/int64, duplicates allowed
        keys, vals: Tensor  # [H] int64 hash map
        rows: Tensor  # [C, D] cached rows on the cache's device
        table: Tensor  # [R, D] authoritative rows: on the device or, for CUDA, pinned host
            memory read in place

    Returns:
        out: Tensor  # [N, D] on rows' device, equal to ``table[ids]``
        slots: Tensor  # [N] int64, the serving slot or -1 for a miss

    Example:
        >>> keys = torch.full((2,), -1, dtype=torch.long); vals = torch.zeros(2, dtype=torch.long)
        >>> out, slots = cache_gather(torch.tensor([1, 1]), keys, vals, torch.empty(0, 3),
        ...                           torch.arange(6.).view(2, 3))
        >>> out.tolist(), slots.tolist()
        ([[3.0, 4.0, 5.0], [3.0, 4.0, 5.0]], [-1, -1])
    """
    return torch.ops.lmgnn.cache_gather(ids, keys, vals, rows, table)


def cache_admit(ids: Tensor, slots: Tensor, out: Tensor, keys: Tensor, vals: Tensor,
                slot_ids: Tensor, meta: Tensor, rows: Tensor, state: Tensor,
                policy: str = "clock", check: bool = True) -> Tensor:
    """Admit the missed ids of a gather and evict by ``policy`` ('clock' or 'lru'), in place.

    See ``csrc/ops/cache_admit.cpp`` for the exact semantics, shared by CPU and CUDA.

    Args:
        ids: Tensor  # [N] the ids passed to :func:`cache_gather`
        slots: Tensor  # [N] int64 the slots it returned (-1 = miss)
        out: Tensor  # [N, D] the rows it returned (admitted rows are copied from here)
        keys, vals, slot_ids, meta, rows, state: the cache state, updated in place.
        check: validate ids (>= 0) and slots (in [-1, C)) and raise IndexError. Always done
            on CPU; on CUDA it costs one device-to-host read, and ``check=False`` (for ids and
            slots straight from :func:`cache_gather`, which checked the ids) skips it, invalid
            entries then being ignored rather than read (``LMGNN_CHECK_INPUTS=full`` checks
            anyway). A corrupt cache state raises ``RuntimeError`` on the CPU.

    Returns:
        Tensor  # [] int64, the number of rows admitted
    """
    return torch.ops.lmgnn.cache_admit(ids, slots, out, keys, vals, slot_ids, meta, rows, state,
                                       policy, check)


def cache_admit_lfu(ids: Tensor, slots: Tensor, out: Tensor, keys: Tensor, vals: Tensor,
                    slot_ids: Tensor, meta: Tensor, rows: Tensor, state: Tensor, sketch: Tensor,
                    period: int, check: bool = True) -> Tensor:
    """Frequency-aware admission (TinyLFU-style) after a gather, in place.

    Every access is counted in a count-min ``sketch`` (halved every ``period`` accesses); a
    missed row is admitted only if its estimated count beats that of the coldest cached row
    it would replace (free slots take anything). See ``csrc/ops/cache_admit_lfu.cpp`` for
    the exact semantics, shared by CPU and CUDA.

    Args:
        ids, slots, out: as for :func:`cache_admit`.
        keys, vals, slot_ids, meta, rows, state: the cache state, updated in place
            (``meta[s]``: the estimated count of the row in slot ``s``, -1 when free).
        sketch: Tensor  # [4, W] int32, W a power of two, updated in place
        period: accesses between two halvings of the sketch.
        check: as for :func:`cache_admit`.

    Returns:
        Tensor  # [] int64, the number of rows admitted
    """
    return torch.ops.lmgnn.cache_admit_lfu(ids, slots, out, keys, vals, slot_ids, meta, rows, state,
                                           sketch, period, check)


def cache_update(ids: Tensor, values: Tensor, step: int, table: Tensor, versions: Tensor,
                 keys: Tensor, vals: Tensor, rows: Tensor) -> None:
    """Write ``values`` through to the table and any cached copy; set ``versions[ids] = step``.

    Args:
        ids: Tensor  # [N] int32/int64; for duplicates the last occurrence wins
        values: Tensor  # [N, D] same dtype as table, on the cache's device
        step: the training step the rows were computed at
        table: Tensor  # [R, D] contiguous, written in place
        versions: Tensor  # [R] int64 on the cache's device, written in place
        keys, vals: Tensor  # [H] hash map; rows: Tensor  # [C, D] cached rows, written in place
    """
    torch.ops.lmgnn.cache_update(ids, values, step, table, versions, keys, vals, rows)


# ----------------------------------------------------------------------------- references
def _map_dict(keys: Tensor, vals: Tensor) -> dict[int, int]:
    k, v = keys.cpu().tolist(), vals.cpu().tolist()
    return {a: b for a, b in zip(k, v) if a >= 0}


def cache_lookup_ref(ids: Tensor, keys: Tensor, vals: Tensor, num_rows: int) -> Tensor:
    """Pure-Python reference of :func:`cache_lookup`."""
    ids_l = ids.cpu().tolist()
    bad = [i for i in ids_l if not 0 <= i < num_rows]
    if bad:
        raise IndexError(f"cache_lookup: ids holds id {bad[0]} out of range for num_rows ({num_rows})")
    d = _map_dict(keys, vals)
    return torch.tensor([d.get(i, -1) for i in ids_l], dtype=torch.long, device=ids.device)


def cache_gather_ref(ids: Tensor, keys: Tensor, vals: Tensor, rows: Tensor,
                     table: Tensor) -> tuple[Tensor, Tensor]:
    """Pure-torch reference of :func:`cache_gather`."""
    slots = cache_lookup_ref(ids, keys, vals, table.shape[0]).to(rows.device)
    out = table[ids.cpu().long()].to(rows.device)
    hit = slots >= 0
    out[hit] = rows[slots[hit]]
    return out, slots


def cache_admit_ref(ids: Tensor, slots: Tensor, out: Tensor, keys: Tensor, vals: Tensor,
                    slot_ids: Tensor, meta: Tensor, rows: Tensor, state: Tensor,
                    policy: str = "clock") -> Tensor:
    """Sequential pure-Python reference of :func:`cache_admit` (updates the state in place).

    The hash map is rebuilt from ``slot_ids`` (its layout differs from the kernel's, the
    mapping it holds is the same) and the tombstone counter is left at 0.
    """
    cap = rows.shape[0]
    state[2] += 1
    tick = int(state[2])
    ids_l, sl = ids.tolist(), slots.tolist()
    cand: dict[int, int] = {}
    for i, (x, s) in enumerate(zip(ids_l, sl)):
        if s >= 0:
            meta[s] = 1 if policy == "clock" else tick
        elif x not in cand:
            cand[x] = i
    if cap == 0 or not cand:
        return torch.zeros((), dtype=torch.long)
    order = sorted(cand)
    m = min(len(order), cap)
    victims: list[int] = []
    if policy == "clock":
        hand = int(state[0])
        taken = set()
        for r in range(cap):
            if len(victims) == m:
                break
            s = (hand + r) % cap
            if meta[s] == 0:
                victims.append(s)
                taken.add(s)
            else:
                meta[s] = 0
        for r in range(cap):
            if len(victims) == m:
                break
            s = (hand + r) % cap
            if s not in taken:
                victims.append(s)
        state[0] = (victims[-1] + 1) % cap
    elif policy == "lru":
        victims = sorted(range(cap), key=lambda s: (int(meta[s]), s))[:m]
    else:
        raise ValueError(f"cache_admit: policy must be 'clock' or 'lru', got '{policy}'")
    for j in range(m):
        s = victims[j]
        slot_ids[s] = order[j]
        meta[s] = 0 if policy == "clock" else tick
        rows[s] = out[cand[order[j]]]
    _rebuild_map(keys, vals, slot_ids, state)
    return torch.tensor(m, dtype=torch.long)


def sketch_hash_ref(x: int, d: int, width: int) -> int:
    """Column of id ``x`` in row ``d`` of a count-min sketch of ``width`` (a power of two)."""
    return mix64((x * SKETCH_DEPTH + d) & U64_MASK) & (width - 1)


def _rebuild_map(keys: Tensor, vals: Tensor, slot_ids: Tensor, state: Tensor) -> None:
    keys.fill_(_EMPTY)
    mask = keys.numel() - 1
    for s, x in enumerate(slot_ids.tolist()):  # any valid probing layout will do
        if x >= 0:
            p = (x * 2654435761) & mask
            while int(keys[p]) != _EMPTY:
                p = (p + 1) & mask
            keys[p], vals[p] = x, s
    state[1] = 0


def cache_admit_lfu_ref(ids: Tensor, slots: Tensor, out: Tensor, keys: Tensor, vals: Tensor,
                        slot_ids: Tensor, meta: Tensor, rows: Tensor, state: Tensor,
                        sketch: Tensor, period: int) -> Tensor:
    """Sequential pure-Python reference of :func:`cache_admit_lfu` (updates the state in place;
    the hash map is rebuilt from ``slot_ids``, so its layout differs from the kernel's)."""
    cap, w = rows.shape[0], sketch.shape[1]
    ids_l, sl = ids.tolist(), slots.tolist()
    for i, (x, s) in enumerate(zip(ids_l, sl)):
        if not -1 <= s < cap:
            raise IndexError(f"cache_admit_lfu: slots holds slot {s} at position {i} outside [-1, {cap})")
        if x < 0:
            raise IndexError(f"cache_admit_lfu: ids holds negative id {x}")
    state[2] += 1
    for x in ids_l:
        for d in range(SKETCH_DEPTH):
            sketch[d, sketch_hash_ref(x, d, w)] += 1
    state[3] += len(ids_l)
    if int(state[3]) >= period:
        sketch.copy_(sketch // 2)
        state[3] = 0
    if cap == 0:
        return torch.zeros((), dtype=torch.long)
    sk = sketch.tolist()

    def est(x):
        return min(sk[d][sketch_hash_ref(x, d, w)] for d in range(SKETCH_DEPTH))

    first: dict[int, int] = {}
    for i, (x, s) in enumerate(zip(ids_l, sl)):
        if s < 0 and x not in first:
            first[x] = i
    cand = sorted(first, key=lambda x: (-est(x), x))
    for s, x in enumerate(slot_ids.tolist()):
        meta[s] = -1 if x < 0 else est(x)
    victims = sorted(range(cap), key=lambda s: (int(meta[s]), s))
    m = 0
    while m < min(len(cand), cap) and est(cand[m]) > int(meta[victims[m]]):
        m += 1
    for j in range(m):
        s = victims[j]
        slot_ids[s] = cand[j]
        meta[s] = est(cand[j])
        rows[s] = out[first[cand[j]]]
    _rebuild_map(keys, vals, slot_ids, state)
    return torch.tensor(m, dtype=torch.long)


def cache_update_ref(ids: Tensor, values: Tensor, step: int, table: Tensor, versions: Tensor,
                     keys: Tensor, vals: Tensor, rows: Tensor) -> None:
    """Pure-Python reference of :func:`cache_update` (last occurrence wins)."""
    d = _map_dict(keys, vals)
    for i, x in enumerate(ids.tolist()):
        if not 0 <= x < table.shape[0]:
            raise IndexError(f"cache_update: ids holds id {x} out of range for table rows ({table.shape[0]})")
        table[x] = values[i].to(table.device)
        versions[x] = step
        if x in d:
            rows[d[x]] = values[i]
