"""Final outputs of a run, keyed by the original node ids, from the run's final model (the
stage ``run.final_stage`` chose: by default the best on validation).

- ``embeddings/<node_type>.parquet``: columns ``id`` and ``embedding`` (list of float32) —
  the R-GCN output of the final graph model for every node, or the LM embedding of every
  node with text when the final model is stage 1's.
- ``predictions.parquet``: node classification — ``id``, ``split``, ``label``, ``pred``
  (and ``prob``: per-class probabilities) for every node of the target type; edge
  classification — ``src``, ``dst``, ``split``, ``label``, ``pred`` for every edge of the
  relation; link prediction — ``src``, ``dst``, ``split``, ``score``, ``rank`` for the
  val/test edges (rank under the evaluation protocol). Where the task's classes have names
  (string labels, or ``label_names`` in the metadata), ``label_names`` and ``pred_names``
  beside ``label`` and ``pred`` (a name, or a list of names when multi-label; null for an
  unlabelled item).

:func:`write_outputs` returns, for classification tasks with class names, the per-class
precision/recall/F1/support of the final model on val and test (``metrics.json``'s
``per_class``).

The val/test rows are the evaluation's own outputs, so metrics recomputed from
``predictions.parquet`` equal ``metrics.json``; other rows are computed with a fixed
sampling seed.
"""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lmgnn_fast.io.paths import safe_join
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.data import edge_endpoints_all
from lmgnn_fast.train.metrics import per_class_metrics
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


def _names(ids: list, names: list | None, multilabel: bool) -> list | None:
    """Class ids (``-1``: none) or lists of class ids as class names."""
    if not names:
        return None
    if multilabel:
        return [[names[c] for c in row] for row in ids]
    return [names[c] if c >= 0 else None for c in ids]


def _per_class(outs: dict, y: torch.Tensor, names: list | None, multilabel: bool, threshold: float) -> dict | None:
    if not names:
        return None
    return {split: per_class_metrics(o["logits"], y[o["ids"].long()], multilabel, names, threshold)
            for split, o in outs.items()}


@torch.no_grad()
def write_outputs(ctx: RunContext, gnn_task: GNNTask, predictor) -> dict | None:
    """Write ``embeddings/<type>.parquet`` and ``predictions.parquet`` (see the module
    docstring).

    Args:
        ctx: the run context.
        gnn_task: the target task's items and edge endpoints.
        predictor: the final model, as a stage's ``predictor(...)`` gives it: ``embed(t,
            ids)`` (``None`` for a type it has no rows for), ``logits(items)`` and
            ``split_outputs(split)`` (the evaluation's outputs, ``None`` when the model has
            none for the task).

    Returns:
        ``{"val": {name: {...}}, "test": {...}}`` per-class metrics of a classification task
        whose classes have names, else ``None``.
    """
    g, task = ctx.graph, ctx.task
    emb_dir = os.path.join(ctx.out_dir, "embeddings")
    os.makedirs(emb_dir, exist_ok=True)
    for t in g.node_types:
        ids = torch.arange(g.num_nodes[t])
        rows = predictor.embed(t, ids)
        if rows is None:
            continue
        _write_table(pa.table({"id": _raw_ids(g, t, ids), "embedding": rows.float().cpu().numpy().tolist()}),
                     safe_join(emb_dir, t, ".parquet", "node type"))
    outs = {split: predictor.split_outputs(split) for split in ("val", "test")}
    if any(o is None for o in outs.values()):
        return None  # the final model has no model of the task (e.g. stage 1 without a task head)
    path = os.path.join(ctx.out_dir, "predictions.parquet")
    if task.type == "node_classification":
        t = task.node_type
        ids = torch.arange(g.num_nodes[t])
        logits = predictor.logits(ids)
        for o in outs.values():
            logits[o["ids"]] = o["logits"]
        y = torch.as_tensor(g.labels[t])
        if task.multilabel:
            prob = torch.sigmoid(logits)
            pred = [torch.nonzero(p > ctx.cfg.task.threshold).flatten().tolist() for p in prob]
            label = [torch.nonzero(r > 0).flatten().tolist() for r in y.float()]
        else:
            prob = torch.softmax(logits, -1)
            pred, label = logits.argmax(-1).tolist(), y.tolist()
        names = (g.label_names or {}).get(t)
        cols = {"id": _raw_ids(g, t, ids), "split": _split_of(g.masks[t], ids.numel()), "label": label, "pred": pred,
                "prob": prob.numpy().tolist()}
        if names:
            cols["label_names"] = _names(label, names, task.multilabel)
            cols["pred_names"] = _names(pred, names, task.multilabel)
        _write_table(pa.table(cols), path)
        return _per_class(outs, y, names, task.multilabel, ctx.cfg.task.threshold)
    elif task.type == "edge_classification":
        src_all, dst_all = edge_endpoints_all(g, task.edge_type)  # held-out LP edges of the relation too
        eid = torch.nonzero(src_all >= 0).flatten()
        src, dst = src_all[eid], dst_all[eid]
        st, _, dt = task.edge_type
        logits = predictor.logits(eid)
        for o in outs.values():
            logits[torch.searchsorted(eid, o["ids"].long())] = o["logits"]
        masks = {k: torch.as_tensor(v).bool()[eid] for k, v in g.edge_masks[task.edge_type].items()}
        y = torch.as_tensor(g.edge_labels[task.edge_type])
        label, pred = y[eid].tolist(), logits.argmax(-1).tolist()
        cols = {"src": _raw_ids(g, st, src), "dst": _raw_ids(g, dt, dst), "split": _split_of(masks, src.numel()),
                "label": label, "pred": pred}
        names = (getattr(g, "edge_label_names", None) or {}).get(task.edge_type)
        if names:
            cols["label_names"] = _names(label, names, False)
            cols["pred_names"] = _names(pred, names, False)
        _write_table(pa.table(cols), path)
        return _per_class(outs, y, names, False, ctx.cfg.task.threshold)
    else:
        st, _, dt = task.edge_type
        cols = {"src": [], "dst": [], "split": [], "score": [], "rank": []}
        for split, out in outs.items():
            cols["src"] += _raw_ids(g, st, out["src"])
            cols["dst"] += _raw_ids(g, dt, out["dst"])
            cols["split"] += [split] * out["src"].numel()
            cols["score"] += out["score"].tolist()
            cols["rank"] += out["rank"].tolist()
        _write_table(pa.table(cols), path)
        return None
