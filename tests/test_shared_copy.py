"""One copy per machine: lazy string columns, the shared embedding table, stale folders, and
:class:`MachineShare` in 2 real gloo processes (the ranks map the very same pages)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from _toy_graph import write_toy_dir
from conftest import spawn_gloo
from lmgnn_fast.cache import EmbeddingCache
from lmgnn_fast.io import load_binary, read_dir, save_binary
from lmgnn_fast.io.binary import StringColumn
from lmgnn_fast.testing import with_devices
from lmgnn_fast.train.shared_copy import PREFIX, remove_stale


@pytest.fixture(scope="module")
def toy_graph(tmp_path_factory):
    return read_dir(write_toy_dir(str(tmp_path_factory.mktemp("share") / "data"), num_papers=30))


def test_lazy_strings_equal_the_lists(tmp_path, toy_graph):
    save_binary(toy_graph, tmp_path / "b")
    h = load_binary(tmp_path / "b", lazy_strings=True)
    assert h.equals(toy_graph)
    for t in toy_graph.node_types:
        col, ref = h.text[t], toy_graph.text[t]
        assert isinstance(col, StringColumn) and isinstance(h.raw_ids[t], StringColumn)
        assert len(col) == len(ref) and list(col) == ref
        assert col[0] == ref[0] and col[-1] == ref[-1] and col[1:4] == ref[1:4]
        with pytest.raises(IndexError, match="out of range"):
            col[len(ref)]
    # a graph holding string columns saves to the same files
    save_binary(h, tmp_path / "c")
    assert load_binary(tmp_path / "c").equals(toy_graph)


def _table_file(path, rows, dim):
    with open(path, "wb") as f:
        f.truncate(rows * dim * 4)
    return str(path)


@with_devices
def test_shared_backing_one_table_two_caches(tmp_path, device):
    path = _table_file(tmp_path / "t.bin", 50, 4)
    a = EmbeddingCache(50, 4, capacity=10, backing="shared", path=path, device=device)
    b = EmbeddingCache(50, 4, capacity=10, backing="shared", path=path, device=device)
    if device == "cuda":  # page-locked in place: the kernels read the mapping directly
        assert a.table.is_pinned() and b.table.is_pinned()
    ids = torch.tensor([1, 7, 49], device=device)
    zeros = torch.zeros(3, 4, device=device)
    assert torch.equal(b.gather(ids), zeros)  # b now caches the zero rows
    rows = torch.randn(3, 4, device=device)
    a.update(ids, rows, step=5)
    assert torch.equal(b.table[ids.cpu()], rows.cpu())  # written once, seen by the other cache
    assert torch.equal(b.gather(ids), zeros)  # stale cached copies until ...
    b.reload(ids, step=5)  # ... the writer's peers re-read them
    assert torch.equal(b.gather(ids), rows)
    assert b.version(ids).tolist() == [5, 5, 5]
    assert torch.equal(b.gather(torch.arange(50, device=device)).cpu(), a.table)


def test_shared_backing_bad_file(tmp_path):
    with pytest.raises(ValueError, match="existing table file"):
        EmbeddingCache(5, 2, backing="shared", path=str(tmp_path / "missing"))
    path = _table_file(tmp_path / "t.bin", 5, 3)
    with pytest.raises(ValueError, match=r"has 60 bytes, expected 40 \(5 x 2"):
        EmbeddingCache(5, 2, backing="shared", path=path)


def test_remove_stale_keeps_live_jobs(tmp_path):
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(p.stdout)  # exited: its pid names no running process (unless reused at once)
    live = os.getpid()
    (tmp_path / f"{PREFIX}{dead}-x").mkdir()
    (tmp_path / f"{PREFIX}{dead}-x" / "graph").write_text("left by a killed job")
    (tmp_path / f"{PREFIX}{live}-y").mkdir()
    (tmp_path / "other").mkdir()
    assert remove_stale(str(tmp_path)) == [f"{PREFIX}{dead}-x"]
    assert sorted(os.listdir(tmp_path)) == sorted([f"{PREFIX}{live}-y", "other"])


def _mapped_file(ptr: int) -> str:
    """The file behind the mapping of this process that holds address ``ptr``."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= ptr < hi:
                return parts[5].strip() if len(parts) > 5 else ""
    return ""


