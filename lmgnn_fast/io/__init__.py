"""Reading and writing heterogeneous text graphs.

* :mod:`~lmgnn_fast.io.tables` — tables in the directory format -> :class:`HeteroGraph`
  (validation, id mapping, splits, CSC construction);
* :mod:`~lmgnn_fast.io.directory` — the on-disk directory format (CSV, Parquet, JSONL);
* :mod:`~lmgnn_fast.io.binary` — the memory-mapped binary cache;
* :mod:`~lmgnn_fast.io.paths` — file names made from names, kept inside their folder;
* :mod:`~lmgnn_fast.io.errors` — ``GraphFormatError`` (the data), ``OptionError`` (a loader
  option), ``PathError`` (a name that is not a name, a path leaving its folder);
* :mod:`~lmgnn_fast.io.pyg` — ``to_pyg`` / ``from_pyg``: torch_geometric ``HeteroData``
  (torch_geometric is imported only when they run);
* :mod:`~lmgnn_fast.io.graphstorm` — ``from_graphstorm``: a GraphStorm graph-construction
  JSON config and its CSV/Parquet/JSON files.
"""
from lmgnn_fast.io.binary import is_binary, load_binary, save_binary
from lmgnn_fast.io.directory import read_dir, write_dir
from lmgnn_fast.io.errors import GraphFormatError, OptionError, PathError, Source
from lmgnn_fast.io.graphstorm import from_graphstorm
from lmgnn_fast.io.paths import safe_join
from lmgnn_fast.io.pyg import from_pyg, to_pyg
from lmgnn_fast.io.tables import build_graph

__all__ = ["GraphFormatError", "OptionError", "PathError", "Source", "build_graph", "read_dir", "write_dir",
           "save_binary", "load_binary", "is_binary", "safe_join", "from_pyg", "to_pyg", "from_graphstorm"]
