"""File names made from names: every file the project reads or writes stays in its folder.

Node types, relations and task names become file names (``nodes/<type>.csv``, the token
cache ``tokens/<type>.safetensors``, ``embeddings/<type>.parquet``). :func:`safe_join` builds
such a path and refuses a name that is not a name (see :func:`lmgnn_fast.graph.name_problem`)
or a path that resolves outside the folder (``..``, an absolute path, a symbolic link
leading out).
"""
from __future__ import annotations

import os
from pathlib import Path

from lmgnn_fast.graph import name_problem
from lmgnn_fast.io.errors import PathError

__all__ = ["safe_join", "resolve_inside", "is_inside", "name_problem"]


def is_inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Whether ``path``, with symbolic links resolved, is ``root`` or lies under it."""
    r = os.path.realpath(root)
    p = os.path.realpath(path)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def resolve_inside(root: str | os.PathLike, path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` if it resolves (symbolic links followed) inside ``root``.

    Raises:
        PathError: it leads outside ``root``.
    """
    if not is_inside(root, path):
        raise PathError(f"{what} {os.fspath(path)!r} resolves to {os.path.realpath(path)!r}, outside "
                        f"{os.fspath(root)!r}; files must stay inside their folder (no '..', no "
                        "absolute paths, no symbolic links leading out)")
    return Path(path)


def safe_join(root: str | os.PathLike, name: str, ext: str = "", kind: str = "name") -> str:
    """``root/<name><ext>`` for a valid ``name``, checked to resolve inside ``root``.

    Args:
        root: the folder (need not exist yet).
        name: a node type, relation or task name (or an edge type's ``src__rel__dst`` with
            ``kind="edge type"``).
        ext: the file extension with its dot (``".parquet"``), or ``""``.
        kind: what the name is, for the message.

    Returns:
        the joined path as a string.

    Raises:
        PathError: ``name`` is not a valid name or the path leads outside ``root``.

    Example::

        path = safe_join(os.path.join(out_dir, "tokens"), node_type, ".safetensors")
    """
    if kind == "edge type" and isinstance(name, str):
        parts = name.split("__")
        problems = ([f"edge file name {name!r} must be <src_type>__<relation>__<dst_type>"]
                    if len(parts) != 3 else
                    [p for p in (name_problem(x, k) for x, k in zip(parts, ("node type", "relation", "node type")))
                     if p])
    else:
        problems = [p for p in [name_problem(name, kind)] if p]
    if problems:
        raise PathError(problems[0])
    path = os.path.join(os.fspath(root), f"{name}{ext}")
    resolve_inside(root, path)
    return path
