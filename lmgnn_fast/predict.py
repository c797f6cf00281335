"""Embeddings and predictions of a finished run for nodes it has not seen (and its own).

``python -m lmgnn_fast.predict RUN_DIR [--data DIR] [--nodes TYPE:FILE ...]
[--edges SRC__REL__DST:FILE ...] [--ids TYPE:ID[,ID...] ...] [--out DIR] [--stage K]
[--full-neighbourhood] [--graph NAME_OR_DIR] [--key value ...]``

Loads the run's final model (``metrics.json``'s ``final_stage``, or ``--stage K``): its LM,
its graph model and its head. New nodes come with their text and their edges, to nodes of
the run's graph or to other new nodes, in the files of the directory format
(``docs/predict.md``)::

    DIR/nodes/<node_type>.{csv,parquet,jsonl}                 columns id, text
    DIR/edges/<src_type>__<relation>__<dst_type>.{csv,...}    columns src, dst

(``--nodes TYPE:FILE`` and ``--edges SRC__REL__DST:FILE`` name single tables instead). The
new nodes are merged onto the run's graph for this request only: their texts go through
the LM, the graph model reads the neighbourhood the edges give them (reverse edges added
where the run's graph has reverse relations). ``--ids`` names nodes of the run's graph to
predict as well. Writes ``OUT/embeddings/<type>.parquet`` (``id``, ``embedding``) and, for a
node classification task, ``OUT/predictions.parquet`` (``id``, ``pred``, ``prob``,
``pred_names`` where the task has class names); ``OUT`` defaults to ``RUN_DIR/predict``.

The graph model samples with the run's ``gnn.fanouts`` and a fixed seed;
``--full-neighbourhood`` takes every neighbour at every layer instead (deterministic; equal
to the run's own outputs when the run trained with ``gnn.fanouts: [-1, ...]``). Errors are
one line (``lmgnn_fast.cli``).

Python: ``Predictor.from_run(RUN_DIR).predict(nodes=..., edges=..., ids=...)``.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lmgnn_fast.graph import CSC, EdgeType, edge_type_str
from lmgnn_fast.io.errors import GraphFormatError
from lmgnn_fast.io.paths import is_inside
from lmgnn_fast.ops import coo_to_csc
from lmgnn_fast.ops.convert import csc_to_coo

__all__ = ["Predictor", "NodePredictions", "PredictError", "read_new_nodes", "write_predictions", "main"]

_EXTS = ("csv", "parquet", "jsonl")


class PredictError(ValueError):
    """A request the run cannot answer (unknown node type or id, a node type without text)."""


@dataclass
class NodePredictions:
    """What the run's final model gives for the requested nodes of one type.

    Attributes:
        node_type: the node type.
        ids: raw ids, in request order (new nodes first, then ``ids=``).
        embedding: ``[N, H]`` float32: the graph model's output rows (the LM's pooled rows
            when the final model is stage 1's).
        logits: ``[N, C]`` head outputs for the task's node type of a node classification
            task, else ``None``.
        multilabel: the task is multi-label (``prob`` is a sigmoid, ``pred`` a list of classes).
        threshold: the multi-label decision threshold (``task.threshold``).
        label_names: the task's class names (index = class id), or ``None``.
    """

    node_type: str
    ids: list
    embedding: Tensor
    logits: Tensor | None = None
    multilabel: bool = False
    threshold: float = 0.5
    label_names: list | None = None

    @property
    def prob(self) -> Tensor | None:
        """``[N, C]`` class probabilities (softmax; sigmoid when multi-label)."""
        if self.logits is None:
            return None
        return torch.sigmoid(self.logits) if self.multilabel else torch.softmax(self.logits, -1)

    @property
    def pred(self) -> list | None:
        """Per node the predicted class id (multi-label: the list of class ids)."""
        if self.logits is None:
            return None
        if self.multilabel:
            return [torch.nonzero(p > self.threshold).flatten().tolist() for p in self.prob]
        return self.logits.argmax(-1).tolist()

    @property
    def pred_names(self) -> list | None:
        """:attr:`pred` as class names (``None`` without names)."""
        p, names = self.pred, self.label_names
        if p is None or not names:
            return None
        return [[names[c] for c in x] for x in p] if self.multilabel else [names[c] for c in p]


# ----------------------------------------------------------------------------- input files
def _column(table, name: str, src: str, what: str) -> list:
    if name not in table.column_names:
        raise GraphFormatError(f"missing column {name!r} ({what}); columns: {table.column_names}", file=src)
    col = table.column(name).to_pylist()
    for i, v in enumerate(col):
        if v is None:
            raise GraphFormatError(f"empty {what}", file=src, row=i, column=name)
    return col


def _find(folder: Path, sub: str) -> dict[str, Path]:
    d = folder / sub
    if not d.is_dir():
        return {}
    out = {}
    for p in sorted(d.iterdir()):
        if p.is_file() and p.suffix[1:] in _EXTS:
            if not is_inside(folder, p):  # as the dataset reader: no symbolic link leading out
                raise GraphFormatError("resolves outside the request folder; files must stay inside it (no "
                                       "symbolic links leading out)", file=f"{sub}/{p.name}")
            if p.stem in out:
                raise GraphFormatError(f"two tables for {p.stem!r} ({out[p.stem].name}, {p.name})",
                                       file=f"{sub}/{p.name}")
            out[p.stem] = p
    return out


def _edge_type_of_name(stem: str, where: str) -> EdgeType:
    parts = stem.split("__")
    if len(parts) != 3 or not all(parts):
        raise GraphFormatError("an edge table is named <src_type>__<relation>__<dst_type>, got "
                               f"{stem!r}", file=where)
    return tuple(parts)  # type: ignore[return-value]


def read_new_nodes(data: str | None = None, nodes: list[tuple[str, str]] = (),
                   edges: list[tuple[str, str]] = ()) -> tuple[dict, dict]:
    """Read the new nodes and edges of a request from files.

    Args:
        data: a folder with ``nodes/<type>.{csv,parquet,jsonl}`` (columns ``id``, ``text``)
            and ``edges/<src>__<rel>__<dst>.{csv,parquet,jsonl}`` (columns ``src``, ``dst``);
            other columns and a ``metadata.json`` are ignored.
        nodes: ``(node_type, file)`` node tables in addition to ``data``'s.
        edges: ``(src__rel__dst, file)`` edge tables in addition to ``data``'s.

    Returns:
        ``(nodes, edges)`` as :meth:`Predictor.predict` takes them: ``{type: {"id": [...],
        "text": [...], "source": file}}`` and ``{(src, rel, dst): {"src": [...], "dst":
        [...], "source": file}}``.

    Raises:
        GraphFormatError: a file that cannot be read, or a missing column or value (named).
        FileNotFoundError: ``data`` or a named file does not exist.
    """
    from lmgnn_fast.io.directory import read_table

    node_files: list[tuple[str, Path, str]] = []
    edge_files: list[tuple[EdgeType, Path, str]] = []
    if data is not None:
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data {data!r}: no such folder")
        found_n, found_e = _find(root, "nodes"), _find(root, "edges")
        if not found_n and not found_e:
            raise GraphFormatError("no nodes/<type>.{csv,parquet,jsonl} or edges/<src>__<rel>__<dst>.* tables "
                                   "found", file=str(data))
        node_files += [(t, p, f"nodes/{p.name}") for t, p in found_n.items()]
        edge_files += [(_edge_type_of_name(s, f"edges/{p.name}"), p, f"edges/{p.name}") for s, p in found_e.items()]
    for t, f in nodes:
        node_files.append((t, Path(f), str(f)))
    for s, f in edges:
        edge_files.append((_edge_type_of_name(s, str(f)), Path(f), str(f)))
    out_n: dict = {}
    for t, p, rel in node_files:
        if not p.is_file():
            raise FileNotFoundError(f"{rel}: no such file")
        table, _ = read_table(p, rel, "nodes")
        ids = _column(table, "id", rel, "node id")
        text = _column(table, "text", rel, "text") if "text" in table.column_names else None
        if text is None:
            raise GraphFormatError(f"missing column 'text': new nodes need their text; columns: "
                                   f"{table.column_names}", file=rel)
        prev = out_n.setdefault(t, {"id": [], "text": [], "source": rel})
        prev["id"] += ids
        prev["text"] += [str(x) for x in text]
    out_e: dict = {}
    for et, p, rel in edge_files:
        if not p.is_file():
            raise FileNotFoundError(f"{rel}: no such file")
        table, _ = read_table(p, rel, "edges")
        prev = out_e.setdefault(et, {"src": [], "dst": [], "source": rel})
        prev["src"] += _column(table, "src", rel, "source id")
        prev["dst"] += _column(table, "dst", rel, "destination id")
    return out_n, out_e


# ----------------------------------------------------------------------------- the predictor
class _Extended:
    """The run's graph plus a request's nodes and edges, as the sampler reads it."""

    def __init__(self, node_types, edge_types, num_nodes, csc):
        self.node_types, self.edge_types, self.num_nodes, self.csc = node_types, edge_types, num_nodes, csc


class Predictor:
    """A finished run's final model, answering requests for new and known nodes.

    Build it with :meth:`from_run`. Loading encodes the texts of the run's graph once with
    the final LM (what the run's own outputs read); each request then LM-encodes only its
    new texts and samples the neighbourhood of its nodes in the run's graph extended by the
    request's nodes and edges.

    Attributes:
        stage: the stage whose model answers (1, 2 or 3).
        graph: the run's graph (the request's nodes are never added to it).
        task: the run's resolved target task.
    """

    def __init__(self, trainer, stage: int, full_neighbourhood: bool = False):
        from lmgnn_fast.train.stages import STAGES

        self._tr = trainer
        self.ctx = trainer.ctx
        self.graph = self.ctx.graph
        self.task = self.ctx.task
        self.stage = stage
        self._final = STAGES[stage].predictor(self.ctx, trainer.features, trainer.gnn_task)
        self.features = trainer.features
        if self.features.lm is not None:
            self.features.lm.eval()
        fan = [int(f) for f in self.ctx.cfg.gnn.fanouts]
        self.fanouts = [-1] * len(fan) if full_neighbourhood else fan
        self._index: dict[str, dict] = {}
        self._int_ids = {t: self._ids_are_ints(t) for t in self.graph.node_types}
        self._coo: dict[EdgeType, tuple[Tensor, Tensor]] = {}

    @classmethod
    def from_run(cls, run_dir: str, *, stage: int | None = None, graph=None, full_neighbourhood: bool = False,
                 overrides: list[str] | None = None) -> "Predictor":
        """Load the final model of the run in ``run_dir``.

        Args:
            run_dir: a finished run directory (``config.yaml``, ``metrics.json``,
                ``checkpoints/stage<K>.safetensors``).
            stage: the stage whose checkpoint answers (default: ``metrics.json``'s
                ``final_stage``).
            graph: the graph to extend (default: the run's ``data.name``, loaded again).
            full_neighbourhood: take every neighbour at every layer instead of sampling
                with the run's ``gnn.fanouts``.
            overrides: config overrides (``["--run.device", "cpu"]``).

        Raises:
            FileNotFoundError: ``run_dir`` is not a run directory.
            PredictError: the run has no final model / no checkpoint of ``stage``.
        """
        from lmgnn_fast.train.config import load_config
        from lmgnn_fast.train.runner import Trainer

        path = os.path.join(run_dir, "config.yaml")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{run_dir!r} is not a run directory (no config.yaml)")
        if stage is None:
            mpath = os.path.join(run_dir, "metrics.json")
            if not os.path.exists(mpath):
                raise FileNotFoundError(f"{mpath}: not found (the run did not finish); name a stage with --stage")
            with open(mpath) as f:
                stage = json.load(f).get("final_stage")
            if stage is None:
                raise PredictError(f"{mpath}: no final_stage (the run did not finish, or predates it); "
                                   "name a stage with --stage")
        if stage not in (1, 2, 3):
            raise PredictError(f"stage must be 1, 2 or 3, got {stage!r}")
        cfg = load_config(path, overrides)
        cfg.run.out_dir = run_dir
        cfg.run.resume = False
        cfg.run.progress = False
        tr = Trainer(cfg, graph=graph, log=lambda *a: None)
        if not tr.ckpt.has_stage(stage):
            raise PredictError(f"{run_dir}: no checkpoint of stage {stage} (checkpoints/stage{stage}.safetensors)")
        return cls(tr, stage, full_neighbourhood)

    # ------------------------------------------------------------------ ids
    def _ids_are_ints(self, t: str) -> bool:
        raw = (self.graph.raw_ids or {}).get(t)
        return raw is None or not isinstance(raw, list)

    def _key(self, t: str, v, where: str):
        if self._int_ids[t]:
            try:
                if isinstance(v, float) and not v.is_integer():
                    raise ValueError
                return int(v)
            except (TypeError, ValueError):
                raise PredictError(f"{where}: id {v!r} is not an integer (node type {t!r} has integer ids)") from None
        return str(v)

    def _known(self, t: str) -> dict:
        idx = self._index.get(t)
        if idx is None:
            raw = (self.graph.raw_ids or {}).get(t)
            n = self.graph.num_nodes[t]
            keys = range(n) if raw is None else (int(x) if self._int_ids[t] else str(x) for x in raw)
            idx = self._index[t] = {k: i for i, k in enumerate(keys)}
        return idx

    def _check_type(self, t: str, where: str) -> None:
        if t not in self.graph.node_types:
            raise PredictError(f"{where}: unknown node type {t!r}; the run's node types are {self.graph.node_types}")

    # ------------------------------------------------------------------ the request
    def predict(self, nodes: dict | None = None, edges: dict | None = None,
                ids: dict | None = None) -> dict[str, NodePredictions]:
        """Embeddings (and, for a node classification task, class scores) of new nodes and
        of known nodes.

        Args:
            nodes: new nodes per node type: ``{type: {"id": [...], "text": [...]}}`` (ids not
                in the run's graph; types with text in the run).
            edges: new edges per relation ``(src, rel, dst)`` or ``"src__rel__dst"``:
                ``{"src": [...], "dst": [...]}`` or a pair ``(src_ids, dst_ids)``; each end
                a new node or a node of the run's graph, by raw id. Relations are those of
                the run's graph; the reverse edge is added where it has the reverse relation.
            ids: known nodes to predict as well: ``{type: [raw ids]}``.

        Returns:
            Per node type with requested nodes, a :class:`NodePredictions` (new nodes first,
            then the known ones, each in request order).

        Raises:
            PredictError: an unknown type, relation or id, a repeated or already known new
                id, a new node of a type without text.
        """
        g, ctx = self.graph, self.ctx
        nodes, edges, ids = nodes or {}, edges or {}, ids or {}
        new_keys: dict[str, dict] = {}
        new_text: dict[str, list[str]] = {}
        for t, spec in nodes.items():
            where = spec.get("source", f"nodes[{t!r}]") if isinstance(spec, dict) else f"nodes[{t!r}]"
            self._check_type(t, where)
            if t not in ctx.text_types:
                raise PredictError(f"{where}: node type {t!r} has no text in this run; only nodes of "
                                   f"{ctx.text_types} can be added (the others have learned per-node rows)")
            raw_ids, texts = list(spec["id"]), list(spec["text"])
            if len(raw_ids) != len(texts):
                raise PredictError(f"{where}: {len(raw_ids)} ids but {len(texts)} texts")
            known, keys = self._known(t), {}
            for row, v in enumerate(raw_ids):
                k = self._key(t, v, f"{where}, row {row}")
                if k in known:
                    raise PredictError(f"{where}, row {row}: id {v!r} is already a node of type {t!r} of the "
                                       "run's graph; ask for it with ids= (--ids)")
                if k in keys:
                    raise PredictError(f"{where}, row {row}: id {v!r} repeats a new node of the request")
                keys[k] = g.num_nodes[t] + len(keys)
            new_keys[t], new_text[t] = keys, [str(x) for x in texts]
        num_nodes = {t: g.num_nodes[t] + len(new_keys.get(t, {})) for t in g.node_types}

        def lookup(t, v, where):
            k = self._key(t, v, where)
            i = self._known(t).get(k)
            if i is None:
                i = new_keys.get(t, {}).get(k)
            if i is None:
                raise PredictError(f"{where}: id {v!r} is neither a node of type {t!r} of the run's graph "
                                   "nor a new node of the request")
            return i

        add: dict[EdgeType, tuple[list, list]] = {}
        for key, spec in edges.items():
            et = tuple(key.split("__")) if isinstance(key, str) else tuple(key)
            where = spec.get("source", f"edges[{edge_type_str(et)}]") if isinstance(spec, dict) \
                else f"edges[{edge_type_str(et)}]"
            if et not in g.edge_types:
                raise PredictError(f"{where}: unknown relation {list(et)}; the run's relations are "
                                   f"{[list(e) for e in g.edge_types]}")
            src, dst = (spec["src"], spec["dst"]) if isinstance(spec, dict) else spec
            if len(src) != len(dst):
                raise PredictError(f"{where}: {len(src)} sources but {len(dst)} destinations")
            s = [lookup(et[0], v, f"{where}, row {r}, column 'src'") for r, v in enumerate(src)]
            d = [lookup(et[2], v, f"{where}, row {r}, column 'dst'") for r, v in enumerate(dst)]
            a = add.setdefault(et, ([], []))
            a[0].extend(s)
            a[1].extend(d)
            rev = g.reverse_of.get(et)
            if rev is not None:
                b = add.setdefault(rev, ([], []))
                b[0].extend(d)
                b[1].extend(s)

        targets: dict[str, list[int]] = {t: list(k.values()) for t, k in new_keys.items()}
        out_ids: dict[str, list] = {t: list(nodes[t]["id"]) for t in new_keys}
        for t, vs in ids.items():
            self._check_type(t, f"ids[{t!r}]")
            vs = [vs] if isinstance(vs, (str, int)) else list(vs)
            targets.setdefault(t, []).extend(lookup(t, v, f"ids[{t!r}]") for v in vs)
            out_ids.setdefault(t, []).extend(vs)
        new_rows = self._encode_new(new_text)
        if self.stage == 1:
            emb = self._lm_rows(targets, new_rows)
        else:
            emb = self._gnn_rows(targets, new_rows, num_nodes, add)
        task = self.task
        res = {}
        for t, rows in emb.items():
            logits = None
            if task.type == "node_classification" and t == task.node_type:
                head = self._final.heads.task_head if self.stage == 1 else self._final.model.head
                if head is not None:
                    with torch.no_grad():
                        logits = head(rows).float().cpu()
            res[t] = NodePredictions(t, out_ids[t], rows.float().cpu(), logits, bool(task.multilabel),
                                     float(ctx.cfg.task.threshold),
                                     (g.label_names or {}).get(task.node_type) if logits is not None else None)
        return res

    def predict_known(self, node_type: str, ids: list) -> NodePredictions:
        """:meth:`predict` of nodes of the run's graph only (raw ids)."""
        return self.predict(ids={node_type: ids})[node_type]

    # ------------------------------------------------------------------ model parts
    @torch.no_grad()
    def _encode_new(self, texts: dict[str, list[str]]) -> dict[str, Tensor]:
        """LM rows ``[N_t, H]`` of the new texts per type, in chunks of ``run.eval_batch_size``."""
        lm, out = self.features.lm, {}
        bs = max(1, int(self.ctx.cfg.run.eval_batch_size))
        for t, xs in texts.items():
            tok = lm.tokenize(xs, self.ctx.cfg.lm.max_length)
            parts = [lm.encode(tok, torch.arange(i, min(i + bs, len(xs)))) for i in range(0, len(xs), bs)]
            out[t] = torch.cat(parts) if parts else torch.zeros(0, lm.hidden_size, device=self.ctx.device)
        return out

    def _lm_rows(self, targets: dict[str, list[int]], new_rows: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for t, idx in targets.items():
            if t not in self.ctx.text_types:
                raise PredictError(f"node type {t!r} has no text: the final model (stage 1, the LM) has no rows for it")
            i = torch.as_tensor(idx, dtype=torch.long)
            n0 = self.graph.num_nodes[t]
            rows = torch.zeros(i.numel(), self.features.hidden_size, device=self.ctx.device)
            old = i < n0
            if old.any():
                rows[old.to(rows.device)] = self.features.encode_ids(t, i[old])
            if (~old).any():
                rows[(~old).to(rows.device)] = new_rows[t][(i[~old] - n0).to(rows.device)]
            out[t] = rows
        return out

    def _coo_of(self, et: EdgeType) -> tuple[Tensor, Tensor]:
        if et not in self._coo:
            c = self.graph.csc[et]
            self._coo[et] = csc_to_coo(c.indptr, c.indices)
        return self._coo[et]

    def _extended(self, num_nodes: dict[str, int], add: dict[EdgeType, tuple[list, list]]) -> _Extended:
        g, csc = self.graph, {}
        for et in g.edge_types:
            base, nd = g.csc[et], num_nodes[et[2]]
            if et not in add:
                pad = nd + 1 - base.indptr.numel()
                indptr = base.indptr if pad == 0 else torch.cat([base.indptr, base.indptr[-1:].expand(pad)])
                csc[et] = CSC(indptr, base.indices, base.eid)
                continue
            s0, d0 = self._coo_of(et)
            s1 = torch.as_tensor(add[et][0], dtype=torch.long)
            d1 = torch.as_tensor(add[et][1], dtype=torch.long)
            first = int(base.eid.max()) + 1 if base.eid.numel() else 0
            eid = torch.cat([base.eid[base.indptr[0]:base.indptr[-1]], first + torch.arange(s1.numel())])
            indptr, indices, perm = coo_to_csc(torch.cat([s0.long(), s1]), torch.cat([d0.long(), d1]), nd)
            csc[et] = CSC(indptr, indices.to(base.indices.dtype), eid[perm])
        return _Extended(g.node_types, g.edge_types, num_nodes, csc)

    @torch.no_grad()
    def _gnn_rows(self, targets, new_rows, num_nodes, add) -> dict[str, Tensor]:
        from lmgnn_fast.sampling import NeighborSampler
        from lmgnn_fast.train.stages.common import OUTPUT_SEED

        ctx, g, feats = self.ctx, self.graph, self.features
        ext = self._extended(num_nodes, add) if (add or num_nodes != g.num_nodes) else g
        sampler = NeighborSampler(ext, self.fanouts, replace=False, seed=ctx.cfg.run.seed)
        seeds, order = {}, {}
        for t, idx in targets.items():
            uniq, inv = torch.unique(torch.as_tensor(idx, dtype=torch.long), return_inverse=True)
            seeds[t], order[t] = uniq, inv
        blocks = [b.to(ctx.device) for b in sampler.sample(seeds, seed=OUTPUT_SEED)]
        x = {}
        for t in ctx.text_types:
            ids = blocks[0].src_nodes[t]
            n0 = g.num_nodes[t]
            old = ids < n0
            rows = torch.empty(ids.numel(), feats.hidden_size, device=ctx.device)
            if old.any():
                rows[old] = feats.caches[t].gather(ids[old])
            if (~old).any():
                rows[~old] = new_rows[t][ids[~old] - n0].to(rows.dtype)
            x[t] = rows
        model = self._final.model
        model.eval()
        h = model(x, blocks)
        return {t: h[t][order[t].to(h[t].device)] for t in targets}


# ----------------------------------------------------------------------------- output files
def write_predictions(results: dict[str, NodePredictions], out_dir: str) -> list[str]:
    """Write ``embeddings/<type>.parquet`` (``id``, ``embedding``) per type and, where the
    model scored classes, ``predictions.parquet`` (``id``, ``pred``, ``prob`` and
    ``pred_names`` when the task has class names). Returns the paths written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmgnn_fast.io.paths import safe_join

    os.makedirs(os.path.join(out_dir, "embeddings"), exist_ok=True)
    written = []
    for t, r in results.items():
        p = safe_join(os.path.join(out_dir, "embeddings"), t, ".parquet", "node type")
        pq.write_table(pa.table({"id": r.ids, "embedding": r.embedding.numpy().tolist()}), p)
        written.append(p)
        if r.logits is not None:
            cols = {"id": r.ids, "pred": r.pred, "prob": r.prob.numpy().tolist()}
            if r.pred_names is not None:
                cols["pred_names"] = r.pred_names
            p = os.path.join(out_dir, "predictions.parquet")
            pq.write_table(pa.table(cols), p)
            written.append(p)
    return written


# ----------------------------------------------------------------------------- command line
def _pairs(values: list[str], flag: str) -> list[tuple[str, str]]:
    from lmgnn_fast.cli import UsageError

    out = []
    for v in values or []:
        k, sep, rest = v.partition(":")
        if not sep or not k or not rest:
            raise UsageError(f"{flag} takes NAME:VALUE, got {v!r}")
        out.append((k, rest))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m lmgnn_fast.predict``: see the module docstring. Returns the exit status."""
    from lmgnn_fast.cli import run_cli
    from lmgnn_fast.lm.model import LMLoadError
    from lmgnn_fast.train.config import ConfigError
    from lmgnn_fast.train.errors import DataError, TrainingError

    return run_cli(_main, argv, user_errors=(ConfigError, DataError, TrainingError, LMLoadError, PredictError))


def _main(argv: list[str]) -> int:
    from lmgnn_fast.cli import ArgumentParser, UsageError

    ap = ArgumentParser(prog="python -m lmgnn_fast.predict", description=__doc__.split("\n\n")[0],
                        epilog="Other --section.key value pairs override the run's config (e.g. --run.device cpu). "
                               "Request format and outputs: docs/predict.md.")
    ap.add_argument("run_dir", help="a finished run directory")
    ap.add_argument("--data", help="folder of new nodes/ and edges/ tables (directory format)")
    ap.add_argument("--nodes", action="append", default=[], metavar="TYPE:FILE", help="a table of new nodes")
    ap.add_argument("--edges", action="append", default=[], metavar="SRC__REL__DST:FILE",
                    help="a table of new edges")
    ap.add_argument("--ids", action="append", default=[], metavar="TYPE:ID[,ID...]",
                    help="nodes of the run's graph to predict as well")
    ap.add_argument("--out", help="output folder (default RUN_DIR/predict)")
    ap.add_argument("--stage", type=int, choices=(1, 2, 3), help="the stage's model (default: the final one)")
    ap.add_argument("--graph", help="the graph to extend (default: the run's data.name)")
    ap.add_argument("--full-neighbourhood", action="store_true", help="every neighbour at every layer")
    args, rest = ap.parse_known_args(argv)
    if not (args.data or args.nodes or args.edges or args.ids):
        raise UsageError("nothing to predict: give --data DIR, --nodes TYPE:FILE or --ids TYPE:ID,...")
    nodes, edges = read_new_nodes(args.data, _pairs(args.nodes, "--nodes"), _pairs(args.edges, "--edges"))
    ids: dict[str, list] = {}
    for t, v in _pairs(args.ids, "--ids"):
        ids.setdefault(t, []).extend(x for x in v.split(",") if x)
    if args.graph:
        rest += ["--data.name", args.graph]
    pred = Predictor.from_run(args.run_dir, stage=args.stage, full_neighbourhood=args.full_neighbourhood,
                              overrides=rest)
    res = pred.predict(nodes, edges, ids)
    out = args.out or os.path.join(args.run_dir, "predict")
    written = write_predictions(res, out)
    n = sum(len(r.ids) for r in res.values())
    print(f"stage {pred.stage} model: {n} node(s) -> " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
