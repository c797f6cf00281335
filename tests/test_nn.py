import pytest
import torch

import lmgnn_fast  # noqa: F401
from lmgnn_fast.nn import RGCN, RGCNConv
from lmgnn_fast.ops import layout_from_block
from lmgnn_fast.sampling import Block
from lmgnn_fast.testing import with_devices

NODE_TYPES = ["paper", "author", "venue"]
EDGE_TYPES = [("author", "writes", "paper"), ("paper", "cites", "paper"), ("paper", "rev-writes", "author"),
              ("venue", "hosts", "paper"), ("paper", "in", "venue")]


def random_block(num_src, num_dst, seed=0, empty=(3,), device="cpu"):
    """A block with random CSCs; relations in ``empty`` get no edges; some dst have none."""
    g = torch.Generator().manual_seed(seed)
    indptr, indices, eid = [], [], []
    for r, (s, _, d) in enumerate(EDGE_TYPES):
        nd = num_dst[d]
        deg = torch.randint(0, 4, (nd,), generator=g)
        if r in empty or num_src[s] == 0:
            deg.zero_()
        ptr = torch.zeros(nd + 1, dtype=torch.long)
        ptr[1:] = deg.cumsum(0)
        E = int(ptr[-1])
        indptr.append(ptr.to(device))
        indices.append(torch.randint(0, max(1, num_src[s]), (E,), generator=g).to(device))
        eid.append(torch.arange(E, device=device))
    src_nodes = {t: torch.arange(num_src[t], device=device) for t in NODE_TYPES}
    return Block(NODE_TYPES, list(EDGE_TYPES), src_nodes, dict(num_dst), indptr, indices, eid)


