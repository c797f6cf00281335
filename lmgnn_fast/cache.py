"""EmbeddingCache: a device-resident cache of hot rows in front of a host embedding table.

The authoritative ``[num_rows, dim]`` table lives in host memory: a plain tensor, pinned
memory (read in place by the CUDA gather kernel through unified addressing), a
memory-mapped file for tables larger than RAM, or a file mapped shared by several processes
of one machine (each with its own device cache in front of the one table). ``capacity`` rows of it are kept on the
device, found through a device hash map; admission on miss and eviction run in the
``lmgnn::cache_admit`` kernel, so a batch costs no per-row host work.

Example:
    >>> cache = EmbeddingCache(1000, 8, capacity=100, policy="clock")
    >>> cache.update(torch.arange(1000), torch.randn(1000, 8), step=0)
    >>> out = cache.gather(torch.tensor([3, 3, 999]))   # [3, 8] == cache.table[[3, 3, 999]]
"""
from __future__ import annotations

import os
import re
import tempfile
import weakref

import numpy as np
import torch
from torch import Tensor

from lmgnn_fast.ops.cache import SKETCH_DEPTH, cache_admit, cache_admit_lfu, cache_gather, cache_lookup, cache_update

POLICIES = ("clock", "lru", "lfu", "static")
BACKINGS = ("auto", "memory", "pinned", "mmap", "shared")

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_NP_STORAGE = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
               torch.bfloat16: np.uint16}


def parse_capacity(capacity: int | str, num_rows: int, row_bytes: int) -> int:
    """Cache capacity in rows from rows (int) or a size (``"512MB"``, ``"1.5GiB"``), at most num_rows."""
    if isinstance(capacity, bool):
        raise TypeError(f"EmbeddingCache: capacity must be an int or a size string, got {capacity!r}")
    if isinstance(capacity, (int, np.integer)):
        rows = int(capacity)
    elif isinstance(capacity, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", capacity)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"EmbeddingCache: capacity {capacity!r} is neither a row count nor a "
                             f"size such as '512MB' or '2GiB'")
        rows = int(float(m.group(1)) * _UNITS[m.group(2).lower()]) // max(row_bytes, 1)
    else:
        raise TypeError(f"EmbeddingCache: capacity must be an int or a size string, got {capacity!r}")
    if rows < 0:
        raise ValueError(f"EmbeddingCache: capacity must be >= 0, got {capacity!r}")
    return min(rows, num_rows)


def _hash_size(capacity: int) -> int:
    h = 2
    while h < 2 * capacity:
        h *= 2
    return h


