"""The ensemble of stages 1 and 2: the mixture's arithmetic, the choice of its weight on
validation, and a run whose final model is the ensemble (outputs, loading, evaluation)."""
from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
import torch

from conftest import quiet, small_config
from lmgnn_fast.inference import load_run
from lmgnn_fast.inference.ensemble import EnsembleTaskModel
from lmgnn_fast.train import Trainer, runner
from lmgnn_fast.train.ensemble import Ensemble, choose_ensemble, score_calibration
from lmgnn_fast.train.metrics import ranks_from_scores


def test_softmax_mixture_is_the_mean_of_probabilities():
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    out = Ensemble("softmax", 0.25).mix(a, b)
    want = 0.25 * a.softmax(-1) + 0.75 * b.softmax(-1)
    torch.testing.assert_close(out.softmax(-1), want)
    torch.testing.assert_close(out.exp(), want)
    assert torch.equal(Ensemble("softmax", 1.0).mix(a, b).argmax(-1), a.argmax(-1))


def test_sigmoid_mixture_and_calibrated_scores():
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    out = Ensemble("sigmoid", 0.5).mix(a, b)
    torch.testing.assert_close(torch.sigmoid(out), 0.5 * torch.sigmoid(a) + 0.5 * torch.sigmoid(b))
    ens = Ensemble("scores", 0.3, (1, 2), [(1.0, 2.0), (-3.0, 0.5)])
    torch.testing.assert_close(ens.mix(a, b), 0.3 * (a - 1.0) / 2.0 + 0.7 * (b + 3.0) / 0.5)
    with pytest.raises(ValueError, match="differ in shape"):
        ens.mix(a, b[:2])


def test_calibration_counts_positives_and_valid_candidates_only():
    out = {"score": torch.tensor([1.0, 3.0]), "neg_score": torch.tensor([[5.0, 100.0], [1.0, 2.0]]),
           "valid": torch.tensor([[True, False], [True, True]])}
    mean, std = score_calibration(out)
    vals = torch.tensor([1.0, 3.0, 5.0, 1.0, 2.0], dtype=torch.float64)
    assert mean == pytest.approx(float(vals.mean())) and std == pytest.approx(float(vals.std()))


def test_the_weight_is_chosen_on_validation_and_the_mixture_can_beat_both():
    # member a is sure and right on items 0-1 and unsure and wrong on 2-3; b the other way round
    y = torch.tensor([0, 1, 0, 1])
    a = torch.tensor([[4.0, -4.0], [-4.0, 4.0], [0.0, 0.2], [0.2, 0.0]])
    b = torch.tensor([[0.0, 0.2], [0.2, 0.0], [4.0, -4.0], [-4.0, 4.0]])
    ids = torch.arange(4)
    va, vb = {"ids": ids, "logits": a}, {"ids": ids, "logits": b}
    ens, m = choose_ensemble("softmax", va, vb, "accuracy", y)
    assert m["accuracy"] == 1.0 and ens.weight == 0.2  # every weight gets 1.0 here: the smallest wins a tie
    single = [Ensemble("softmax", w).metrics(Ensemble("softmax", w).mix_outputs(va, vb), y)["accuracy"]
              for w in (1.0, 0.0)]
    assert single == [0.5, 0.5]
    with pytest.raises(ValueError, match="different items"):
        ens.mix_outputs(va, {"ids": ids.flip(0), "logits": b})


def test_link_prediction_mixture_reranks():
    src, dst = torch.arange(3), torch.arange(3)
    valid = torch.ones(3, 2, dtype=torch.bool)
    a = {"src": src, "dst": dst, "score": torch.tensor([1.0, 0.0, 2.0]),
         "neg_score": torch.tensor([[0.0, 3.0], [1.0, 1.0], [0.0, 0.0]]), "valid": valid}
    b = {"src": src, "dst": dst, "score": torch.tensor([5.0, 5.0, -1.0]),
         "neg_score": torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), "valid": valid}
    ens = Ensemble("scores", 0.5, (1, 2), [score_calibration(a), score_calibration(b)])
    out = ens.mix_outputs(a, b)
    assert torch.equal(out["rank"], ranks_from_scores(out["score"], out["neg_score"], valid))
    assert out["rank"].tolist() != ranks_from_scores(a["score"], a["neg_score"], valid).tolist()


def test_ensemble_entries_round_trip_and_bad_ones_are_named():
    ens = Ensemble("scores", 0.65, (1, 2), [(0.5, 2.0), (1.0, 3.0)])
    assert Ensemble.from_dict(json.loads(json.dumps(ens.to_dict()))) == ens
    with pytest.raises(ValueError, match="malformed"):
        Ensemble.from_dict({"weight": 0.5})
    with pytest.raises(ValueError, match="calibration must be two"):
        Ensemble.from_dict({"kind": "scores", "weight": 0.5, "calibration": [[0, 1], [0, 0]]})
    with pytest.raises(ValueError, match="weight must be in"):
        Ensemble("softmax", 1.5)


