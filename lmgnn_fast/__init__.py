"""lmgnn_fast: stage-wise LM + R-GCN training on heterogeneous text graphs."""
from __future__ import annotations

from lmgnn_fast._loader import extension as _extension

_C = _extension()  # the operators are registered before anything else is imported

from lmgnn_fast import ops  # noqa: E402  (registers fake kernels and autograd)
from lmgnn_fast.graph import CSC, HeteroGraph, Task  # noqa: E402
from lmgnn_fast.io.errors import GraphFormatError  # noqa: E402

__version__ = "0.1.0"


def build_info() -> dict:
    """How the compiled extension was built.

    Returns:
        dict with ``torch_version`` (the torch it was built against), ``cuda`` (whether CUDA
        kernels were compiled), ``cuda_archs`` (e.g. ``"8.0 9.0+PTX"``), ``openmp`` and
        ``num_threads`` (intra-op threads torch uses now), ``cpu_march`` (the instruction set
        the CPU kernels were compiled for, ``""`` for the compiler's default).
    """
    info = dict(_C.build_info())
    info["version"] = __version__
    return info


def __getattr__(name: str):
    # ``lmgnn_fast.Predictor`` (the inference layer) sits on top of the trainer: imported on first use only
    if name == "Predictor":
        from lmgnn_fast.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'lmgnn_fast' has no attribute {name!r}")


__all__ = ["CSC", "GraphFormatError", "HeteroGraph", "Predictor", "Task", "build_info", "ops", "__version__"]
