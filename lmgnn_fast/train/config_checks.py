"""The rules ``Config.validate`` checks: allowed choices, numeric ranges, options that may be
left ``null`` (auto), and the fields that depend on each other."""
from __future__ import annotations

import importlib.util
import math
import os
import re

__all__ = ["CHOICES", "AUTO", "RANGES", "config_problems"]

# Allowed values of the string options (the first is the default where there is one).
CHOICES: dict[str, tuple[str, ...]] = {
    "lm.pooling": ("cls", "mean"),
    "lm.precision": ("auto", "bf16", "fp16", "fp32"),
    "gnn.model": ("rgcn", "rgat", "hgt", "auto"),
    "gnn.aggr": ("mean", "sum"),
    "gnn.feature_norm": ("layer", "none"),
    "task.decoder": ("distmult", "dot"),
    "task.loss": ("contrastive", "bce"),
    "task.negatives": ("uniform", "joint", "in_batch"),
    "stage3.cache_policy": ("clock", "lru", "lfu", "static"),
    "stage1.objective": ("task", "task+graph", "graph"),
    "stage3.objective": ("glem", "joint"),
    "run.final_stage": ("best", "1", "2", "3"),
    "run.partition_method": ("auto", "metis", "random", "contiguous"),
}
# Options whose null value means "derived from the graph and the device" (train/budget.py).
AUTO = ("stage1.max_items", "stage2.batch_size", "stage3.lm_items")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")

# Numeric ranges: option -> (lowest, lowest allowed itself, highest, highest allowed itself).
_INF = math.inf
RANGES: dict[str, tuple[float, bool, float, bool]] = {
    "lm.max_length": (2, True, _INF, False),
    "lm.encode_batch_size": (1, True, _INF, False),
    "lm.lora_r": (0, True, 65536, True),  # no BERT-family LM is wider; add_lora bounds it by the LM's width
    "lm.lora_alpha": (0, False, _INF, False),
    "lm.lora_dropout": (0, True, 1, False),
    "gnn.hidden": (1, True, _INF, False),
    "gnn.num_layers": (1, True, _INF, False),
    "gnn.heads": (1, True, _INF, False),
    "gnn.dropout": (0, True, 1, False),
    "task.num_negatives": (1, True, _INF, False),
    "task.eval_negatives": (1, True, _INF, False),
    "task.threshold": (0, False, 1, False),
    "stage1.epochs": (0, True, _INF, False),
    "stage1.batch_size": (1, True, _INF, False),
    "stage1.lr": (0, False, _INF, False),
    "stage1.head_lr": (0, False, _INF, False),
    "stage1.max_edges": (0, True, _INF, False),
    "stage1.max_items": (0, True, _INF, False),
    "stage1.num_negatives": (0, True, _INF, False),
    "stage1.lp_weight": (0, True, _INF, False),
    "stage1.task_weight": (0, True, _INF, False),
    "stage1.task_batch_size": (1, True, _INF, False),
    "stage1.weight_decay": (0, True, _INF, False),
    "stage2.epochs": (0, True, _INF, False),
    "stage2.batch_size": (1, True, _INF, False),
    "stage2.lr": (0, False, _INF, False),
    "stage2.weight_decay": (0, True, _INF, False),
    "stage2.patience": (0, True, _INF, False),
    "stage3.epochs": (0, True, _INF, False),
    "stage3.gnn_epochs": (1, True, _INF, False),
    "stage3.pseudo_weight": (0, True, _INF, False),
    "stage3.pseudo_min_confidence": (0, True, 1, True),
    "stage3.lm_items": (0, True, _INF, False),
    "stage3.batch_size": (1, True, _INF, False),
    "stage3.lm_lr": (0, False, _INF, False),
    "stage3.gnn_lr": (0, False, _INF, False),
    "stage3.lm_train_nodes": (-1, True, _INF, False),
    "stage3.refresh_every": (0, True, _INF, False),
    "stage3.warmup_epochs": (0, True, _INF, False),
    "stage3.cache_capacity": (0, True, _INF, False),
    "stage3.max_steps_per_epoch": (0, True, _INF, False),
    "run.seed": (0, True, 2**63 - 1, True),
    "run.num_threads": (0, True, _INF, False),
    "run.eval_batch_size": (1, True, _INF, False),
    "run.checkpoint_every": (0, True, _INF, False),
    "run.checkpoint_every_s": (0, True, _INF, False),
    "run.interrupt_after_steps": (0, True, _INF, False),
    "run.dist_timeout": (0, False, _INF, False),
    "run.partition_cache": (0, True, _INF, False),
}


def _range_text(lo: float, lo_in: bool, hi: float, hi_in: bool) -> str:
    def num(v):
        return str(int(v)) if float(v).is_integer() else str(v)

    if hi == _INF:
        return f"{'>=' if lo_in else '>'} {num(lo)}"
    return f"in {'[' if lo_in else '('}{num(lo)}, {num(hi)}{']' if hi_in else ')'}"


def _choice_text(ok: tuple[str, ...]) -> str:
    quoted = [repr(c) for c in ok]
    if len(quoted) == 2:
        return f"{quoted[0]} or {quoted[1]}"
    return "one of " + ", ".join(quoted)


