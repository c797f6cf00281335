"""Builders of the library objects the trainer uses: the graph (:mod:`lmgnn_fast.datasets`),
the neighbour sampler (:class:`lmgnn_fast.sampling.NeighborSampler`), the embedding cache
(:class:`lmgnn_fast.cache.EmbeddingCache`) and the graph model
(:class:`lmgnn_fast.nn.GraphModel`), from plain config values, in one place (training,
evaluation and inference build them here).
"""
from __future__ import annotations

import os

import torch

from lmgnn_fast.train.errors import DataError

__all__ = ["load_graph", "make_sampler", "make_cache", "make_graph_model"]


def load_graph(name: str, options: dict | None = None):
    """A built-in dataset by name, or a directory in the documented format.

    Raises:
        DataError: ``name`` is neither.
    """
    from lmgnn_fast.datasets import list_datasets, load_dataset

    options = dict(options or {})
    if not os.path.isdir(name) and name not in list_datasets():
        raise DataError(f"data.name {name!r} is neither a directory nor a built-in dataset "
                        f"({', '.join(list_datasets())})")
    return load_dataset(name, **options)


def make_sampler(graph, fanouts: list[int], seed: int = 0):
    """``NeighborSampler`` without replacement: ``sample(seeds, exclude_eids=..., seed=...) -> list[Block]``."""
    from lmgnn_fast.sampling import NeighborSampler

    return NeighborSampler(graph, list(fanouts), replace=False, seed=seed)


def make_cache(num_rows: int, dim: int, device, capacity: float = 1.0, policy: str = "clock",
               shared_path: str | None = None):
    """One ``EmbeddingCache`` per node type. On CPU the table itself is the device copy
    (capacity 0); on CUDA ``capacity`` rows (a fraction of ``num_rows`` when <= 1) stay on
    the GPU in front of a pinned host table — or, with ``shared_path``, in front of the
    float32 table file the ranks of the machine share (``backing="shared"``)."""
    from lmgnn_fast.cache import EmbeddingCache

    device = torch.device(device)
    rows = 0 if device.type == "cpu" else (int(capacity * num_rows) if capacity <= 1 else int(capacity))
    backing = "auto" if shared_path is None else "shared"
    return EmbeddingCache(num_rows, dim, dtype=torch.float32, device=device, capacity=rows, policy=policy,
                          backing=backing, path=shared_path)


def make_graph_model(cfg, graph, task, lm_dim: int, text_types):
    """The run's ``GraphModel`` (freshly initialized, on the CPU) from its config: ``gnn.*``
    and ``task.decoder`` / ``task.loss``, for ``task`` on ``graph``.

    Args:
        cfg: the run's configuration.
        graph: the graph (node and edge types, node counts of the learned rows).
        task: the resolved target task (type, classes, multi-label).
        lm_dim: width of the LM rows of the text node types (0 without LM).
        text_types: the node types whose input rows come from the LM.
    """
    from lmgnn_fast.nn import GraphModel

    c = cfg
    return GraphModel(graph.node_types, graph.edge_types, graph.num_nodes, task.type, task.num_classes,
                      task.multilabel, lm_dim, text_types, c.gnn.hidden, c.gnn.num_layers, num_bases=c.gnn.num_bases,
                      aggr=c.gnn.aggr, dropout=c.gnn.dropout, layer_norm=c.gnn.layer_norm,
                      feature_norm=c.gnn.feature_norm, decoder=c.task.decoder, link_loss=c.task.loss,
                      encoder=c.gnn.model, heads=c.gnn.heads)
