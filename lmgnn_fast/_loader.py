"""Loads the compiled extension after checking it matches the running torch."""
from __future__ import annotations

import importlib

import torch

_REBUILD = (
    "Rebuild it against the installed torch: "
    "`pip install --no-build-isolation --no-deps --force-reinstall -e .` from the source tree "
    "(see README, 'Building')."
)


def _base_version(version: str) -> str:
    return version.split("+")[0]


def load_extension():
    """Import ``lmgnn_fast._C`` (registering the ``torch.ops.lmgnn`` operators).

    Raises:
        ImportError: the module is missing, or was built against another torch version.
    """
    try:
        cfg = importlib.import_module("lmgnn_fast._build_config")
    except ImportError as exc:  # pragma: no cover - only a broken install gets here
        raise ImportError(
            "lmgnn_fast: the compiled extension lmgnn_fast._C is not built. " + _REBUILD
        ) from exc
    if _base_version(cfg.TORCH_VERSION) != _base_version(torch.__version__):
        raise ImportError(
            f"lmgnn_fast was built against torch {cfg.TORCH_VERSION} but torch "
            f"{torch.__version__} is installed. " + _REBUILD
        )
    try:
        return importlib.import_module("lmgnn_fast._C")
    except ImportError as exc:
        raise ImportError(f"lmgnn_fast: cannot load lmgnn_fast._C ({exc}). " + _REBUILD) from exc
