"""Checkpoints: safetensors for tensors, JSON for the trainer state, both written atomically.

Layout under ``<out_dir>/checkpoints/``:

- ``stage{k}.safetensors`` — the model at the end of stage ``k`` (what stage ``k+1`` loads).
- ``last-<stage>-<step>.safetensors`` + ``last.json`` — the latest resumable state: model,
  optimizer, RNG states and position (stage, epoch, step in epoch, global step). The tensor
  file is written first under a new name, then the previous ``last.json`` becomes
  ``prev.json``, then a new ``last.json`` is written to point at the new file, and only
  then are the ``last-*`` files neither of them names deleted: two generations are kept,
  so a run killed at any moment, or a damaged newest checkpoint (truncated or missing
  tensor file, garbled ``last.json``), still leaves a consistent one to resume from.
- ``*.tmp-<pid>`` — files being written (and ``.tmpXXXXXX``, the temporary file safetensors
  itself writes first); ones left by a killed run, here and in the token cache
  ``<out_dir>/tokens/``, are removed when the next run starts.

Every tensor file carries a checksum of its tensors (names, dtypes, shapes and bytes;
BLAKE2b in the safetensors metadata, key ``checksum``), verified whenever it is loaded: a
file whose bytes were overwritten is refused like a truncated one (resume falls back to
the previous generation, or reruns a finished stage whose checkpoint is damaged).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import sys

import torch
from torch import Tensor

from lmgnn_fast.train.errors import CheckpointError

__all__ = ["save_tensors", "load_tensors", "tensors_checksum", "atomic_write_json", "flatten_state",
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


CHECKSUM_KEY = "checksum"
_CHECKSUM_ALGO = "blake2b-128"


def tensors_checksum(tensors: dict[str, Tensor]) -> str:
    """``"blake2b-128:<hex>"`` over the names, dtypes, shapes and bytes of ``tensors`` (CPU,
    in name order): what :func:`save_tensors` stores and :func:`load_tensors` verifies."""
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(tensors):
        t = tensors[k].detach().to("cpu").contiguous()
        h.update(f"{k}\0{t.dtype}\0{list(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return f"{_CHECKSUM_ALGO}:{h.hexdigest()}"


def save_tensors(path: str, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` as safetensors via a temporary file and ``os.replace``,
    with their checksum in the metadata (key ``checksum``)."""
    from safetensors.torch import save_file

    tmp = f"{path}.tmp-{os.getpid()}"
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(flat, tmp, metadata={**(metadata or {}), CHECKSUM_KEY: tensors_checksum(flat)})
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_tensors(path: str, verify: bool = True) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file.

    Args:
        path: the file.
        verify: check the tensors against the checksum stored by :func:`save_tensors`
            (files written without one load unchecked).

    Raises:
        CheckpointError: the file cannot be parsed (truncated, garbled header) or its
            tensors do not match their checksum; the message names the file.
    """
    from safetensors import safe_open

    name = os.path.basename(path)
    out = {}
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                out[k] = f.get_tensor(k)
    except (OSError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - safetensors' errors: the file is not a valid one
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{name} is damaged: cannot be read as safetensors ({first})") from None
    want = meta.get(CHECKSUM_KEY)
    if verify and want is not None and tensors_checksum(out) != want:
        raise CheckpointError(f"{name} is damaged: its tensors do not match the checksum written with them")
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
    """Saves and finds the checkpoints of one run directory.

    Args:
        out_dir: the run directory (checkpoints go to its ``checkpoints/`` folder).
        log: where a one-line notice goes when ``load_last`` skips a damaged checkpoint
            (default: standard error).
        clean: remove the temporary files a killed run left in the folder.
    """

    def __init__(self, out_dir: str, log=None, clean: bool = True):
        self.dir = os.path.join(out_dir, "checkpoints")
        self.tokens_dir = os.path.join(out_dir, "tokens")
        self.log = log or (lambda *a: print(*a, file=sys.stderr, flush=True))
        os.makedirs(self.dir, exist_ok=True)
        if clean:
            self.remove_orphans()

    def remove_orphans(self) -> list[str]:
        """Delete the temporary files of writes that never finished (``*.tmp-<pid>``, and
        safetensors' own ``.tmpXXXXXX``) in ``checkpoints/`` and the token cache ``tokens/``;
        returns their names."""
        gone = []
        found = [p for d in (self.dir, self.tokens_dir) for pat in ("*.tmp-*", ".tmp*")
                 for p in glob.glob(os.path.join(d, pat))]
        for p in found:
            if not os.path.isfile(p):
                continue
            try:
                os.remove(p)
                gone.append(os.path.basename(p))
            except FileNotFoundError:
                pass
        return gone

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
        """The tensors of the end-of-stage checkpoint of ``stage``.

        Raises:
            FileNotFoundError: the stage has not finished in this run directory.
            CheckpointError: the file is damaged (the message says to rerun the stage).
        """
        path = self.stage_path(stage)
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint of stage {stage} not found at {path}; run that stage first")
        try:
            return load_tensors(path)[0]
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint of stage {stage}: {e}; run stage {stage} again "
                                  f"(--run.stages {stage} ... --run.resume)") from None

    def stage_problem(self, stage: int) -> str | None:
        """``None`` when the end-of-stage checkpoint of ``stage`` loads and matches its
        checksum, else why not (one line naming the file)."""
        path = self.stage_path(stage)
        if not os.path.exists(path):
            return f"{os.path.basename(path)} is missing"
        try:
            load_tensors(path)
        except (CheckpointError, OSError) as e:
            return str(e).splitlines()[0] if str(e) else type(e).__name__
        return None

    def save_last(self, state: dict, model_state: dict[str, Tensor], optimizers: dict) -> None:
        """Write the resumable state: ``state`` (JSON: stage, epoch, step, ...), the model
        tensors, optimizer state dicts and RNG states."""
        tensors = {f"model.{k}": v for k, v in model_state.items()}
        skel = {name: flatten_state(opt.state_dict(), f"optim.{name}", tensors) for name, opt in optimizers.items()}
        tensors.update(rng_state())
        fname = f"last-{state['stage']}-{state['global_step']}.safetensors"
        save_tensors(os.path.join(self.dir, fname), tensors)
        last, prev = os.path.join(self.dir, "last.json"), os.path.join(self.dir, "prev.json")
        if _read_json(last) is not None:  # keep the previous generation until the new one is there
            os.replace(last, prev)
        atomic_write_json(last, {**state, "tensors": fname, "optimizers": skel})
        keep = {fname, (_read_json(prev) or {}).get("tensors")}
        for old in glob.glob(os.path.join(self.dir, "last-*.safetensors")):
            if os.path.basename(old) not in keep:
                os.remove(old)

    def load_last(self) -> tuple[dict, dict[str, Tensor], dict] | None:
        """``(state, model_state, optimizer_state_dicts)`` or ``None`` when nothing to resume;
        ``state["rng"]`` holds the RNG tensors (apply with :func:`set_rng_state` when the
        interrupted stage restarts).

        The newest checkpoint is tried first; when it is damaged (``last.json`` unreadable,
        its tensor file missing, truncated or failing its checksum) the previous generation is used, unless its
        stage has already finished, with a one-line notice; when neither is usable the
        result is ``None`` (the interrupted stage starts over)."""
        tried = []
        for name in ("last.json", "prev.json"):
            path = os.path.join(self.dir, name)
            if not os.path.exists(path):
                continue
            try:
                state, model, optim = self._load_generation(path)
            except Exception as e:  # noqa: BLE001 - any damage means: try the older one
                tried.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                continue
            if tried and self.has_stage(int(state["stage"])):
                break  # the older generation belongs to a finished stage: nothing to resume
            if tried:
                self.log(f"resume: newest checkpoint unusable ({tried[0]}); falling back to the "
                         f"previous one (stage {state['stage']}, global step {state['global_step']})")
            return state, model, optim
        if tried:
            self.log(f"resume: no usable checkpoint ({'; '.join(tried)}); "
                     "the interrupted stage starts over")
        return None

    def _load_generation(self, path: str) -> tuple[dict, dict[str, Tensor], dict]:
        with open(path) as f:
            state = json.load(f)
        if not isinstance(state, dict) or not isinstance(state.get("tensors"), str):
            raise ValueError("not a checkpoint description")
        tpath = os.path.join(self.dir, os.path.basename(state["tensors"]))
        if not os.path.exists(tpath):
            raise FileNotFoundError(f"{os.path.basename(tpath)} is missing")
        tensors, _ = load_tensors(tpath)
        state["rng"] = {k: v for k, v in tensors.items() if k.startswith("rng.")}
        model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        optim = {name: unflatten_state(s, tensors) for name, s in state.pop("optimizers").items()}
        for key in ("stage", "epoch", "step", "global_step"):
            int(state[key])
        return state, model, optim

    def stage_metadata(self, stage: int) -> dict[str, str]:
        """The metadata saved with the end-of-stage checkpoint of ``stage``."""
        from safetensors import safe_open

        try:
            with safe_open(self.stage_path(stage), framework="pt") as f:
                return f.metadata() or {}
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - safetensors' errors: the file is not a valid one
            raise CheckpointError(f"checkpoint of stage {stage}: {os.path.basename(self.stage_path(stage))} is "
                                  f"damaged: cannot be read as safetensors; run stage {stage} again") from e

    def clear_last(self) -> None:
        """Remove the resumable state (the run finished, or starts afresh)."""
        for p in glob.glob(os.path.join(self.dir, "last*")) + glob.glob(os.path.join(self.dir, "prev.json")):
            os.remove(p)


def _read_json(path: str):
    """The JSON content of ``path``, or ``None`` when it is absent or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's global generators."""
    random.seed(seed)
    torch.manual_seed(seed)
