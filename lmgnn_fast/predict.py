"""Predictions of a finished run for nodes it has not seen (and its own), for every task type.

``python -m lmgnn_fast.predict RUN_DIR [--data DIR] [--nodes TYPE:FILE ...]
[--edges SRC__REL__DST:FILE ...] [--ids TYPE:ID[,ID...] ...] [--pairs FILE] [--top-k K]
[--keep-known] [--out DIR] [--stage K] [--full-neighbourhood] [--graph NAME_OR_DIR]
[--key value ...]``

A thin command line on :mod:`lmgnn_fast.inference`: loads the run's final model
(``metrics.json``'s ``final_stage``, or ``--stage K``) without a trainer, reading the LM rows
the run stored (only new or changed texts go through the LM). New nodes come with their
text and their edges, to nodes of the run's graph or to other new nodes, in the files of the
directory format (``docs/predict.md``)::

    DIR/nodes/<node_type>.{csv,parquet,jsonl}                 columns id, text
    DIR/edges/<src_type>__<relation>__<dst_type>.{csv,...}    columns src, dst

(``--nodes TYPE:FILE`` and ``--edges SRC__REL__DST:FILE`` name single tables instead). The
new nodes are merged onto the run's graph for this request only. ``--ids`` names nodes of
the run's graph to predict as well. Writes to ``OUT`` (default ``RUN_DIR/predict``):

- ``embeddings/<type>.parquet`` (``id``, ``embedding``) of the requested nodes;
- node classification: ``predictions.parquet`` (``id``, ``pred``, ``prob``, ``pred_names``);
- ``--pairs FILE`` (columns ``src``, ``dst``; edge classification or link prediction):
  ``pairs.parquet`` with ``pred``/``prob``/``pred_names`` or ``score`` per pair;
- ``--top-k K`` (link prediction): ``top_k.parquet`` (``src``, ``rank``, ``dst``, ``score``),
  the K best destinations of every requested node of the relation's source type, the
  destinations it is already linked to left out (``--keep-known`` keeps them).

The graph model samples with the run's ``gnn.fanouts`` and a fixed seed;
``--full-neighbourhood`` takes every neighbour at every layer instead. Errors are one line
(``lmgnn_fast.cli``).

Python: ``lmgnn_fast.inference.load_run(RUN_DIR)`` (``Predictor.from_run`` is the same).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from lmgnn_fast.graph import EdgeType
from lmgnn_fast.inference.results import LinkCandidates, NodePredictions, PairPredictions
from lmgnn_fast.inference.run import LoadedRun, load_run
from lmgnn_fast.inference.view import PredictError
from lmgnn_fast.inference.writer import write_results
from lmgnn_fast.io.errors import GraphFormatError
from lmgnn_fast.io.paths import is_inside

__all__ = ["Predictor", "NodePredictions", "PairPredictions", "LinkCandidates", "PredictError", "load_run",
           "read_new_nodes", "read_pairs", "write_predictions", "main"]

_EXTS = ("csv", "parquet", "jsonl")

#: The loaded run answering requests (:class:`lmgnn_fast.inference.LoadedRun`):
#: ``Predictor.from_run(RUN_DIR, stage=..., graph=..., full_neighbourhood=..., overrides=...)``.
Predictor = LoadedRun


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


def read_pairs(file: str) -> tuple[list, list]:
    """The ``src`` and ``dst`` columns of a table of node pairs (csv, parquet or jsonl).

    Raises:
        GraphFormatError: a file that cannot be read, or a missing column or value (named).
        FileNotFoundError: no such file.
    """
    from lmgnn_fast.io.directory import read_table

    p = Path(file)
    if not p.is_file():
        raise FileNotFoundError(f"--pairs {file!r}: no such file")
    if p.suffix[1:] not in _EXTS:
        raise GraphFormatError(f"a pairs table is .csv, .parquet or .jsonl, got {p.name!r}", file=str(file))
    table, _ = read_table(p, str(file), "edges")
    return _column(table, "src", str(file), "source id"), _column(table, "dst", str(file), "destination id")


def write_predictions(results: dict, out_dir: str) -> list[str]:
    """Write a request's results (:func:`lmgnn_fast.inference.writer.write_results`)."""
    return write_results(results, out_dir)


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
    ap.add_argument("--pairs", metavar="FILE", help="a table of (src, dst) pairs of the task's relation to score "
                    "(edge classification, link prediction)")
    ap.add_argument("--top-k", type=int, metavar="K", help="link prediction: the K best destinations of every "
                    "requested node of the relation's source type")
    ap.add_argument("--keep-known", action="store_true", help="--top-k: keep destinations already linked")
    ap.add_argument("--out", help="output folder (default RUN_DIR/predict)")
    ap.add_argument("--stage", type=int, choices=(1, 2, 3), help="the stage's model (default: the final one)")
    ap.add_argument("--graph", help="the graph to extend (default: the run's data.name)")
    ap.add_argument("--full-neighbourhood", action="store_true", help="every neighbour at every layer")
    args, rest = ap.parse_known_args(argv)
    if not (args.data or args.nodes or args.edges or args.ids or args.pairs):
        raise UsageError("nothing to predict: give --data DIR, --nodes TYPE:FILE, --ids TYPE:ID,... or --pairs FILE")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be a positive integer, got {args.top_k}")
    nodes, edges = read_new_nodes(args.data, _pairs(args.nodes, "--nodes"), _pairs(args.edges, "--edges"))
    pairs = read_pairs(args.pairs) if args.pairs else None
    ids: dict[str, list] = {}
    for t, v in _pairs(args.ids, "--ids"):
        ids.setdefault(t, []).extend(x for x in v.split(",") if x)
    if args.graph:
        rest += ["--data.name", args.graph]
    run = load_run(args.run_dir, stage=args.stage, full_neighbourhood=args.full_neighbourhood, overrides=rest)
    res: dict = {}
    if nodes or ids or (edges and pairs is None):
        res.update(run.predict(nodes, edges, ids))
    if pairs is not None:
        res["pairs"] = run.score_pairs(*pairs, nodes=nodes, edges=edges)
    if args.top_k is not None:
        if run.task.type != "link_prediction":
            raise UsageError(f"--top-k needs a link prediction task; the run's task {run.task.name!r} is "
                             f"{run.task.type}")
        st = run.task.edge_type[0]
        src = list(nodes.get(st, {}).get("id", [])) + list(ids.get(st, []))
        if not src:
            raise UsageError(f"--top-k: no node of the relation's source type {st!r} requested (new nodes or --ids)")
        res["top_k"] = run.top_k(src, args.top_k, nodes, edges, filter_known=not args.keep_known)
    out = args.out or os.path.join(args.run_dir, "predict")
    written = write_results(res, out)
    n = sum(len(r.ids) for r in res.values() if r.kind == "nodes")
    print(f"stage {run.stage} model: {n} node(s)" + (f", {len(pairs[0])} pair(s)" if pairs else "")
          + " -> " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
