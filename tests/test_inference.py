"""The inference layer (``lmgnn_fast.inference``): a run loaded without a trainer reads the LM
rows the run stored and encodes only new or changed texts; every task type answers (node
classes, edge classes and link scores of pairs, top-k link candidates with the known links
left out) with what the run itself computed."""
from __future__ import annotations

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
import torch

from conftest import quiet, small_config
from lmgnn_fast.inference import PredictError, load_run
from lmgnn_fast.inference.rows import load_rows, text_hashes
from lmgnn_fast.io import read_dir
from lmgnn_fast.predict import main
from lmgnn_fast.train import Trainer

FULL = {"gnn.fanouts": "[-1, -1]"}  # every neighbour: the answers do not depend on sampling seeds


def _rows_of(path: str) -> dict:
    return pq.read_table(path).to_pydict()


def test_run_stores_its_rows_and_loading_encodes_nothing(toy_run):
    run_dir = toy_run["run"]
    g = read_dir(toy_run["data"])
    for t in ("paper", "author"):
        stored = load_rows(run_dir, t)
        assert stored is not None and stored.rows.shape == (g.num_nodes[t], 32)  # the tiny BERT's width
        assert torch.equal(stored.hashes, text_hashes(g.text[t]))
        assert stored.meta["lm_source"] == "stage1" and stored.meta["lm_weights"]
    notices = []
    run = load_run(run_dir, log=notices.append)
    assert run.stage == 2 and not notices
    assert all(run.load_report[t] == {"rows": g.num_nodes[t], "reused": g.num_nodes[t], "encoded": 0}
               for t in ("paper", "author"))
    assert run._lm is None  # nothing needed the LM: it is not even loaded
    torch.testing.assert_close(run.table["paper"], load_rows(run_dir, "paper").rows, atol=0, rtol=0)
    res = run.predict_known("paper", ["p0", "p1"])
    assert res.embedding.shape == (2, 16) and torch.allclose(res.prob.sum(-1), torch.ones(2))


def test_loading_is_without_trainer_and_process_group(toy_run, monkeypatch):
    from lmgnn_fast.train import data_parallel, runner

    def refuse(*a, **k):
        raise AssertionError("load_run must not build a Trainer or join a process group")

    monkeypatch.setattr(runner.Trainer, "__init__", refuse)
    monkeypatch.setattr(data_parallel, "setup", refuse)
    run = load_run(toy_run["run"], log=quiet)
    assert not torch.distributed.is_initialized()
    assert run.predict_known("paper", ["p2"]).logits.shape == (1, 3)


def test_only_changed_and_new_texts_are_encoded(toy_run, tmp_path):
    data = str(tmp_path / "data")
    shutil.copytree(toy_run["data"], data)
    path = os.path.join(data, "nodes", "paper.csv")
    lines = open(path).read().splitlines()
    head, rows = lines[0], lines[1:]
    parts = rows[5].split(",")
    parts[1] = "an entirely new text about protein cells"
    rows[5] = ",".join(parts)
    rows = [rows[-1]] + rows[:-1]  # another order: rows are matched by text, not position
    open(path, "w").write("\n".join([head] + rows) + "\n")
    g = read_dir(data)
    run = load_run(toy_run["run"], graph=g, log=quiet)
    assert run.load_report["paper"] == {"rows": 45, "reused": 44, "encoded": 1}
    assert run.load_report["author"]["encoded"] == 0
    i = g.raw_ids["paper"].index(parts[0])
    torch.testing.assert_close(run.table["paper"][i], run.encode_texts([parts[1]])[0])
    stored, base = load_rows(toy_run["run"], "paper"), read_dir(toy_run["data"])
    for nid in ("p0", "p44"):  # unchanged texts: the stored rows, bit for bit
        assert torch.equal(run.table["paper"][g.raw_ids["paper"].index(nid)],
                           stored.rows[base.raw_ids["paper"].index(nid)])


def test_a_run_without_stored_rows_still_loads(toy_run, tmp_path):
    old = str(tmp_path / "old_run")
    shutil.copytree(toy_run["run"], old)
    shutil.rmtree(os.path.join(old, "lm_rows"))
    notices = []
    run = load_run(old, log=notices.append)
    assert len(notices) == 2 and "no stored LM rows" in notices[0] and "encoding the 45 texts of 'paper'" in notices[0]
    assert run.load_report["paper"]["encoded"] == 45
    torch.testing.assert_close(run.table["paper"], load_rows(toy_run["run"], "paper").rows, atol=1e-5, rtol=1e-4)
    new = load_run(toy_run["run"], log=quiet)
    torch.testing.assert_close(run.predict_known("paper", ["p3"]).prob, new.predict_known("paper", ["p3"]).prob,
                               atol=1e-5, rtol=1e-4)


def test_update_texts_refreshes_only_those_rows(toy_run):
    run = load_run(toy_run["run"], log=quiet)
    before = run.table["paper"].clone()
    text = "market price trade stock study"
    assert run.update_texts("paper", ["p7"], [text]) == 1
    i = run.graph.raw_ids["paper"].index("p7")
    assert run.graph.text["paper"][i] == text
    torch.testing.assert_close(run.table["paper"][i], run.encode_texts([text])[0])
    other = torch.ones(45, dtype=torch.bool)
    other[i] = False
    assert torch.equal(run.table["paper"][other], before[other])
    with pytest.raises(PredictError, match="id 'zz' is neither"):
        run.update_texts("paper", ["zz"], ["x"])


