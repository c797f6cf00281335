"""The trainer's view of the other parts of the package.

Imports the graph loader, the neighbour sampler, the R-GCN encoder and the embedding cache
from their modules. Where one of them is unavailable in this build, a small pure-torch
fallback from :mod:`lmgnn_fast.train.fallback` stands in (same contracts, slower).
"""
from __future__ import annotations

import os

__all__ = ["load_graph", "make_sampler", "make_encoder", "make_cache"]


def load_graph(name: str, options: dict | None = None):
    """A built-in dataset by name, or a directory in the documented format."""
    options = dict(options or {})
    if os.path.isdir(name):
        try:
            from lmgnn_fast.graph import HeteroGraph
        except ImportError as e:  # pragma: no cover - the data layer ships with the package
            raise ImportError(f"reading {name!r} needs lmgnn_fast.graph: {e}") from e
        return HeteroGraph.load_dir(name, **options)
    if os.sep in name or name.startswith("."):
        from lmgnn_fast.train.errors import DataError

        raise DataError(f"data.name {name!r}: no such directory")
    from lmgnn_fast.datasets import load_dataset

    return load_dataset(name, **options)


def make_sampler(graph, fanouts: list[int], seed: int = 0):
    """Neighbour sampler with ``sample(seeds, seed=..., exclude=...) -> list[Block]``."""
    from lmgnn_fast.train.fallback import FallbackNeighborSampler

    return FallbackNeighborSampler(graph, fanouts, seed=seed)


def make_encoder(node_types, edge_types, in_dims: dict[str, int], hidden: int, num_layers: int,
                 num_bases=None, aggr: str = "mean", dropout: float = 0.0, layer_norm: bool = False):
    """R-GCN encoder: ``forward(x: dict[type, [N_src_t, F_t]], blocks) -> dict[type, [N_dst_t, hidden]]``."""
    from lmgnn_fast.train.fallback import FallbackRGCN

    return FallbackRGCN(node_types, edge_types, in_dims, hidden, num_layers, num_bases=num_bases,
                        aggr=aggr, dropout=dropout, layer_norm=layer_norm)


def make_cache(num_rows: int, dim: int, device, capacity: float = 1.0, policy: str = "static"):
    """Embedding table with ``gather(ids)`` / ``update(ids, rows, step)`` / ``stale``."""
    from lmgnn_fast.train.fallback import FallbackEmbeddingTable

    return FallbackEmbeddingTable(num_rows, dim, device)