def _worker(rank, world, port, data, root, hosts, q):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), LMGNN_TEST_HOST=hosts[rank])
    from lmgnn_fast.distributed import init_distributed
    from lmgnn_fast.lm import TokenizedTexts
    from lmgnn_fast.train.builders import make_cache
    from lmgnn_fast.train.shared_copy import MachineShare

    ctx = init_distributed("cpu", timeout_s=60)
    try:
        share = MachineShare(ctx, root)
        g = share.share_graph(lambda: read_dir(data))
        et = g.edge_types[0]
        tok = share.share_tokens(lambda: TokenizedTexts(torch.arange(12, dtype=torch.int32),
                                                        torch.tensor([0, 5, 12]), 0, "fp"))
        cache = share.shared_cache(lambda p: make_cache(40, 3, "cpu", shared_path=p), 40, 3)
        lo, hi = share.local_split(40)
        cache.update(torch.arange(lo, hi), torch.arange(lo, hi, dtype=torch.float32)[:, None].repeat(1, 3) + 1, 1)
        torch.distributed.barrier()
        table = cache.table.clone()
        files = [_mapped_file(t.data_ptr()) for t in (g.csc[et].indices, tok.tokens, cache.table)]
        left = sorted(os.listdir(share.path))
        q.put((rank, share.path, share.local_world, files, left, g.equals(read_dir(data)),
               tok.tokens.tolist(), tok.offsets.tolist(), table.tolist()))
        torch.distributed.barrier()
        share.close()
    finally:
        torch.distributed.destroy_process_group()


def _spawn(tmp_path, toy_graph, hosts):
    data = str(tmp_path / "data")
    write_toy_dir(data, num_papers=30)
    root = str(tmp_path / "shm")
    return root, spawn_gloo(_worker, 2, data, root, hosts)


def test_two_ranks_map_one_copy(tmp_path, toy_graph):
    root, res = _spawn(tmp_path, toy_graph, ["m0", "m0"])
    (_, path0, lw0, files0, left0, eq0, tok0, off0, tab0), (_, path1, lw1, files1, left1, eq1, tok1, off1, tab1) = res
    assert path0 == path1 and path0.startswith(os.path.join(root, PREFIX)) and lw0 == lw1 == 2
    # graph arrays, token ids and the table of both ranks are mappings of the same files,
    # already unlinked (only the mappings keep them alive)
    assert files0 == files1
    for f in files0:
        assert f.startswith(path0) and f.endswith("(deleted)"), files0
    assert left0 == left1 == ["job"]
    assert eq0 and eq1
    assert tok0 == tok1 == list(range(12)) and off0 == off1 == [0, 5, 12]
    # each rank wrote half of the rows; both see all of them
    expect = [[float(i + 1)] * 3 for i in range(40)]
    assert tab0 == tab1 == expect
    assert os.listdir(root) == []  # the leader removed the job folder


def test_two_machines_have_a_copy_each(tmp_path, toy_graph):
    root, res = _spawn(tmp_path, toy_graph, ["m0", "m1"])
    (_, path0, lw0, files0, _, eq0, _, _, tab0), (_, path1, lw1, files1, _, eq1, _, _, tab1) = res
    assert path0 != path1 and lw0 == lw1 == 1
    assert files0[0].startswith(path0) and files1[0].startswith(path1)
    assert eq0 and eq1
    # alone on its machine, each rank wrote every row of its own table
    expect = [[float(i + 1)] * 3 for i in range(40)]
    assert tab0 == tab1 == expect
