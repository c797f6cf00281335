"""Resume when the newest checkpoint is damaged: the previous generation, else the stage's start."""
from __future__ import annotations

import json
import os

import pytest

from lmgnn_fast.train import Trainer
from lmgnn_fast.train.errors import SimulatedInterrupt
from test_train import quiet, small_config, toy  # noqa: F401 - the toy fixture

OVER = {"task.name": "topic", "run.stages": "1,2", "stage2.epochs": 3, "stage2.batch_size": 8,
        "run.checkpoint_every": 2, "run.checkpoint_every_s": 0}


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory):  # noqa: F811
    return Trainer(small_config(toy, str(tmp_path_factory.mktemp("ref")), **OVER), log=quiet).run()


def interrupted(toy, out):  # noqa: F811
    # stage 1: steps 1-2; stage 2 (4 batches/epoch): checkpoints at steps 4, 6 (end of epoch 1), 8
    with pytest.raises(SimulatedInterrupt):
        Trainer(small_config(toy, out, **OVER, **{"run.interrupt_after_steps": 9}), log=quiet).run()
    ck = os.path.join(out, "checkpoints")
    last = json.load(open(os.path.join(ck, "last.json")))
    prev = json.load(open(os.path.join(ck, "prev.json")))
    assert (last["stage"], last["global_step"]) == (2, 8) and (prev["stage"], prev["global_step"]) == (2, 6)
    names = sorted(f for f in os.listdir(ck) if f.startswith("last-"))
    assert names == sorted([last["tensors"], prev["tensors"]])  # two generations, older ones removed
    return ck, last, prev


def resume(toy, out):  # noqa: F811
    lines = []
    cfg = small_config(toy, out, **OVER, **{"run.resume": "true"})
    res = Trainer(cfg, log=lambda *a: lines.append(" ".join(map(str, a)))).run()
    return res, lines


@pytest.mark.parametrize("damage", ["truncate", "delete", "garble_json"])
def test_damaged_last_checkpoint_falls_back_to_the_previous(toy, tmp_path, reference, damage):  # noqa: F811
    out = str(tmp_path / "run")
    ck, last, prev = interrupted(toy, out)
    tfile = os.path.join(ck, last["tensors"])
    if damage == "truncate":
        size = os.path.getsize(tfile)
        with open(tfile, "r+b") as f:
            f.truncate(size // 2)
    elif damage == "delete":
        os.remove(tfile)
    else:
        with open(os.path.join(ck, "last.json"), "w") as f:
            f.write('{"stage": 2, "tens')
    orphan = os.path.join(ck, "last-2-10.safetensors.tmp-12345")
    open(orphan, "wb").write(b"\0" * 100)

    res, lines = resume(toy, out)
    assert not os.path.exists(orphan)
    notes = [x for x in lines if "falling back" in x]
    assert len(notes) == 1 and "global step 6" in notes[0], lines
    assert any("resuming at epoch" in x for x in lines)
    assert res["stage2"]["val"] == pytest.approx(reference["stage2"]["val"], abs=1e-6)
    assert res["stage2"]["test"] == pytest.approx(reference["stage2"]["test"], abs=1e-6)
    assert not [f for f in os.listdir(ck) if f.startswith(("last", "prev"))]


def test_no_usable_checkpoint_restarts_the_stage(toy, tmp_path):  # noqa: F811
    out = str(tmp_path / "run")
    ck, last, prev = interrupted(toy, out)
    os.remove(os.path.join(ck, last["tensors"]))
    with open(os.path.join(ck, prev["tensors"]), "r+b") as f:
        f.truncate(10)
    res, lines = resume(toy, out)
    notes = [x for x in lines if "no usable checkpoint" in x]
    assert len(notes) == 1 and "starts over" in notes[0] and "\n" not in notes[0], lines
    assert not any("resuming at epoch" in x for x in lines)
    assert any("already done" in x for x in lines)  # stage 1 is not redone
    assert res["stage2"]["test"] and all(0.0 <= v <= 1.0 for v in res["stage2"]["test"].values())
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["stages"]["stage2"]["test"] == pytest.approx(res["stage2"]["test"])
