"""Effectiveness of the stage-wise recipe, and the stage-3 speed-up the embedding cache buys.

For each dataset and task, five variants, several seeds, mean ± std of the test metric:

- (a) ``lm``       — LM fine-tuned alone on the task, no graph (stage 1 with only the task
  loss; for link prediction: stage 1 on the target relation's training edges only);
- (b) ``frozen``   — frozen pretrained LM + R-GCN (stage 2 alone);
- (c) ``s12``      — stages 1+2 (graph-aware LM, then R-GCN);
- (d) ``s123``     — stages 1+2+3 (plus joint fine-tuning);
- (e) ``notext``   — R-GCN on learnable node embeddings (no text);
- (c') ``s12x``    — (c) with 16x the stage-1 edges of (c) (4,096 per epoch);
- ``default``      — the default recipe (task-aware stage 1, stages 2 and 3), reported from
  its final model: the stage with the best validation value.

Then stage-3 time per epoch with the cache (``lm_train_nodes`` nodes through the LM per
batch) against re-encoding every sampled text node (``lm_train_nodes = -1``).

Usage::

    python benchmarks/effectiveness.py                      # quick: attack, 1 seed
    python benchmarks/effectiveness.py --datasets attack,wordnet,hpo --seeds 0,1,2 \\
        --max-nodes 3000 --out benchmarks/RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

# (a), (c), (c') and (d) keep the stage 1 of their definition (link prediction over every text
# relation plus the task loss on 8 items per step; (a): the task loss alone) whatever the
# defaults; each reports the stage it names. "default" is the default recipe: its final model
# is the stage run.final_stage (best on validation) picks.
_GRAPH_S1 = {"stage1.objective": "graph", "stage1.epochs": 1, "stage1.task_batch_size": 8}
VARIANTS = {
    "lm": {"run.stages": "1", "run.final_stage": "1", "stage1.objective": "graph", "stage1.lp_weight": 0,
           "stage1.task_weight": 1, "stage1.epochs": 2, "stage1.task_batch_size": 8},
    "frozen": {"run.stages": "2", "run.final_stage": "2"},
    "s12": {"run.stages": "1,2", "run.final_stage": "2", **_GRAPH_S1},
    "s123": {"run.stages": "1,2,3", "run.final_stage": "3", **_GRAPH_S1},
    "s12x": {"run.stages": "1,2", "run.final_stage": "2", **_GRAPH_S1, "stage1.max_edges": 4096},
    "notext": {"run.stages": "2", "run.final_stage": "2", "gnn.text_features": "false", "stage2.lr": 0.01},
    "default": {},
    # the default recipe with each stage-3 objective, and with each encoder
    "s3glem": {"stage3.objective": "glem"},
    # the current defaults (stage 3 glem, run.ensemble true: stage 1 + 2 mixture as a candidate)
    "ensemble": {"stage3.objective": "glem", "run.ensemble": "true"},
    # the same without stage 3, for the aggregate to complete with the stage 3 of the same
    # seed's "s3glem" run (stages 1 and 2 are checked equal there first): see reconstruct_default
    "ensemble_s12": {"stage3.objective": "glem", "run.ensemble": "true", "run.stages": "1,2"},
    # the current defaults with gnn.model auto (stage 2 keeps the better of R-GCN and HGT on
    # validation); run_grid trains stages 1-2, then resumes the run for stage 3 (_run_auto)
    "auto": {"stage3.objective": "glem", "run.ensemble": "true", "gnn.model": "auto"},
    "s3joint": {"stage3.objective": "joint"},
    "hgt": {"gnn.model": "hgt"},
    # the frozen-LM comparison of the encoders (stage 2 alone, same settings as (b))
    "frozen_hgt": {"run.stages": "2", "run.final_stage": "2", "gnn.model": "hgt"},
    "frozen_rgat": {"run.stages": "2", "run.final_stage": "2", "gnn.model": "rgat"},
    "rgat": {"gnn.model": "rgat"},
}
LABELS = {"default": "default recipe (final model by validation)",
          "lm": "(a) LM alone", "frozen": "(b) frozen LM + R-GCN", "s12": "(c) stages 1+2",
          "s123": "(d) stages 1+2+3",
          "s12x": "(c') stages 1+2, stage 1 on 4,096 edges", "notext": "(e) R-GCN, learnable features",
          "s3glem": "recipe, stage 3 glem", "s3joint": "recipe, stage 3 joint",
          "ensemble": "recipe with the stage 1 + 2 ensemble",
          "ensemble_s12": "stages 1-2 + ensemble (completed with s3glem's stage 3)",
          "auto": "recipe, encoder chosen on validation (gnn.model auto)",
          "hgt": "recipe with HGT", "rgat": "recipe with RGAT",
          "frozen_hgt": "(b) with HGT", "frozen_rgat": "(b) with RGAT"}


def _config(dataset: str, task: str, seed: int, out: str, max_nodes: int | None, extra: dict):
    from lmgnn_fast.train.config import Config, apply_overrides

    c = Config()
    c.data.name = dataset
    if max_nodes:
        c.data.options = {"max_nodes": max_nodes}
    c.task.name = task
    c.run.seed = seed
    c.run.out_dir = out
    c.run.progress = False
    over = [x for k, v in extra.items() for x in (f"--{k}", str(v))]
    return apply_overrides(c, over)


def _tasks(dataset: str, max_nodes):
    from lmgnn_fast.datasets import load_dataset

    g = load_dataset(dataset, **({"max_nodes": max_nodes} if max_nodes else {}))
    nc = next((t.name for t in g.tasks if t.type == "node_classification"), None)
    lp = next((t.name for t in g.tasks if t.type == "link_prediction"), None)
    sizes = {t: g.num_nodes[t] for t in g.node_types}
    edges = sum(int(g.csc[et].indices.numel()) for et in g.edge_types)
    return g, {"nc": nc, "lp": lp}, sizes, edges


def _append_partial(path: str, rec: dict) -> None:
    """Append one finished run as a JSON line (flushed), so a stopped grid loses nothing."""
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_records(paths) -> list:
    """The runs (JSON lines) of ``--partial`` files, in file order."""
    out = []
    for path in paths:
        with open(path) as f:
            out += [json.loads(x) for x in f if x.strip()]
    return out


def _same_stages(a: dict, b: dict, stages=("stage1", "stage2")) -> bool:
    return all(a["stage_vals"].get(k) == b["stage_vals"].get(k) and a["stage_tests"].get(k) == b["stage_tests"].get(k)
               for k in stages)


def reconstruct_default(records: list) -> list:
    """Records of variant ``ensemble`` (the current defaults) completed from ``ensemble_s12``
    runs (stages 1 and 2 and the ensemble, no stage 3) and the ``s3glem`` run of the same
    task and seed (stages 1-3, no ensemble): the final model is chosen on validation among
    the three stages and the ensemble exactly as the trainer chooses it. Runs are
    deterministic on CPU with one thread, so both runs trained the same stages 1 and 2; that
    is checked (validation and test values equal to the last bit) before a record is made,
    and a mismatch raises. A full ``ensemble`` run of the same task and seed takes
    precedence. Each made record says ``"stage3_from": "s3glem"``.
    """
    key = lambda r: (r["dataset"], r["task"], r["seed"], r.get("max_nodes"))  # noqa: E731
    full = {key(r) for r in records if r["variant"] == "ensemble"}
    s3 = {key(r): r for r in records if r["variant"] == "s3glem" and "stage3" in (r.get("stage_vals") or {})}
    out = []
    for r in records:
        if r["variant"] != "ensemble_s12" or key(r) in full or key(r) not in s3 or not r.get("ensemble"):
            continue
        g = s3[key(r)]
        if not _same_stages(r, g):
            raise ValueError(f"{key(r)}: stages 1-2 of the ensemble_s12 run differ from the s3glem run "
                             f"({r['stage_vals']} vs {g['stage_vals']}); cannot complete it")
        sv = {**r["stage_vals"], "stage3": g["stage_vals"]["stage3"]}
        st = {**r["stage_tests"], "stage3": g["stage_tests"]["stage3"]}
        best = _best_single(sv)
        ens = r["ensemble"]
        chosen = ens["val"] is not None and ens["val"] > sv[best]
        rec = {**r, "variant": "ensemble", "stage_vals": sv, "stage_tests": st, "stage3_from": "s3glem",
               "final_stage": 2 if chosen else int(best[len("stage"):]),
               "final_model": "ensemble" if chosen else "stage",
               "value": ens["test"] if chosen else st[best], "val": ens["val"] if chosen else sv[best],
               "ensemble": {**ens, "chosen": chosen}, "lm_grad_norm": g.get("lm_grad_norm"),
               "time_s": r["time_s"] + g["time_s"]}
        out.append(rec)
    return out


def rows_from_partial(path: str) -> list:
    """Group the JSON lines of ``--partial`` runs into table rows (one per dataset/task/variant)."""
    return rows_from_records(read_records([path]))


def rows_from_records(records: list) -> list:
    """Group runs into table rows (one per dataset/task/variant)."""
    rows: dict = {}
    for r in records:
        key = (r["dataset"], r["task"], r["variant"], r.get("max_nodes"))
        row = rows.setdefault(key, {"dataset": r["dataset"], "task": r["task"], "metric": r["metric"],
                                    "variant": r["variant"], "values": [], "seeds": [], "times": [],
                                    "sizes": r["sizes"], "edges": r["edges"]})
        row["values"].append(r["value"])
        row["seeds"].append(r["seed"])
        row["times"].append(r["time_s"])
        row.setdefault("vals", []).append(r.get("val"))
        final = "E" if r.get("final_model") == "ensemble" else r.get("final_stage")
        row.setdefault("final_stages", []).append(final)
        row["max_nodes"] = r.get("max_nodes")
    out = list(rows.values())
    for r in out:
        r["time_s"] = statistics.mean(r["times"])
    return out


def _done_runs(path: str) -> set:
    """(dataset, task, variant, seed) of the runs a ``--partial`` file already holds."""
    if not path or not os.path.exists(path):
        return set()
    with open(path) as f:
        return {(r["dataset"], r["task"], r["variant"], r["seed"], r.get("max_nodes"))
                for r in map(json.loads, filter(str.strip, f))}


def run_grid(datasets, seeds, kinds, variants, max_nodes, extra, partial: str = ""):
    """Run every (dataset, task kind, variant, seed); with ``partial``, append each finished
    run to that JSON-lines file and skip the runs it already holds (a stopped grid resumes)."""
    from lmgnn_fast.train import Trainer

    done = _done_runs(partial)
    rows = []
    for ds in datasets:
        graph, tasks, sizes, edges = _tasks(ds, max_nodes.get(ds))
        for kind in kinds:
            task = tasks[kind]
            if task is None:
                continue
            for v in variants:
                vals, times = [], []
                over = dict(VARIANTS[v])
                if kind == "lp" and v == "lm":  # LM fine-tuned on the target relation's edges only
                    et = list(graph.task(task).edge_type)
                    over = {"run.stages": "1", "run.final_stage": "1", "stage1.objective": "graph",
                            "stage1.relations": f"[[{', '.join(et)}]]", "stage1.task_weight": 0, "stage1.epochs": 2}
                for seed in seeds:
                    if (ds, task, v, seed, max_nodes.get(ds)) in done:
                        continue
                    with tempfile.TemporaryDirectory() as d:
                        t0 = time.time()
                        if v == "auto":
                            tr, res = _run_auto(ds, task, seed, d, max_nodes.get(ds), {**extra, **over}, graph)
                        else:
                            cfg = _config(ds, task, seed, d, max_nodes.get(ds), {**extra, **over})
                            tr = Trainer(cfg, graph=graph, log=lambda *a: None)
                            res = tr.run()
                        times.append(time.time() - t0)
                        # the final model: a stage, or the ensemble of stages 1 and 2 (run.ensemble)
                        last = tr.ensemble if tr.ensemble_chosen else res[f"stage{tr.final_stage}"]
                        vals.append(last["test"].get(tr.task.primary_metric, float("nan")))
                        metric = tr.task.primary_metric
                        stage_vals = {k: r["val"].get(metric) for k, r in res.items()
                                      if isinstance(r, dict) and isinstance(r.get("val"), dict)}
                        # test values per stage (for reading only: selection is on validation)
                        stage_tests = {k: r["test"].get(metric) for k, r in res.items()
                                       if isinstance(r, dict) and isinstance(r.get("test"), dict)}
                        grads = {k: [h["lm_grad_norm"] for h in hs if "lm_grad_norm" in h]
                                 for k, hs in tr.ctx.history.items()}
                        lm_grad = {k: {"mean": statistics.mean(g), "last": g[-1], "steps": len(g)}
                                   for k, g in grads.items() if g}
                    if partial:
                        _append_partial(partial, {"dataset": ds, "task": task, "metric": metric, "variant": v,
                                                  "seed": seed, "value": vals[-1], "time_s": times[-1],
                                                  "val": last["val"].get(metric), "final_stage": tr.final_stage,
                                                  "stage_vals": stage_vals, "stage_tests": stage_tests,
                                                  "lm_grad_norm": lm_grad, "sizes": sizes,
                                                  "final_model": "ensemble" if tr.ensemble_chosen else "stage",
                                                  "ensemble": None if tr.ensemble is None else {
                                                      "weight": tr.ensemble["weight"],
                                                      "val": tr.ensemble["val"].get(metric),
                                                      "test": tr.ensemble["test"].get(metric),
                                                      "chosen": tr.ensemble["chosen"]},
                                                  "edges": edges, "max_nodes": max_nodes.get(ds),
                                                  "overrides": {**extra, **over},
                                                  **_encoder_fields(res, metric)})
                if not vals:
                    continue
                print(f"{ds} {task} {v}: {vals} ({statistics.mean(times):.0f}s)", flush=True)
                rows.append({"dataset": ds, "task": task, "metric": metric, "variant": v, "values": vals,
                             "time_s": statistics.mean(times), "sizes": sizes, "edges": edges})
    return rows


def _run_auto(ds, task, seed, d, max_nodes, over, graph):
    """Variant ``auto``: stages 1-2 (the encoder chosen on validation), then the run resumed
    for stage 3 (``run.resume``: stages 1-2 are kept), so the record holds stage 2's choice
    and every candidate's values, and the full run."""
    from lmgnn_fast.train import Trainer

    cfg = _config(ds, task, seed, d, max_nodes, {**over, "run.stages": "1,2"})
    Trainer(cfg, graph=graph, log=lambda *a: None).run()
    cfg = _config(ds, task, seed, d, max_nodes, {**over, "run.stages": "1,2,3", "run.resume": "true"})
    tr = Trainer(cfg, graph=graph, log=lambda *a: None)
    return tr, tr.run()


