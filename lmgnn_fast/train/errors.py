"""Errors a user of the trainer can fix from the message alone."""
from __future__ import annotations

__all__ = ["TrainingError", "DataError", "CheckpointError", "SimulatedInterrupt"]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. out of memory); the message says which setting to change."""


class CheckpointError(TrainingError):
    """A checkpoint file is damaged (truncated, garbled, or its tensors fail their checksum)."""


class DataError(ValueError):
    """The configuration does not match the graph (unknown task, type, relation, labels)."""


class SimulatedInterrupt(RuntimeError):
    """Raised by ``run.interrupt_after_steps`` to test resuming an interrupted run."""
