"""The run context: what every part of a training run shares, built once and passed down.

:class:`RunContext` holds the configuration, the graph, the resolved target task, the stage-1
relations, the text node types, the device and distributed context, the checkpoints of the
run directory, the log, the per-stage history and the global step counter. The feature
source, the task batching, the loop, the stages and the runner all receive it; none of them
keeps a copy of what it holds.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Callable

import torch

from lmgnn_fast.distributed import DistContext
from lmgnn_fast.train import builders, data_parallel
from lmgnn_fast.train.budget import resolve_auto
from lmgnn_fast.train.config import Config, ConfigError
from lmgnn_fast.train.data import TargetTask, resolve_relations, resolve_task, split_items, text_types
from lmgnn_fast.train.errors import DataError, TrainingError
from lmgnn_fast.train.partitioned import PartitionLayout, build_layout
from lmgnn_fast.train.shared_copy import MachineShare

__all__ = ["RunContext", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """The device of ``run.device``: ``auto`` = CUDA when available, else CPU.

    Raises:
        TrainingError: an unknown name, or a CUDA device that is not there.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise TrainingError(f"run.device: unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise TrainingError(f"run.device is {name!r} but CUDA is not available ({why}); "
                                "use --run.device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TrainingError(f"run.device is {name!r} but only {torch.cuda.device_count()} GPU(s) are visible")
    return dev


@dataclass
class RunContext:
    """Shared state of one training (or evaluation) run.

    Attributes:
        cfg: the full configuration.
        graph: the ``HeteroGraph``.
        task: the resolved target task.
        relations: the relations stage 1 trains on (``(src, rel, dst)``).
        text_types: node types whose features come from the LM (empty without text).
        stages: the stages to run, sorted.
        device: where this process computes.
        dist: the distributed context (one process without ``torchrun``).
        ckpt: the run directory's checkpoints (rank 0 writes).
        out_dir: the run directory.
        log: progress lines (a no-op on ranks other than 0).
        history: per stage (``"stage{k}"``) the loss and validation records.
        global_step: optimizer steps taken so far over all stages.
        share: the machine's shared copy (graph, tokens, embedding tables) under
            ``torchrun`` with ``run.share_memory``; ``None`` otherwise.
        partition: the partition of the nodes over the ranks with ``run.partitioned``
            (:mod:`lmgnn_fast.train.partitioned`); ``None`` otherwise.
    """

    cfg: Config
    graph: object
    task: TargetTask
    relations: list[tuple]
    text_types: list[str]
    stages: list[int]
    device: torch.device
    dist: DistContext
    ckpt: data_parallel.RankZeroCheckpoints
    out_dir: str
    log: Callable[..., None]
    history: dict[str, list[dict]] = field(default_factory=dict)
    global_step: int = 0
    share: MachineShare | None = None
    partition: PartitionLayout | None = None

    @classmethod
    def create(cls, cfg: Config, graph=None, log=None) -> "RunContext":
        """Validate the configuration, join the process group, load and check the graph and
        the task, and open the run directory.

        Args:
            cfg: the configuration.
            graph: an already loaded graph (default: load ``cfg.data.name``).
            log: where progress lines go (default: print to stdout).

        Raises:
            ConfigError, DataError, TrainingError: a setting that cannot work, named.
        """
        cfg = cfg.validate()
        log = log or (lambda *a: print(*a, flush=True))
        dist = data_parallel.setup(resolve_device(cfg.run.device), cfg.run.dist_timeout)
        if cfg.run.partitioned and dist.device.type != "cpu":
            raise ConfigError(f"run.partitioned runs on the CPU only (gloo), but run.device {cfg.run.device!r} "
                              f"resolved to {dist.device}: use --run.device cpu")
        if not dist.is_main:
            log = lambda *a: None  # noqa: E731
        if cfg.run.num_threads > 0:
            torch.set_num_threads(cfg.run.num_threads)
        stages = cfg.stage_list
        share = MachineShare(dist, cfg.run.shared_dir or None) if dist.is_distributed and cfg.run.share_memory else None
        if share is not None:
            log(f"one copy per machine: {share.local_world} local ranks share the graph, token ids and "
                f"embedding tables ({share.path}; run.share_memory false to turn off)")
            if graph is None:
                graph = share.share_graph(lambda: builders.load_graph(cfg.data.name, cfg.data.options))
        graph = graph if graph is not None else builders.load_graph(cfg.data.name, cfg.data.options)
        task, relations, texts = _resolve_task_parts(cfg, graph)
        partition = build_layout(cfg, graph, dist, log) if cfg.run.partitioned else None
        if not texts and (1 in stages or 3 in stages):
            why = "gnn.text_features is false" if not cfg.gnn.text_features else "no node type of the graph has text"
            raise DataError(f"stages 1 and 3 train the LM but {why}; use --run.stages 2")
        train = split_items(graph, task, "train")
        for line in resolve_auto(cfg, int((train[0] if isinstance(train, tuple) else train).numel()),
                                 dist.device.type, task.type):
            log(line)
        os.makedirs(cfg.run.out_dir, exist_ok=True)
        return cls(cfg=cfg, graph=graph, task=task, relations=relations, text_types=texts, stages=stages,
                   device=dist.device, dist=dist, ckpt=data_parallel.RankZeroCheckpoints(cfg.run.out_dir, dist, log),
                   out_dir=cfg.run.out_dir, log=log, share=share, partition=partition)

    @classmethod
    def open(cls, cfg: Config, graph=None, log=None) -> "RunContext":
        """A context over the finished run in ``cfg.run.out_dir``, for inference and
        evaluation: graph, task, relations and text types resolved as :meth:`create` does,
        one process (no process group, no shared memory), checkpoints only read (nothing is
        written or cleaned).

        Args:
            cfg: the run's configuration (its ``config.yaml``, with any overrides).
            graph: an already loaded graph (default: load ``cfg.data.name``).
            log: where notices go (default: print to stdout).

        Raises:
            ConfigError, DataError, TrainingError: a setting that cannot work, named.
        """
        from lmgnn_fast.train.checkpoint import CheckpointManager
        from lmgnn_fast.train.encoder_choice import resolve_encoder

        # one process reads a finished run, partitioned or not (its checkpoints are the same)
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, partitioned=False)).validate()
        log = log or (lambda *a: print(*a, flush=True))
        device = resolve_device(cfg.run.device)
        if cfg.run.num_threads > 0:
            torch.set_num_threads(cfg.run.num_threads)
        graph = graph if graph is not None else builders.load_graph(cfg.data.name, cfg.data.options)
        task, relations, texts = _resolve_task_parts(cfg, graph)
        ckpt = CheckpointManager(cfg.run.out_dir, log=log, clean=False)
        cfg = dataclasses.replace(cfg, gnn=dataclasses.replace(cfg.gnn))
        resolve_encoder(cfg, ckpt)  # gnn.model auto: the encoder stage 2 chose
        return cls(cfg=cfg, graph=graph, task=task, relations=relations, text_types=texts, stages=cfg.stage_list,
                   device=device, dist=DistContext(device=device), ckpt=ckpt, out_dir=cfg.run.out_dir, log=log)


def _resolve_task_parts(cfg: Config, graph) -> tuple[TargetTask, list[tuple], list[str]]:
    """The target task, the stage-1 relations and the text node types of ``graph`` under
    ``cfg`` (:meth:`RunContext.create` and :meth:`RunContext.open` alike)."""
    task = resolve_task(graph, cfg.task)
    relations = resolve_relations(graph, cfg.stage1.relations)
    if cfg.stage1.objective == "task" and task.type == "link_prediction":
        relations = []  # the task's loss is the target relation's link prediction
    all_text = text_types(graph)
    if task.type == "link_prediction" and task.edge_type not in relations \
            and task.edge_type[0] in all_text and task.edge_type[2] in all_text:
        relations.append(task.edge_type)
    texts = all_text if cfg.gnn.text_features else []
    return task, relations, texts
