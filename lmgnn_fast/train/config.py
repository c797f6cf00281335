"""Run configuration: one dataclass per concern, loaded from YAML, overridable from the
command line (``--key value`` when ``key`` names one field, ``--section.key value``
always), printed in full at the start of a run and saved beside its outputs."""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import asdict, dataclass, field

import yaml

from lmgnn_fast.train.config_checks import config_problems

__all__ = ["Config", "DataConfig", "LMConfig", "GNNConfig", "TaskConfig", "Stage1Config",
           "Stage2Config", "Stage3Config", "RunConfig", "ConfigError", "load_config",
           "apply_overrides"]


class ConfigError(ValueError):
    """A configuration value or override is invalid."""


@dataclass
class DataConfig:
    """Which graph: a built-in dataset name (``attack``, ``wordnet``, ``hpo``, ``synthetic``)
    or a directory in the documented format."""
    name: str = "attack"
    options: dict = field(default_factory=dict)  # passed to the dataset loader


@dataclass
class LMConfig:
    name: str | None = None  # HF folder or name; None = the packaged all-MiniLM-L6-v2
    pooling: str = "mean"  # cls | mean
    max_length: int = 32  # tokens per text, [CLS]/[SEP] included
    precision: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32
    gradient_checkpointing: bool = False
    encode_batch_size: int = 128  # texts per forward in encode_all
    # LoRA in stages 1 and 3 (needs peft: lmgnn_fast[lora]); 0 = every LM weight trains.
    # Checkpoints hold the merged weights (base + alpha / r * B @ A), loadable without peft.
    lora_r: int = 0  # adapter rank
    lora_alpha: float = 16.0  # update scale alpha / r
    lora_dropout: float = 0.05  # dropout on the adapters' input
    lora_targets: list = field(default_factory=lambda: ["query", "value"])  # linear layers adapted


@dataclass
class GNNConfig:
    # the graph encoder: rgcn | rgat | hgt, or auto: stage 2 trains each of auto_models and
    # keeps the best on validation (docs/training.md, "Choosing the encoder")
    model: str = "rgcn"
    auto_models: list = field(default_factory=lambda: ["rgcn", "hgt"])
    heads: int = 4  # attention heads of rgat and hgt (hidden must be divisible by it)
    hidden: int = 128
    num_layers: int = 2
    fanouts: list = field(default_factory=lambda: [10, 10])  # per layer, -1 = all neighbours
    num_bases: int | None = None
    aggr: str = "mean"
    dropout: float = 0.2
    layer_norm: bool = False
    text_features: bool = True  # false: every node type gets a learnable embedding (no LM)
    # LayerNorm on the LM rows of each text node type before the R-GCN. Stage 1 changes the
    # scale of the LM's output (on hpo it shrank the rows' norm 2-2.5x), which a fixed-lr
    # stage 2 otherwise has to relearn; "none" feeds the rows as they are.
    feature_norm: str = "layer"  # layer | none


@dataclass
class TaskConfig:
    """The target task: a task of the graph by name (``None`` = the graph's first task), or
    a task defined here (``type`` plus ``node_type`` or ``edge_type``)."""
    name: str | None = None
    type: str | None = None  # node_classification | edge_classification | link_prediction
    node_type: str | None = None
    edge_type: list | None = None
    multilabel: bool | None = None  # override the task's single/multi-label kind
    decoder: str = "distmult"  # link prediction: distmult | dot
    loss: str = "contrastive"  # link prediction: contrastive | bce
    negatives: str = "joint"  # link prediction training: uniform | joint | in_batch
    num_negatives: int = 16  # per positive in training
    eval_negatives: int = 100  # per positive in validation/test (seeded, filtered)
    threshold: float = 0.5  # multi-label decision threshold on sigmoid outputs


@dataclass
class Stage1Config:
    """The LM fine-tuned on the graph before the R-GCN sees its embeddings.

    ``objective``: ``task`` (default) trains on the target task's loss over its training
    items each epoch (link prediction: the target relation's training edges);
    ``task+graph`` adds ``lp_weight`` x link prediction over every text relation (one edge
    batch per step); ``graph`` is link prediction over the relations (``max_edges`` per
    epoch) plus ``task_weight`` x the task loss on ``task_batch_size`` items per step.
    """
    objective: str = "task"  # task | task+graph | graph
    max_items: int | None = None  # task items per epoch; 0 = all; None = auto (CPU: 2048 LM texts, GPU all)
    epochs: int = 2
    batch_size: int = 16  # edges per step
    lr: float = 5e-5  # LM
    head_lr: float = 5e-3  # relation decoder and task head
    max_edges: int = 256  # edges drawn (seeded, balanced over relations) per epoch; 0 = all
    num_negatives: int = 4  # uniform negatives per destination type per batch (plus in-batch)
    relations: list | None = None  # relation names (or [src, rel, dst]); None = all with text
    lp_weight: float = 1.0
    task_weight: float = 1.0  # weight of the target task's loss (0 = off)
    task_batch_size: int = 16
    weight_decay: float = 0.01


