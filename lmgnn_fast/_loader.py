"""Loads the compiled extension after checking it matches the running torch.

The one place ``lmgnn_fast._C`` is imported: :func:`extension` loads it once (registering
the ``torch.ops.lmgnn`` operators) and every module that calls into it gets it from there.
"""
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


# Instructions an x86-64-v3 build may use, as Linux names them in /proc/cpuinfo
# ("abm" is LZCNT).
_X86_64_V3_FLAGS = ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")


def missing_cpu_flags(march: str, cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """CPU features the build's instruction set (``-march``) needs and this CPU lacks.

    Only the x86-64-v3 level (the ``LMGNN_CPU_ISA=AUTO`` choice) is checked; other values
    (``native``, ...) and systems without ``cpuinfo`` give ``[]``.
    """
    if march != "x86-64-v3":
        return []
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in _X86_64_V3_FLAGS if flag not in have]
    except OSError:
        pass
    return []


def load_extension():
    """Import ``lmgnn_fast._C`` (registering the ``torch.ops.lmgnn`` operators).

    Raises:
        ImportError: the module is missing, was built against another torch version, or for
            an instruction set this CPU lacks.
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
    march = getattr(cfg, "CPU_MARCH", "")
    missing = missing_cpu_flags(march)
    if missing:
        raise ImportError(
            f"lmgnn_fast was built for -march={march} but this CPU lacks {', '.join(missing)}. "
            "Rebuild it for this CPU: `LMGNN_CPU_ISA=AUTO pip install --no-build-isolation "
            "--no-deps --force-reinstall -e .` on this machine, or LMGNN_CPU_ISA=OFF for a build "
            "that runs on any x86-64 CPU (see README, 'Building')."
        )
    try:
        return importlib.import_module("lmgnn_fast._C")
    except ImportError as exc:
        raise ImportError(f"lmgnn_fast: cannot load lmgnn_fast._C ({exc}). " + _REBUILD) from exc


_EXTENSION = None


def extension():
    """The compiled extension module ``lmgnn_fast._C``, loaded (and checked) on the first call.

    Raises:
        ImportError: as :func:`load_extension`.
    """
    global _EXTENSION
    if _EXTENSION is None:
        _EXTENSION = load_extension()
    return _EXTENSION
