"""The served endpoint under concurrent clients: latency, throughput, and every answer checked.

``python benchmarks/serve_latency.py RUN_DIR [--clients 8] [--requests 400] [--threads 1]``

Starts ``python -m lmgnn_fast.serve RUN_DIR --port 0`` (a free port; torch ``--threads``),
then ``--clients`` client threads send ``--requests`` requests in all over HTTP (keep-alive,
one connection per client): three of four a new node of the task's node type (the text and
in/out edges of a node of the run's graph under a fresh id, as ``predict_latency.py``), one of
four a known node. Before the timed run each distinct request is answered once, one at a
time; under load every answer must equal that reference exactly (the sampling seed is
fixed, so an answer mixed up between requests or computed on another request's nodes shows)
and every request must get one. Prints per kind p50 / p99 latency (ms, wall, as a client
sees it), the throughput (requests/s over the whole run), errors and mismatches, with the
machine's load average (``/proc/loadavg``) before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lmgnn_fast.inference import load_run  # noqa: E402
from predict_latency import new_node_request  # noqa: E402


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _json_request(nodes: dict, edges: dict) -> dict:
    """``predict``'s column form as the served vocabulary (rows)."""
    return {"nodes": {t: [{"id": i, "text": x} for i, x in zip(v["id"], v["text"])] for t, v in nodes.items()},
            "edges": {"__".join(et): [{"src": s, "dst": d} for s, d in zip(*e)] for et, e in edges.items()}}


def _post(url: str, body: dict, timeout: float = 60.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def start_server(run_dir: str, threads: int, timeout: float = 300.0) -> tuple[subprocess.Popen, str]:
    """Start ``python -m lmgnn_fast.serve`` on a free port; returns the process and its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "lmgnn_fast.serve", run_dir, "--port", "0", "--threads",
                             str(threads), "--run.device", "cpu"], stdout=subprocess.PIPE, text=True)
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = box[0] if box else ""
    if "http://" not in line:
        proc.kill()
        raise RuntimeError(f"the server did not start within {timeout:.0f} s (exit {proc.poll()}): {line!r}")
    print(line.strip())
    return proc, line.strip().split()[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--distinct", type=int, default=40, help="distinct requests (reused round robin)")
    ap.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    args = ap.parse_args()
    print(f"load average before: {_loadavg()}")
    run = load_run(args.run_dir, overrides=["--run.device", "cpu"], log=lambda *a: None)  # to draw the requests
    t, g = run.task.node_type, run.graph
    picks = torch.randperm(g.num_nodes[t], generator=torch.Generator().manual_seed(0))[:args.distinct].tolist()
    reqs = []
    for k, i in enumerate(picks):
        if k % 4 == 3:
            reqs.append(("known node", {"ids": {t: [g.raw_ids[t][i]]}}))
        else:
            reqs.append(("new node", _json_request(*new_node_request(run, t, i))))
    proc, url = start_server(args.run_dir, args.threads)
    try:
        ref = []
        for _, body in reqs:  # one at a time: the reference answers
            code, out = _post(f"{url}/predict", body)
            if code != 200:
                raise RuntimeError(f"reference request failed: {code} {out}")
            ref.append(out)
        lat: dict[str, list[float]] = {"new node": [], "known node": []}
        errors, wrong, done = [], [], []
        lock = threading.Lock()

        def client(c: int):
            for j in range(c, args.requests, args.clients):
                kind, body = reqs[j % len(reqs)]
                t0 = time.perf_counter()
                try:
                    code, out = _post(f"{url}/predict", body)
                except Exception as e:  # noqa: BLE001 - counted, reported
                    code, out = -1, {"error": repr(e)}
                ms = 1e3 * (time.perf_counter() - t0)
                with lock:
                    done.append(j)
                    if code != 200:
                        errors.append((j, code, out))
                    elif out != ref[j % len(reqs)]:
                        wrong.append(j)
                    else:
                        lat[kind].append(ms)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join(600)
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()

    def q(xs, f):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(f * len(xs)))] if xs else float("nan")

    print(f"load average after: {_loadavg()}")
    print(f"{args.clients} clients, {args.requests} requests ({len(reqs)} distinct), server torch threads "
          f"{args.threads}: {len(done)} answered, {len(errors)} errors, {len(wrong)} wrong answers; "
          f"{args.requests / wall:.1f} requests/s over {wall:.1f} s")
    print("| request | count | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for kind, xs in lat.items():
        print(f"| {kind} | {len(xs)} | {statistics.median(xs) if xs else float('nan'):.1f} | {q(xs, 0.99):.1f} |")
    allx = [x for xs in lat.values() for x in xs]
    print(f"| all | {len(allx)} | {statistics.median(allx) if allx else float('nan'):.1f} | {q(allx, 0.99):.1f} |")
    if errors:
        print("first error:", errors[0])
    if errors or wrong or len(done) != args.requests:
        sys.exit(1)


if __name__ == "__main__":
    main()
