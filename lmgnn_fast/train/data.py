"""Resolve and check the target task against the graph; the items of its splits."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lmgnn_fast.train.errors import DataError

__all__ = ["TargetTask", "resolve_task", "resolve_relations", "split_items", "known_edge_keys", "text_types",
           "node_labels", "edge_endpoints_all"]

TASK_TYPES = ("node_classification", "edge_classification", "link_prediction")


@dataclass
class TargetTask:
    """The task a run trains for, resolved against the graph (see :func:`resolve_task`)."""

    name: str
    type: str
    node_type: str | None = None
    edge_type: tuple | None = None
    multilabel: bool = False
    num_classes: int | None = None

    @property
    def primary_metric(self) -> str:
        """The validation metric that selects models (higher is better)."""
        if self.type == "link_prediction":
            return "mrr"
        return "micro_f1" if self.multilabel else "accuracy"


def _get(obj, key, default=None):
    return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)


def _edge_type(graph, et, where: str) -> tuple:
    if isinstance(et, str):
        matches = [e for e in graph.edge_types if e[1] == et]
        if len(matches) != 1:
            raise DataError(f"{where}: unknown relation {et!r}; relations: " + ", ".join(map(str, graph.edge_types)))
        return tuple(matches[0])
    et = tuple(et)
    if len(et) != 3 or et not in [tuple(e) for e in graph.edge_types]:
        raise DataError(f"{where}: unknown relation {list(et)!r}; relations: "
                        + ", ".join(str(list(e)) for e in graph.edge_types))
    return et


def resolve_task(graph, cfg_task) -> TargetTask:
    """The target task from ``cfg.task``: a task of the graph by name (default: its first),
    or one defined in the config. Raises :class:`DataError` naming what is unknown or
    which labels do not fit."""
    tasks = list(getattr(graph, "tasks", []) or [])
    if cfg_task.type is not None:
        if cfg_task.type not in TASK_TYPES:
            raise DataError(f"task.type: unknown task type {cfg_task.type!r}; choose one of {', '.join(TASK_TYPES)}")
        base = None
        if cfg_task.name is not None:
            base = next((t for t in tasks if _get(t, "name") == cfg_task.name), None)
        task = TargetTask(name=cfg_task.name or cfg_task.type, type=cfg_task.type,
                          node_type=cfg_task.node_type, edge_type=cfg_task.edge_type,
                          multilabel=bool(_get(base, "multilabel", False)),
                          num_classes=_get(base, "num_classes"))
    else:
        if not tasks:
            raise DataError("the graph declares no tasks; set task.type and task.node_type or task.edge_type")
        if cfg_task.name is None:
            t = tasks[0]
        else:
            t = next((t for t in tasks if _get(t, "name") == cfg_task.name), None)
            if t is None:
                raise DataError(f"task.name: unknown task {cfg_task.name!r}; the graph has tasks: "
                                + ", ".join(f"{_get(x, 'name')} ({_get(x, 'type')})" for x in tasks))
        task = TargetTask(name=_get(t, "name"), type=_get(t, "type"), node_type=_get(t, "node_type"),
                          edge_type=_get(t, "edge_type"), multilabel=bool(_get(t, "multilabel", False)),
                          num_classes=_get(t, "num_classes"))
        if task.type not in TASK_TYPES:
            raise DataError(f"task {task.name!r}: unknown task type {task.type!r}")
    if cfg_task.multilabel is not None:
        task.multilabel = bool(cfg_task.multilabel)
    if task.type == "node_classification":
        if task.node_type is None:
            raise DataError(f"task {task.name!r}: node classification needs task.node_type")
        if task.node_type not in graph.node_types:
            raise DataError(f"task.node_type: unknown node type {task.node_type!r}; node types: "
                            + ", ".join(graph.node_types))
        task.edge_type = None
        _check_node_labels(graph, task)
    else:
        if task.edge_type is None:
            raise DataError(f"task {task.name!r}: {task.type} needs task.edge_type [src, relation, dst]")
        task.edge_type = _edge_type(graph, task.edge_type, "task.edge_type")
        task.node_type = None
        if task.type == "edge_classification":
            _check_edge_labels(graph, task)
        else:
            lp = (getattr(graph, "lp_edges", None) or {}).get(task.name)
            if lp is None:
                raise DataError(f"link prediction task {task.name!r}: the graph holds no val/test edges for it; "
                                "declare the task in metadata.json so the loader holds them out of the "
                                "message-passing graph")
    return task


def node_labels(graph, t: str):
    """The labels of node type ``t`` (``None`` when it has none)."""
    labels = (getattr(graph, "labels", None) or {}).get(t)
    return labels


def _check_node_labels(graph, task: TargetTask) -> None:
    y = node_labels(graph, task.node_type)
    if y is None:
        raise DataError(f"task {task.name!r}: node type {task.node_type!r} has no labels "
                        "(node classification needs a 'label' column)")
    y = torch.as_tensor(y)
    if task.multilabel:
        if y.dim() != 2:
            raise DataError(f"task {task.name!r} is multi-label but the labels of {task.node_type!r} are "
                            f"single-label (shape {list(y.shape)}); give '|'-separated labels or set multilabel false")
        task.num_classes = int(y.shape[1])
    else:
        if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
            raise DataError(f"task {task.name!r} is single-label but the labels of {task.node_type!r} are "
                            f"{'multi-label' if y.dim() == 2 else y.dtype} (shape {list(y.shape)}); "
                            "set multilabel: true in the task or give one integer/string class per node")
        if task.num_classes is None:
            task.num_classes = int(y.max()) + 1 if y.numel() else 0
    masks = (getattr(graph, "masks", None) or {}).get(task.node_type)
    if not masks or "train" not in masks:
        raise DataError(f"task {task.name!r}: node type {task.node_type!r} has no train/val/test split")
    if task.num_classes < 2 and not task.multilabel:
        raise DataError(f"task {task.name!r}: node classification needs at least 2 classes, found {task.num_classes}")


def _check_edge_labels(graph, task: TargetTask) -> None:
    y = (getattr(graph, "edge_labels", None) or {}).get(task.edge_type)
    if y is None:
        raise DataError(f"task {task.name!r}: relation {list(task.edge_type)} has no edge labels "
                        "(edge classification needs a 'label' column in its edge table)")
    y = torch.as_tensor(y)
    if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(f"task {task.name!r}: edge labels of {list(task.edge_type)} must be one integer class "
                        f"per edge, got {y.dtype} of shape {list(y.shape)}")
    if task.num_classes is None:
        task.num_classes = int(y.max()) + 1 if y.numel() else 0
    masks = (getattr(graph, "edge_masks", None) or {}).get(task.edge_type)
    if not masks or "train" not in masks:
        raise DataError(f"task {task.name!r}: relation {list(task.edge_type)} has no train/val/test split")


def resolve_relations(graph, names) -> list[tuple]:
    """Relations for stage 1: the given names (or ``[src, rel, dst]``), default every forward
    relation (no ``rev-``) whose two node types carry text."""
    text = getattr(graph, "text", {}) or {}
    if names is None:
        return [tuple(e) for e in graph.edge_types
                if not e[1].startswith("rev-") and text.get(e[0]) is not None and text.get(e[2]) is not None]
    out = []
    for n in names:
        et = _edge_type(graph, n, "stage1.relations")
        if text.get(et[0]) is None or text.get(et[2]) is None:
            raise DataError(f"stage1.relations: relation {list(et)} joins a node type without text")
        out.append(et)
    return out


def text_types(graph) -> list[str]:
    """Node types that carry text, in the graph's order."""
    text = getattr(graph, "text", {}) or {}
    return [t for t in graph.node_types if text.get(t) is not None]


