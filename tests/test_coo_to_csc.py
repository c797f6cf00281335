import pytest
import torch

import lmgnn_fast
from lmgnn_fast._loader import missing_cpu_flags
from lmgnn_fast.ops import coo_to_csc, coo_to_csc_ref, csc_to_coo
from lmgnn_fast.testing import with_devices


def _check_against_ref(src, dst, num_dst):
    got = coo_to_csc(src, dst, num_dst)
    want = coo_to_csc_ref(src, dst, num_dst)
    for name, g, w in zip(("indptr", "indices", "perm"), got, want):
        assert g.dtype == w.dtype, name
        assert torch.equal(g.cpu(), w.cpu()), name
    indptr, indices, perm = got
    assert torch.equal(indices, src[perm])
    assert torch.all(dst[perm][1:] >= dst[perm][:-1])


@with_devices
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("num_edges,num_dst", [(1, 1), (1000, 17), (200_000, 5000), (50_000, 200_000)])
def test_matches_reference(device, dtype, num_edges, num_dst):
    g = torch.Generator().manual_seed(num_edges + num_dst)
    src = torch.randint(0, 10_000, (num_edges,), generator=g, dtype=dtype).to(device)
    dst = torch.randint(0, num_dst, (num_edges,), generator=g, dtype=dtype).to(device)
    _check_against_ref(src, dst, num_dst)


@with_devices
def test_duplicates_are_stable(device):
    # Every edge goes to one of two destinations, many duplicates of the same (src, dst).
    src = torch.tensor([5, 3, 5, 5, 1, 3, 2], device=device)
    dst = torch.tensor([1, 0, 1, 1, 0, 1, 0], device=device)
    indptr, indices, perm = coo_to_csc(src, dst, 3)
    assert indptr.tolist() == [0, 3, 7, 7]
    assert perm.tolist() == [1, 4, 6, 0, 2, 3, 5]
    assert indices.tolist() == [3, 1, 2, 5, 5, 5, 3]


@with_devices
def test_empty_and_zero_dst(device):
    e = torch.empty(0, dtype=torch.long, device=device)
    indptr, indices, perm = coo_to_csc(e, e, 4)
    assert indptr.tolist() == [0] * 5 and indices.numel() == 0 and perm.numel() == 0
    indptr, _, _ = coo_to_csc(e, e, 0)
    assert indptr.tolist() == [0]


@with_devices
def test_non_contiguous_input(device):
    g = torch.Generator().manual_seed(0)
    both = torch.randint(0, 50, (2, 4000), generator=g).to(device)
    src, dst = both.t().contiguous().t()  # strided views
    assert not src.is_contiguous()
    _check_against_ref(src, dst, 50)


@with_devices
def test_same_result_for_any_thread_count(device):
    g = torch.Generator().manual_seed(1)
    src = torch.randint(0, 1000, (300_000,), generator=g).to(device)
    dst = torch.randint(0, 300, (300_000,), generator=g).to(device)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = coo_to_csc(src, dst, 300)
        torch.set_num_threads(max(2, old))
        many = coo_to_csc(src, dst, 300)
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(a, b) for a, b in zip(one, many))


@pytest.mark.parametrize(
    "src,dst,num_dst,exc,match",
    [
        (torch.tensor([0, 1]), torch.tensor([0, 5]), 3, IndexError,
         r"coo_to_csc: dst holds id 5 out of range for num_dst \(3\)"),
        (torch.tensor([0, 1]), torch.tensor([-1, 0]), 3, IndexError, r"dst holds id -1 out of range"),
        (torch.tensor([0, 1]), torch.tensor([0]), 3, RuntimeError, r"same length, got 2 and 1"),
        (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), 3, RuntimeError, r"src must be int32 or int64, got Float"),
        (torch.tensor([0, 1], dtype=torch.int32), torch.tensor([0, 1]), 3, RuntimeError, r"src is Int but dst is Long"),
        (torch.tensor([0, 1]), torch.tensor([0, 1]), -2, RuntimeError, r"num_dst must be >= 0, got -2"),
        (torch.tensor([[0, 1]]), torch.tensor([[0, 1]]), 3, RuntimeError, r"src must be 1-D"),
    ],
)
@with_devices
def test_bad_input_errors(src, dst, num_dst, exc, match, device):
    with pytest.raises(exc, match=match):
        coo_to_csc(src.to(device), dst.to(device), num_dst)


def test_opcheck():
    g = torch.Generator().manual_seed(2)
    src = torch.randint(0, 100, (500,), generator=g)
    dst = torch.randint(0, 40, (500,), generator=g)
    torch.library.opcheck(torch.ops.lmgnn.coo_to_csc.default, (src, dst, 40))


def test_compile_fullgraph():
    @torch.compile(fullgraph=True, backend="eager")
    def f(src, dst):
        indptr, indices, perm = coo_to_csc(src, dst, 10)
        return indptr.diff(), indices + 1

    src = torch.randint(0, 100, (64,))
    dst = torch.randint(0, 10, (64,))
    deg, idx = f(src, dst)
    assert torch.equal(deg, torch.bincount(dst, minlength=10))
    assert torch.equal(idx, coo_to_csc_ref(src, dst, 10)[1] + 1)


def test_build_info():
    info = lmgnn_fast.build_info()
    assert info["torch_version"].split("+")[0] == torch.__version__.split("+")[0]
    assert isinstance(info["cuda"], bool) and info["num_threads"] >= 1
    if info["cuda"]:
        assert info["cuda_archs"]
    assert isinstance(info["cpu_march"], str)
    # the module loaded, so this CPU runs the instruction set it was built for
    assert missing_cpu_flags(info["cpu_march"]) == []


def test_missing_cpu_flags_names_what_an_x86_64_v3_build_needs(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx fma xsave movbe\n")
    assert missing_cpu_flags("x86-64-v3", str(cpuinfo)) == ["avx2", "bmi1", "bmi2", "f16c", "abm"]
    full = "fpu avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
    cpuinfo.write_text(f"flags\t\t: {full}\n")
    assert missing_cpu_flags("x86-64-v3", str(cpuinfo)) == []
    # levels other than the AUTO choice, and a system without the file, are not checked
    assert missing_cpu_flags("native", str(cpuinfo)) == []
    assert missing_cpu_flags("", str(cpuinfo)) == []
    assert missing_cpu_flags("x86-64-v3", str(tmp_path / "absent")) == []


@with_devices
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_csc_to_coo_inverts_coo_to_csc(device, dtype):
    g = torch.Generator().manual_seed(3)
    src = torch.randint(0, 100, (500,), generator=g, dtype=dtype).to(device)
    dst = torch.randint(0, 37, (500,), generator=g, dtype=dtype).to(device)
    indptr, indices, perm = coo_to_csc(src, dst, 37)
    s, d = csc_to_coo(indptr, indices)
    assert s.dtype == d.dtype == torch.long
    assert torch.equal(s, src[perm].long()) and torch.equal(d, dst[perm].long())
    # a CSC over the middle of a longer indices array (indptr[0] > 0), with empty columns
    s, d = csc_to_coo(torch.tensor([2, 2, 5, 5, 6], device=device), torch.arange(10, device=device))
    assert s.tolist() == [2, 3, 4, 5] and d.tolist() == [1, 1, 1, 3]
    s, d = csc_to_coo(torch.zeros(4, dtype=torch.long, device=device), torch.empty(0, device=device))
    assert s.numel() == 0 and d.numel() == 0
