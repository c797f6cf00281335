"""``python -m lmgnn_fast.evaluate RUN_DIR [--stage K] [--key value ...]``

Re-evaluates a saved run on top of the inference layer (:func:`lmgnn_fast.inference.load_run`,
no trainer, no process group): loads each stage's checkpoint with the LM rows it reads (the
rows the run stored, only changed texts encoded again) and reports validation/test metrics
under the same protocol as training (``lmgnn_fast.train.metrics``); without ``--stage``, also
the ensemble of stages 1 and 2 when that is the run's final model. Writes
``RUN_DIR/evaluation.json``. Errors are one line (``--debug`` shows the traceback; see
``lmgnn_fast.cli``).
"""
from __future__ import annotations

import json
import os
import sys


def evaluate_run(run_dir: str, stages: list[int] | None = None, overrides: list[str] | None = None,
                 graph=None) -> dict:
    """``{"stage{k}": {"val": {...}, "test": {...}}}`` for the stages with a checkpoint (and
    ``"ensemble"`` when no stages are named and the run's final model is the ensemble)."""
    from lmgnn_fast.inference import load_run
    from lmgnn_fast.inference.run import final_model_of
    from lmgnn_fast.train.checkpoint import atomic_write_json

    if not os.path.exists(os.path.join(run_dir, "config.yaml")):
        raise FileNotFoundError(f"{run_dir!r} is not a run directory (no config.yaml)")
    named = bool(stages)
    stages = stages or [s for s in (1, 2, 3) if os.path.exists(os.path.join(run_dir, "checkpoints",
                                                                             f"stage{s}.safetensors"))]
    out = {}
    for s in stages:
        run = load_run(run_dir, stage=s, graph=graph, overrides=overrides, log=lambda *a: None)
        graph = run.graph  # loaded once
        out[f"stage{s}"] = run.evaluate()
    if not named and os.path.exists(os.path.join(run_dir, "metrics.json")) and final_model_of(run_dir)[1] is not None:
        out["ensemble"] = load_run(run_dir, graph=graph, overrides=overrides, log=lambda *a: None).evaluate()
    atomic_write_json(os.path.join(run_dir, "evaluation.json"), out)
    return out


def main(argv: list[str] | None = None) -> int:
    from lmgnn_fast.cli import run_cli
    from lmgnn_fast.inference import PredictError
    from lmgnn_fast.lm.model import LMLoadError
    from lmgnn_fast.train.config import ConfigError
    from lmgnn_fast.train.errors import DataError, TrainingError

    return run_cli(_main, argv, user_errors=(ConfigError, DataError, TrainingError, LMLoadError, PredictError))


def _main(argv: list[str]) -> int:
    from lmgnn_fast.cli import UsageError

    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    run_dir, rest = argv[0], argv[1:]
    stages = None
    if "--stage" in rest:
        i = rest.index("--stage")
        value = rest[i + 1] if i + 1 < len(rest) else ""
        try:
            stages = [int(x) for x in value.split(",")]
        except ValueError:
            raise UsageError(f"--stage must be a comma-separated list of 1, 2, 3, got {value!r}") from None
        if any(s not in (1, 2, 3) for s in stages):
            raise UsageError(f"--stage must be a comma-separated list of 1, 2, 3, got {value!r}")
        del rest[i:i + 2]
    res = evaluate_run(run_dir, stages, rest)
    metrics = os.path.join(run_dir, "metrics.json")
    trained = {}
    if os.path.exists(metrics):
        with open(metrics) as f:
            m = json.load(f)
        trained = {**m.get("stages", {}), **({"ensemble": m["ensemble"]} if "ensemble" in m else {})}
    for stage, r in res.items():
        for split in ("val", "test"):
            got = r.get(split, {})
            ref = (trained.get(stage) or {}).get(split, {})
            line = ", ".join(f"{k} {v:.4f}" + (f" (trained {ref[k]:.4f})" if k in ref else "") for k, v in got.items())
            print(f"{stage} {split}: {line or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
