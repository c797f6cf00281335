"""Loading a finished run for inference, without a trainer: :func:`load_run` and the
:class:`LoadedRun` it returns.

Loading reads the run's ``config.yaml``, its graph (or the one given), the checkpoint of the
chosen stage and the LM rows the run stored with a hash of each text
(:mod:`lmgnn_fast.inference.rows`): only texts that are new or changed since go through the
LM. No process group is joined, no shared memory made, nothing is written to the run
directory. Requests then name nodes by their raw ids and may bring new nodes (with their
text) and edges, merged onto the run's graph for that request only.
"""
from __future__ import annotations

import json
import os
import threading
import time

import torch
from torch import Tensor

from lmgnn_fast.inference.ensemble import EnsembleTaskModel
from lmgnn_fast.inference.models import OUTPUT_SEED, load_task_model
from lmgnn_fast.inference.results import LinkCandidates, NodePredictions, PairPredictions
from lmgnn_fast.inference.rows import load_rows, reuse_positions, text_hashes
from lmgnn_fast.inference.view import GraphView, NodeIndex, PredictError, parse_edge_type
from lmgnn_fast.inference.writer import raw_ids
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.ensemble import Ensemble
from lmgnn_fast.train.outputs import lm_identity
from lmgnn_fast.train.tasks import GNNTask

__all__ = ["load_run", "LoadedRun", "final_stage_of", "final_model_of"]


def final_stage_of(run_dir: str) -> int:
    """The run's final model's stage (``metrics.json``'s ``final_stage``; stage 2 when the
    final model is the ensemble of stages 1 and 2).

    Raises:
        FileNotFoundError: no ``metrics.json`` (the run did not finish).
        PredictError: it names no final stage.
    """
    mpath = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(mpath):
        raise FileNotFoundError(f"{mpath}: not found (the run did not finish); name a stage with --stage")
    with open(mpath) as f:
        try:
            stage = json.load(f).get("final_stage")
        except (json.JSONDecodeError, AttributeError) as e:
            raise PredictError(f"{mpath}: not a metrics file ({e})") from None
    if stage is None:
        raise PredictError(f"{mpath}: no final_stage (the run did not finish, or predates it); "
                           "name a stage with --stage")
    return stage


def final_model_of(run_dir: str) -> tuple[int, dict | None]:
    """``(final_stage_of(run_dir), ensemble)``: ``ensemble`` is ``metrics.json``'s
    ``ensemble`` entry when the run's final model is the ensemble of stages 1 and 2, else
    ``None``.

    Raises:
        FileNotFoundError, PredictError: as :func:`final_stage_of`; a final model named
            ``ensemble`` without its entry.
    """
    stage = final_stage_of(run_dir)
    mpath = os.path.join(run_dir, "metrics.json")
    with open(mpath) as f:
        m = json.load(f)
    if m.get("final_model") != "ensemble":
        return stage, None
    ens = m.get("ensemble")
    if not isinstance(ens, dict):
        raise PredictError(f"{mpath}: final_model is 'ensemble' but there is no ensemble entry")
    return stage, ens