class EmbeddingCache:
    """Device cache of ``capacity`` hot rows of a host-resident ``[num_rows, dim]`` table.

    Args:
        num_rows: rows of the table (node count of one node type).
        dim: row width.
        dtype: row dtype (float32, float16, bfloat16, float64).
        device: where the cache and the gathered rows live (``"cpu"`` or ``"cuda[:i]"``).
        capacity: cached rows (int) or a byte size (``"512MB"``); clamped to ``num_rows``;
            0 disables caching (every gather reads the table).
        policy: ``"clock"`` (admission on miss, CLOCK eviction), ``"lru"``, ``"lfu"``
            (frequency-aware admission: every access is counted in a count-min sketch on
            the device, halved every ``aging_period`` accesses; a missed row replaces the
            cached row of lowest estimated count only when its own count is higher) or
            ``"static"`` (contents set by :meth:`fill_static`, never changed by gathers).
        backing: ``"memory"`` (plain host tensor), ``"pinned"`` (page-locked, CUDA only: the
            gather kernel reads misses in place), ``"mmap"`` (``numpy.memmap`` file at
            ``path``, kept when it exists with the right size), ``"shared"`` (the existing
            file ``path`` of exactly ``num_rows x dim`` rows, mapped shared: every process
            that maps it reads and writes the same rows; on CUDA it is page-locked in
            place so the kernels read it directly) or ``"auto"`` (pinned when the device
            is CUDA, memory otherwise).
        path: the file of the mmap backing (a temporary file when None) or of the shared
            backing (required).
        table: optional initial contents ``[num_rows, dim]`` (copied into the backing).
        sketch_width: ``lfu``: counters per sketch row, rounded up to a power of two
            (default: 8 x capacity, at least 64); the sketch takes ``16 x width`` bytes.
        aging_period: ``lfu``: accesses between two halvings of the counts (default:
            16 x capacity); shorter forgets faster.

    Attributes:
        table: Tensor  # [num_rows, dim] the authoritative rows (host)
        versions: Tensor  # [num_rows] int64 step each row was computed at (on device)
        step: int, the default step of :meth:`update` and :meth:`stale`.
    """

    def __init__(self, num_rows: int, dim: int, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", capacity: int | str = 0,
                 policy: str = "clock", backing: str = "auto", path: str | os.PathLike | None = None,
                 table: Tensor | None = None, sketch_width: int | None = None,
                 aging_period: int | None = None):
        if num_rows < 0 or dim < 0:
            raise ValueError(f"EmbeddingCache: num_rows and dim must be >= 0, got {num_rows} and {dim}")
        if policy not in POLICIES:
            raise ValueError(f"EmbeddingCache: policy must be one of {POLICIES}, got {policy!r}")
        if backing not in BACKINGS:
            raise ValueError(f"EmbeddingCache: backing must be one of {BACKINGS}, got {backing!r}")
        if dtype not in _NP_STORAGE:
            raise ValueError(f"EmbeddingCache: dtype must be a float type, got {dtype}")
        self.num_rows, self.dim, self.dtype = int(num_rows), int(dim), dtype
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.policy = policy
        self.row_bytes = self.dim * torch.empty((), dtype=dtype).element_size()
        self.capacity = parse_capacity(capacity, self.num_rows, self.row_bytes)
        if backing == "auto":
            backing = "pinned" if self.device.type == "cuda" else "memory"
        if backing == "pinned" and not torch.cuda.is_available():
            raise RuntimeError("EmbeddingCache: backing='pinned' needs CUDA, which is not available")
        self.backing = backing
        self.path = None
        self._mmap = None
        self._table = self._make_table(path)
        if table is not None:
            if tuple(table.shape) != (self.num_rows, self.dim):
                raise ValueError(f"EmbeddingCache: table must have shape ({self.num_rows}, {self.dim}), "
                                 f"got {tuple(table.shape)}")
            self._table.copy_(table)
        # The CUDA kernels read/write the table in place when it is pinned (or on the device).
        self._direct = self.device.type == "cpu" or self._table.is_pinned()

        dev, long = self.device, torch.long
        h = _hash_size(self.capacity)
        self.keys = torch.full((h,), -1, dtype=long, device=dev)
        self.vals = torch.zeros(h, dtype=long, device=dev)
        self.slot_ids = torch.full((self.capacity,), -1, dtype=long, device=dev)
        self.meta = torch.zeros(self.capacity, dtype=long, device=dev)
        self.rows = torch.zeros(self.capacity, self.dim, dtype=dtype, device=dev)
        self.state = torch.zeros(4, dtype=long, device=dev)
        self.versions = torch.zeros(self.num_rows, dtype=long, device=dev)
        width = 1
        if policy == "lfu":
            want = max(64, 8 * self.capacity) if sketch_width is None else int(sketch_width)
            if want < 1:
                raise ValueError(f"EmbeddingCache: sketch_width must be >= 1, got {sketch_width}")
            while width < want:
                width *= 2
        self.sketch = torch.zeros(SKETCH_DEPTH, width, dtype=torch.int32, device=dev)
        self.aging_period = max(1, 16 * self.capacity) if aging_period is None else int(aging_period)
        if self.aging_period < 1:
            raise ValueError(f"EmbeddingCache: aging_period must be >= 1, got {aging_period}")
        self.step = 0
        # hits, misses, bytes host->device, bytes device-local
        self._stats = torch.zeros(4, dtype=long, device=dev)

    # ------------------------------------------------------------------ backing table
    @property
    def table(self) -> Tensor:
        """Tensor  # [num_rows, dim] the authoritative rows. On CUDA with a pinned host table
        the kernels write it asynchronously (``update``), so reading it here first waits for
        the device's pending work."""
        if self.device.type == "cuda" and not self._table.is_cuda:
            torch.cuda.current_stream(self.device).synchronize()
        return self._table

    def _make_table(self, path) -> Tensor:
        shape = (self.num_rows, self.dim)
        if self.backing == "shared":
            return self._map_shared(path, shape)
        if self.backing == "mmap":
            if path is None:
                fd, path = tempfile.mkstemp(prefix="lmgnn-cache-", suffix=".bin")
                os.close(fd)
            self.path = os.fspath(path)
            np_dtype = _NP_STORAGE[self.dtype]
            nbytes = self.num_rows * self.dim * np.dtype(np_dtype).itemsize
            exists = os.path.exists(self.path) and os.path.getsize(self.path) == nbytes
            if nbytes == 0:
                return torch.zeros(shape, dtype=self.dtype)
            self._mmap = np.memmap(self.path, dtype=np_dtype, mode="r+" if exists else "w+", shape=shape)
            t = torch.from_numpy(self._mmap)
            return t.view(self.dtype) if self.dtype == torch.bfloat16 else t
        t = torch.zeros(shape, dtype=self.dtype)
        return t.pin_memory() if self.backing == "pinned" else t

    def _map_shared(self, path, shape) -> Tensor:
        if path is None or not os.path.isfile(path):
            raise ValueError(f"EmbeddingCache: backing='shared' needs the path of an existing table file, got {path!r}")
        self.path = os.fspath(path)
        nbytes = self.num_rows * self.dim * torch.empty((), dtype=self.dtype).element_size()
        size = os.path.getsize(self.path)
        if size != nbytes:
            raise ValueError(f"EmbeddingCache: shared table file {self.path!r} has {size} bytes, expected "
                             f"{nbytes} ({self.num_rows} x {self.dim} {self.dtype})")
        if nbytes == 0:
            return torch.zeros(shape, dtype=self.dtype)
        t = torch.from_file(self.path, shared=True, size=self.num_rows * self.dim, dtype=self.dtype).view(shape)
        if self.device.type == "cuda":
            # Page-lock the mapping in place; if the driver refuses, gathers go through the
            # staged path (misses copied through a pinned buffer).
            cudart = torch.cuda.cudart()
            if int(cudart.cudaHostRegister(t.data_ptr(), nbytes, 0)) == 0:
                weakref.finalize(t, cudart.cudaHostUnregister, t.data_ptr())
        return t

    def flush(self) -> None:
        """Write a memory-mapped table back to its file (no-op for other backings)."""
        if self._mmap is not None:
            self._mmap.flush()

    # ------------------------------------------------------------------ helpers
    def _ids(self, ids: Tensor | list | np.ndarray, op: str) -> Tensor:
        ids = torch.as_tensor(ids)
        if ids.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"EmbeddingCache.{op}: ids must be int32 or int64, got {ids.dtype}")
        if ids.dim() != 1:
            raise ValueError(f"EmbeddingCache.{op}: ids must be 1-D, got shape {tuple(ids.shape)}")
        return ids.to(self.device, non_blocking=True)

    def _check_range(self, ids: Tensor, op: str) -> None:
        if ids.numel() == 0:
            return
        lo, hi = torch.aminmax(ids)
        lo, hi = int(lo), int(hi)
        bad = lo if lo < 0 else hi if hi >= self.num_rows else None
        if bad is not None:
            raise IndexError(f"EmbeddingCache.{op}: id {bad} out of range for {self.num_rows} rows")

    # ------------------------------------------------------------------ API
    @torch.no_grad()
    def gather(self, ids: Tensor) -> Tensor:
        """Rows ``table[ids]`` on the device; then admits the misses (dynamic policies).

        Args:
            ids: Tensor  # [N] int32/int64 in [0, num_rows), duplicates allowed

        Returns:
            Tensor  # [N, dim] on ``device``
        """
        ids = self._ids(ids, "gather")
        if self._direct:
            out, slots = cache_gather(ids, self.keys, self.vals, self.rows, self._table)
        else:
            out, slots = self._gather_staged(ids)
        hits = (slots >= 0).sum()
        misses = ids.numel() - hits
        admitted = torch.zeros((), dtype=torch.long, device=self.device)
        # The ids were range-checked by the gather (or lookup) that produced `slots`, so the
        # admission skips its own check (on CUDA a second host sync).
        if self.policy == "lfu" and self.capacity > 0 and ids.numel() > 0:
            admitted = cache_admit_lfu(ids, slots, out, self.keys, self.vals, self.slot_ids,
                                       self.meta, self.rows, self.state, self.sketch,
                                       self.aging_period, check=False)
        elif self.policy != "static" and self.capacity > 0 and ids.numel() > 0:
            admitted = cache_admit(ids, slots, out, self.keys, self.vals, self.slot_ids, self.meta,
                                   self.rows, self.state, self.policy, check=False)
        self._stats += torch.stack([hits, misses, misses * self.row_bytes,
                                    (hits + admitted) * self.row_bytes])
        return out

    def _gather_staged(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        # A table the device cannot read in place (mmap on CUDA): hits from the cache, misses
        # read on the host into one pinned staging buffer and copied in one transfer.
        slots = cache_lookup(ids, self.keys, self.vals, self.num_rows)
        out = torch.empty(ids.numel(), self.dim, dtype=self.dtype, device=self.device)
        hit = slots >= 0
        out[hit] = self.rows[slots[hit]]
        miss_pos = (~hit).nonzero().squeeze(1)
        staged = self.table[ids[miss_pos].cpu().long()].pin_memory()
        out[miss_pos] = staged.to(self.device, non_blocking=True)
        return out, slots

    @torch.no_grad()
    def update(self, ids: Tensor, rows: Tensor, step: int | None = None) -> None:
        """Write ``rows`` through to the table and any cached copy; record their version.

        Args:
            ids: Tensor  # [N] int32/int64 (for duplicates the last row wins)
            rows: Tensor  # [N, dim] any device, cast to the cache dtype
            step: the step the rows were computed at (default: ``self.step``).
        """
        ids = self._ids(ids, "update")
        step = self.step if step is None else int(step)
        if rows.dim() != 2 or rows.shape[0] != ids.numel() or rows.shape[1] != self.dim:
            raise ValueError(f"EmbeddingCache.update: rows must have shape ({ids.numel()}, {self.dim}), "
                             f"got {tuple(rows.shape)}")
        values = rows.detach().to(self.device, self.dtype)
        if self._direct:
            cache_update(ids, values, step, self._table, self.versions, self.keys, self.vals, self.rows)
        else:
            # Host table not addressable from the device (mmap on CUDA): the winners (last
            # occurrence of each id) are written on the host, versions and cached copies on
            # the device.
            self._check_range(ids, "update")
            ids_l = ids.long()
            order = torch.arange(ids_l.numel(), device=self.device)
            last = torch.full((self.num_rows,), -1, dtype=torch.long, device=self.device)
            last.scatter_reduce_(0, ids_l, order, "amax")
            win = last[ids_l] == order
            ids_w, vals_w = ids_l[win], values[win]
            self.table[ids_w.cpu()] = vals_w.cpu()
            self.versions[ids_w] = step
            slots = cache_lookup(ids_w, self.keys, self.vals, self.num_rows)
            hit = slots >= 0
            self.rows[slots[hit]] = vals_w[hit]

    @torch.no_grad()
    def reload(self, ids: Tensor, step: int | None = None) -> None:
        """Rows ``ids`` of a shared table were rewritten by another process: record their
        version and re-read their cached copies from the table.

        Args:
            ids: Tensor  # [N] int32/int64
            step: the step the rows were computed at (default: ``self.step``).
        """
        ids = self._ids(ids, "reload")
        self._check_range(ids, "reload")
        ids_l = ids.long()
        self.versions[ids_l] = self.step if step is None else int(step)
        if self.capacity == 0 or ids_l.numel() == 0:
            return
        slots = cache_lookup(ids_l, self.keys, self.vals, self.num_rows)
        hit = slots >= 0
        if bool(hit.any()):
            self.rows[slots[hit]] = self.table[ids_l[hit].cpu()].to(self.device, self.dtype)

    def version(self, ids: Tensor) -> Tensor:
        """Tensor  # [N] int64, the step each row of ``ids`` was computed at (on device)."""
        return self._version(ids, "version")

    def _version(self, ids: Tensor, op: str) -> Tensor:
        ids = self._ids(ids, op)
        self._check_range(ids, op)
        return self.versions[ids.long()]

    def stale(self, ids: Tensor, max_age: int, step: int | None = None) -> Tensor:
        """Tensor  # [N] bool, rows computed more than ``max_age`` steps before ``step``."""
        step = self.step if step is None else int(step)
        return (step - self._version(ids, "stale")) > max_age

    @torch.no_grad()
    def fill_static(self, priority: Tensor) -> Tensor:
        """Fill the cache with the ``capacity`` rows of highest priority (ties: lower id).

        Args:
            priority: Tensor  # [num_rows] e.g. degree or pre-sampled access frequency

        Returns:
            Tensor  # [capacity] the cached ids, in increasing order
        """
        priority = torch.as_tensor(priority)
        if priority.shape != (self.num_rows,):
            raise ValueError(f"EmbeddingCache.fill_static: priority must have shape ({self.num_rows},), "
                             f"got {tuple(priority.shape)}")
        self.clear()
        if self.capacity == 0:
            return torch.empty(0, dtype=torch.long, device=self.device)
        # Stable sort by descending priority: ties keep the lower id.
        order = torch.sort(priority.cpu().double(), descending=True, stable=True).indices
        top = torch.sort(order[: self.capacity]).values
        ids = top.to(self.device)
        out = self.table[top].to(self.device)
        slots = torch.full((ids.numel(),), -1, dtype=torch.long, device=self.device)
        cache_admit(ids, slots, out, self.keys, self.vals, self.slot_ids, self.meta, self.rows,
                    self.state, "clock")
        self._stats[3] += ids.numel() * self.row_bytes
        return ids

    def clear(self) -> None:
        """Empty the cache and forget the ``lfu`` counts (the table and versions are kept)."""
        self.sketch.zero_()
        self.keys.fill_(-1)
        self.slot_ids.fill_(-1)
        self.meta.zero_()
        self.state.zero_()

    def cached_ids(self) -> Tensor:
        """Tensor  # [n] int64, the ids now cached (in slot order)."""
        return self.slot_ids[self.slot_ids >= 0]

    def stats(self) -> dict:
        """Counters since the last :meth:`reset_stats`: ``hits``, ``misses`` (rows served by
        gathers), ``hit_rate``, ``bytes_host_to_device`` (miss rows read from the host table)
        and ``bytes_device`` (rows read from or written into the device cache)."""
        hits, misses, h2d, dev = self._stats.tolist()
        total = hits + misses
        return {"hits": hits, "misses": misses, "hit_rate": hits / total if total else 0.0,
                "bytes_host_to_device": h2d, "bytes_device": dev}

    def reset_stats(self) -> None:
        self._stats.zero_()

    def __repr__(self) -> str:
        return (f"EmbeddingCache(num_rows={self.num_rows}, dim={self.dim}, dtype={self.dtype}, "
                f"device={self.device}, capacity={self.capacity}, policy={self.policy!r}, "
                f"backing={self.backing!r})")
