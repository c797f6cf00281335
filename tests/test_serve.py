"""The served endpoint (``python -m lmgnn_fast.serve``): the real server in a subprocess on
a free port, called over HTTP. Answers equal the loaded run's own, bad requests get one-line
JSON errors, concurrent clients each get their own answer, and the server stops on SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
import torch

from conftest import quiet

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TIMEOUT = 60  # seconds for any one HTTP call


def _call(url: str, body=None, method: str | None = None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _start(run_dir: str, timeout: float = 300) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmgnn_fast.serve", run_dir, "--port", "0", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not box or "http://" not in box[0]:
        proc.kill()
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"the server did not start: {box} {err[-2000:]}")
    return proc, box[0].split()[-1]


def _stop(proc: subprocess.Popen) -> int:
    proc.terminate()
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        raise


@pytest.fixture(scope="module")
def server(toy_run):
    proc, url = _start(toy_run["run"])
    try:
        yield url
    finally:
        _stop(proc)


NEW = {"nodes": {"paper": [{"id": "n1", "text": "graph node edge walk study"}]},
       "edges": {"paper__cites__paper": [{"src": "n1", "dst": "p1"}, {"src": "p2", "dst": "n1"}],
                 "author__writes__paper": [{"src": "a3", "dst": "n1"}]}}


def test_health_metadata_and_answers_equal_the_loaded_runs(server, toy_run):
    from lmgnn_fast.inference import load_run

    assert _call(f"{server}/health") == (200, {"status": "ok", "stage": 2})
    code, md = _call(f"{server}/metadata")
    assert code == 200 and md["task"]["type"] == "node_classification" and md["task"]["num_classes"] == 3
    assert md["node_types"] == {"paper": 45, "author": 20} and ["paper", "cites", "paper"] in md["relations"]
    run = load_run(toy_run["run"], log=quiet)
    code, out = _call(f"{server}/predict", {**NEW, "ids": {"paper": ["p7"]}, "embeddings": True})
    assert code == 200
    got = out["nodes"]["paper"]
    ref = run.predict({"paper": {"id": ["n1"], "text": [NEW["nodes"]["paper"][0]["text"]]}},
                      {"paper__cites__paper": (["n1", "p2"], ["p1", "n1"]), "author__writes__paper": (["a3"], ["n1"])},
                      {"paper": ["p7"]})["paper"]
    assert got["id"] == ["n1", "p7"] and got["pred"] == ref.pred
    torch.testing.assert_close(torch.tensor(got["prob"]), ref.prob, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(got["embedding"]), ref.embedding, atol=1e-5, rtol=1e-4)
    code, emb = _call(f"{server}/embed", {"ids": {"author": ["a1", "a2"]}})
    assert code == 200 and emb["embeddings"]["author"]["id"] == ["a1", "a2"]
    assert len(emb["embeddings"]["author"]["embedding"][0]) == 16


@pytest.mark.parametrize("route,body,raw,status,message", [
    ("/predict", None, b"{not json", 400, "request body is not JSON"),
    ("/predict", {"ids": {"paper": ["zz"]}}, None, 400, "ids['paper']: id 'zz' is neither a node"),
    ("/predict", {"nodes": {"paper": [{"id": "n1"}]}}, None, 400, "nodes['paper'], row 0: missing 'text'"),
    ("/predict", {"nodes": {"paper": [{"id": "p1", "text": "x"}]}}, None, 400, "already a node"),
    ("/predict", {"nodes": {"venue": [{"id": "v", "text": "x"}]}}, None, 400, "unknown node type 'venue'"),
    ("/predict", {"edges": {"paper__likes__paper": []}, "ids": {"paper": ["p1"]}}, None, 400, "unknown relation"),
    ("/predict", [1, 2], None, 400, "expected a JSON object"),
    ("/predict", {}, None, 400, "nothing to predict"),
    ("/pairs", {"pairs": [{"src": "p0", "dst": "p1"}]}, None, 400, "node classification: it scores nodes"),
    ("/top_k", {"src": ["p0"]}, None, 400, "need a link prediction task"),
    ("/nope", {}, None, 404, "no route POST /nope"),
])
def test_bad_requests_get_one_line_json_errors(server, route, body, raw, status, message):
    code, out = _call(f"{server}{route}", body, raw=raw)
    assert code == status and set(out) == {"error"} and message in out["error"] and "\n" not in out["error"]


def test_wrong_method(server):
    code, out = _call(f"{server}/predict", method="GET")
    assert code == 405 and out == {"error": "GET /predict: method not allowed"}


def test_concurrent_clients_each_get_their_own_answer(server):
    bodies = [{"nodes": {"paper": [{"id": f"n{i}", "text": f"{w} study of a new method"}]},
               "edges": {"paper__cites__paper": [{"src": f"n{i}", "dst": f"p{i}"}]}}
              for i, w in enumerate(["graph node", "protein cell", "market price", "gene enzyme", "stock trade",
                                     "edge walk", "cell gene", "price stock"])]
    ref = [_call(f"{server}/predict", b) for b in bodies]  # one at a time
    assert all(code == 200 for code, _ in ref)
    got: dict[int, list] = {}
    lock = threading.Lock()

    def client(c: int):
        for r in range(3):
            j = (c + r) % len(bodies)
            res = _call(f"{server}/predict", bodies[j])
            with lock:
                got.setdefault(j, []).append(res)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(TIMEOUT * 3)
    assert not any(th.is_alive() for th in threads)
    assert sum(len(v) for v in got.values()) == 24  # none lost
    for j, answers in got.items():
        assert all(a == ref[j] for a in answers)  # none mixed up


def test_server_stops_on_sigterm_and_reports_bad_start(toy_run, tmp_path):
    proc, url = _start(toy_run["run"])
    assert _call(f"{url}/health")[0] == 200
    assert _stop(proc) in (0, -signal.SIGTERM)  # uvicorn shuts down, then re-raises the signal
    p = subprocess.run([sys.executable, "-m", "lmgnn_fast.serve", str(tmp_path), "--port", "0"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().startswith("error: ") and "is not a run directory" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
