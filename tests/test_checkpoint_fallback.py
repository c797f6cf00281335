"""Resume when the newest checkpoint is damaged: the previous generation, else the stage's start."""
from __future__ import annotations

import json
import os
import struct

import pytest

from conftest import quiet, small_config
from lmgnn_fast.train import Trainer
from lmgnn_fast.train.errors import SimulatedInterrupt

OVER = {"task.name": "topic", "run.stages": "1,2", "stage2.epochs": 3, "stage2.batch_size": 8,
        "run.checkpoint_every": 2, "run.checkpoint_every_s": 0}


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory):
    return Trainer(small_config(toy, str(tmp_path_factory.mktemp("ref")), **OVER), log=quiet).run()


def interrupted(toy, out):
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


def resume(toy, out):
    lines = []
    cfg = small_config(toy, out, **OVER, **{"run.resume": "true"})
    res = Trainer(cfg, log=lambda *a: lines.append(" ".join(map(str, a)))).run()
    return res, lines


def overwrite_tensor_bytes(path: str, count: int = 64) -> None:
    """Flip ``count`` bytes in the middle of the tensor data of a safetensors file, leaving
    its header (and so its size and layout) intact."""
    with open(path, "r+b") as f:
        header = struct.unpack("<Q", f.read(8))[0]
        start = 8 + header
        size = os.path.getsize(path)
        at = start + (size - start) // 2
        f.seek(at)
        data = f.read(count)
        f.seek(at)
        f.write(bytes(b ^ 0xFF for b in data))


@pytest.mark.parametrize("damage", ["truncate", "delete", "garble_json", "overwrite"])
def test_damaged_last_checkpoint_falls_back_to_the_previous(toy, tmp_path, reference, damage):
    out = str(tmp_path / "run")
    ck, last, prev = interrupted(toy, out)
    tfile = os.path.join(ck, last["tensors"])
    if damage == "truncate":
        size = os.path.getsize(tfile)
        with open(tfile, "r+b") as f:
            f.truncate(size // 2)
    elif damage == "delete":
        os.remove(tfile)
    elif damage == "overwrite":  # same size, same header: only the checksum tells
        overwrite_tensor_bytes(tfile)
    else:
        with open(os.path.join(ck, "last.json"), "w") as f:
            f.write('{"stage": 2, "tens')
    orphans = [os.path.join(ck, "last-2-10.safetensors.tmp-12345"),
               os.path.join(ck, ".tmpA1b2C3"),  # safetensors' own temporary file, killed mid-write
               os.path.join(out, "tokens", ".tmpZz9Yy8")]
    for orphan in orphans:
        open(orphan, "wb").write(b"\0" * 100)

    res, lines = resume(toy, out)
    assert not [p for p in orphans if os.path.exists(p)]
    notes = [x for x in lines if "falling back" in x]
    assert len(notes) == 1 and "global step 6" in notes[0], lines
    if damage == "overwrite":
        assert f"{last['tensors']} is damaged: its tensors do not match the checksum" in notes[0], notes
    assert any("resuming at epoch" in x for x in lines)
    assert res["stage2"]["val"] == pytest.approx(reference["stage2"]["val"], abs=1e-6)
    assert res["stage2"]["test"] == pytest.approx(reference["stage2"]["test"], abs=1e-6)
    assert not [f for f in os.listdir(ck) if f.startswith(("last", "prev"))]


def test_no_usable_checkpoint_restarts_the_stage(toy, tmp_path):
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


def test_checksum_refuses_overwritten_bytes(tmp_path):
    import torch

    from lmgnn_fast.train.checkpoint import CheckpointManager, load_tensors, save_tensors
    from lmgnn_fast.train.errors import CheckpointError

    path = str(tmp_path / "x.safetensors")
    save_tensors(path, {"w": torch.randn(64, 64), "b": torch.zeros(3, dtype=torch.bfloat16)}, {"k": "v"})
    t, meta = load_tensors(path)
    assert meta["k"] == "v" and meta["checksum"].startswith("blake2b-128:")
    overwrite_tensor_bytes(path, 8)
    with pytest.raises(CheckpointError, match=r"^x.safetensors is damaged: its tensors do not match the checksum"):
        load_tensors(path)
    assert load_tensors(path, verify=False)[0]["w"].shape == (64, 64)

    cm = CheckpointManager(str(tmp_path / "run"))
    cm.save_stage(1, {"lm.w": torch.ones(128)})
    assert cm.stage_problem(1) is None and cm.stage_problem(2) == "stage2.safetensors is missing"
    overwrite_tensor_bytes(cm.stage_path(1), 4)
    assert cm.stage_problem(1).startswith("stage1.safetensors is damaged: its tensors do not match")
    with pytest.raises(CheckpointError, match=r"checkpoint of stage 1: stage1.safetensors is damaged: .*"
                                              r"run stage 1 again"):
        cm.load_stage(1)
    with open(cm.stage_path(1), "r+b") as f:
        f.truncate(40)
    assert "cannot be read as safetensors" in cm.stage_problem(1)
    with pytest.raises(CheckpointError, match="stage1.safetensors is damaged: cannot be read as safetensors"):
        cm.stage_metadata(1)


def test_truncated_stage_checkpoint_on_resume_reruns_the_stage(toy, tmp_path, reference, capsys):
    """A finished stage whose checkpoint was cut short: evaluate says so in one line (exit 2),
    --resume runs that stage again instead of failing in the next one."""
    from lmgnn_fast.evaluate import main as evaluate_main
    from lmgnn_fast.train.checkpoint import load_tensors

    out = str(tmp_path / "run")
    ck, last, prev = interrupted(toy, out)
    stage1 = os.path.join(ck, "stage1.safetensors")
    with open(stage1, "r+b") as f:
        f.truncate(os.path.getsize(stage1) // 2)
    assert evaluate_main([out, "--stage", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint of stage 1: stage1.safetensors is damaged") and "\n" not in err, err

    res, lines = resume(toy, out)
    notes = [x for x in lines if "runs again" in x]
    assert len(notes) == 1 and "the checkpoint of stage 1 is unusable (stage1.safetensors is damaged" in notes[0]
    assert not any("stage 1: already done" in x for x in lines)
    load_tensors(stage1)  # written again, intact
    assert res["stage1"] and res["stage2"]["test"] == pytest.approx(reference["stage2"]["test"], abs=1e-6)
