"""The trainer's view of the other parts of the package: graph loading
(:mod:`lmgnn_fast.datasets`, :class:`lmgnn_fast.HeteroGraph`), the neighbour sampler
(:class:`lmgnn_fast.sampling.NeighborSampler`), the R-GCN encoder (:class:`lmgnn_fast.nn.RGCN`)
and the embedding cache (:class:`lmgnn_fast.cache.EmbeddingCache`), in one place so the
trainer depends on their contracts only.
"""
from __future__ import annotations

import os

import torch

__all__ = ["load_graph", "make_sampler", "make_encoder", "make_cache"]


def load_graph(name: str, options: dict | None = None):
    """A built-in dataset by name, or a directory in the documented format."""
    from lmgnn_fast.datasets import list_datasets, load_dataset
    from lmgnn_fast.train.errors import DataError

    options = dict(options or {})
    if not os.path.isdir(name) and name not in list_datasets():
        raise DataError(f"data.name {name!r} is neither a directory nor a built-in dataset "
                        f"({', '.join(list_datasets())})")
    return load_dataset(name, **options)


def make_sampler(graph, fanouts: list[int], seed: int = 0):
    """``NeighborSampler``: ``sample(seeds, exclude_eids=..., seed=...) -> list[Block]``."""
    from lmgnn_fast.sampling import NeighborSampler

    return NeighborSampler(graph, list(fanouts), replace=False, seed=seed)


def make_encoder(node_types, edge_types, in_dims: dict[str, int], hidden: int, num_layers: int,
                 num_bases=None, aggr: str = "mean", dropout: float = 0.0, layer_norm: bool = False):
    """R-GCN encoder: ``forward(x: dict[type, [N_src_t, F_t]], blocks) -> dict[type, [N_dst_t, hidden]]``."""
    from lmgnn_fast.nn import RGCN

    return RGCN(dict(in_dims), hidden, hidden, list(node_types), [tuple(e) for e in edge_types],
                num_layers=num_layers, num_bases=num_bases, dropout=dropout, layer_norm=layer_norm, aggr=aggr)


def make_cache(num_rows: int, dim: int, device, capacity: float = 1.0, policy: str = "clock"):
    """One ``EmbeddingCache`` per node type. On CPU the table itself is the device copy
    (capacity 0); on CUDA ``capacity`` rows (a fraction of ``num_rows`` when <= 1) stay on
    the GPU in front of a pinned host table."""
    from lmgnn_fast.cache import EmbeddingCache

    device = torch.device(device)
    rows = 0 if device.type == "cpu" else (int(capacity * num_rows) if capacity <= 1 else int(capacity))
    return EmbeddingCache(num_rows, dim, dtype=torch.float32, device=device, capacity=rows, policy=policy)