def split_items(graph, task: TargetTask, split: str):
    """Items of a split: node ids ``[N]`` (node classification), edge ids ``[E]`` (edge
    classification) or ``(src, dst)`` positive pairs (link prediction)."""
    if task.type == "node_classification":
        mask = torch.as_tensor(graph.masks[task.node_type][split]).bool()
        y = torch.as_tensor(graph.labels[task.node_type])
        labelled = torch.ones_like(mask) if task.multilabel else (y >= 0)
        return torch.nonzero(mask & labelled).flatten()
    if task.type == "edge_classification":
        mask = torch.as_tensor(graph.edge_masks[task.edge_type][split]).bool()
        y = torch.as_tensor(graph.edge_labels[task.edge_type])
        return torch.nonzero(mask & (y >= 0)).flatten()
    s, d = graph.lp_edges[task.name][split]
    return torch.as_tensor(s).long(), torch.as_tensor(d).long()


def edge_endpoints_all(graph, edge_type: tuple) -> tuple[Tensor, Tensor]:
    """``(src [E_r], dst [E_r])`` int64 of every edge of a forward relation, indexed by eid
    (-1 where unknown): :meth:`lmgnn_fast.graph.HeteroGraph.all_edges`, the one home of a
    relation's full edge list."""
    return graph.all_edges(tuple(edge_type))


def known_edge_keys(graph, task: TargetTask) -> Tensor:
    """Keys ``s * N_dst + d`` of every true edge of the LP relation (all splits)."""
    n_dst = graph.num_nodes[task.edge_type[2]]
    keys = []
    for s, d in graph.lp_edges[task.name].values():
        keys.append(torch.as_tensor(s).long() * n_dst + torch.as_tensor(d).long())
    return torch.unique(torch.cat(keys)) if keys else torch.empty(0, dtype=torch.long)
