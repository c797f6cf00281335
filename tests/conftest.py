"""Test helpers shared by the test modules: the toy graph with a tiny BERT, the small
training config, a finished toy run, and the spawner of gloo processes.

Fixtures: ``toy`` (session: the toy graph in the directory format, its multi-label twin and
a tiny random BERT over their texts), ``small_config`` (the factory :func:`small_config`),
``toy_run`` (session: a finished run on ``toy``, stages 1 and 2, node classification) and
``spawn_gloo`` (:func:`spawn_gloo`). Test modules that want the plain functions import them
from here (``from conftest import small_config``): this folder is on ``sys.path``.
"""
from __future__ import annotations

import socket

import pytest

from _toy_graph import write_toy_dir


def quiet(*a):
    """A log that drops every line."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_toy(root) -> dict:
    """The toy graph (45 papers; single- and multi-label), and a tiny BERT over its texts."""
    from lmgnn_fast.io import read_dir
    from lmgnn_fast.lm import make_tiny_bert

    data = write_toy_dir(str(root / "data"), num_papers=45)
    data_ml = write_toy_dir(str(root / "data_ml"), num_papers=45, multilabel=True)
    g = read_dir(data)
    bert = make_tiny_bert([x for t in g.node_types for x in (g.text[t] or [])], str(root / "bert"))
    return {"root": root, "data": data, "data_ml": data_ml, "bert": bert}


def small_config(toy, out: str, **over):
    """A config that trains on ``toy`` in seconds (``over``: ``{"section.key": value}``)."""
    from lmgnn_fast.train import Config
    from lmgnn_fast.train.config import apply_overrides

    c = Config()
    c.data.name = toy["data"]
    c.lm.name = toy["bert"]
    c.lm.max_length = 16
    c.gnn.hidden = 16
    c.gnn.fanouts = [4, 4]
    c.stage1.max_edges = 32
    c.stage1.batch_size = 16
    c.stage2.epochs = 2
    c.stage2.batch_size = 16
    c.stage3.batch_size = 16
    c.stage3.lm_train_nodes = 8
    c.task.eval_negatives = 20
    c.run.out_dir = out
    c.run.progress = False
    c.run.num_threads = 1
    apply_overrides(c, [x for k, v in over.items() for x in (f"--{k}", str(v))])
    return c


def spawn_gloo(target, world: int, *args, timeout: float = 300.0) -> list:
    """Run ``target(rank, world, port, *args, queue)`` in ``world`` spawned processes (they
    join a gloo group on ``port``) and return what each put on ``queue``, sorted; every
    process must exit with status 0. ``timeout``: seconds to wait for each result (generous:
    a loaded machine starts the processes slowly)."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, *args, q)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        res = sorted(q.get(timeout=timeout) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * world
    return res


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("toy"))


@pytest.fixture(name="small_config")
def small_config_fixture():
    return small_config


@pytest.fixture(name="spawn_gloo")
def spawn_gloo_fixture():
    return spawn_gloo


@pytest.fixture(scope="session")
def toy_run(toy, tmp_path_factory):
    """A finished run on ``toy``: stages 1 and 2, node classification (``topic``), stage 2
    final; ``{"run": run_dir, **toy}``."""
    from lmgnn_fast.train import Trainer

    out = str(tmp_path_factory.mktemp("toy_run") / "run")
    Trainer(small_config(toy, out, **{"run.stages": "1,2", "run.final_stage": "2"}), log=quiet).run()
    return {**toy, "run": out}