def _feats(num_src, dims, seed, device, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return {t: torch.randn(num_src[t], dims[t] if isinstance(dims, dict) else dims, generator=g,
                           dtype=dtype).to(device) for t in NODE_TYPES}


def _copy(a, b):
    b.load_state_dict(a.state_dict())


@with_devices
@pytest.mark.parametrize("num_bases", [None, 2])
@pytest.mark.parametrize("aggr", ["mean", "sum"])
def test_conv_block_fused_matches_pure(device, num_bases, aggr):
    num_src = {"paper": 30, "author": 20, "venue": 0}
    num_dst = {"paper": 10, "author": 6, "venue": 0}
    block = random_block(num_src, num_dst, device=device)
    fused = RGCNConv(8, 5, len(EDGE_TYPES), num_bases=num_bases, aggr=aggr).double().to(device)
    pure = RGCNConv(8, 5, len(EDGE_TYPES), num_bases=num_bases, aggr=aggr, use_kernel=False).double().to(device)
    with torch.no_grad():
        fused.bias.normal_()
    _copy(fused, pure)
    x1 = {t: v.requires_grad_() for t, v in _feats(num_src, 8, 1, device).items()}
    x2 = {t: v.detach().clone().requires_grad_() for t, v in x1.items()}
    out1, out2 = fused(x1, None, block), pure(x2, None, block)
    assert set(out1) == set(NODE_TYPES)
    for t in NODE_TYPES:
        assert out1[t].shape == (num_dst[t], 5)
        torch.testing.assert_close(out1[t], out2[t])
    # dst without any neighbour: root + bias only
    sum(o.square().sum() for o in out1.values()).backward()
    sum(o.square().sum() for o in out2.values()).backward()
    for t in ("paper", "author"):
        torch.testing.assert_close(x1[t].grad, x2[t].grad)
    for (n, p1), (_, p2) in zip(fused.named_parameters(), pure.named_parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, msg=n)


def test_conv_block_homogeneous_tensors_and_cache():
    num_src = {"paper": 25, "author": 12, "venue": 4}
    num_dst = {"paper": 8, "author": 3, "venue": 2}
    block = random_block(num_src, num_dst, seed=3, empty=())
    conv = RGCNConv(6, 4, len(EDGE_TYPES)).double()
    x = _feats(num_src, 6, 2, "cpu")
    layout = layout_from_block(block)
    assert layout_from_block(block) is layout  # cached on the block
    x_src = torch.cat([x[t] for t in NODE_TYPES])
    x_dst = torch.cat([x[t][: num_dst[t]] for t in NODE_TYPES])
    out = conv(x_src, x_dst, block)
    want = conv(x, None, block)
    torch.testing.assert_close(out, torch.cat([want[t] for t in NODE_TYPES]))
    conv.use_kernel = False
    torch.testing.assert_close(conv(x_src, x_dst, block), out)
    with pytest.raises(ValueError, match="pass x_dst"):
        conv(x_src, None, block)


def test_conv_dict_dst_prefix_matches_explicit_dst():
    # x_dst=None (the block's dst prefix) takes one concatenation in the encoder's row
    # numbering; it must equal passing the destination rows explicitly, gradients included.
    num_src = {"paper": 25, "author": 12, "venue": 4}
    num_dst = {"paper": 8, "author": 0, "venue": 2}
    block = random_block(num_src, num_dst, seed=5, empty=())
    conv = RGCNConv(6, 4, len(EDGE_TYPES)).double()
    x = {t: v.requires_grad_() for t, v in _feats(num_src, 6, 4, "cpu").items()}
    got = conv(x, None, block)
    assert set(got) == set(NODE_TYPES) and got["author"].shape == (0, 4)
    g1 = torch.autograd.grad(sum((v * (i + 1)).sum() for i, v in enumerate(got.values())), list(x.values()))
    want = conv(x, {t: x[t][: num_dst[t]] for t in NODE_TYPES}, block)
    g2 = torch.autograd.grad(sum((v * (i + 1)).sum() for i, v in enumerate(want.values())), list(x.values()))
    for t in NODE_TYPES:
        torch.testing.assert_close(got[t], want[t])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    with pytest.raises(KeyError, match="no features for node type 'venue'"):
        conv({t: v for t, v in x.items() if t != "venue"}, None, block)
    with pytest.raises(ValueError, match="the block needs 25 source rows"):
        conv({**x, "paper": x["paper"][:20]}, None, block)


@pytest.mark.parametrize("num_bases", [None, 3])
@pytest.mark.parametrize("aggr", ["mean", "add"])
@pytest.mark.parametrize("bipartite", [False, True])
def test_pyg_drop_in(num_bases, aggr, bipartite):
    tg = pytest.importorskip("torch_geometric.nn")
    g = torch.Generator().manual_seed(5)
    N_src, N_dst, R, E = 40, 40 if not bipartite else 15, 6, 200
    x_src = torch.randn(N_src, 10, generator=g)
    x_dst = torch.randn(N_dst, 10, generator=g)
    edge_index = torch.stack([torch.randint(0, N_src, (E,), generator=g),
                              torch.randint(0, N_dst - 2, (E,), generator=g)])
    edge_type = torch.randint(0, R - 1, (E,), generator=g)  # relation R-1 empty
    ref = tg.RGCNConv(10, 7, R, num_bases=num_bases, aggr=aggr)
    with torch.no_grad():
        ref.bias.normal_()
    ours = RGCNConv(10, 7, R, num_bases=num_bases, aggr="sum" if aggr == "add" else aggr)
    ours.load_state_dict(ref.state_dict())
    x = (x_src, x_dst) if bipartite else x_src
    want = ref(x, edge_index, edge_type)
    got = ours(x, edge_index, edge_type)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    ours.use_kernel = False
    torch.testing.assert_close(ours(x, edge_index, edge_type), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_rgcn_encoder_fused_matches_pure(layer_norm):
    n0 = {"paper": 40, "author": 30, "venue": 5}
    n1 = {"paper": 15, "author": 10, "venue": 2}
    n2 = {"paper": 4, "author": 2, "venue": 0}
    blocks = [random_block(n0, n1, seed=1), random_block(n1, n2, seed=2)]
    dims = {"paper": 12, "author": 7, "venue": 3}
    kw = dict(node_types=NODE_TYPES, edge_types=EDGE_TYPES, num_layers=2, num_bases=2,
              activation="gelu", layer_norm=layer_norm)
    fused = RGCN(dims, 16, 5, **kw).double()
    pure = RGCN(dims, 16, 5, use_kernel=False, **kw).double()
    _copy(fused, pure)
    x = _feats(n0, dims, 3, "cpu")
    out1, out2 = fused(x, blocks), pure(x, blocks)
    for t in NODE_TYPES:
        assert out1[t].shape == (n2[t], 5)
        torch.testing.assert_close(out1[t], out2[t])
    out1["paper"].sum().backward()
    out2["paper"].sum().backward()
    for (n, p1), (_, p2) in zip(fused.named_parameters(), pure.named_parameters()):
        if p2.grad is None:
            assert p1.grad is None or torch.all(p1.grad == 0), n
        else:
            torch.testing.assert_close(p1.grad, p2.grad, msg=n)


def test_rgcn_bad_inputs():
    with pytest.raises(ValueError, match="no size for node types"):
        RGCN({"paper": 3}, 4, 2, NODE_TYPES, EDGE_TYPES)
    with pytest.raises(ValueError, match="aggr must be"):
        RGCNConv(3, 3, 2, aggr="max")
    model = RGCN(4, 4, 2, NODE_TYPES, EDGE_TYPES, num_layers=2)
    with pytest.raises(ValueError, match="got 1 blocks for 2 layers"):
        model({}, [random_block({t: 3 for t in NODE_TYPES}, {t: 1 for t in NODE_TYPES})])


def _per_layer_reference(model, x, blocks):
    """The encoder layer by layer through RGCNConv's per-type dict path (concatenation per
    call), the way it ran before the stacked layouts."""
    h = {t: model.act(model.proj[t](x[t][: blocks[0].num_src(t)])) for t in NODE_TYPES if blocks[0].num_src(t)}
    for i, (conv, block) in enumerate(zip(model.convs, blocks)):
        h = conv(h, None, block)
        if i < len(model.convs) - 1:
            if model.norms is not None:
                h = {t: model.norms[i](v) for t, v in h.items()}
            h = {t: model.act(v) for t, v in h.items()}
    return h


@pytest.mark.parametrize("use_kernel", [True, False])
@pytest.mark.parametrize("num_bases", [None, 2])
@pytest.mark.parametrize("case", ["nested", "strict_prefix", "absent_type", "one_layer"])
def test_rgcn_stacked_layouts_match_per_layer_path(use_kernel, num_bases, case):
    n0 = {"paper": 40, "author": 30, "venue": 5}
    sizes = {"nested": [n0, {"paper": 15, "author": 10, "venue": 2}, {"paper": 4, "author": 2, "venue": 0}],
             # block 1 reads fewer sources than block 0 wrote destinations
             "strict_prefix": [n0, {"paper": 15, "author": 10, "venue": 2}, {"paper": 4, "author": 2, "venue": 0}],
             # 'venue' has no nodes past the input layer, 'author' none at the seeds
             "absent_type": [n0, {"paper": 12, "author": 6, "venue": 0}, {"paper": 5, "author": 0, "venue": 0}],
             "one_layer": [n0, {"paper": 7, "author": 3, "venue": 1}]}[case]
    blocks = []
    for i in range(len(sizes) - 1):
        src = dict(sizes[i])
        if case == "strict_prefix" and i == 1:
            src = {"paper": 11, "author": 8, "venue": 1}
        blocks.append(random_block(src, sizes[i + 1], seed=10 + i, empty=(3,) if i == 0 else (1,)))
    dims = {"paper": 12, "author": 7, "venue": 3}
    model = RGCN(dims, 16, 5, node_types=NODE_TYPES, edge_types=EDGE_TYPES, num_layers=len(blocks),
                 num_bases=num_bases, activation="gelu", layer_norm=True, use_kernel=use_kernel).double().eval()
    x = {t: v.requires_grad_() for t, v in _feats(n0, dims, 3, "cpu").items()}
    got = model(x, blocks)
    want = _per_layer_reference(model, x, blocks)
    assert set(got) == set(NODE_TYPES)
    for t in NODE_TYPES:
        assert got[t].shape == (sizes[-1][t], 5)
        torch.testing.assert_close(got[t], want[t] if t in want else got[t].new_zeros((0, 5)))
    g = {t: torch.randn(v.shape, dtype=v.dtype, generator=torch.Generator().manual_seed(7)) for t, v in got.items()}
    grads_got = torch.autograd.grad(sum((got[t] * g[t]).sum() for t in got), [*model.parameters(), *x.values()],
                                    allow_unused=True)
    grads_want = torch.autograd.grad(sum((want[t] * g[t]).sum() for t in want), [*model.parameters(), *x.values()],
                                     allow_unused=True)
    for a, b in zip(grads_got, grads_want):
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
        else:
            torch.testing.assert_close(a, b)


def test_stacked_layouts_rows_and_errors():
    from lmgnn_fast.ops import layouts_from_blocks

    n0, n1, n2 = {"paper": 6, "author": 4, "venue": 2}, {"paper": 3, "author": 2, "venue": 0}, \
        {"paper": 1, "author": 1, "venue": 0}
    blocks = [random_block(n0, n1, seed=1), random_block(n1, n2, seed=2)]
    st = layouts_from_blocks(blocks)
    assert layouts_from_blocks(blocks) is st  # cached for this sequence
    assert st.num_input == 12 and [lay.num_src for lay in st.layouts] == [12, 5]
    assert [lay.num_dst for lay in st.layouts] == [5, 2]
    # seeds first (by type), then the rest of layer 1's sources, then the rest of layer 0's
    assert st.input_slices == [("paper", 0, 1), ("author", 0, 1), ("paper", 1, 3), ("author", 1, 2),
                               ("paper", 3, 6), ("author", 2, 4), ("venue", 0, 2)]
    assert st.output_slices == {"paper": (0, 1), "author": (1, 1), "venue": (2, 0)}
    too_many = random_block({"paper": 4, "author": 2, "venue": 0}, n2, seed=3)
    with pytest.raises(ValueError, match="block 1 has 4 source nodes of type 'paper', more than the 3"):
        layouts_from_blocks([blocks[0], too_many])