@dataclass
class Stage2Config:
    """R-GCN + head on frozen LM embeddings."""
    epochs: int = 30
    batch_size: int | None = None  # None = auto: the largest power of two <= items / 20, in [16, 128]
    lr: float = 3e-3
    weight_decay: float = 0.0
    patience: int = 10  # epochs without validation improvement before stopping (0 = off)


@dataclass
class Stage3Config:
    """Stage 3: LM and graph model trained together (docs/training.md, "Stage 3").

    ``objective``: ``glem`` — rounds of an LM step on the gold labels plus the graph
    model's soft predictions (pseudo-labels / distillation), then graph-model epochs on the
    refreshed embeddings, keeping the best validation epoch; ``joint`` — end-to-end steps on
    the training labels, ``lm_train_nodes`` rows per batch through the LM, the rest from the
    cache. ``epochs``: rounds (glem) or epochs (joint).
    """
    objective: str = "glem"  # glem | joint
    epochs: int = 1
    # glem: graph-model epochs per round (patience stage2.patience), weight of the teacher's
    # soft targets, minimum teacher confidence of a pseudo-labelled item, LM items per round
    # (None = auto: the stage-1 CPU budget of LM texts on a CPU, every item on a GPU)
    gnn_epochs: int = 10
    pseudo_weight: float = 1.0
    pseudo_min_confidence: float = 0.5
    lm_items: int | None = None
    batch_size: int = 64
    lm_lr: float = 2e-5
    gnn_lr: float = 1e-3
    lm_train_nodes: int = 16  # nodes per batch through the LM with grad; -1 = every sampled node
    refresh_every: int = 1  # full cache refresh every N epochs (0 = only at the end)
    warmup_epochs: int = 0  # GNN-only epochs (LM frozen) first
    cache_capacity: float = 1.0  # GPU cache rows (fraction of the table if <= 1); unused on CPU
    cache_policy: str = "clock"  # clock | lru | static
    max_steps_per_epoch: int = 0  # cut each epoch after this many batches (0 = full epochs)


@dataclass
class RunConfig:
    stages: str = "1,2,3"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    out_dir: str = "runs/default"
    resume: bool = False
    num_threads: int = 0  # torch intra-op threads (0 = torch's default)
    eval_batch_size: int = 256
    checkpoint_every: int = 0  # global steps between mid-epoch checkpoints (0 = by time only)
    checkpoint_every_s: float = 300.0  # seconds between mid-epoch checkpoints (0 = by steps only)
    progress: bool = True
    interrupt_after_steps: int = 0  # testing aid: raise after this many steps (0 = off)
    dist_timeout: float = 300.0  # seconds: bound on every collective under torchrun
    # record how far stages 1 and 3 move the LM's embeddings (a fixed sample of nodes per
    # text type encoded at the stage's start and end; metrics.json "lm_drift")
    diagnostics: bool = False
    # under torchrun: one copy per machine of the graph, token ids and embedding tables,
    # shared by its ranks (false: every rank holds its own); shared_dir "" = /dev/shm
    share_memory: bool = True
    shared_dir: str = ""
    # under torchrun: every rank owns a partition of the nodes; stages 2 and 3 sample with the
    # distributed sampler and keep only the owned LM rows plus a cache of remote ones
    # (docs/scaling.md, "Partitioned training"). CPU / gloo only.
    partitioned: bool = False
    partition_method: str = "auto"  # auto (metis when pymetis is installed, else random) | metis | random | contiguous
    partition_cache: float = 0.1  # remote LM rows cached per rank and text type (fraction of its rows if <= 1)
    # which stage's model is the run's result (predictions, embeddings): "best" = the highest
    # validation value of the task's primary metric, or a stage number
    final_stage: str = "best"
    # with final_stage "best": also try the mixture of stage 1's and stage 2's predictions
    # (weight chosen on validation) and make it the final model when its validation value
    # beats every single stage's (docs/training.md, "The final model")
    ensemble: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    gnn: GNNConfig = field(default_factory=GNNConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    stage3: Stage3Config = field(default_factory=Stage3Config)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        """Every section as a plain dict (what ``config.yaml`` holds)."""
        return asdict(self)

    def to_yaml(self) -> str:
        """The configuration as YAML, sections in declaration order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str) -> None:
        """Write :meth:`to_yaml` to ``path`` atomically (a temporary file, then a rename)."""
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(self.to_yaml())
        os.replace(tmp, path)

    def validate(self) -> "Config":
        """Check every value against its allowed choices and range, and the fields that
        depend on each other, before any work starts.

        Returns:
            ``self``.

        Raises:
            ConfigError: one line naming every bad option with its value and what is
                allowed (``task.decoder must be 'distmult' or 'dot', got 'cosine'``).
        """
        problems = config_problems(self)
        if problems:
            head = "" if len(problems) == 1 else f"{len(problems)} invalid config values: "
            raise ConfigError(head + "; ".join(problems))
        return self

    @property
    def stage_list(self) -> list[int]:
        """``run.stages`` as a sorted list of stage numbers (each of 1, 2, 3)."""
        try:
            stages = [int(s) for s in str(self.run.stages).replace(" ", "").split(",") if s]
        except ValueError:
            raise ConfigError(
                f"run.stages must be a comma-separated list of 1, 2, 3, got {self.run.stages!r}") from None
        bad = [s for s in stages if s not in (1, 2, 3)]
        if bad or not stages:
            raise ConfigError(f"run.stages must be a comma-separated list of 1, 2, 3, got {self.run.stages!r}")
        return sorted(set(stages))

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Defaults updated by ``d`` (``{section: {key: value}}``); an unknown section or key,
        or a value of the wrong type, raises :class:`ConfigError` naming it."""
        cfg = cls()
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"a configuration must be a mapping of sections ({', '.join(_sections())}), "
                              f"got {type(d).__name__}")
        for section, values in (d or {}).items():
            if section not in _sections():
                raise ConfigError(f"unknown config section {section!r}; sections: {', '.join(_sections())}")
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"config section {section!r} must be a mapping, got {values!r}")
            for k, v in values.items():
                _set(cfg, section, k, v)
        return cfg


