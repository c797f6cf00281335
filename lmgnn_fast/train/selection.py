"""Which stage's model is the run's result: the best on validation, unless the user names one.

Every stage keeps its best-validation weights; the run hands over the stage whose validation
value of the task's primary metric is highest (a later stage wins a tie, since it saw more
training), so the pipeline is never worse on validation than one of its earlier stages.
Test values never take part in the choice.
"""
from __future__ import annotations

import math

__all__ = ["select_stage"]


def select_stage(results: dict, metric: str, requested: str = "best") -> int | None:
    """The stage whose model is the run's final model.

    Args:
        results: ``{"stage{k}": {"val": {metric: value, ...}, ...}}`` of the stages that ran.
        metric: the task's primary metric (higher is better).
        requested: ``"best"`` (highest validation ``metric``) or a stage number (``"2"``)
            that must be among ``results``.

    Returns:
        The chosen stage number, or ``None`` when no stage reports ``metric``.

    Raises:
        ValueError: ``requested`` names a stage that did not run.
    """
    stages = sorted(int(k[len("stage"):]) for k in results if k.startswith("stage"))
    if requested != "best":
        k = int(requested)
        if k not in stages:
            raise ValueError(f"run.final_stage is {k} but only stages {stages} ran")
        return k
    best, best_val = None, -math.inf
    for k in stages:
        v = ((results[f"stage{k}"] or {}).get("val") or {}).get(metric)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if v >= best_val:
            best, best_val = k, v
    return best