def _force_choice(monkeypatch):
    """Make the runner take the ensemble whatever its validation value (the mixture itself,
    and its test metrics, stay the real ones)."""
    real = runner.choose_ensemble

    def choose(*args, **kwargs):
        ens, val = real(*args, **kwargs)
        return ens, {k: v + 10.0 for k, v in val.items()}
    monkeypatch.setattr(runner, "choose_ensemble", choose)


@pytest.mark.parametrize("task", ["topic", "cites"])
def test_a_run_whose_final_model_is_the_ensemble(toy, tmp_path, monkeypatch, task):
    from lmgnn_fast.evaluate import evaluate_run

    _force_choice(monkeypatch)
    out = str(tmp_path / "run")
    tr = Trainer(small_config(toy, out, **{"task.name": task, "run.stages": "1,2", "gnn.fanouts": "[-1, -1]"}),
                 log=quiet)
    tr.run()
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["final_model"] == "ensemble" and m["final_stage"] == 2 and m["ensemble"]["chosen"]
    ens = m["ensemble"]
    assert ens["members"] == [1, 2] and ens["weight"] in (0.2, 0.35, 0.5, 0.65, 0.8)
    assert ens["kind"] == ("scores" if task == "cites" else "softmax")
    # the predictions are the mixture's: their test metric is the ensemble's
    pred = pq.read_table(os.path.join(out, "predictions.parquet")).to_pydict()
    test = [i for i, s in enumerate(pred["split"]) if s == "test"]
    if task == "cites":
        mrr = sum(1.0 / pred["rank"][i] for i in test) / len(test)
        assert mrr == pytest.approx(ens["test"]["mrr"], abs=1e-6)
    else:
        acc = sum(pred["pred"][i] == pred["label"][i] for i in test) / len(test)
        assert acc == pytest.approx(ens["test"]["accuracy"], abs=1e-6)
    # loading the run answers with the ensemble, and reproduces its metrics
    run = load_run(out, log=quiet)
    assert isinstance(run.model, EnsembleTaskModel) and run.metadata()["final_model"] == "ensemble"
    again = run.evaluate(("test",))["test"]
    assert again == pytest.approx(ens["test"], abs=1e-5)
    assert evaluate_run(out)["ensemble"]["test"] == pytest.approx(ens["test"], abs=1e-5)
    # its embeddings are stage 2's rows, as the run wrote them
    emb = pq.read_table(os.path.join(out, "embeddings", "paper.parquet")).to_pydict()
    rows = run.embed({"paper": emb["id"][:3]})["paper"]
    torch.testing.assert_close(rows, torch.tensor(emb["embedding"][:3]), atol=1e-4, rtol=1e-4)
    assert rows.shape[1] == tr.cfg.gnn.hidden
    if task == "topic":
        got = run.predict_known("paper", [pred["id"][i] for i in test[:4]])
        assert got.columns()["pred"] == [pred["pred"][i] for i in test[:4]]
    else:
        res = run.score_pairs([pred["src"][i] for i in test[:4]], [pred["dst"][i] for i in test[:4]])
        torch.testing.assert_close(res.score, torch.tensor([pred["score"][i] for i in test[:4]]), atol=1e-4,
                                   rtol=1e-4)
        assert len(run.top_k([pred["src"][test[0]]], k=3).dst[0]) == 3
    # a named stage is that stage alone
    assert not isinstance(load_run(out, stage=2, log=quiet).model, EnsembleTaskModel)


def test_the_ensemble_is_not_taken_unless_it_beats_every_stage_on_validation(toy, tmp_path):
    out = str(tmp_path / "run")
    tr = Trainer(small_config(toy, out, **{"run.stages": "1,2"}), log=quiet)
    tr.run()
    m = json.load(open(os.path.join(out, "metrics.json")))
    ens = m["ensemble"]
    best = max(m["stages"][s]["val"]["accuracy"] for s in ("stage1", "stage2"))
    assert ens["chosen"] == (ens["val"]["accuracy"] > best)
    assert (m["final_model"] == "ensemble") == ens["chosen"]
    # off, or with a named final stage, no ensemble is tried
    for over in ({"run.ensemble": "false"}, {"run.final_stage": "2"}):
        out2 = str(tmp_path / f"run-{len(over)}-{list(over)[0]}")
        Trainer(small_config(toy, out2, **{"run.stages": "1,2", **over}), log=quiet).run()
        m2 = json.load(open(os.path.join(out2, "metrics.json")))
        assert "ensemble" not in m2 and m2["final_model"] == "stage"
