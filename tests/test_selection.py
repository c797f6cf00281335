"""The final-model rule, the results table's empty cells and the ``auto`` budgets."""
from __future__ import annotations

import pytest

from lmgnn_fast.train.budget import CPU_STAGE1_TEXTS, resolve_auto, stage2_batch_size
from lmgnn_fast.train.config import Config, ConfigError, apply_overrides
from lmgnn_fast.train.data import TargetTask
from lmgnn_fast.train.runner import format_table
from lmgnn_fast.train.selection import select_stage


def res(**vals):
    return {f"stage{k[1:]}": {"val": ({"accuracy": v} if v is not None else {}), "test": {}} for k, v in vals.items()}


def test_best_validation_wins_and_later_stage_wins_a_tie():
    assert select_stage(res(s1=0.7, s2=0.9, s3=0.8), "accuracy") == 2
    assert select_stage(res(s1=0.9, s2=0.8, s3=0.85), "accuracy") == 1
    assert select_stage(res(s1=0.8, s2=0.9, s3=0.9), "accuracy") == 3


def test_stages_without_the_metric_are_not_chosen():
    assert select_stage(res(s1=None, s2=0.5), "accuracy") == 2
    assert select_stage(res(s1=None), "accuracy") is None
    r = res(s1=0.99, s2=0.5)
    r["stage1"]["val"] = {"accuracy": float("nan")}
    assert select_stage(r, "accuracy") == 2


def test_test_values_never_take_part():
    r = res(s1=0.7, s2=0.8)
    r["stage1"]["test"] = {"accuracy": 1.0}
    r["stage2"]["test"] = {"accuracy": 0.0}
    assert select_stage(r, "accuracy") == 2


def test_a_requested_stage_is_taken_as_is():
    assert select_stage(res(s1=0.9, s2=0.1), "accuracy", "2") == 2
    with pytest.raises(ValueError, match="run.final_stage is 3 but only stages \\[1, 2\\] ran"):
        select_stage(res(s1=0.9, s2=0.1), "accuracy", "3")


def test_table_prints_dash_for_missing_metrics_and_marks_the_final_stage():
    task = TargetTask(name="t", type="node_classification", node_type="n", num_classes=3)
    results = {"stage1": {"val": {}, "test": {}, "time_s": 1.0},
               "stage2": {"val": {"accuracy": 0.5}, "test": {"accuracy": 0.25}, "time_s": 2.0}}
    out = format_table(results, task, final_stage=2)
    assert "| stage1 | val | - | 1.0 |" in out and "| stage1 | test | - | 1.0 |" in out
    assert "| stage2 * | test | 0.2500 | 2.0 |" in out
    assert "final model (predictions, embeddings): stage 2" in out


def test_final_stage_must_be_one_that_runs():
    cfg = apply_overrides(Config(), ["--run.stages", "1,2", "--run.final_stage", "3"])
    with pytest.raises(ConfigError, match="run.final_stage is 3 but run.stages is '1,2'"):
        cfg.validate()
    with pytest.raises(ConfigError, match="run.final_stage must be one of 'best', '1', '2', '3'"):
        apply_overrides(Config(), ["--run.final_stage", "last"]).validate()
    with pytest.raises(ConfigError, match="stage1.objective must be one of 'task', 'task\\+graph', 'graph'"):
        apply_overrides(Config(), ["--stage1.objective", "lp"]).validate()


@pytest.mark.parametrize("n,expected", [(0, 16), (300, 16), (670, 32), (1300, 64), (2560, 128), (10**6, 128)])
def test_stage2_batch_size_gives_about_20_steps_an_epoch(n, expected):
    assert stage2_batch_size(n) == expected


def test_auto_values_follow_the_device_and_keep_explicit_ones():
    cfg = Config()
    lines = resolve_auto(cfg, 670, "cpu")
    assert cfg.stage1.max_items == CPU_STAGE1_TEXTS and cfg.stage2.batch_size == 32 and len(lines) == 2
    # the CPU budget counts LM texts: two endpoints per edge, plus the batch's negatives for LP
    cfg = Config()
    resolve_auto(cfg, 670, "cpu", "edge_classification")
    assert cfg.stage1.max_items == CPU_STAGE1_TEXTS // 2
    cfg = apply_overrides(Config(), ["--stage1.num_negatives", "16", "--stage1.batch_size", "16"])
    resolve_auto(cfg, 670, "cpu", "link_prediction")
    assert cfg.stage1.max_items == CPU_STAGE1_TEXTS // 3
    cfg = Config()
    resolve_auto(cfg, 670, "cuda")
    assert cfg.stage1.max_items == 0
    cfg = apply_overrides(Config(), ["--stage2.batch_size", "8", "--stage1.max_items", "100"])
    assert resolve_auto(cfg, 670, "cpu") == [] and (cfg.stage1.max_items, cfg.stage2.batch_size) == (100, 8)
    cfg.validate()


def test_table_marks_the_ensemble_when_it_is_the_final_model():
    task = TargetTask(name="t", type="node_classification", node_type="n", num_classes=3)
    results = {"stage1": {"val": {"accuracy": 0.5}, "test": {"accuracy": 0.4}},
               "stage2": {"val": {"accuracy": 0.6}, "test": {"accuracy": 0.5}}}
    ens = {"val": {"accuracy": 0.7}, "test": {"accuracy": 0.55}, "chosen": True, "weight": 0.35}
    out = format_table(results, task, 2, ens)
    lines = out.splitlines()
    assert lines.index("| ensemble * | test | 0.5500 | - |") > lines.index("| stage2 | test | 0.5000 | - |")
    assert "final model: the ensemble of stages 1 and 2 (LM weight 0.35" in out
    out = format_table(results, task, 2, {**ens, "chosen": False})
    assert "| stage2 * | val | 0.6000 | - |" in out and "| ensemble | val | 0.7000 | - |" in out
