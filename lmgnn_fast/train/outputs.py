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

:func:`write_lm_rows` stores ``lm_rows/<node_type>.safetensors``: the LM rows the final model
reads, with a hash of each text, so that loading the run for inference
(``lmgnn_fast.inference.load_run``) encodes only new or changed texts. The tables are written
by :mod:`lmgnn_fast.inference.writer`, the writer ``predict`` uses too.
"""
from __future__ import annotations

import os

import pyarrow as pa
import torch

from lmgnn_fast.inference.rows import save_rows, text_hashes
from lmgnn_fast.inference.writer import class_columns, class_names, raw_ids, write_embeddings, write_table
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.metrics import per_class_metrics
from lmgnn_fast.train.tasks import GNNTask

__all__ = ["write_outputs", "write_lm_rows", "lm_identity"]


def _split_of(masks: dict, n: int) -> list:
    out = [""] * n
    for s in ("train", "val", "test"):
        if s in masks:
            for i in torch.nonzero(torch.as_tensor(masks[s]).bool()).flatten().tolist():
                out[i] = s
    return out


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
    for t in g.node_types:
        ids = torch.arange(g.num_nodes[t])
        rows = predictor.embed(t, ids)
        if rows is None:
            continue
        write_embeddings(ctx.out_dir, t, raw_ids(g, t, ids), rows)
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
            label = [torch.nonzero(r > 0).flatten().tolist() for r in y.float()]
        else:
            label = y.tolist()
        names = (g.label_names or {}).get(t)
        scores = class_columns(logits, task.multilabel, ctx.cfg.task.threshold, names)
        cols = {"id": raw_ids(g, t, ids), "split": _split_of(g.masks[t], ids.numel()), "label": label,
                "pred": scores["pred"], "prob": scores["prob"]}
        if names:
            cols["label_names"] = class_names(label, names, task.multilabel)
            cols["pred_names"] = scores["pred_names"]
        write_table(pa.table(cols), path)
        return _per_class(outs, y, names, task.multilabel, ctx.cfg.task.threshold)
    elif task.type == "edge_classification":
        src_all, dst_all = g.all_edges(task.edge_type)  # held-out LP edges of the relation too
        eid = torch.nonzero(src_all >= 0).flatten()
        src, dst = src_all[eid], dst_all[eid]
        st, _, dt = task.edge_type
        logits = predictor.logits(eid)
        for o in outs.values():
            logits[torch.searchsorted(eid, o["ids"].long())] = o["logits"]
        masks = {k: torch.as_tensor(v).bool()[eid] for k, v in g.edge_masks[task.edge_type].items()}
        y = torch.as_tensor(g.edge_labels[task.edge_type])
        names = (getattr(g, "edge_label_names", None) or {}).get(task.edge_type)
        label, scores = y[eid].tolist(), class_columns(logits, False, 0.5, names)
        cols = {"src": raw_ids(g, st, src), "dst": raw_ids(g, dt, dst), "split": _split_of(masks, src.numel()),
                "label": label, "pred": scores["pred"]}
        if names:
            cols["label_names"] = class_names(label, names, False)
            cols["pred_names"] = scores["pred_names"]
        write_table(pa.table(cols), path)
        return _per_class(outs, y, names, False, ctx.cfg.task.threshold)
    else:
        st, _, dt = task.edge_type
        cols = {"src": [], "dst": [], "split": [], "score": [], "rank": []}
        for split, out in outs.items():
            cols["src"] += raw_ids(g, st, out["src"])
            cols["dst"] += raw_ids(g, dt, out["dst"])
            cols["split"] += [split] * out["src"].numel()
            cols["score"] += out["score"].tolist()
            cols["rank"] += out["rank"].tolist()
        write_table(pa.table(cols), path)
        return None


def lm_identity(ctx: RunContext, source: str) -> dict[str, str]:
    """What identifies the LM whose rows are stored (``lmgnn_fast.inference.rows``): its
    weights (``source``: ``pretrained``, ``stage1``, ``stage3``; the checksum of that stage's
    checkpoint), its name (``lm.name``, the packaged model's folder by default),
    ``lm.max_length`` and ``lm.pooling`` -- read from the run, without loading the LM."""
    from lmgnn_fast.lm.model import default_model_path

    weights = "pretrained"
    if source != "pretrained":
        stage = int(source[-1])
        weights = ctx.ckpt.stage_metadata(stage).get("checksum", "")
        if not weights:  # a checkpoint written without a checksum: its size and time
            st = os.stat(ctx.ckpt.stage_path(stage))
            weights = f"{st.st_size}-{st.st_mtime_ns}"
    c = ctx.cfg.lm
    return {"lm_source": source, "lm_weights": weights, "lm_name": str(c.name or default_model_path()),
            "max_length": str(c.max_length), "pooling": str(c.pooling)}


def write_lm_rows(ctx: RunContext, features) -> list[str]:
    """Store the LM rows the final model reads, with a hash of each text
    (``lm_rows/<type>.safetensors``, :mod:`lmgnn_fast.inference.rows`): loading the run for
    inference then encodes only texts that are new or changed.

    Every rank calls it (refreshing the caches is collective under ``torchrun``); rank 0
    writes. Returns the paths written.
    """
    source = features.lm_source
    if not ctx.text_types or features.lm is None or source not in ("pretrained", "stage1", "stage3"):
        return []
    features.ensure_cache()  # the caches hold the rows of the LM the final model reads
    rows = {t: features.table_rows(t) for t in ctx.text_types}  # partitioned: gathered (collective)
    if not ctx.dist.is_main:
        return []
    meta = lm_identity(ctx, source)
    return [save_rows(ctx.out_dir, t, rows[t], text_hashes(ctx.graph.text[t]), meta) for t in ctx.text_types]
