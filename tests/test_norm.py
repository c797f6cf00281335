"""lmgnn_fast.nn.LayerNorm: nn.LayerNorm's results, gradients independent of the thread count."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lmgnn_fast.nn.norm import LayerNorm


def _grads(cls, x, g, threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        ln = cls(x.shape[1])
        with torch.no_grad():
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.5, 0.5)
        xi = x.clone().requires_grad_()
        y = ln(xi)
        (y * g).sum().backward()
        return y.detach(), xi.grad, ln.weight.grad, ln.bias.grad
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("rows,dim", [(300, 32), (2000, 64), (77, 384)])
def test_gradients_do_not_depend_on_the_thread_count(rows, dim):
    gen = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, dim, generator=gen) * 3 + 1
    g = torch.randn(rows, dim, generator=gen)
    one, two = _grads(LayerNorm, x, g, 1), _grads(LayerNorm, x, g, 2)
    for a, b, name in zip(one, two, ("out", "dx", "dweight", "dbias")):
        assert torch.equal(a, b), name
    ref = _grads(nn.LayerNorm, x, g, 1)
    for a, b in zip(one, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert LayerNorm(dim).state_dict().keys() == nn.LayerNorm(dim).state_dict().keys()