def load_run(run_dir: str, *, stage: int | None = None, graph=None, full_neighbourhood: bool = False,
             overrides: list[str] | None = None, log=None) -> "LoadedRun":
    """Load the model of a finished run for inference (no trainer, no process group).

    Args:
        run_dir: a run directory (``config.yaml``, ``metrics.json``,
            ``checkpoints/stage<K>.safetensors``; ``lm_rows/`` when the run stored its rows).
        stage: the stage whose model answers (default: the run's final model,
            ``metrics.json``'s ``final_stage``, or the ensemble of stages 1 and 2 when that is
            the final model).
        graph: the graph to answer on (default: the run's ``data.name``, loaded again).
        full_neighbourhood: take every neighbour at every layer instead of sampling with the
            run's ``gnn.fanouts``.
        overrides: config overrides (``["--run.device", "cpu"]``).
        log: where notices go (default: stderr).

    Raises:
        FileNotFoundError: ``run_dir`` is not a run directory.
        PredictError: the run has no final model / no checkpoint of ``stage``.
        ConfigError, DataError, LMLoadError: the run's config, graph or LM cannot be loaded.
    """
    from lmgnn_fast.train.config import load_config

    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir!r} is not a run directory (no config.yaml)")
    ensemble = None
    if stage is None:
        stage, ensemble = final_model_of(run_dir)
    if stage not in (1, 2, 3):
        raise PredictError(f"stage must be 1, 2 or 3, got {stage!r}")
    for s in ([1, stage] if ensemble is not None else [stage]):
        if not os.path.isfile(os.path.join(run_dir, "checkpoints", f"stage{s}.safetensors")):
            raise PredictError(f"{run_dir}: no checkpoint of stage {s} (checkpoints/stage{s}.safetensors)")
    cfg = load_config(path, overrides)
    cfg.run.out_dir = run_dir
    cfg.run.resume = False
    cfg.run.progress = False
    if log is None:
        import sys

        def log(*a):
            print(*a, file=sys.stderr, flush=True)
    ctx = RunContext.open(cfg, graph=graph, log=log)
    return LoadedRun(ctx, stage, full_neighbourhood, ensemble)


def _lm_source(ctx: RunContext, stage: int) -> str:
    if stage == 1:
        return "stage1"
    if stage == 3:
        return "stage3"
    return ctx.ckpt.stage_metadata(2).get("lm_source", "pretrained")