def config_problems(cfg) -> list[str]:
    """Every invalid value of ``cfg`` as ``"<section.key> must be ..., got <value>"``."""
    out: list[str] = []

    def get(key: str):
        section, k = key.split(".")
        return getattr(getattr(cfg, section), k)

    for key, ok in CHOICES.items():
        v = get(key)
        if v not in ok:
            out.append(f"{key} must be {_choice_text(ok)}, got {v!r}")
    device = cfg.run.device
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        out.append(f"run.device must be auto, cpu, cuda or cuda:N, got {device!r}")
    for key, (lo, lo_in, hi, hi_in) in RANGES.items():
        v = get(key)
        if v is None and key in AUTO:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            out.append(f"{key} must be a number, got {v!r}")
            continue
        ok = (math.isfinite(v) and (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi))
        if not ok:
            out.append(f"{key} must be {_range_text(lo, lo_in, hi, hi_in)}, got {v!r}")
    g = cfg.gnn
    if g.num_bases is not None and (isinstance(g.num_bases, bool) or g.num_bases < 1):
        out.append(f"gnn.num_bases must be >= 1 or null, got {g.num_bases!r}")
    auto = list(g.auto_models) if isinstance(g.auto_models, (list, tuple)) else None
    if g.model == "auto" and (not auto or len(set(map(str, auto))) != len(auto)
                              or any(m not in ("rgcn", "rgat", "hgt") for m in auto)):
        out.append("gnn.auto_models must be a list of distinct encoders among 'rgcn', 'rgat', 'hgt' "
                   f"(the candidates of gnn.model auto), got {g.auto_models!r}")
    attn = [m for m in ([g.model] + (auto or [] if g.model == "auto" else [])) if m in ("rgat", "hgt")]
    if attn and isinstance(g.heads, int) and isinstance(g.hidden, int) and g.heads >= 1 and g.hidden % g.heads:
        out.append(f"gnn.hidden ({g.hidden}) must be divisible by gnn.heads ({g.heads}) for gnn.model {g.model}")
    fan = list(g.fanouts or [])
    bad = [f for f in fan if isinstance(f, bool) or not isinstance(f, int) or not (f == -1 or f >= 1)]
    if bad or not fan:
        out.append(f"gnn.fanouts must be a list of integers, each -1 (all neighbours) or >= 1, got {g.fanouts!r}")
    elif isinstance(g.num_layers, int) and len(fan) != g.num_layers:
        out.append(f"gnn.fanouts has {len(fan)} entries but gnn.num_layers is {g.num_layers}")
    lm = cfg.lm
    if isinstance(lm.lora_r, float) and not lm.lora_r.is_integer():
        out.append(f"lm.lora_r must be an integer (0 = off), got {lm.lora_r!r}")
    targets = lm.lora_targets
    if not isinstance(targets, list) or not targets or \
            not all(isinstance(t, str) and t.strip() for t in targets):
        out.append(f"lm.lora_targets must be a non-empty list of module names (e.g. [query, value]), got {targets!r}")
    if not isinstance(cfg.data.name, str) or not cfg.data.name.strip():
        out.append(f"data.name must name a built-in dataset or a directory, got {cfg.data.name!r}")
    od = cfg.run.out_dir
    if not isinstance(od, str) or not od.strip():
        out.append(f"run.out_dir must be a folder path, got {od!r}")
    elif os.path.exists(od) and not os.path.isdir(od):
        out.append(f"run.out_dir {od!r} exists and is not a directory")
    else:
        parent = os.path.dirname(os.path.abspath(od))
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if parent and not os.path.isdir(parent):
            out.append(f"run.out_dir {od!r} is inside {parent!r}, which is not a directory")
    out += _partitioned_problems(cfg)
    try:
        stages = cfg.stage_list
    except ValueError as e:  # ConfigError from Config.stage_list
        out.append(str(e))
    else:
        fs = cfg.run.final_stage
        if fs != "best" and fs in CHOICES["run.final_stage"] and int(fs) not in stages:
            out.append(f"run.final_stage is {fs} but run.stages is {cfg.run.stages!r}")
    return out


def _partitioned_problems(cfg) -> list[str]:
    """``run.partitioned`` needs ``torchrun`` (2+ processes), the CPU, and pymetis for METIS."""
    r = cfg.run
    if not isinstance(r.partitioned, bool):
        return [f"run.partitioned must be true or false, got {r.partitioned!r}"]
    if not r.partitioned:
        return []
    out = []
    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) < 2:
        out.append(f"run.partitioned needs torch.distributed with 2 or more processes (WORLD_SIZE is {world}): "
                   "start the run with torchrun --nproc-per-node N, or set run.partitioned false")
    if isinstance(r.device, str) and r.device.startswith("cuda"):
        out.append(f"run.partitioned runs on the CPU only (gloo; the partitioned sampler and row table are "
                   f"untested under NCCL), got run.device {r.device!r}: use --run.device cpu")
    if r.partition_method == "metis" and importlib.util.find_spec("pymetis") is None:
        out.append("run.partition_method is 'metis' but pymetis is not installed: pip install "
                   "'lmgnn_fast[partition]', or use run.partition_method auto")
    return out
