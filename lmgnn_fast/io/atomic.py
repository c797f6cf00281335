"""Replacing a written folder in one step, so readers never see half of it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_dir(tmp: Path, dest: Path) -> None:
    """Replace the folder ``dest`` by the finished folder ``tmp`` (same parent) with two
    renames; an existing ``dest`` is moved aside first and deleted after.

    Args:
        tmp: the fully written new folder.
        dest: where it goes; need not exist.
    """
    old = None
    if dest.exists():
        old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["replace_dir"]