class LoadedRun:
    """A finished run's model, answering requests on its graph (and on new nodes).

    Build it with :func:`load_run` (or :meth:`from_run`). Every method takes raw node ids;
    ``nodes``/``edges`` add new nodes (with their text) and edges for that call only.

    Attributes:
        stage: the stage whose model answers (1, 2 or 3).
        ctx: the run's context (config, graph, task, device); ``ctx.cfg`` is the config.
        graph: the run's graph (requests never change it; :meth:`update_texts` does).
        task: the run's resolved target task.
        model: the :class:`~lmgnn_fast.inference.protocol.TaskModel` (an
            :class:`~lmgnn_fast.inference.ensemble.EnsembleTaskModel` when ``ensemble``).
        ensemble: the mixture of stages 1 and 2 (:class:`~lmgnn_fast.train.ensemble.Ensemble`)
            when the run's final model is that ensemble and no stage was named, else ``None``.
        lm: the LM that encodes new texts (``None`` without text node types), loaded on first
            use (:meth:`warm_up` loads it at once).
        table: per text node type, the LM rows of the graph's nodes ``[N_t, H]``.
        fanouts: the sampling fanouts (``-1``: every neighbour).
        load_report: per text node type ``{"rows", "reused", "encoded"}`` and ``seconds``.
    """

    def __init__(self, ctx: RunContext, stage: int, full_neighbourhood: bool = False, ensemble: dict | None = None):
        t0 = time.perf_counter()
        self.ctx, self.stage = ctx, stage
        self.graph, self.task = ctx.graph, ctx.task
        self.gnn_task = GNNTask(ctx)
        fan = [int(f) for f in ctx.cfg.gnn.fanouts]
        self.fanouts = [-1] * len(fan) if full_neighbourhood else fan
        self.index = NodeIndex(self.graph)
        self._lm = None
        self._lm_source = _lm_source(ctx, stage) if ctx.text_types else None
        self.table: dict[str, Tensor] = {}
        self.load_report: dict = {}
        if ctx.text_types:
            self._load_table(self._lm_source)
        lm_dim = int(next(iter(self.table.values())).shape[1]) if self.table else 0
        self.model = load_task_model(ctx, self.gnn_task, stage, self.table, lm_dim, self.fanouts)
        self.ensemble = None
        if ensemble is not None:
            try:
                self.ensemble = Ensemble.from_dict(ensemble)
            except ValueError as e:
                raise PredictError(f"{ctx.out_dir}/metrics.json: {e}") from None
            lm_model = load_task_model(ctx, self.gnn_task, 1, self.table, lm_dim, self.fanouts)
            self.model = EnsembleTaskModel(lm_model, self.model, self.ensemble)
        self._coo: dict = {}
        self._candidates: dict[str, Tensor] = {}
        self.lock = threading.Lock()
        self.load_report["seconds"] = round(time.perf_counter() - t0, 3)

    @classmethod
    def from_run(cls, run_dir: str, **kwargs) -> "LoadedRun":
        """:func:`load_run`."""
        return load_run(run_dir, **kwargs)

    # ------------------------------------------------------------------ loading
    @property
    def lm(self):
        """The LM of the model's rows (``LMEncoder``; ``None`` without text node types),
        loaded on first use: only new or changed texts need it."""
        if self._lm is None and self._lm_source is not None:
            self._lm = self._load_lm(self._lm_source)
        return self._lm

    def warm_up(self) -> "LoadedRun":
        """Load the LM now (and run it once) rather than on the first request that brings a
        new text (a server calls this before it accepts requests). Returns ``self``."""
        if self.lm is not None:
            self.encode_texts(["warm up"])
        return self

    def _load_lm(self, source: str):
        from lmgnn_fast.lm import LMEncoder

        c = self.ctx.cfg.lm
        lm = LMEncoder.from_pretrained(c.name, pooling=c.pooling)
        if source != "pretrained":
            sd = self.ctx.ckpt.load_stage(int(source[-1]))
            lm.model.load_state_dict({k[3:]: v for k, v in sd.items() if k.startswith("lm.")})
        lm.set_autocast(self.ctx.device, c.precision)
        return lm.to(self.ctx.device).eval()

    @torch.no_grad()
    def _load_table(self, source: str) -> None:
        """The LM rows of every text node type: stored rows whose text is unchanged, the
        LM's rows for the others."""
        ctx = self.ctx
        ident = lm_identity(ctx, source)
        for t in ctx.text_types:
            texts = ctx.graph.text[t]
            n = ctx.graph.num_nodes[t]
            hashes = text_hashes(texts)
            stored = load_rows(ctx.out_dir, t)
            why = None
            if stored is None:
                why = "the run has no stored LM rows (lm_rows/: runs before they were stored, or a damaged file)"
            elif any(stored.meta.get(k) != v for k, v in ident.items()):
                why = (f"the stored LM rows are those of another LM ({stored.meta.get('lm_source')} vs "
                       f"{ident['lm_source']} of stage {self.stage})")
            pos = torch.full((n,), -1, dtype=torch.long) if why else reuse_positions(stored, hashes)
            have = pos >= 0
            missing = torch.nonzero(~have).flatten()
            if n == 0:
                table = torch.zeros(0, stored.rows.shape[1] if why is None else self.lm.hidden_size, device=ctx.device)
            elif missing.numel() == n:  # as the trainer fills its caches: the same rows
                tok = self.lm.tokenize(list(texts), ctx.cfg.lm.max_length, where=f"node type {t!r}")
                table = self.lm.encode_all(tok, batch_size=ctx.cfg.lm.encode_batch_size, progress=False)
            else:
                table = torch.empty(n, stored.rows.shape[1], device=ctx.device)
                table[have.to(ctx.device)] = stored.rows[pos[have]].to(ctx.device)
                if missing.numel():
                    table[missing.to(ctx.device)] = self.encode_texts([texts[i] for i in missing.tolist()])
            self.table[t] = table
            self.load_report[t] = {"rows": n, "reused": int(have.sum()), "encoded": int(missing.numel())}
            if why is not None and n:
                ctx.log(f"notice: {why}: encoding the {n} texts of {t!r} with the LM")

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> Tensor:
        """LM rows ``[N, H]`` of texts, in chunks of ``run.eval_batch_size``."""
        lm, bs = self.lm, max(1, int(self.ctx.cfg.run.eval_batch_size))
        if not texts:
            return torch.zeros(0, lm.hidden_size, device=self.ctx.device)
        tok = lm.tokenize(list(texts), self.ctx.cfg.lm.max_length)
        return torch.cat([lm.encode(tok, torch.arange(i, min(i + bs, len(texts)))) for i in range(0, len(texts), bs)])

    # ------------------------------------------------------------------ requests
    def view(self, nodes: dict | None = None, edges: dict | None = None) -> tuple[GraphView, dict]:
        """The run's graph with a request's new nodes and edges.

        Args:
            nodes: new nodes per node type: ``{type: {"id": [...], "text": [...]}}`` (ids not
                in the run's graph; types with text in the run).
            edges: new edges per relation ``(src, rel, dst)`` or ``"src__rel__dst"``:
                ``{"src": [...], "dst": [...]}`` or a pair ``(src_ids, dst_ids)``; each end a
                new node or a node of the run's graph (raw ids). The reverse edge is added
                where the run's graph has the reverse relation.

        Returns:
            ``(view, new)``: the :class:`GraphView` and ``{type: {key: index}}`` of the new
            nodes.

        Raises:
            PredictError: an unknown type, relation or id, a repeated or already known new id,
                a new node of a type without text.
        """
        g, ctx, index = self.graph, self.ctx, self.index
        nodes, edges = nodes or {}, edges or {}
        new: dict[str, dict] = {}
        new_text: dict[str, list[str]] = {}
        for t, spec in nodes.items():
            where = spec.get("source", f"nodes[{t!r}]") if isinstance(spec, dict) else f"nodes[{t!r}]"
            index.check_type(t, where)
            if t not in ctx.text_types:
                raise PredictError(f"{where}: node type {t!r} has no text in this run; only nodes of "
                                   f"{ctx.text_types} can be added (the others have learned per-node rows)")
            if not isinstance(spec, dict) or "id" not in spec or "text" not in spec:
                raise PredictError(f"{where}: new nodes need 'id' and 'text'")
            raw_ids, texts = list(spec["id"]), list(spec["text"])
            if len(raw_ids) != len(texts):
                raise PredictError(f"{where}: {len(raw_ids)} ids but {len(texts)} texts")
            known, keys = index.known(t), {}
            for row, v in enumerate(raw_ids):
                k = index.key(t, v, f"{where}, row {row}")
                if k in known:
                    raise PredictError(f"{where}, row {row}: id {v!r} is already a node of type {t!r} of the "
                                       "run's graph; ask for it with ids= (--ids)")
                if k in keys:
                    raise PredictError(f"{where}, row {row}: id {v!r} repeats a new node of the request")
                keys[k] = g.num_nodes[t] + len(keys)
            for row, x in enumerate(texts):
                if not isinstance(x, str):
                    raise PredictError(f"{where}, row {row}: text {x!r} is not a string")
            new[t], new_text[t] = keys, texts
        num_nodes = {t: g.num_nodes[t] + len(new.get(t, {})) for t in g.node_types}
        add: dict = {}
        for key, spec in edges.items():
            et = parse_edge_type(key, g.edge_types, f"edges[{key!r}]")
            where = spec.get("source", f"edges[{'__'.join(et)}]") if isinstance(spec, dict) \
                else f"edges[{'__'.join(et)}]"
            try:
                src, dst = (spec["src"], spec["dst"]) if isinstance(spec, dict) else spec
            except (KeyError, TypeError, ValueError):
                raise PredictError(f"{where}: edges need 'src' and 'dst'") from None
            if len(src) != len(dst):
                raise PredictError(f"{where}: {len(src)} sources but {len(dst)} destinations")
            s = [index.lookup(et[0], v, f"{where}, row {r}, column 'src'", new) for r, v in enumerate(src)]
            d = [index.lookup(et[2], v, f"{where}, row {r}, column 'dst'", new) for r, v in enumerate(dst)]
            a = add.setdefault(et, ([], []))
            a[0].extend(s)
            a[1].extend(d)
            rev = g.reverse_of.get(et)
            if rev is not None:
                b = add.setdefault(rev, ([], []))
                b[0].extend(d)
                b[1].extend(s)
        added = {et: (torch.as_tensor(s, dtype=torch.long), torch.as_tensor(d, dtype=torch.long))
                 for et, (s, d) in add.items()}
        new_rows = {t: self.encode_texts(x) for t, x in new_text.items()}
        return GraphView(g, self.table, num_nodes, new_rows, added, coo=self._coo_of), new

    def _coo_of(self, et):
        if et not in self._coo:
            from lmgnn_fast.ops.convert import csc_to_coo

            c = self.graph.csc[et]
            self._coo[et] = csc_to_coo(c.indptr, c.indices)
        return self._coo[et]

    def _targets(self, ids: dict | None, new: dict, where: str = "ids") -> tuple[dict, dict]:
        """Node indices and raw ids of ``ids`` (``{type: [raw ids]}``; new nodes allowed)."""
        idx, raw = {}, {}
        for t, vs in (ids or {}).items():
            self.index.check_type(t, f"{where}[{t!r}]")
            vs = [vs] if isinstance(vs, (str, int)) else list(vs)
            idx[t] = [self.index.lookup(t, v, f"{where}[{t!r}]", new) for v in vs]
            raw[t] = vs
        return idx, raw

    def embed(self, ids: dict, nodes: dict | None = None, edges: dict | None = None) -> dict[str, Tensor]:
        """Output rows ``{type: [N_t, H]}`` of nodes ``ids`` (``{type: [raw ids]}``, known or
        new), in request order."""
        view, new = self.view(nodes, edges)
        idx, _ = self._targets(ids, new)
        return {t: self.model.output_rows(r).float().cpu() for t, r in self._embed(view, idx).items()}

    def _embed(self, view: GraphView, idx: dict[str, list[int]]) -> dict[str, Tensor]:
        if not idx:
            return {}
        return self.model.embed(view, {t: torch.as_tensor(v, dtype=torch.long) for t, v in idx.items()}, OUTPUT_SEED)

    def predict(self, nodes: dict | None = None, edges: dict | None = None,
                ids: dict | None = None) -> dict[str, NodePredictions]:
        """Embeddings (and, for a node classification task, class scores) of new nodes and
        of known nodes.

        Args:
            nodes, edges: the request's new nodes and edges (see :meth:`view`).
            ids: known nodes to predict as well: ``{type: [raw ids]}``.

        Returns:
            Per node type with requested nodes, a :class:`NodePredictions` (new nodes first,
            then the known ones, each in request order).

        Raises:
            PredictError: an unknown type, relation or id, a repeated or already known new
                id, a new node of a type without text.
        """
        view, new = self.view(nodes, edges)
        targets = {t: list(k.values()) for t, k in new.items()}
        out_ids = {t: list(nodes[t]["id"]) for t in new}
        idx, raw = self._targets(ids, new)
        for t in idx:
            targets.setdefault(t, []).extend(idx[t])
            out_ids.setdefault(t, []).extend(raw[t])
        emb = self._embed(view, targets)
        task, res = self.task, {}
        for t, rows in emb.items():
            logits = self.model.node_logits(rows) if task.type == "node_classification" and \
                t == task.node_type else None
            out_rows = self.model.output_rows(rows).float().cpu()
            res[t] = NodePredictions(t, out_ids[t], out_rows, logits, bool(task.multilabel),
                                     float(self.ctx.cfg.task.threshold),
                                     (self.graph.label_names or {}).get(t) if logits is not None else None)
        return res

    def predict_known(self, node_type: str, ids: list) -> NodePredictions:
        """:meth:`predict` of nodes of the run's graph only (raw ids)."""
        return self.predict(ids={node_type: ids})[node_type]

    def _task_relation(self, edge_type, where: str) -> tuple:
        t = self.task
        if t.type == "node_classification":
            raise PredictError(f"{where}: the run's task {t.name!r} is node classification: it scores nodes, "
                               "not pairs")
        et = t.edge_type if edge_type is None else parse_edge_type(edge_type, self.graph.edge_types, where)
        if tuple(et) != tuple(t.edge_type):
            raise PredictError(f"{where}: the model scores pairs of the task's relation {list(t.edge_type)}, "
                               f"not {list(et)}")
        return tuple(et)

    def score_pairs(self, src: list, dst: list, nodes: dict | None = None, edges: dict | None = None,
                    edge_type=None) -> PairPredictions:
        """Scores of pairs of the task's relation: class scores (edge classification) or link
        scores (link prediction).

        Args:
            src, dst: raw ids of the pairs' ends (known or new nodes), equal lengths.
            nodes, edges: the request's new nodes and edges.
            edge_type: the relation (default and only choice: the task's).

        Raises:
            PredictError: a node classification task, another relation, an unknown id, or a
                stage-1 model without a head for the task.
        """
        et = self._task_relation(edge_type, "pairs")
        src, dst = list(src), list(dst)
        if len(src) != len(dst):
            raise PredictError(f"pairs: {len(src)} sources but {len(dst)} destinations")
        view, new = self.view(nodes, edges)
        st, _, dt = et
        s = [self.index.lookup(st, v, f"pairs, row {r}, column 'src'", new) for r, v in enumerate(src)]
        d = [self.index.lookup(dt, v, f"pairs, row {r}, column 'dst'", new) for r, v in enumerate(dst)]
        if st == dt:
            h = self._embed(view, {st: s + d})[st]
            hs, hd = h[:len(s)], h[len(s):]
        else:
            h = self._embed(view, {st: s, dt: d})
            hs, hd = h[st], h[dt]
        out = self.model.pair_scores(hs, hd)
        if out is None:
            raise PredictError(f"the stage-{self.stage} model has no head scoring pairs of {list(et)} "
                               "(stage 1 trained without the task)")
        if self.task.type == "edge_classification":
            names = (getattr(self.graph, "edge_label_names", None) or {}).get(et)
            return PairPredictions(et, src, dst, logits=out, label_names=names)
        return PairPredictions(et, src, dst, score=out)

    def candidate_rows(self) -> Tensor:
        """Rows of every destination node of the link-prediction relation on the run's
        graph (computed once, as the run's outputs compute them)."""
        dt = self.task.edge_type[2]
        if dt not in self._candidates:
            if self.stage == 1:
                self._candidates[dt] = self.table[dt]
            else:
                self._candidates[dt] = self.model.all_rows(dt)
        return self._candidates[dt]

    def _linked(self, et, view: GraphView, q: Tensor, n_cand: int) -> Tensor:
        """``[Q, n_cand]`` bool: the candidates each query node is already linked to by the
        relation (its edges in the run's graph, held-out ones included, and the request's),
        and the query node itself when sources and destinations are of one type."""
        src, dst = self.graph.all_edges(et)
        extra_s, extra_d = view.added.get(et, (torch.empty(0, dtype=torch.long),) * 2)
        src, dst = torch.cat([src, extra_s]), torch.cat([dst, extra_d])
        uq, inv = torch.unique(q, return_inverse=True)
        row = torch.full((view.num_nodes[et[0]],), -1, dtype=torch.long)
        row[uq] = torch.arange(uq.numel())
        ok = src >= 0
        e = row[src[ok]]
        mask = torch.zeros(uq.numel(), n_cand, dtype=torch.bool)
        hit = e >= 0
        mask[e[hit], dst[ok][hit]] = True
        if et[0] == et[2]:
            mask[torch.arange(uq.numel()), uq] = True
        return mask[inv]

    def top_k(self, src: list, k: int = 10, nodes: dict | None = None, edges: dict | None = None,
              filter_known: bool = True) -> LinkCandidates:
        """The ``k`` best-scored destinations of each source node under the link-prediction
        model, among every node of the destination type (the request's new ones included).

        Args:
            src: raw ids of source nodes (known or new).
            k: candidates per source.
            nodes, edges: the request's new nodes and edges.
            filter_known: leave out the destinations a source is already linked to (the
                relation's edges in the run's graph, held-out ones included, and the
                request's), and the source itself.

        Candidates of the run's graph are scored with their rows on the run's graph (computed
        once per loaded run); the sources and the request's new nodes with the request's
        neighbourhood.

        Raises:
            PredictError: the task is not link prediction, ``k < 1``, an unknown id.
        """
        if self.task.type != "link_prediction":
            raise PredictError(f"top_k: the run's task {self.task.name!r} is {self.task.type}; top-k candidates "
                               "need a link prediction task")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise PredictError(f"top_k: k must be a positive integer, got {k!r}")
        et = tuple(self.task.edge_type)
        st, _, dt = et
        view, new = self.view(nodes, edges)
        src = list(src)
        s = [self.index.lookup(st, v, f"top_k, src row {r}", new) for r, v in enumerate(src)]
        n0 = self.graph.num_nodes[dt]
        new_dst = list(new.get(dt, {}).values())
        if st == dt:
            h = self._embed(view, {st: s + new_dst})[st]
            hs, h_new = h[:len(s)], h[len(s):]
        else:
            h = self._embed(view, {st: s, **({dt: new_dst} if new_dst else {})})
            hs, h_new = h[st], h.get(dt)
        cand = self.candidate_rows().to(hs.device)
        if new_dst:
            cand = torch.cat([cand, h_new.to(cand.dtype)])
        scores = self.model.candidate_scores(hs, cand)
        if scores is None:
            raise PredictError(f"the stage-{self.stage} model has no decoder of {list(et)} "
                               "(stage 1 trained without the target relation)")
        if filter_known and len(s):
            scores = scores.masked_fill(self._linked(et, view, torch.as_tensor(s, dtype=torch.long),
                                                     cand.shape[0]), float("-inf"))
        top, pos = torch.topk(scores, min(k, cand.shape[0]), dim=1)
        raw_new = [None] * len(new_dst)
        for key, i in new.get(dt, {}).items():
            raw_new[i - n0] = key
        known_raw = raw_ids(self.graph, dt, [i for i in pos[torch.isfinite(top)].tolist() if i < n0])
        it = iter(known_raw)
        dst_ids = [[next(it) if i < n0 else raw_new[i - n0] for i in pos[r][torch.isfinite(top[r])].tolist()]
                   for r in range(len(s))]
        return LinkCandidates(et, src, dst_ids, top)

    # ------------------------------------------------------------------ refresh, evaluation
    @torch.no_grad()
    def update_texts(self, node_type: str, ids: list, texts: list[str]) -> int:
        """Give nodes of the run's graph new texts and refresh their LM rows (one LM pass over
        these texts; nothing else is recomputed). Returns the number of rows refreshed.

        Raises:
            PredictError: an unknown node type or id, a type without text, lengths that differ.
        """
        self.index.check_type(node_type, "update_texts")
        if node_type not in self.table:
            raise PredictError(f"update_texts: node type {node_type!r} has no text in this run")
        if len(ids) != len(texts):
            raise PredictError(f"update_texts: {len(ids)} ids but {len(texts)} texts")
        idx = [self.index.lookup(node_type, v, f"update_texts, row {r}") for r, v in enumerate(ids)]
        if not idx:
            return 0
        rows = self.encode_texts([str(x) for x in texts])
        self.table[node_type][torch.as_tensor(idx, device=self.table[node_type].device)] = rows
        text = self.graph.text[node_type]
        for i, x in zip(idx, texts):
            text[i] = str(x)
        self._candidates.clear()
        return len(idx)

    def evaluate(self, splits=("val", "test")) -> dict:
        """``{split: metrics}`` under the training's evaluation protocol (what
        ``python -m lmgnn_fast.evaluate`` reports)."""
        return {split: self.model.evaluate(split) for split in splits}

    def metadata(self) -> dict:
        """What a client needs to know about the loaded run (``GET /metadata``)."""
        t, g = self.task, self.graph
        names = None
        if t.type == "node_classification":
            names = (g.label_names or {}).get(t.node_type)
        elif t.type == "edge_classification":
            names = (getattr(g, "edge_label_names", None) or {}).get(tuple(t.edge_type))
        return {"run_dir": self.ctx.out_dir, "stage": self.stage,
                "final_model": "ensemble" if self.ensemble is not None else "stage",
                "task": {"name": t.name, "type": t.type, "node_type": t.node_type,
                         "edge_type": list(t.edge_type) if t.edge_type else None, "multilabel": bool(t.multilabel),
                         "num_classes": t.num_classes, "class_names": names},
                "node_types": {x: g.num_nodes[x] for x in g.node_types}, "text_types": list(self.ctx.text_types),
                "relations": [list(e) for e in g.edge_types], "hidden_size": self.model.hidden_size,
                "fanouts": self.fanouts, "device": str(self.ctx.device)}
