import functools
import os

import pytest
import torch

import lmgnn_fast  # noqa: F401
from lmgnn_fast.cache import EmbeddingCache, parse_capacity
from lmgnn_fast.ops.cache import (
    cache_admit,
    cache_admit_lfu,
    cache_admit_lfu_ref,
    cache_admit_ref,
    cache_gather,
    cache_gather_ref,
    cache_lookup,
    cache_lookup_ref,
    cache_update,
    cache_update_ref,
    sketch_hash_ref,
)
from lmgnn_fast.testing import HAS_CUDA, only_cuda, with_devices


def _table(n, d, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(dtype)


def _check_invariants(c: EmbeddingCache):
    """Every cached slot holds its id's row, and the hash map finds every cached id."""
    filled = (c.slot_ids >= 0).nonzero().squeeze(1)
    ids = c.slot_ids[filled]
    assert ids.unique().numel() == ids.numel()
    assert torch.equal(c.rows[filled].cpu(), c.table[ids.cpu()])
    assert torch.equal(cache_lookup(ids, c.keys, c.vals, c.num_rows), filled)
    assert int(c.state[1]) * 4 <= c.keys.numel()


@with_devices
@pytest.mark.parametrize("policy", ["clock", "lru", "lfu", "static"])
@pytest.mark.parametrize("capacity", [0, 37, 300, 400, 10_000])
@pytest.mark.parametrize("id_dtype", [torch.int64, torch.int32])
def test_gather_equals_table(device, policy, capacity, id_dtype):
    n, d = 300, 7
    table = _table(n, d)
    c = EmbeddingCache(n, d, device=device, capacity=capacity, policy=policy, table=table)
    assert c.capacity == min(capacity, n)
    if policy == "static":
        c.fill_static(torch.arange(n) % 17)
    g = torch.Generator().manual_seed(capacity)
    for _ in range(8):
        ids = torch.randint(0, n, (int(torch.randint(1, 400, (1,), generator=g)),), generator=g)
        ids = torch.cat([ids, ids[: len(ids) // 3]])  # duplicates
        out = c.gather(ids.to(id_dtype))
        assert out.device.type == torch.device(device).type
        assert torch.equal(out.cpu(), table[ids])
        _check_invariants(c)
    st = c.stats()
    assert st["hits"] + st["misses"] > 0
    if capacity == 0:
        assert st["hits"] == 0
    if capacity >= n and policy != "static":  # free slots take every miss: later gathers all hit
        c.reset_stats()
        c.gather(torch.arange(n))
        c.reset_stats()
        c.gather(torch.randint(0, n, (500,), generator=g))
        assert c.stats()["misses"] == 0


@with_devices
@pytest.mark.parametrize("policy", ["clock", "lru", "lfu"])
def test_gather_after_updates_and_evictions(device, policy):
    n, d = 500, 5
    shadow = _table(n, d, seed=1)
    c = EmbeddingCache(n, d, device=device, capacity=40, policy=policy, table=shadow)
    g = torch.Generator().manual_seed(3)
    for step in range(1, 30):
        hot = torch.randint(0, 60, (80,), generator=g)   # a hot set larger than the cache
        cold = torch.randint(0, n, (40,), generator=g)
        ids = torch.cat([hot, cold])[torch.randperm(120, generator=g)]
        assert torch.equal(c.gather(ids).cpu(), shadow[ids])
        upd = torch.randint(0, n, (25,), generator=g)
        new = torch.randn(25, d, generator=g)
        c.update(upd.to(device), new.to(device), step=step)
        for i, x in enumerate(upd.tolist()):  # last occurrence wins
            shadow[x] = new[i]
        assert torch.equal(c.table, shadow)
        _check_invariants(c)
    assert c.stats()["hits"] > 0


@with_devices
def test_empty_ids(device):
    c = EmbeddingCache(10, 3, device=device, capacity=4)
    out = c.gather(torch.empty(0, dtype=torch.long))
    assert out.shape == (0, 3)
    c.update(torch.empty(0, dtype=torch.long), torch.empty(0, 3))
    assert c.stale(torch.empty(0, dtype=torch.long), 0).shape == (0,)
    assert c.stats()["hits"] == 0 and c.stats()["misses"] == 0


@with_devices
def test_zero_rows_table(device):
    c = EmbeddingCache(0, 3, device=device, capacity=4)
    assert c.capacity == 0 and c.gather(torch.empty(0, dtype=torch.long)).shape == (0, 3)


@with_devices
def test_out_of_range_ids(device):
    c = EmbeddingCache(1000, 4, device=device, capacity=10)
    with pytest.raises(IndexError, match=r"cache_gather: ids holds id 1000 out of range for table rows \(1000\)"):
        c.gather(torch.tensor([3, 1000, 5]))
    with pytest.raises(IndexError, match=r"cache_gather: ids holds id -7 out of range"):
        c.gather(torch.tensor([-7, 1]))
    with pytest.raises(IndexError, match=r"cache_update: ids holds id 1041 out of range for table rows \(1000\)"):
        c.update(torch.tensor([1041]), torch.zeros(1, 4))
    with pytest.raises(IndexError, match=r"EmbeddingCache.version: id 5000 out of range for 1000 rows"):
        c.version(torch.tensor([5000]))
    with pytest.raises(IndexError, match=r"EmbeddingCache.stale: id -1 out of range"):
        c.stale(torch.tensor([-1]), 3)
    with pytest.raises(IndexError, match=r"cache_lookup: ids holds id 99 out of range for num_rows \(10\)"):
        cache_lookup(torch.tensor([99], device=device), c.keys, c.vals, 10)
    with pytest.raises(TypeError, match=r"EmbeddingCache.gather: ids must be int32 or int64"):
        c.gather(torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"EmbeddingCache.update: rows must have shape \(2, 4\)"):
        c.update(torch.tensor([1, 2]), torch.zeros(2, 5))
    # The cache is unchanged by the failed calls.
    assert c.stats()["hits"] + c.stats()["misses"] == 0


def test_bad_constructor_args():
    with pytest.raises(ValueError, match="policy must be one of"):
        EmbeddingCache(10, 2, policy="fifo")
    with pytest.raises(ValueError, match="backing must be one of"):
        EmbeddingCache(10, 2, backing="disk")
    with pytest.raises(ValueError, match="capacity 'lots' is neither"):
        EmbeddingCache(10, 2, capacity="lots")
    with pytest.raises(ValueError, match="capacity must be >= 0"):
        EmbeddingCache(10, 2, capacity=-1)
    if not HAS_CUDA:
        with pytest.raises(RuntimeError, match="backing='pinned' needs CUDA"):
            EmbeddingCache(10, 2, backing="pinned")


def test_capacity_parsing():
    assert parse_capacity(5, 100, 32) == 5
    assert parse_capacity(500, 100, 32) == 100
    assert parse_capacity("1KB", 100, 32) == 31
    assert parse_capacity("1KiB", 100, 32) == 32
    assert parse_capacity("0.5 MiB", 10**6, 1024) == 512
    assert EmbeddingCache(1000, 8, capacity="3200B").capacity == 100


@with_devices
def test_versions_and_staleness(device):
    c = EmbeddingCache(100, 3, device=device, capacity=10)
    assert c.version(torch.tensor([0, 99])).tolist() == [0, 0]
    c.update(torch.tensor([5, 6, 7]), torch.ones(3, 3), step=4)
    c.step = 9
    c.update(torch.tensor([7, 8]), torch.ones(2, 3))          # default step: c.step
    assert c.version(torch.tensor([5, 6, 7, 8, 9])).tolist() == [4, 4, 9, 9, 0]
    ids = torch.tensor([5, 7, 9])
    assert c.stale(ids, max_age=4).tolist() == [True, False, True]   # step 9
    assert c.stale(ids, max_age=5).tolist() == [False, False, True]
    assert c.stale(ids, max_age=0, step=4).tolist() == [False, False, True]
    # Duplicates: the last occurrence wins everywhere.
    c.gather(torch.tensor([42]))                                     # cache row 42
    c.update(torch.tensor([42, 42]), torch.tensor([[1.0] * 3, [2.0] * 3]), step=11)
    assert c.gather(torch.tensor([42])).tolist() == [[2.0] * 3] and c.table[42].tolist() == [2.0] * 3
    assert c.version(torch.tensor([42])).tolist() == [11]


@with_devices
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mmap_backing(device, dtype, tmp_path):
    n, d = 200, 6
    path = tmp_path / "emb.bin"
    table = _table(n, d, seed=4, dtype=dtype)
    c = EmbeddingCache(n, d, dtype=dtype, device=device, capacity=20, backing="mmap", path=path,
                       table=table)
    ids = torch.randint(0, n, (300,))
    for _ in range(3):
        assert torch.equal(c.gather(ids).cpu(), table[ids])
    c.update(torch.tensor([3, 4]), torch.full((2, d), 7.0, dtype=dtype), step=2)
    table[[3, 4]] = 7.0
    assert torch.equal(c.gather(ids).cpu(), table[ids])
    _check_invariants(c)
    c.flush()
    assert os.path.getsize(path) == n * d * table.element_size()
    # Reopening the same file keeps its rows.
    c2 = EmbeddingCache(n, d, dtype=dtype, device=device, capacity=5, backing="mmap", path=path)
    assert torch.equal(c2.gather(torch.arange(n)).cpu(), table)


@only_cuda
def test_pinned_backing_cuda():
    n, d = 300, 16
    table = _table(n, d, seed=5)
    c = EmbeddingCache(n, d, device="cuda", capacity=50, table=table)
    assert c.backing == "pinned" and c.table.is_pinned()
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        ids = torch.randint(0, n, (200,), generator=g)
        assert torch.equal(c.gather(ids.cuda()).cpu(), table[ids])
    c.update(torch.tensor([1, 2], device="cuda"), torch.ones(2, d, device="cuda"), step=1)
    table[[1, 2]] = 1.0
    assert torch.equal(c.table, table)
    assert torch.equal(c.gather(torch.arange(n, device="cuda")).cpu(), table)


@only_cuda
@pytest.mark.parametrize("policy", ["clock", "lru", "lfu"])
def test_cuda_matches_cpu(policy):
    n, d = 400, 8
    table = _table(n, d, seed=6)
    a = EmbeddingCache(n, d, device="cpu", capacity=64, policy=policy, table=table)
    b = EmbeddingCache(n, d, device="cuda", capacity=64, policy=policy, table=table)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        ids = torch.randint(0, n, (150,), generator=g) ** 2 % n
        assert torch.equal(a.gather(ids), b.gather(ids.cuda()).cpu())
        assert torch.equal(a.slot_ids, b.slot_ids.cpu()) and torch.equal(a.meta, b.meta.cpu())
        assert torch.equal(a.state[[0, 2, 3]], b.state[[0, 2, 3]].cpu())
        assert torch.equal(a.sketch, b.sketch.cpu())
    assert a.stats() == b.stats()


# --------------------------------------------------------------------------- policies
@with_devices
def test_clock_evicts_unreferenced_first(device):
    c = EmbeddingCache(100, 2, device=device, capacity=4, policy="clock")
    c.gather(torch.tensor([3, 0, 2, 1]))        # admitted in id order into slots 0..3
    assert c.slot_ids.tolist() == [0, 1, 2, 3] and int(c.state[0]) == 0
    c.gather(torch.tensor([1, 2]))               # referenced
    c.gather(torch.tensor([10]))                 # hand at slot 0 (id 0, unreferenced)
    assert c.slot_ids.tolist() == [10, 1, 2, 3]
    c.gather(torch.tensor([11]))                 # passes over 1 and 2 (clearing them), takes 3
    assert c.slot_ids.tolist() == [10, 1, 2, 11]
    assert c.meta.tolist() == [0, 0, 0, 0]
    c.gather(torch.tensor([12, 13]))             # from slot 0: 10, then 1 (bit cleared above)
    assert c.slot_ids.tolist() == [12, 13, 2, 11]


@with_devices
def test_clock_second_revolution(device):
    # More misses than unreferenced slots: the walk comes back to the slots it cleared.
    c = EmbeddingCache(100, 2, device=device, capacity=4, policy="clock")
    c.gather(torch.tensor([0, 1, 2, 3]))
    c.gather(torch.tensor([0, 1, 2, 50, 51, 52]))   # hits 0, 1, 2; slot 3 is the only victim
    # Victims: slot 3 (first revolution), then slots 0 and 1 (second revolution).
    assert c.slot_ids.tolist() == [51, 52, 2, 50]
    assert int(c.state[0]) == 2


@with_devices
def test_lru_evicts_least_recent(device):
    c = EmbeddingCache(100, 2, device=device, capacity=3, policy="lru")
    for x in [0, 1, 2, 0, 3]:
        c.gather(torch.tensor([x]))
    assert sorted(c.cached_ids().tolist()) == [0, 2, 3]


@with_devices
def test_lfu_admits_only_more_frequent(device):
    # Wide sketch: no collisions among the few ids used, so estimates are exact counts.
    c = EmbeddingCache(100, 2, device=device, capacity=2, policy="lfu", sketch_width=1 << 12,
                       aging_period=10**6)
    c.gather(torch.tensor([5, 5, 6]))           # free slots take both: 5 (count 2) then 6 (1)
    assert sorted(c.cached_ids().tolist()) == [5, 6]
    c.gather(torch.tensor([7]))                  # count 1 does not beat 6's count 1
    assert sorted(c.cached_ids().tolist()) == [5, 6]
    c.gather(torch.tensor([7]))                  # count 2 beats 6's 1: 6 is evicted
    assert sorted(c.cached_ids().tolist()) == [5, 7]
    assert sorted(c.meta.tolist()) == [2, 2]
    c.gather(torch.tensor([5, 8, 9, 9, 9]))     # 9 (3) beats 7 (2); 8 (1) beats nothing
    assert sorted(c.cached_ids().tolist()) == [5, 9]
    st = c.stats()
    assert st["hits"] == 1 and st["misses"] == 3 + 1 + 1 + 4


@with_devices
def test_lfu_aging_halves_counts(device):
    c = EmbeddingCache(1000, 2, device=device, capacity=1, policy="lfu", sketch_width=1 << 12,
                       aging_period=8)
    c.gather(torch.tensor([1] * 6))              # 6 accesses: no aging yet
    assert int(c.sketch[:, sketch_hash_ref(1, 0, 1 << 12)][0]) == 6 and int(c.state[3]) == 6
    c.gather(torch.tensor([2, 2]))               # 8 accesses: halved, counter restarts
    assert int(c.state[3]) == 0
    assert [int(c.sketch[d, sketch_hash_ref(1, d, 1 << 12)]) for d in range(4)] == [3] * 4
    assert [int(c.sketch[d, sketch_hash_ref(2, d, 1 << 12)]) for d in range(4)] == [1] * 4
    assert c.cached_ids().tolist() == [1]        # 2 (1) does not beat 1 (3)
    c.gather(torch.tensor([2, 2, 2]))            # 2 (4) beats 1 (3)
    assert c.cached_ids().tolist() == [2]


@with_devices
def test_lfu_keeps_hot_set_under_scans(device):
    # A hot set that fits, interleaved with one-off scans: LFU keeps the hot rows, CLOCK loses them.
    n, hot = 5000, 50
    table = _table(n, 3)
    g = torch.Generator().manual_seed(0)
    rates = {}
    for policy in ("lfu", "clock"):
        c = EmbeddingCache(n, 3, device=device, capacity=64, policy=policy, table=table)
        scan = iter(torch.randperm(n - hot, generator=g) + hot)
        for b in range(30):
            ids = torch.cat([torch.arange(hot), torch.tensor([next(scan) for _ in range(100)])])
            if b == 10:
                c.reset_stats()
            assert torch.equal(c.gather(ids).cpu(), table[ids])
        _check_invariants(c)
        rates[policy] = c.stats()["hit_rate"]
    assert rates["lfu"] == pytest.approx(hot / 150)
    assert rates["clock"] < rates["lfu"]


@with_devices
def test_static_keeps_its_set(device):
    n = 50
    table = _table(n, 3)
    c = EmbeddingCache(n, 3, device=device, capacity=5, policy="static", table=table)
    prio = torch.zeros(n)
    prio[[7, 3, 40, 41, 12, 13]] = torch.tensor([5.0, 9.0, 1.0, 1.0, 3.0, 0.5])
    ids = c.fill_static(prio)
    assert ids.tolist() == [3, 7, 12, 40, 41]         # ties (40, 41) kept
    c.reset_stats()
    trace = torch.tensor([13, 3, 20, 21, 7, 7, 22, 40])
    for _ in range(3):
        assert torch.equal(c.gather(trace).cpu(), table[trace])
    assert sorted(c.cached_ids().tolist()) == [3, 7, 12, 40, 41]
    assert c.stats()["hits"] == 3 * 4 and c.stats()["misses"] == 3 * 4


@with_devices
def test_stats_exact_on_hand_made_trace(device):
    c = EmbeddingCache(100, 4, device=device, capacity=2, policy="clock")
    rb = 4 * 4
    c.gather(torch.tensor([0, 1, 0]))       # 3 misses, admits 0 and 1 (hand back at 0)
    c.gather(torch.tensor([0, 2]))          # hit 0; miss 2 evicts 1 (slot 0 referenced)
    assert sorted(c.cached_ids().tolist()) == [0, 2]
    c.gather(torch.tensor([2, 2, 0, 5]))    # 3 hits, miss 5
    st = c.stats()
    assert st["hits"] == 4 and st["misses"] == 5
    assert st["bytes_host_to_device"] == 5 * rb
    admitted = 2 + 1 + 1
    assert st["bytes_device"] == (4 + admitted) * rb
    assert st["hit_rate"] == pytest.approx(4 / 9)
    c.reset_stats()
    assert c.stats()["hits"] == 0 and c.stats()["bytes_device"] == 0


# --------------------------------------------------------------------------- ops vs reference
def _empty_state(cap, d, h=None, device="cpu"):
    h = h or max(2, 1 << (2 * cap - 1).bit_length()) if cap else 2
    return dict(keys=torch.full((h,), -1, dtype=torch.long, device=device),
                vals=torch.zeros(h, dtype=torch.long, device=device),
                slot_ids=torch.full((cap,), -1, dtype=torch.long, device=device),
                meta=torch.zeros(cap, dtype=torch.long, device=device),
                rows=torch.zeros(cap, d, device=device),
                state=torch.zeros(4, dtype=torch.long, device=device))


def _replay_admissions(device, cap, ours, admit, admit_ref, compared, state_rows):
    """25 gathers of skewed random ids, each followed by an admission: after every step our
    op (on ``device``) and the reference (on the CPU) hold the same cache state."""
    n, d = 120, ours["rows"].shape[1]
    table = _table(n, d, seed=cap).to(device)
    ref = {k: v.clone().cpu() for k, v in ours.items()}
    g = torch.Generator().manual_seed(cap)
    for _ in range(25):
        ids = (torch.randint(0, n, (int(torch.randint(1, 60, (1,), generator=g)),), generator=g) ** 2 % n)
        out, slots = cache_gather(ids.to(device), ours["keys"], ours["vals"], ours["rows"], table)
        out_r, slots_r = cache_gather_ref(ids, ref["keys"], ref["vals"], ref["rows"], table.cpu())
        assert torch.equal(out.cpu(), out_r) and torch.equal(slots.cpu(), slots_r)
        m = admit(ids.to(device), slots, out, **ours)
        m_r = admit_ref(ids, slots_r, out_r, **ref)
        assert int(m) == int(m_r)
        for k in compared:
            assert torch.equal(ours[k].cpu(), ref[k]), k
        assert ours["state"][state_rows].tolist() == ref["state"][state_rows].tolist()
        probe = torch.arange(n, device=device)
        assert torch.equal(cache_lookup(probe, ours["keys"], ours["vals"], n).cpu(),
                           cache_lookup_ref(probe.cpu(), ref["keys"], ref["vals"], n))


@with_devices
@pytest.mark.parametrize("policy", ["clock", "lru"])
@pytest.mark.parametrize("cap", [1, 8, 33])
def test_admit_matches_reference(device, policy, cap):
    _replay_admissions(device, cap, _empty_state(cap, 3, device=device),
                       functools.partial(cache_admit, policy=policy),
                       functools.partial(cache_admit_ref, policy=policy),
                       ("slot_ids", "meta", "rows"), [0, 2])


@with_devices
@pytest.mark.parametrize("cap,width,period", [(1, 64, 1000), (8, 16, 40), (33, 256, 90)])
def test_admit_lfu_matches_reference(device, cap, width, period):
    ours = _empty_state(cap, 3, device=device)
    ours["sketch"] = torch.zeros(4, width, dtype=torch.int32, device=device)
    _replay_admissions(device, cap, ours, functools.partial(cache_admit_lfu, period=period),
                       functools.partial(cache_admit_lfu_ref, period=period),
                       ("slot_ids", "meta", "rows", "sketch"), [0, 2, 3])


@with_devices
@pytest.mark.parametrize("lfu", [False, True])
def test_admit_rejects_invalid_entries(device, lfu):
    st = _empty_state(4, 3, device=device)
    extra = {"sketch": torch.zeros(4, 64, dtype=torch.int32, device=device), "period": 100} if lfu else {}
    admit = cache_admit_lfu if lfu else cache_admit
    name = "cache_admit_lfu" if lfu else "cache_admit"
    ids = torch.tensor([1, -3], device=device)
    before = {k: v.clone() for k, v in st.items()}
    with pytest.raises(IndexError, match=rf"{name}: ids holds negative id -3"):
        admit(ids, torch.tensor([-1, -1], device=device), torch.zeros(2, 3, device=device), **st, **extra)
    with pytest.raises(IndexError, match=rf"{name}: slots holds slot 9 at position 1 outside \[-1, 4\)"):
        admit(ids.abs(), torch.tensor([-1, 9], device=device), torch.zeros(2, 3, device=device), **st,
              **extra)
    if lfu or device != "cpu":  # checked before anything changes
        for k in st:
            assert torch.equal(st[k], before[k]), k
    if device != "cpu":  # check=False: invalid entries are ignored, never read
        m = admit(torch.tensor([1, -3, 2], device=device), torch.tensor([-1, -1, 9], device=device),
                  torch.ones(3, 3, device=device), **st, **extra, check=False)
        assert int(m) == 1 and st["slot_ids"].tolist().count(1) == 1


@with_devices
def test_update_op_matches_reference(device):
    n, d, cap = 60, 4, 10
    st = _empty_state(cap, d, device=device)
    table = _table(n, d, seed=8)
    ids0 = torch.arange(0, 40, 4)
    out, slots = cache_gather(ids0.to(device), st["keys"], st["vals"], st["rows"], table.to(device))
    cache_admit(ids0.to(device), slots, out, **st)
    ids = torch.tensor([4, 5, 4, 8, 59, 8, 8])
    values = torch.randn(len(ids), d)
    versions = torch.zeros(n, dtype=torch.long, device=device)
    t_ours, v_ref, t_ref = table.clone(), torch.zeros(n, dtype=torch.long), table.clone()
    rows_ref = st["rows"].cpu().clone()
    if device == "cpu":
        cache_update(ids, values, 3, t_ours, versions, st["keys"], st["vals"], st["rows"])
    else:  # the kernel writes pinned host memory in place
        t_ours = t_ours.pin_memory()
        cache_update(ids.to(device), values.to(device), 3, t_ours, versions, st["keys"], st["vals"],
                     st["rows"])
    cache_update_ref(ids, values, 3, t_ref, v_ref, st["keys"].cpu(), st["vals"].cpu(), rows_ref)
    assert torch.equal(t_ours, t_ref) and torch.equal(versions.cpu(), v_ref)
    assert torch.equal(st["rows"].cpu(), rows_ref)


def _admitted_state(device, ids, cap=4, d=3, n=10):
    """A cache state holding ``ids`` (admitted by the ops themselves) and its table."""
    st = _empty_state(cap, d, device=device)
    table = _table(n, d, seed=3).to(device)
    ids = torch.tensor(ids, device=device)
    out, slots = cache_gather(ids, st["keys"], st["vals"], st["rows"], table)
    cache_admit(ids, slots, out, **st)
    return st, table


@with_devices
def test_corrupt_map_slot_is_refused(device):
    # A hash map whose value (slot) lies outside the cached rows: gather would read and
    # update would write past rows. Both raise, naming the id, and update writes nothing.
    st, table = _admitted_state(device, [2, 5])
    st["vals"][st["keys"] == 5] = 1000
    with pytest.raises(IndexError, match=r"cache_gather: corrupt cache state: vals maps id 5 \(ids position 1\) "
                                         r"to slot 1000, outside \[0, 4\)"):
        cache_gather(torch.tensor([2, 5], device=device), st["keys"], st["vals"], st["rows"], table)
    st["vals"][st["keys"] == 5] = -7
    with pytest.raises(IndexError, match=r"cache_gather: corrupt cache state: vals maps id 5"):
        cache_gather(torch.tensor([5], device=device), st["keys"], st["vals"], st["rows"], table)
    versions = torch.zeros(10, dtype=torch.long, device=device)
    before = (table.clone(), st["rows"].clone())
    with pytest.raises(IndexError, match=r"cache_update: corrupt cache state: vals maps id 5 \(ids position 1\) to"):
        cache_update(torch.tensor([2, 5], device=device), torch.ones(2, 3, device=device), 7, table, versions,
                     st["keys"], st["vals"], st["rows"])
    assert torch.equal(table, before[0]) and torch.equal(st["rows"], before[1])
    assert int(versions.abs().sum()) == 0


@with_devices
def test_full_or_garbage_map_never_hangs(device):
    # Every position of the hash map holds some other id (no free one, no tombstone):
    # lookups probe at most H positions and miss; admission raises on the CPU instead of
    # looping forever, and on CUDA (no error path without a sync) returns.
    st = _empty_state(4, 3, device=device)
    h = st["keys"].numel()
    st["keys"].copy_(torch.arange(h, device=device) + 100)
    st["vals"].zero_()
    table = _table(10, 3).to(device)
    ids = torch.tensor([1, 3, 3], device=device)
    out, slots = cache_gather(ids, st["keys"], st["vals"], st["rows"], table)
    assert torch.equal(out.cpu(), table.cpu()[[1, 3, 3]]) and slots.tolist() == [-1, -1, -1]
    assert cache_lookup(ids, st["keys"], st["vals"], 10).tolist() == [-1, -1, -1]
    if device == "cpu":
        with pytest.raises(RuntimeError, match=rf"cache_admit: corrupt cache state: the hash map \(keys, {h} "
                                               r"entries\) has no free position for id 1"):
            cache_admit(ids, slots, out, **st)
        sk = torch.zeros(4, 64, dtype=torch.int32)
        st = _empty_state(4, 3, device=device)
        st["keys"].copy_(torch.arange(h) + 100)
        with pytest.raises(RuntimeError, match=r"cache_admit_lfu: corrupt cache state: the hash map"):
            cache_admit_lfu(ids, slots, out, **st, sketch=sk, period=100)
    else:
        cache_admit(ids, slots, out, **st)
        torch.cuda.synchronize()


def test_evicted_id_missing_from_map_is_refused():
    # slot_ids names an id that the hash map does not hold: raised before the map changes.
    st = _empty_state(1, 3)
    st["slot_ids"][0] = 7
    keys = st["keys"].clone()
    with pytest.raises(RuntimeError, match=r"cache_admit: corrupt cache state: slot_ids\[0\] holds id 7, which "
                                           r"is missing from the hash map"):
        cache_admit(torch.tensor([3]), torch.tensor([-1]), torch.zeros(1, 3), **st)
    assert torch.equal(st["keys"], keys)


@with_devices
@pytest.mark.parametrize("policy", ["clock", "lru"])
def test_clock_hand_out_of_range_is_refused(device, policy):
    st = _empty_state(4, 3, device=device)
    st["state"][0] = 9
    with pytest.raises(RuntimeError, match=r"cache_admit: state holds hand 9 outside \[0, 4\)"):
        cache_admit(torch.tensor([1], device=device), torch.tensor([-1], device=device),
                    torch.zeros(1, 3, device=device), **st, policy=policy)


def test_op_argument_errors():
    st = _empty_state(4, 3)
    ids = torch.tensor([1, 2])
    with pytest.raises(RuntimeError, match=r"cache_gather: rows have 3 columns but table has 5"):
        cache_gather(ids, st["keys"], st["vals"], st["rows"], torch.zeros(10, 5))
    with pytest.raises(RuntimeError, match=r"cache_lookup: keys must have a power-of-two length, got 3"):
        cache_lookup(ids, torch.full((3,), -1), torch.zeros(3, dtype=torch.long), 10)
    with pytest.raises(RuntimeError, match=r"cache_admit: policy must be 'clock' or 'lru', got 'mru'"):
        cache_admit(ids, torch.tensor([-1, -1]), torch.zeros(2, 3), **st, policy="mru")
    with pytest.raises(IndexError, match=r"cache_admit: slots holds slot 9 at position 1 outside \[-1, 4\)"):
        cache_admit(ids, torch.tensor([-1, 9]), torch.zeros(2, 3), **st)
    sk = torch.zeros(4, 48, dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"cache_admit_lfu: sketch width must be a power of two, got 48"):
        cache_admit_lfu(ids, torch.tensor([-1, -1]), torch.zeros(2, 3), **st, sketch=sk, period=10)
    with pytest.raises(RuntimeError, match=r"cache_admit_lfu: sketch must be int32"):
        cache_admit_lfu(ids, torch.tensor([-1, -1]), torch.zeros(2, 3), **st, sketch=sk.long(), period=10)
    with pytest.raises(RuntimeError, match=r"cache_admit_lfu: period must be in \[1, 2\^29\], got 0"):
        cache_admit_lfu(ids, torch.tensor([-1, -1]), torch.zeros(2, 3), **st,
                        sketch=torch.zeros(4, 64, dtype=torch.int32), period=0)
    with pytest.raises(RuntimeError, match=r"cache_update: values must have 2 rows \(one per id\), got 1"):
        cache_update(ids, torch.zeros(1, 3), 0, torch.zeros(10, 3), torch.zeros(10, dtype=torch.long),
                     st["keys"], st["vals"], st["rows"])


def test_hash_map_rebuilds_under_churn():
    # Long churn: every batch evicts; tombstones must be reclaimed and lookups stay exact.
    n, d = 5000, 2
    table = _table(n, d, seed=9)
    c = EmbeddingCache(n, d, capacity=64, policy="clock", table=table)
    g = torch.Generator().manual_seed(2)
    for _ in range(60):
        ids = torch.randint(0, n, (64,), generator=g)
        assert torch.equal(c.gather(ids), table[ids])
        assert int(c.state[1]) * 4 <= c.keys.numel()
    _check_invariants(c)


def test_opcheck_and_compile():
    st = _empty_state(8, 3)
    table = _table(50, 3)
    ids = torch.randint(0, 50, (30,))
    torch.library.opcheck(torch.ops.lmgnn.cache_lookup.default, (ids, st["keys"], st["vals"], 50))
    torch.library.opcheck(torch.ops.lmgnn.cache_gather.default,
                          (ids, st["keys"], st["vals"], st["rows"], table))

    @torch.compile(fullgraph=True, backend="eager")
    def f(ids):
        out, slots = cache_gather(ids, st["keys"], st["vals"], st["rows"], table)
        return out * 2, slots

    out, slots = f(ids)
    assert torch.equal(out, table[ids] * 2) and bool((slots == -1).all())


_FULL_CHECKS_SCRIPT = """
import torch, lmgnn_fast
from lmgnn_fast.ops.cache import cache_admit
st = [torch.full((8,), -1, device="cuda"), torch.zeros(8, dtype=torch.long, device="cuda"),
      torch.full((4,), -1, device="cuda"), torch.zeros(4, dtype=torch.long, device="cuda"),
      torch.zeros(4, 3, device="cuda"), torch.zeros(4, dtype=torch.long, device="cuda")]
try:
    cache_admit(torch.tensor([1, 2], device="cuda"), torch.tensor([-1, 9], device="cuda"),
                torch.zeros(2, 3, device="cuda"), *st, check=False)
except IndexError as e:
    print(e)
"""


@only_cuda
def test_full_input_checks_on_cuda():
    # LMGNN_CHECK_INPUTS=full: admission checks its entries even with check=False.
    import subprocess
    import sys
    env = dict(os.environ, LMGNN_CHECK_INPUTS="full")
    res = subprocess.run([sys.executable, "-c", _FULL_CHECKS_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "cache_admit: slots holds slot 9 at position 1 outside [-1, 4)" in res.stdout, res.stdout
