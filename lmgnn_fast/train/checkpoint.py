"""Checkpoints: safetensors for tensors, JSON for the trainer state, both written atomically.

Layout under ``<out_dir>/checkpoints/``:

- ``stage{k}.safetensors`` — the model at the end of stage ``k`` (what stage ``k+1`` loads).
- ``last-<stage>-<step>.safetensors`` + ``last.json`` — the latest resumable state: model,
  optimizer, RNG states and position (stage, epoch, step in epoch, global step). The tensor
  file is written first under a new name, then ``last.json`` is replaced to point at it,
  then older ``last-*`` files are deleted: a run killed at any moment leaves a consistent
  pair.
"""
from __future__ import annotations

import glob
import json
import os
import random

import torch
from torch import Tensor

__all__ = ["save_tensors", "load_tensors", "atomic_write_json", "flatten_state",
           "unflatten_state", "rng_state", "set_rng_state", "CheckpointManager", "seed_everything"]


def atomic_write_json(path: str, obj) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file and ``os.replace``."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (torch.Tensor,)):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o)}")


def save_tensors(path: str, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` as safetensors via a temporary file and ``os.replace``."""
    from safetensors.torch import save_file

    tmp = f"{path}.tmp-{os.getpid()}"
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(flat, tmp, metadata=metadata)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_tensors(path: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file."""
    from safetensors import safe_open

    out = {}
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        for k in f.keys():
            out[k] = f.get_tensor(k)
    return out, meta


def flatten_state(obj, prefix: str, tensors: dict[str, Tensor]):
    """Replace the tensors of a nested dict/list (e.g. an optimizer state dict) with
    references ``{"__t__": name}``, collecting them in ``tensors``; returns the JSON-able
    skeleton."""
    if isinstance(obj, Tensor):
        tensors[prefix] = obj
        return {"__t__": prefix}
    if isinstance(obj, dict):
        return {"__d__": [[_key(k), flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _key(k):
    return {"int": k} if isinstance(k, int) else k


def unflatten_state(skel, tensors: dict[str, Tensor]):
    """Inverse of :func:`flatten_state`: the nested object with its tensors put back."""
    if isinstance(skel, dict) and "__t__" in skel:
        return tensors[skel["__t__"]]
    if isinstance(skel, dict) and "__d__" in skel:
        return {(k["int"] if isinstance(k, dict) else k): unflatten_state(v, tensors) for k, v in skel["__d__"]}
    if isinstance(skel, list):
        return [unflatten_state(v, tensors) for v in skel]
    return skel


def rng_state() -> dict[str, Tensor]:
    """The torch (and initialized CUDA) RNG states, as ``{"rng.torch": .., "rng.cuda.i": ..}``."""
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def set_rng_state(tensors: dict[str, Tensor]) -> None:
    """Restore RNG states saved by :func:`rng_state`."""
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


class CheckpointManager:
    """Saves and finds the checkpoints of one run directory."""

    def __init__(self, out_dir: str):
        self.dir = os.path.join(out_dir, "checkpoints")
        os.makedirs(self.dir, exist_ok=True)

    def stage_path(self, stage: int) -> str:
        """Path of the end-of-stage checkpoint of ``stage``."""
        return os.path.join(self.dir, f"stage{stage}.safetensors")

    def has_stage(self, stage: int) -> bool:
        """Whether ``stage`` has finished in this run directory."""
        return os.path.exists(self.stage_path(stage))

    def save_stage(self, stage: int, model_state: dict[str, Tensor], meta: dict | None = None) -> None:
        """Write the end-of-stage checkpoint (``meta``: string metadata stored with it)."""
        save_tensors(self.stage_path(stage), model_state, {"stage": str(stage), **(meta or {})})

    def load_stage(self, stage: int) -> dict[str, Tensor]:
        """The tensors of the end-of-stage checkpoint of ``stage``."""
        path = self.stage_path(stage)
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint of stage {stage} not found at {path}; run that stage first")
        return load_tensors(path)[0]

    def save_last(self, state: dict, model_state: dict[str, Tensor], optimizers: dict) -> None:
        """Write the resumable state: ``state`` (JSON: stage, epoch, step, ...), the model
        tensors, optimizer state dicts and RNG states."""
        tensors = {f"model.{k}": v for k, v in model_state.items()}
        skel = {name: flatten_state(opt.state_dict(), f"optim.{name}", tensors) for name, opt in optimizers.items()}
        tensors.update(rng_state())
        fname = f"last-{state['stage']}-{state['global_step']}.safetensors"
        save_tensors(os.path.join(self.dir, fname), tensors)
        atomic_write_json(os.path.join(self.dir, "last.json"), {**state, "tensors": fname, "optimizers": skel})
        for old in glob.glob(os.path.join(self.dir, "last-*.safetensors")):
            if os.path.basename(old) != fname:
                os.remove(old)

    def load_last(self) -> tuple[dict, dict[str, Tensor], dict] | None:
        """``(state, model_state, optimizer_state_dicts)`` or ``None`` when nothing to resume;
        ``state["rng"]`` holds the RNG tensors (apply with :func:`set_rng_state` when the
        interrupted stage restarts)."""
        path = os.path.join(self.dir, "last.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            state = json.load(f)
        tensors, _ = load_tensors(os.path.join(self.dir, state["tensors"]))
        state["rng"] = {k: v for k, v in tensors.items() if k.startswith("rng.")}
        model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        optim = {name: unflatten_state(s, tensors) for name, s in state.pop("optimizers").items()}
        return state, model, optim

    def stage_metadata(self, stage: int) -> dict[str, str]:
        """The metadata saved with the end-of-stage checkpoint of ``stage``."""
        return load_tensors(self.stage_path(stage))[1]

    def clear_last(self) -> None:
        """Remove the resumable state (the run finished, or starts afresh)."""
        for p in glob.glob(os.path.join(self.dir, "last*")):
            os.remove(p)


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's global generators."""
    random.seed(seed)
    torch.manual_seed(seed)
