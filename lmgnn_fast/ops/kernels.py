"""Which devices the compiled extension has kernels for."""
from __future__ import annotations

import torch

from lmgnn_fast._loader import extension


def kernel_available(device: torch.device | str) -> bool:
    """Whether the ``lmgnn`` operators have kernels for ``device`` in this build.

    CPU kernels are always built; CUDA kernels when the extension was compiled with CUDA
    (``build_info()["cuda"]``); other device types have none. Callers without a kernel use
    the ops' pure-torch references (``*_ref``).
    """
    kind = torch.device(device).type
    if kind == "cpu":
        return True
    if kind == "cuda":
        return bool(dict(extension().build_info())["cuda"])
    return False


__all__ = ["kernel_available"]
