"""Inference on new nodes (``lmgnn_fast.predict``): a node held back from the graph and
given to the predictor with its text and edges gets the embedding and class scores the run
computed for it when it was part of the graph."""
from __future__ import annotations

import csv
import json
import os

import pyarrow.parquet as pq
import pytest
import torch

import lmgnn_fast
from _toy_graph import write_toy_dir
from lmgnn_fast.io import GraphFormatError, read_dir
from lmgnn_fast.lm import make_tiny_bert
from lmgnn_fast.predict import PredictError, Predictor, main, read_new_nodes
from lmgnn_fast.train import Config, Trainer
from lmgnn_fast.train.config import apply_overrides

HELD = "p3"  # a validation paper of the toy graph


def _rows(path):
    with open(path, newline="") as f:
        r = list(csv.reader(f))
    return r[0], r[1:]


def _write(path, head, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        w.writerows(rows)


def _split_off(data: str, base: str, new: str, held: str) -> None:
    """``base``: the dataset of ``data`` without node ``held`` and its edges; ``new``: that
    node (id, text) and its edges, as a request folder."""
    import shutil

    shutil.copytree(data, base)
    head, rows = _rows(os.path.join(data, "nodes", "paper.csv"))
    _write(os.path.join(base, "nodes", "paper.csv"), head, [r for r in rows if r[0] != held])
    _write(os.path.join(new, "nodes", "paper.csv"), ["id", "text"], [r[:2] for r in rows if r[0] == held])
    for name in ("paper__cites__paper.csv", "author__writes__paper.csv"):
        head, rows = _rows(os.path.join(data, "edges", name))
        _write(os.path.join(base, "edges", name), head, [r for r in rows if held not in r[:2]])
        _write(os.path.join(new, "edges", name), ["src", "dst"], [r[:2] for r in rows if held in r[:2]])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    data = write_toy_dir(str(root / "data"), num_papers=45)
    # without the link-prediction task: its held-out edges (a seeded draw over the edge
    # table) would leave the message-passing graph, and another draw without the node
    md_path = os.path.join(data, "metadata.json")
    md = json.load(open(md_path))
    md["tasks"] = [t for t in md["tasks"] if t["type"] != "link_prediction"]
    json.dump(md, open(md_path, "w"))
    _split_off(data, str(root / "base"), str(root / "new"), HELD)
    g = read_dir(data)
    bert = make_tiny_bert([x for t in g.node_types for x in (g.text[t] or [])], str(root / "bert"))
    c = Config()
    apply_overrides(c, ["--data.name", data, "--lm.name", bert, "--lm.max_length", "16", "--gnn.hidden", "16",
                        "--gnn.fanouts", "[-1, -1]", "--stage1.max_edges", "32", "--stage1.batch_size", "16",
                        "--stage2.epochs", "1", "--stage3.epochs", "1", "--stage3.batch_size", "16",
                        "--stage3.lm_train_nodes", "8", "--run.stages", "1,3", "--run.final_stage", "3",
                        "--run.out_dir", str(root / "run"), "--run.progress", "false", "--run.num_threads", "1"])
    Trainer(c, log=lambda *a: None).run()
    return {"root": root, "data": data, "base": str(root / "base"), "new": str(root / "new"),
            "run": str(root / "run")}


def _run_rows(run_dir, node_id):
    emb = pq.read_table(os.path.join(run_dir, "embeddings", "paper.parquet")).to_pydict()
    pred = pq.read_table(os.path.join(run_dir, "predictions.parquet")).to_pydict()
    i, j = emb["id"].index(node_id), pred["id"].index(node_id)
    return torch.tensor(emb["embedding"][i]), torch.tensor(pred["prob"][j]), pred["pred"][j]


def test_held_back_node_gets_the_runs_prediction(run):
    assert json.load(open(os.path.join(run["run"], "metrics.json")))["final_stage"] == 3
    p = Predictor.from_run(run["run"], graph=read_dir(run["base"]))
    assert p.stage == 3 and HELD not in p.graph.raw_ids["paper"]
    nodes, edges = read_new_nodes(run["new"])
    assert nodes["paper"]["id"] == [HELD] and sum(len(e["src"]) for e in edges.values()) >= 2
    res = p.predict(nodes, edges)["paper"]
    emb, prob, pred = _run_rows(run["run"], HELD)
    assert res.ids == [HELD] and res.embedding.shape == (1, 16)
    torch.testing.assert_close(res.embedding[0], emb, atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(res.prob[0], prob, atol=2e-4, rtol=1e-3)
    assert res.pred == [pred]
    # the edges matter: without them the node reads another neighbourhood
    alone = p.predict(nodes)["paper"]
    assert (alone.embedding[0] - emb).abs().max() > 1e-3
    # new node and known nodes in one request; the known ones as in the run's outputs
    both = p.predict(nodes, edges, ids={"paper": ["p7", "p0"]})["paper"]
    assert both.ids == [HELD, "p7", "p0"]
    for k, nid in enumerate(both.ids):
        if nid != HELD:
            torch.testing.assert_close(both.embedding[k], _run_rows(run["run"], nid)[0], atol=2e-4, rtol=1e-3)


def test_known_nodes_on_the_runs_graph(run):
    p = lmgnn_fast.Predictor.from_run(run["run"])
    ids = ["p0", HELD, "p10", "p44"]
    res = p.predict_known("paper", ids)
    for k, nid in enumerate(ids):
        emb, prob, _ = _run_rows(run["run"], nid)
        torch.testing.assert_close(res.embedding[k], emb, atol=2e-4, rtol=1e-3)
        torch.testing.assert_close(res.prob[k], prob, atol=2e-4, rtol=1e-3)
    a = p.predict_known("author", ["a1"])
    assert a.logits is None and a.embedding.shape == (1, 16)


def test_stage1_model_new_node_is_its_lm_row(run):
    full = Predictor.from_run(run["run"], stage=1).predict_known("paper", [HELD])
    nodes, edges = read_new_nodes(run["new"])
    new = Predictor.from_run(run["run"], stage=1, graph=read_dir(run["base"])).predict(nodes, edges)["paper"]
    assert new.embedding.shape == (1, 32)  # the tiny BERT's width
    torch.testing.assert_close(new.embedding, full.embedding, atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(new.logits, full.logits, atol=2e-4, rtol=1e-3)


def test_cli_writes_the_runs_prediction(run, tmp_path):
    out = tmp_path / "out"
    assert main([run["run"], "--graph", run["base"], "--data", run["new"], "--out", str(out)]) == 0
    pred = pq.read_table(str(out / "predictions.parquet")).to_pydict()
    emb_t = pq.read_table(str(out / "embeddings" / "paper.parquet")).to_pydict()
    emb, prob, p = _run_rows(run["run"], HELD)
    assert pred["id"] == [HELD] and pred["pred"] == [p] and emb_t["id"] == [HELD]
    torch.testing.assert_close(torch.tensor(pred["prob"][0]), prob, atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(torch.tensor(emb_t["embedding"][0]), emb, atol=2e-4, rtol=1e-3)
    # single tables instead of a folder, plus a known node
    out2 = tmp_path / "out2"
    new = run["new"]
    assert main([run["run"], "--graph", run["base"], "--nodes", f"paper:{new}/nodes/paper.csv",
                 "--edges", f"paper__cites__paper:{new}/edges/paper__cites__paper.csv",
                 "--edges", f"author__writes__paper:{new}/edges/author__writes__paper.csv",
                 "--ids", "paper:p1", "--out", str(out2)]) == 0
    assert pq.read_table(str(out2 / "predictions.parquet")).to_pydict()["id"] == [HELD, "p1"]


def test_request_errors(run, tmp_path, capsys):
    p = Predictor.from_run(run["run"])
    with pytest.raises(PredictError, match="already a node"):
        p.predict({"paper": {"id": ["p1"], "text": ["x"]}})
    with pytest.raises(PredictError, match="unknown node type 'venue'"):
        p.predict({"venue": {"id": ["v1"], "text": ["x"]}})
    with pytest.raises(PredictError, match="id 'p999' is neither"):
        p.predict({"paper": {"id": ["n1"], "text": ["x"]}}, {"paper__cites__paper": (["n1"], ["p999"])})
    with pytest.raises(PredictError, match="unknown relation"):
        p.predict({"paper": {"id": ["n1"], "text": ["x"]}}, {("paper", "likes", "paper"): (["n1"], ["p1"])})
    with pytest.raises(PredictError, match="repeats"):
        p.predict({"paper": {"id": ["n1", "n1"], "text": ["x", "y"]}})

    def cli(*args):
        code = main([run["run"], *args])
        return code, capsys.readouterr().err.strip()

    bad = tmp_path / "bad"
    _write(str(bad / "nodes" / "paper.csv"), ["id"], [["n1"]])
    code, err = cli("--data", str(bad))
    assert code == 2 and err.startswith("error: nodes/paper.csv: missing column 'text'") and "\n" not in err
    _write(str(bad / "nodes" / "paper.csv"), ["id", "text"], [["n1", "new paper"]])
    _write(str(bad / "edges" / "paper__cites__paper.csv"), ["src", "dst"], [["n1", "p1"], ["n1", "zz"]])
    code, err = cli("--data", str(bad))
    assert code == 2 and "edges/paper__cites__paper.csv, row 1, column 'dst': id 'zz' is neither" in err
    code, err = cli("--ids", "paper")
    assert code == 2 and "--ids takes NAME:VALUE" in err
    code, err = cli()
    assert code == 2 and "nothing to predict" in err
    assert main([str(tmp_path), "--ids", "paper:p1"]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_request_tables_linked_out_of_their_folder_are_refused(tmp_path, capsys):
    """A request table that is a symbolic link leading out of the request folder is refused
    before it is read (as the dataset reader refuses one), naming neither the target nor
    any of its content; a link that stays inside is read."""
    secret = tmp_path / "secret.csv"
    secret.write_text("id,SECRET-HEADER\n1,2\n")
    req = tmp_path / "req"
    _write(str(req / "nodes" / "other.csv"), ["id", "text"], [["n1", "x"]])
    os.symlink(secret, req / "nodes" / "paper.csv")
    with pytest.raises(GraphFormatError, match=r"^nodes/paper.csv: resolves outside the request folder; files must "
                                               r"stay inside it \(no symbolic links leading out\)$") as info:
        read_new_nodes(str(req))
    assert "SECRET" not in str(info.value) and "secret.csv" not in str(info.value)
    assert main([str(tmp_path / "no_run"), "--data", str(req)]) == 2  # refused before the run is opened
    err = capsys.readouterr().err
    assert err.startswith("error: nodes/paper.csv: resolves outside the request folder") and "SECRET" not in err
    assert len(err.strip().splitlines()) == 1
    # the whole edges/ folder linked out
    os.remove(req / "nodes" / "paper.csv")
    _write(str(tmp_path / "out_edges" / "paper__cites__paper.csv"), ["src", "dst"], [["n1", "p1"]])
    os.symlink(tmp_path / "out_edges", req / "edges")
    with pytest.raises(GraphFormatError, match=r"^edges/paper__cites__paper.csv: resolves outside the request"):
        read_new_nodes(str(req))
    os.remove(req / "edges")
    _write(str(req / "real" / "paper.csv"), ["id", "text"], [["n2", "y"]])
    os.symlink(req / "real" / "paper.csv", req / "nodes" / "paper.csv")
    nodes, _ = read_new_nodes(str(req))
    assert nodes["paper"]["id"] == ["n2"] and nodes["other"]["id"] == ["n1"]