def _sections() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def _field_types(section: str) -> dict[str, typing.Any]:
    cls = type(getattr(Config(), section))
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value, tp, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        if tp is type(None) or type(None) in args:
            return None
        raise ConfigError(f"{where} cannot be null")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a valid {tp}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    if tp is list or origin is list:
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
            value = [yaml.safe_load(v) for v in value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return list(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    return value


def _set(cfg: Config, section: str, key: str, value) -> None:
    types = _field_types(section)
    if key not in types:
        raise ConfigError(f"unknown config key {section}.{key}; {section} has: {', '.join(types)}")
    setattr(getattr(cfg, section), key, _coerce(value, types[key], f"{section}.{key}"))


def apply_overrides(cfg: Config, args: list[str]) -> Config:
    """Apply ``--key value`` / ``--section.key value`` / ``--key=value`` overrides.

    A bare ``--key`` must name a field of exactly one section (``--seed 3``); otherwise the
    error lists the candidates (``--stage2.epochs 5``). A bare ``--flag`` with no value sets a
    boolean field to true (``--resume``).
    """
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ConfigError(f"unexpected argument {a!r}; overrides look like --section.key value")
        key = a[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            raw = args[i + 1]
            i += 2
        else:
            raw = "true"
            i += 1
        key = key.replace("-", "_")
        if "." in key:
            section, k = key.split(".", 1)
            if section not in _sections():
                raise ConfigError(f"unknown config section {section!r} in --{key}; sections: {', '.join(_sections())}")
        else:
            owners = [s for s in _sections() if key in _field_types(s)]
            if not owners:
                raise ConfigError(f"unknown config key --{key}")
            if len(owners) > 1:
                raise ConfigError(f"--{key} is ambiguous; use one of " + ", ".join(f"--{s}.{key}" for s in owners))
            section, k = owners[0], key
        _set(cfg, section, k, yaml.safe_load(raw) if raw != "" else "")
    return cfg


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides``."""
    cfg = Config()
    if path:
        cfg = Config.from_dict(_read_yaml(path))
    return apply_overrides(cfg, list(overrides or []))


def _read_yaml(path: str) -> dict:
    """The mapping of sections in the YAML file ``path`` (empty file: ``{}``).

    Raises:
        ConfigError: the file is missing, not text, not YAML, or YAML that is not a mapping
            (a list, a scalar), named with the line of a syntax error.
    """
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} not found")
    if os.path.isdir(path):
        raise ConfigError(f"config file {path!r} is a directory, not a YAML file")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path!r} is not UTF-8 text (byte {e.start}): not a YAML file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {path!r} is not valid YAML{where}: {what}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"{type(data).__name__} {_short(data)}"
        raise ConfigError(f"config file {path!r} must be a mapping of sections ({', '.join(_sections())}), "
                          f"got {kind}")
    return data


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
