"""The one writer of output tables, for a training run's outputs and for predict alike.

Class scores become ``pred`` / ``prob`` / ``pred_names`` here only (:func:`class_columns`),
node rows become ``embeddings/<type>.parquet`` here only (:func:`write_embeddings`), and
every table is written through :func:`write_table` (a temporary file, then ``os.replace``;
under ``torchrun`` rank 0 writes). ``lmgnn_fast.train.outputs`` writes a run's outputs with
these functions, :func:`write_results` writes the answers of :mod:`lmgnn_fast.inference`.

This module imports nothing above ``lmgnn_fast.io``: the trainer's outputs use it.
"""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from lmgnn_fast.io.paths import safe_join

__all__ = ["raw_ids", "class_names", "class_columns", "write_table", "write_embeddings", "write_results"]


def raw_ids(graph, t: str, ids: Tensor | list) -> list:
    """The original ids of nodes ``ids`` of type ``t`` (the node indices where the graph has
    none), as plain Python values."""
    raw = (getattr(graph, "raw_ids", None) or {}).get(t)
    idx = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    if raw is None:
        return idx
    return [raw[i] if not hasattr(raw[i], "item") else raw[i].item() for i in idx]


def class_names(ids: list, names: list | None, multilabel: bool) -> list | None:
    """Class ids (``-1``: none) or, multi-label, lists of class ids as class names (``None``
    without names)."""
    if not names:
        return None
    if multilabel:
        return [[names[c] for c in row] for row in ids]
    return [names[c] if c >= 0 else None for c in ids]


def class_columns(logits: Tensor, multilabel: bool = False, threshold: float = 0.5,
                  names: list | None = None) -> dict[str, list]:
    """``pred``, ``prob`` (and ``pred_names`` with class names) of class scores.

    Args:
        logits: ``[N, C]`` head outputs.
        multilabel: sigmoid per class and every class above ``threshold`` (else softmax
            and the arg-max class).
        threshold: the multi-label decision threshold.
        names: class names (index = class id), or ``None``.

    Returns:
        ``{"pred": [...], "prob": [[...], ...]}`` (+ ``"pred_names"``): per row the class id
        (multi-label: the list of class ids) and the class probabilities.
    """
    logits = logits.float().cpu()
    if multilabel:
        prob = torch.sigmoid(logits)
        pred = [torch.nonzero(p > threshold).flatten().tolist() for p in prob]
    else:
        prob = torch.softmax(logits, -1)
        pred = logits.argmax(-1).tolist() if logits.shape[0] else []
    out = {"pred": pred, "prob": prob.numpy().tolist()}
    pn = class_names(pred, names, multilabel)
    if pn is not None:
        out["pred_names"] = pn
    return out


def write_table(table: pa.Table, path: str) -> str:
    """Write a parquet table atomically (temporary file, then ``os.replace``); under
    ``torchrun`` only rank 0 writes. Returns ``path``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and \
            torch.distributed.get_rank() != 0:
        return path  # every rank computes (sharded), rank 0 writes
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_embeddings(out_dir: str, node_type: str, ids: list, rows: Tensor) -> str:
    """``out_dir/embeddings/<node_type>.parquet`` with columns ``id`` and ``embedding`` (list
    of float32). Returns the path."""
    emb_dir = os.path.join(out_dir, "embeddings")
    os.makedirs(emb_dir, exist_ok=True)
    path = safe_join(emb_dir, node_type, ".parquet", "node type")
    return write_table(pa.table({"id": list(ids), "embedding": rows.float().cpu().numpy().tolist()}), path)


def write_results(results: dict, out_dir: str) -> list[str]:
    """Write the answers of a request (:mod:`lmgnn_fast.inference.results`) to ``out_dir``.

    - :class:`NodePredictions` per type: ``embeddings/<type>.parquet`` and, when the model
      scored classes, ``predictions.parquet`` (``id``, ``pred``, ``prob``, ``pred_names``).
    - :class:`PairPredictions` (key ``"pairs"``): ``pairs.parquet`` (``src``, ``dst`` and
      ``pred``, ``prob``, ``pred_names`` for edge classification, ``score`` for link
      prediction).
    - :class:`LinkCandidates` (key ``"top_k"``): ``top_k.parquet`` (``src``, ``rank``,
      ``dst``, ``score``; rank 1 = best).

    Returns:
        The paths written.
    """
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for r in results.values():
        if r.kind == "nodes":
            written.append(write_embeddings(out_dir, r.node_type, r.ids, r.embedding))
            if r.logits is not None:
                cols = {"id": list(r.ids), **r.columns()}
                written.append(write_table(pa.table(cols), os.path.join(out_dir, "predictions.parquet")))
        elif r.kind == "pairs":
            cols = {"src": list(r.src), "dst": list(r.dst), **r.columns()}
            written.append(write_table(pa.table(cols), os.path.join(out_dir, "pairs.parquet")))
        elif r.kind == "top_k":
            cols = {"src": [], "rank": [], "dst": [], "score": []}
            for q, (dst, score) in enumerate(zip(r.dst, r.score.tolist())):
                cols["src"] += [r.src[q]] * len(dst)
                cols["rank"] += list(range(1, len(dst) + 1))
                cols["dst"] += list(dst)
                cols["score"] += score[:len(dst)]
            written.append(write_table(pa.table(cols), os.path.join(out_dir, "top_k.parquet")))
    return written