def _encoder_fields(res: dict, metric: str) -> dict:
    """The encoder stage 2 used and, with ``gnn.model auto``, each candidate's val/test value."""
    s2 = res.get("stage2") or {}
    if "encoders" not in s2:
        return {}
    return {"gnn_model": s2.get("gnn_model"),
            "encoders": {n: {"val": (e.get("val") or {}).get(metric), "test": (e.get("test") or {}).get(metric)}
                         for n, e in s2["encoders"].items()}}


def cache_speedup(dataset, task, seed, max_nodes, extra, lm_nodes=16, steps=4):
    """Stage-3 seconds per step: cache (``lm_nodes`` per batch) vs every sampled node,
    over the first ``steps`` batches of an epoch (same batches and sampling seeds)."""
    from lmgnn_fast.datasets import load_dataset
    from lmgnn_fast.train import Trainer

    graph = load_dataset(dataset, **({"max_nodes": max_nodes} if max_nodes else {}))
    out = {}
    for name, n in (("cache", lm_nodes), ("no cache", -1)):
        with tempfile.TemporaryDirectory() as d:
            cfg = _config(dataset, task, seed, d, max_nodes, {**extra, "run.stages": "3", "stage3.epochs": 1,
                                                             "stage3.lm_train_nodes": n, "stage3.refresh_every": 0,
                                                             "stage3.max_steps_per_epoch": steps})
            tr = Trainer(cfg, graph=graph, log=lambda *a: None)
            res = tr.run()["stage3"]
            full = -(-tr.num_train_items() // cfg.stage3.batch_size)
            out[name] = {"step_s": res["epoch_time_s"][0] / res["steps_per_epoch"],
                         "lm_nodes": res["lm_nodes_per_epoch"] / res["steps_per_epoch"], "steps_per_epoch": full}
        print(f"stage 3 {name}: {out[name]}", flush=True)
    return out


def grouped_markdown(rows) -> str:
    """One table per dataset/task: variants in the order (a) .. (e), seeds, mean ± std (sample
    std over seeds), per-seed test and validation values, mean wall time per run."""
    order = ["lm", "frozen", "s12", "s12x", "s123", "notext", "default"]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["task"], r.get("max_nodes")), []).append(r)
    out = []
    for (ds, task, _), rs in groups.items():
        r0 = rs[0]
        sub = f", subsample max_nodes={r0['max_nodes']}" if r0.get("max_nodes") else ""
        out += [f"### {ds} / {task} ({r0['metric']}, test; {sum(r0['sizes'].values())} nodes, "
                f"{r0['edges']} edge entries{sub})", "",
                "| variant | seeds | test mean ± std | test per seed | val per seed | wall time / run (s) |",
                "|---|---|---|---|---|---|"]
        for r in sorted(rs, key=lambda r: order.index(r["variant"]) if r["variant"] in order else 99):
            v = r["values"]
            ms = (f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1
                  else f"{v[0]:.4f} (1 seed)")
            vals = ", ".join("-" if x is None else f"{x:.4f}" for x in r.get("vals", []))
            out.append(f"| {LABELS[r['variant']]} | {','.join(map(str, r['seeds']))} | {ms} | "
                       f"{', '.join(f'{x:.4f}' for x in v)} | {vals} | {statistics.mean(r['times']):.0f} |")
        out.append("")
    return "\n".join(out)


