"""coo_to_csc: ours vs the pure-torch reference (stable sort + bincount), side by side.

pytest: ``pytest benchmarks/bench_convert.py --benchmark-json=out.json``
table:  ``python benchmarks/bench_convert.py`` (``LMGNN_BENCH=full`` for full sizes)
"""
from __future__ import annotations

import pytest
import torch

import lmgnn_fast  # noqa: F401
from common import QUICK, Table, bench_devices, device_name, results_dir, time_fn
from lmgnn_fast.ops import coo_to_csc, coo_to_csc_ref

SIZES = [(100_000, 10_000)] if QUICK else [(1_000_000, 100_000), (10_000_000, 1_000_000)]
DEVICES = bench_devices()


def _inputs(E, N, device):
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, N, (E,), generator=g).to(device),
            torch.randint(0, N, (E,), generator=g).to(device), N)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["ours", "reference"])
@pytest.mark.parametrize("E,N", SIZES)
def test_coo_to_csc(benchmark, impl, E, N, device):
    fn = coo_to_csc if impl == "ours" else coo_to_csc_ref
    src, dst, n = _inputs(E, N, device)
    benchmark.extra_info.update(edges=E, nodes=N, device=device_name(device))
    out = benchmark(lambda: fn(src, dst, n))
    assert out[0][-1].item() == E


def main():
    table = Table("coo_to_csc", ["device", "edges", "dst nodes", "impl", "ms", "speed-up vs ref"])
    for device in DEVICES:
        for E, N in SIZES:
            src, dst, n = _inputs(E, N, device)
            t_ref = time_fn(lambda: coo_to_csc_ref(src, dst, n), device)
            t_ours = time_fn(lambda: coo_to_csc(src, dst, n), device)
            table.add(device_name(device), E, N, "reference", t_ref * 1e3, 1.0)
            table.add(device_name(device), E, N, "ours", t_ours * 1e3, t_ref / t_ours)
    table.print()
    table.save(results_dir() / "convert.json")


if __name__ == "__main__":
    main()
