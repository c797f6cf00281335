"""Reading and writing heterogeneous text graphs.

* :mod:`~lmgnn_fast.io.tables` — tables in the directory format -> :class:`HeteroGraph`
  (validation, id mapping, splits, CSC construction);
* :mod:`~lmgnn_fast.io.directory` — the on-disk directory format (CSV, Parquet, JSONL);
* :mod:`~lmgnn_fast.io.binary` — the memory-mapped binary cache.
"""
from lmgnn_fast.io.binary import is_binary, load_binary, save_binary
from lmgnn_fast.io.directory import read_dir, write_dir
from lmgnn_fast.io.errors import GraphFormatError, Source
from lmgnn_fast.io.tables import build_graph

__all__ = ["GraphFormatError", "Source", "build_graph", "read_dir", "write_dir", "save_binary",
           "load_binary", "is_binary"]