def stage3_markdown(runs) -> str:
    """Per task and stage-3 objective (runs of the whole recipe, stages 1-3): how often
    validation picked stage 3 (strictly above stages 1 and 2; ties apart), stage 3's mean
    validation gain over stage 2, and the LM's mean gradient norm in stages 1 and 3. (Runs
    of the recipe with the ensemble train the same stages as ``s3glem``: not counted again.)"""
    objective = {"s3glem": "glem", "s3joint": "joint"}
    by: dict = {}
    for r in runs:
        sv = r.get("stage_vals") or {}
        if r["variant"] not in objective or sv.get("stage3") is None or sv.get("stage2") is None:
            continue
        by.setdefault((r["dataset"], r["task"], r.get("max_nodes"), objective[r["variant"]]), []).append(r)
    out = ["| task | stage 3 objective | runs | stage 3 picked (strictly) | tie with stage 1/2 | "
           "val stage 3 - stage 2 (mean) | LM grad norm, stage 1 / stage 3 (mean per step) |",
           "|---|---|---|---|---|---|---|"]
    for (ds, task, n, obj), rs in sorted(by.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        strict = tie = 0
        gains, g1, g3 = [], [], []
        for r in rs:
            sv = r["stage_vals"]
            before = max(v for k, v in sv.items() if k != "stage3" and v is not None)
            strict += sv["stage3"] > before
            tie += sv["stage3"] == before
            gains.append(sv["stage3"] - sv["stage2"])
            g = r.get("lm_grad_norm") or {}
            if "stage1" in g:
                g1.append(g["stage1"]["mean"])
            if "stage3" in g:
                g3.append(g["stage3"]["mean"])
        grad = (f"{statistics.mean(g1):.3f} / " if g1 else "- / ") + (f"{statistics.mean(g3):.3f}" if g3 else "-")
        name = f"{ds} / {task}" + (f" ({n} nodes)" if n else "")
        out.append(f"| {name} | {obj} | {len(rs)} | {strict} | {tie} | {statistics.mean(gains):+.4f} | {grad} |")
    return "\n".join(out)


def _best_single(stage_vals: dict) -> str | None:
    """The stage validation picks among single stages (a later stage wins a tie)."""
    best, best_v = None, None
    for k in sorted(stage_vals):
        v = stage_vals[k]
        if v is not None and (best_v is None or v >= best_v):
            best, best_v = k, v
    return best


def ensemble_markdown(runs) -> str:
    """Per task, the runs of the recipe with the stage 1 + 2 ensemble (variant ``ensemble``):
    how often validation took the ensemble, its validation gain over the best single stage,
    and the final model's test value with the ensemble as a candidate and without it (the
    best single stage on validation, from the same runs), the LM weights chosen, and how
    often the final model is stage 3."""
    by: dict = {}
    for r in runs:
        if r["variant"] == "ensemble" and r.get("ensemble"):
            by.setdefault((r["dataset"], r["task"], r.get("max_nodes")), []).append(r)
    out = ["| task | runs | ensemble taken | val: ensemble - best stage (mean) | test, final model with ensemble "
           "| test, best single stage (no ensemble) | LM weights | final = stage 3 |",
           "|---|---|---|---|---|---|---|---|"]
    for (ds, task, n), rs in sorted(by.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        taken = sum(bool(r["ensemble"]["chosen"]) for r in rs)
        gain = [r["ensemble"]["val"] - max(v for v in r["stage_vals"].values() if v is not None) for r in rs]
        with_e = [r["value"] for r in rs]
        without = [r["stage_tests"][_best_single(r["stage_vals"])] for r in rs]
        s3 = sum(r["final_stage"] == 3 and r.get("final_model") != "ensemble" for r in rs)

        def ms(v):
            return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"
        name = f"{ds} / {task}" + (f" ({n} nodes)" if n else "")
        weights = ",".join(f"{r['ensemble']['weight']:g}" for r in rs)
        out.append(f"| {name} | {len(rs)} | {taken} | {statistics.mean(gain):+.4f} | {ms(with_e)} | {ms(without)} "
                   f"| {weights} | {s3} |")
    # full runs of the recipe with the ensemble against the s3glem run of the same seed
    key = lambda r: (r["dataset"], r["task"], r["seed"], r.get("max_nodes"))  # noqa: E731
    s3 = {key(r): r for r in runs if r["variant"] == "s3glem"}
    full = [r for r in runs if r["variant"] == "ensemble" and "stage3_from" not in r and key(r) in s3]
    same = sum(_same_stages(r, s3[key(r)], ("stage1", "stage2", "stage3")) for r in full)
    made = sum(r["variant"] == "ensemble" and "stage3_from" in r for r in runs)
    out.append(f"\nFull runs with the ensemble whose stages 1-3 equal the s3glem run of the same seed to the last "
               f"bit: {same} of {len(full)}. Runs completed from an ensemble_s12 run and the s3glem run's stage 3 "
               f"(stages 1-2 checked equal): {made}.")
    return "\n".join(out)


def encoder_markdown(runs) -> str:
    """Per task, the recipe with ``gnn.model auto`` against the R-GCN default recipe (variant
    ``ensemble``) over the same seeds: test mean ± std of both, the difference and the pooled
    std, which encoder validation chose per seed, and each candidate's stage-2 val/test mean."""
    key = lambda r: (r["dataset"], r["task"], r.get("max_nodes"))  # noqa: E731
    auto, base = {}, {}
    for r in runs:
        if r["variant"] == "auto":
            auto.setdefault(key(r), []).append(r)
        elif r["variant"] == "ensemble":
            base.setdefault(key(r), {})[r["seed"]] = r
    out = ["| task | seeds | auto: test | R-GCN default: test | diff | pooled std | ahead by > 1 pooled std "
           "| encoder chosen per seed | stage 2 val / test per encoder (mean) |", "|" + "---|" * 9]

    def ms(v):
        return (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else float("nan"))
    for k, rs in sorted(auto.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        rs = sorted((r for r in rs if r["seed"] in base.get(k, {})), key=lambda r: r["seed"])
        if not rs:
            continue
        (a_m, a_s), (b_m, b_s) = ms([r["value"] for r in rs]), ms([base[k][r["seed"]]["value"] for r in rs])
        pooled = ((a_s ** 2 + b_s ** 2) / 2) ** 0.5
        names = sorted({n for r in rs for n in (r.get("encoders") or {})})
        per = "; ".join(f"{n} {statistics.mean(r['encoders'][n]['val'] for r in rs):.4f} / "
                        f"{statistics.mean(r['encoders'][n]['test'] for r in rs):.4f}" for n in names)
        name = f"{k[0]} / {k[1]}" + (f" ({k[2]} nodes)" if k[2] else "")
        out.append(f"| {name} | {','.join(str(r['seed']) for r in rs)} | {a_m:.4f} ± {a_s:.4f} | {b_m:.4f} ± {b_s:.4f} "
                   f"| {a_m - b_m:+.4f} | {pooled:.4f} | {'yes' if a_m - b_m > pooled else 'no'} "
                   f"| {','.join(str(r.get('gnn_model')) for r in rs)} | {per} |")
    return "\n".join(out)


def targets_markdown(rows) -> str:
    """The issue's targets per task: the default recipe's test mean against the better of (a)
    and (b) and against (e), with the pooled standard deviation (sqrt of the mean of the two
    sample variances), and which stage the default recipe's validation picked per seed (``E``:
    the ensemble of stages 1 and 2)."""
    by: dict = {}
    for r in rows:
        by.setdefault((r["dataset"], r["task"], r.get("max_nodes")), {})[r["variant"]] = r

    def ms(r):
        v = r["values"]
        return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else float("nan")), len(v)

    out = ["| task | default (n) | better of (a), (b) (n) | diff | pooled std | >= | ahead by > 1 pooled std "
           "| (e) (n) | ahead of (e) | final stage per seed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (ds, task, n), vs in by.items():
        if "default" not in vs:
            continue
        d_m, d_s, d_n = ms(vs["default"])
        base = [(ms(vs[k]), k) for k in ("lm", "frozen") if k in vs]
        (b_m, b_s, b_n), bk = max(base) if base else ((float("nan"),) * 3, "-")
        pooled = ((d_s ** 2 + b_s ** 2) / 2) ** 0.5
        e = ms(vs["notext"]) if "notext" in vs else None
        fs = ",".join("-" if x is None else str(x) for x in vs["default"].get("final_stages", []))
        yes = lambda c: "yes" if c else "**no**"  # noqa: E731
        name = f"{ds} / {task}" + (f" ({n} nodes)" if n else "")
        out.append(f"| {name} | {d_m:.4f} ± {d_s:.4f} ({d_n}) | {LABELS.get(bk, bk)}: {b_m:.4f} ± {b_s:.4f} "
                   f"({b_n}) | {d_m - b_m:+.4f} | {pooled:.4f} | {yes(d_m >= b_m)} | {yes(d_m - b_m > pooled)} | "
                   + (f"{e[0]:.4f} ({e[2]}) | {yes(d_m > e[0])} | " if e else "- | - | ") + f"{fs} |")
    return "\n".join(out)


def to_markdown(rows, speed, args) -> str:
    lines = [f"Machine: {args.machine}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
             f"seeds {args.seeds}; default trainer settings unless stated; metric on the test split of "
             "the last stage run (accuracy / micro-F1 / MRR as the task's primary metric).", ""]
    lines += ["| dataset (nodes, edges) | task | metric | variant | mean ± std | per seed | time/run (s) |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        v = r["values"]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        n = sum(r["sizes"].values())
        lines.append(f"| {r['dataset']} ({n}, {r['edges']}) | {r['task']} | {r['metric']} | {LABELS[r['variant']]} | "
                     f"{statistics.mean(v):.4f} ± {sd:.4f} | {', '.join(f'{x:.4f}' for x in v)} | {r['time_s']:.0f} |")
    if speed:
        lines += ["", f"Stage 3 ({args.speedup}), first batches of an epoch, same batches and seeds; "
                  "seconds per epoch = seconds per step x steps per epoch:", "",
                  "| mode | LM nodes / step | seconds / step | seconds / epoch |", "|---|---|---|---|"]
        for k, s in speed.items():
            epoch_s = s["step_s"] * s["steps_per_epoch"]
            lines.append(f"| {k} | {s['lm_nodes']:.0f} | {s['step_s']:.2f} | {epoch_s:.0f} |")
        if "cache" in speed and "no cache" in speed:
            lines.append(f"\nSpeed-up from the cache: {speed['no cache']['step_s'] / speed['cache']['step_s']:.1f}x")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="attack")
    p.add_argument("--tasks", default="nc,lp")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0")
    p.add_argument("--max-nodes", default="", help="e.g. wordnet=3000,hpo=3000 (subsample large graphs)")
    p.add_argument("--set", default="", help="extra overrides key=value,key=value for every run")
    p.add_argument("--speedup", default="attack:tactic", help="dataset:task for the cache timing ('' = skip)")
    p.add_argument("--machine", default="2-core shared CPU VM")
    p.add_argument("--out", default="")
    p.add_argument("--partial", default="", help="append each finished run to this JSON-lines file")
    p.add_argument("--aggregate", default="", help="only print the tables built from --partial files (a,b,..)")
    p.add_argument("--default-variant", default="default",
                   help="with --aggregate: the variant whose runs are the default recipe (e.g. s3glem)")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    max_nodes = {kv.split("=")[0]: int(kv.split("=")[1]) for kv in args.max_nodes.split(",") if kv}
    # ';' separates overrides so list values keep their commas (gnn.fanouts=[5, 5]); a plain ','
    # still works when no value contains one
    sep = ";" if ";" in args.set or "[" in args.set else ","
    extra = dict(kv.split("=", 1) for kv in args.set.split(sep) if kv)
    if args.aggregate:
        args.speedup = ""
        paths = [p for p in args.aggregate.split(",") if p]
        records = read_records(paths)
        made = reconstruct_default(records)
        # rows per file as the runs were grouped before (a later file's row of the same variant
        # wins); the current defaults' runs (variant "ensemble": full runs and completed ones)
        # form one row across files, after the others
        rows = [row for p in paths for row in rows_from_records([r for r in read_records([p])
                                                                  if r["variant"] != "ensemble"])]
        rows += rows_from_records([r for r in records if r["variant"] == "ensemble"] + made)
        records += made
        if args.default_variant != "default":  # the variant that is the default recipe now
            rows = [r for r in rows if r["variant"] != "default"]
            for r in rows:
                if r["variant"] == args.default_variant:
                    r["variant"] = "default"
        print(targets_markdown(rows) + "\n\n" + stage3_markdown(records) + "\n\n"
              + ensemble_markdown(records) + "\n\n" + encoder_markdown(records) + "\n\n" + grouped_markdown(rows))
        return 0
    variants = [v for v in args.variants.split(",") if v]
    rows = run_grid(args.datasets.split(","), args.seeds, args.tasks.split(","), variants, max_nodes, extra,
                    args.partial)
    speed = None
    if args.speedup:
        ds, task = args.speedup.split(":")
        speed = cache_speedup(ds, task, args.seeds[0], max_nodes.get(ds), extra)
    md = to_markdown(rows, speed, args)
    print(md)
    if args.out:
        with open(args.out + ".json", "w") as f:
            json.dump({"rows": rows, "speed": speed}, f, indent=1)
        with open(args.out, "a") as f:
            f.write("\n" + md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
