"""Test helpers: one device parametrization for the whole suite.

``@with_devices`` runs a test once per device: ``cpu`` always, ``cuda`` when a GPU is
visible (skipped otherwise), so the same tests run unchanged on a GPU machine.
"""
from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")),
]

with_devices = pytest.mark.parametrize("device", DEVICES)
only_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