@pytest.fixture(scope="module")
def ec_run(toy, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ec") / "run")
    Trainer(small_config(toy, out, **FULL, **{"task.name": "role", "run.stages": "2"}), log=quiet).run()
    return out


@pytest.fixture(scope="module")
def lp_run(toy, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("lp") / "run")
    Trainer(small_config(toy, out, **FULL, **{"task.name": "cites", "run.stages": "1,2", "run.final_stage": "2"}),
            log=quiet).run()
    return out


def test_edge_classification_scores_pairs_as_the_run(ec_run, tmp_path):
    run = load_run(ec_run, log=quiet)
    pred = _rows_of(os.path.join(ec_run, "predictions.parquet"))
    res = run.score_pairs(pred["src"][:12], pred["dst"][:12])
    assert res.logits.shape == (12, 2) and res.columns()["pred"] == pred["pred"][:12]
    assert res.to_json()["src"] == pred["src"][:12]
    with pytest.raises(PredictError, match="pairs of the task's relation"):
        run.score_pairs(["p0"], ["p1"], edge_type="paper__cites__paper")
    with pytest.raises(PredictError, match="top-k candidates need a link prediction task"):
        run.top_k(["a0"])
    # the command line: a pairs table in, pairs.parquet out
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("src,dst\n" + "".join(f"{s},{d}\n" for s, d in zip(pred["src"][:5], pred["dst"][:5])))
    assert main([ec_run, "--pairs", str(pairs), "--out", str(tmp_path / "out")]) == 0
    got = _rows_of(str(tmp_path / "out" / "pairs.parquet"))
    assert got["src"] == pred["src"][:5] and got["pred"] == pred["pred"][:5] and len(got["prob"][0]) == 2


def test_link_prediction_pairs_and_top_k(lp_run, tmp_path, capsys):
    run = load_run(lp_run, log=quiet)
    assert run.stage == 2
    pred = _rows_of(os.path.join(lp_run, "predictions.parquet"))  # val/test edges: src, dst, score, rank
    res = run.score_pairs(pred["src"], pred["dst"])
    torch.testing.assert_close(res.score, torch.tensor(pred["score"]), atol=1e-4, rtol=1e-4)
    g = run.graph
    src, dst = g.all_edges(("paper", "cites", "paper"))
    p0 = g.raw_ids["paper"].index("p0")
    linked = {g.raw_ids["paper"][int(d)] for s, d in zip(src, dst) if int(s) == p0}
    assert linked  # p0 cites papers
    top = run.top_k(["p0", "p5"], k=5)
    assert len(top.dst[0]) == 5 and not (set(top.dst[0]) & linked) and "p0" not in top.dst[0]
    assert top.score[0].tolist() == sorted(top.score[0].tolist(), reverse=True)
    again = run.score_pairs(["p0"] * 5, top.dst[0])  # a candidate's score is its pair score
    torch.testing.assert_close(again.score, top.score[0], atol=1e-4, rtol=1e-4)
    everything = run.top_k(["p0"], k=45, filter_known=False)
    assert linked <= set(everything.dst[0]) and everything.score[0, 0] >= top.score[0, 0]
    # a new paper: its own new edge is known, so filtered; it can be a candidate of others
    nodes = {"paper": {"id": ["n1"], "text": ["graph node edge walk"]}}
    edges = {"paper__cites__paper": (["n1"], ["p1"])}
    new = run.top_k(["n1"], k=44, nodes=nodes, edges=edges)
    assert "p1" not in new.dst[0] and "n1" not in new.dst[0] and len(new.dst[0]) == 44
    assert "n1" in run.top_k(["p2"], k=46, nodes=nodes, edges=edges).dst[0]
    # stage 1 (the LM and its decoder of the relation) answers the same questions
    s1 = load_run(lp_run, stage=1, log=quiet)
    assert s1.score_pairs(["p0"], ["p1"]).score.shape == (1,) and len(s1.top_k(["p0"], k=3).dst[0]) == 3
    # the command line
    out = tmp_path / "out"
    assert main([lp_run, "--ids", "paper:p0,p5", "--top-k", "5", "--out", str(out)]) == 0
    tk = _rows_of(str(out / "top_k.parquet"))
    assert tk["src"] == ["p0"] * 5 + ["p5"] * 5 and tk["rank"][:5] == [1, 2, 3, 4, 5] and tk["dst"][:5] == top.dst[0]
    assert main([lp_run, "--ids", "paper:p0", "--top-k", "0"]) == 2
    assert "--top-k must be a positive integer" in capsys.readouterr().err


def test_node_classification_refuses_pair_questions(toy_run, capsys):
    run = load_run(toy_run["run"], log=quiet)
    with pytest.raises(PredictError, match="node classification: it scores nodes"):
        run.score_pairs(["p0"], ["p1"])
    assert main([toy_run["run"], "--ids", "paper:p0", "--top-k", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --top-k needs a link prediction task") and "\n" not in err


def test_evaluate_is_the_training_protocol(toy_run):
    from lmgnn_fast.evaluate import evaluate_run

    m = json.load(open(os.path.join(toy_run["run"], "metrics.json")))
    again = evaluate_run(toy_run["run"])
    for s in ("stage1", "stage2"):
        for split in ("val", "test"):
            assert again[s][split] == pytest.approx(m["stages"][s][split], abs=1e-6)
