"""Command line for the built-in datasets.

``python -m lmgnn_fast.datasets list``
``python -m lmgnn_fast.datasets info NAME|DIR [-o key=value ...]``
``python -m lmgnn_fast.datasets export NAME DIR [--format parquet|csv|jsonl] [--overwrite] [-o key=value ...]``
``python -m lmgnn_fast.datasets import-graphstorm CONFIG.json DIR [--format ...] [--overwrite] [--seed N]
[--name NAME]``

``-o`` passes a dataset option (``-o max_nodes=5000 -o seed=1``); values are parsed as
JSON where they can be (numbers, ``true``/``false``, lists), else kept as strings.
Errors are one line with exit status 2 (``--debug`` shows the traceback; see
``lmgnn_fast.cli``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lmgnn_fast.cli import ArgumentParser, run_cli
from lmgnn_fast.datasets import (
    _REGISTRY,
    DatasetUnavailable,
    dataset_tables,
    export_dataset,
    list_datasets,
    load_dir_dataset,
)
from lmgnn_fast.datasets._common import read_tables, summarize_tables
from lmgnn_fast.io import build_graph, from_graphstorm, write_dir


def parse_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"option {text!r} is not of the form key=value")
    low = value.lower()
    if low in ("true", "false"):
        return key, low == "true"
    if low in ("none", "null"):
        return key, None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return key, parsed


def _graph_summary(graph) -> str:
    lines = [repr(graph)]
    csc = getattr(graph, "csc", None)
    if csc:
        lines.append("message-passing edges per relation:")
        for r, et in enumerate(graph.edge_types):
            lines.append(f"  [{r}] {et[0]} -{et[1]}-> {et[2]}: {int(csc[et].indices.numel()):,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, user_errors=(DatasetUnavailable,))


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m lmgnn_fast.datasets",
                                     description="Built-in offline heterogeneous text graphs.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the built-in datasets")
    p_info = sub.add_parser("info", help="counts per node type and relation of a dataset or directory")
    p_info.add_argument("target", help="a built-in dataset name or a dataset directory")
    p_info.add_argument("-o", "--option", action="append", type=parse_option, default=[],
                        help="dataset option key=value (repeatable)")
    p_info.add_argument("--graph", action="store_true",
                        help="also build the HeteroGraph (validates; shows message-passing edges)")
    p_exp = sub.add_parser("export", help="write a built-in dataset in the directory format")
    p_exp.add_argument("name", choices=list_datasets())
    p_exp.add_argument("dir", type=Path)
    p_exp.add_argument("--format", default="parquet", choices=["parquet", "csv", "jsonl"])
    p_exp.add_argument("--overwrite", action="store_true")
    p_exp.add_argument("-o", "--option", action="append", type=parse_option, default=[],
                       help="dataset option key=value (repeatable)")
    p_gs = sub.add_parser("import-graphstorm",
                          help="read a GraphStorm graph-construction config, write the directory format")
    p_gs.add_argument("config", type=Path, help="the GraphStorm (gconstruct) JSON config")
    p_gs.add_argument("dir", type=Path)
    p_gs.add_argument("--format", default="parquet", choices=["parquet", "csv", "jsonl"])
    p_gs.add_argument("--overwrite", action="store_true")
    p_gs.add_argument("--seed", type=int, default=0, help="seed of the splits drawn from split_pct")
    p_gs.add_argument("--name", default=None, help="the graph's name (default: the config file's stem)")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, info in _REGISTRY.items():
            extra = f" (needs {info.package})" if info.package else ""
            print(f"{name:10s} {info.description}{extra}")
        return 0
    if args.command == "import-graphstorm":
        if args.dir.exists() and not args.overwrite:
            raise FileExistsError(f"{args.dir} exists; pass --overwrite to replace it")
        graph = from_graphstorm(args.config, seed=args.seed, name=args.name)
        write_dir(graph, args.dir, format=args.format)
        print(_graph_summary(graph))
        print(f"wrote {args.dir} ({args.format})")
        return 0
    options = dict(args.option)
    if args.command == "export":
        t0 = time.perf_counter()
        path = export_dataset(args.name, args.dir, fmt=args.format, overwrite=args.overwrite, **options)
        print(f"wrote {args.name} to {path} ({args.format}) in {time.perf_counter() - t0:.1f} s")
        return 0
    target = args.target
    is_dir = target not in _REGISTRY and Path(target).is_dir()
    if not is_dir and target not in _REGISTRY:
        print(f"error: '{target}' is neither a built-in dataset ({', '.join(_REGISTRY)}) "
              "nor a directory", file=sys.stderr)
        return 2
    tables = read_tables(target) if is_dir else dataset_tables(target, **options)
    print(summarize_tables(*tables))
    if args.graph:
        graph = (load_dir_dataset(target, **options) if is_dir else build_graph(*tables))
        print(_graph_summary(graph))
    return 0


if __name__ == "__main__":
    sys.exit(main())
