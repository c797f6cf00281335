"""Final outputs of a run, keyed by the original node ids.

- ``embeddings/<node_type>.parquet``: columns ``id`` and ``embedding`` (list of float32) —
  the R-GCN output of the last GNN stage for every node, or the LM embedding when only
  stage 1 ran.
- ``predictions.parquet``: node classification — ``id``, ``split``, ``label``, ``pred``
  (and ``prob``: per-class probabilities) for every node of the target type; edge
  classification — ``src``, ``dst``, ``split``, ``label``, ``pred`` for every edge of the
  relation; link prediction — ``src``, ``dst``, ``split``, ``score``, ``rank`` for the
  val/test edges (rank under the evaluation protocol).
"""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lmgnn_fast.io.paths import safe_join
from lmgnn_fast.nn import GraphModel
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.data import edge_endpoints_all
from lmgnn_fast.train.features import FeatureSource
from lmgnn_fast.train.tasks import GNNTask

__all__ = ["write_outputs"]


def _raw_ids(graph, t: str, ids: torch.Tensor) -> list:
    raw = (getattr(graph, "raw_ids", None) or {}).get(t)
    idx = ids.tolist()
    if raw is None:
        return idx
    return [raw[i] if not hasattr(raw[i], "item") else raw[i].item() for i in idx]


def _write_table(table: pa.Table, path: str) -> None:
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return  # under torchrun every rank computes (sharded), rank 0 writes
    tmp = f"{path}.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _split_of(masks: dict, n: int) -> list:
    out = [""] * n
    for s in ("train", "val", "test"):
        if s in masks:
            for i in torch.nonzero(torch.as_tensor(masks[s]).bool()).flatten().tolist():
                out[i] = s
    return out


@torch.no_grad()
def write_outputs(ctx: RunContext, features: FeatureSource, gnn_task: GNNTask, model: GraphModel | None) -> None:
    """Write ``embeddings/<type>.parquet`` and ``predictions.parquet`` (see the module
    docstring).

    Args:
        ctx: the run context.
        features: the feature source (caches of the last LM).
        gnn_task: the target task's batching and evaluation.
        model: the graph model of the last GNN stage, or ``None`` when only stage 1 ran
            (then the LM embeddings of the text node types are written, no predictions).
    """
    g = ctx.graph
    emb_dir = os.path.join(ctx.out_dir, "embeddings")
    os.makedirs(emb_dir, exist_ok=True)
    if model is None:  # only stage 1: LM embeddings of the text node types
        features.load_lm("stage1" if ctx.ckpt.has_stage(1) else "pretrained")
        features.ensure_cache()
        for t in ctx.text_types:
            ids = torch.arange(g.num_nodes[t])
            rows = features.caches[t].gather(ids.to(ctx.device)).float().cpu()
            _write_table(pa.table({"id": _raw_ids(g, t, ids), "embedding": rows.tolist()}),
                         safe_join(emb_dir, t, ".parquet", "node type"))
        return
    task = ctx.task
    feats = features.cache_features
    seed = 12345
    for t in g.node_types:
        ids = torch.arange(g.num_nodes[t])
        rows = gnn_task.embed_nodes(model, t, ids, feats, seed).float().cpu()
        _write_table(pa.table({"id": _raw_ids(g, t, ids), "embedding": rows.numpy().tolist()}),
                     safe_join(emb_dir, t, ".parquet", "node type"))
    path = os.path.join(ctx.out_dir, "predictions.parquet")
    if task.type == "node_classification":
        t = task.node_type
        ids = torch.arange(g.num_nodes[t])
        logits = model.head(gnn_task.embed_nodes(model, t, ids, feats, seed)).float().cpu()
        y = torch.as_tensor(g.labels[t])
        if task.multilabel:
            prob = torch.sigmoid(logits)
            pred = [torch.nonzero(p > ctx.cfg.task.threshold).flatten().tolist() for p in prob]
            label = [torch.nonzero(r > 0).flatten().tolist() for r in y.float()]
        else:
            prob = torch.softmax(logits, -1)
            pred, label = logits.argmax(-1).tolist(), y.tolist()
        _write_table(pa.table({"id": _raw_ids(g, t, ids), "split": _split_of(g.masks[t], ids.numel()),
                               "label": label, "pred": pred, "prob": prob.numpy().tolist()}), path)
    elif task.type == "edge_classification":
        src, dst = edge_endpoints_all(g, task.edge_type)  # held-out LP edges of the relation too
        st, _, dt = task.edge_type
        hs = gnn_task.embed_unique(model, st, src, feats, seed)
        hd = gnn_task.embed_unique(model, dt, dst, feats, seed + 1)
        logits = model.head(hs, hd).float().cpu()
        _write_table(pa.table({"src": _raw_ids(g, st, src), "dst": _raw_ids(g, dt, dst),
                               "split": _split_of(g.edge_masks[task.edge_type], src.numel()),
                               "label": torch.as_tensor(g.edge_labels[task.edge_type]).tolist(),
                               "pred": logits.argmax(-1).tolist()}), path)
    else:
        st, _, dt = task.edge_type
        cols = {"src": [], "dst": [], "split": [], "score": [], "rank": []}
        for split in ("val", "test"):
            _, out = gnn_task.scores(model, split, feats)
            cols["src"] += _raw_ids(g, st, out["src"])
            cols["dst"] += _raw_ids(g, dt, out["dst"])
            cols["split"] += [split] * out["src"].numel()
            cols["score"] += out["score"].tolist()
            cols["rank"] += out["rank"].tolist()
        _write_table(pa.table(cols), path)
