"""Stage-wise LM + R-GCN training (``python -m lmgnn_fast.train``).

Public API: :class:`Config` (+ :func:`load_config`), :class:`Trainer`, :func:`train`.

Layers, each importing only those before it: ``config``, ``errors``, ``seeds``,
``checkpoint``, ``metrics``, ``data`` (task resolution), ``builders``, ``data_parallel``,
``partitioned`` (the partition of ``run.partitioned``: sampler, row tables, refresh);
``context`` (:class:`RunContext`); ``features`` (LM, tokens, caches) and ``tasks``
(batches, losses, evaluation); ``loop`` (the ``Stage`` protocol and the epoch loop);
``stages`` (one class per stage); ``outputs``; ``runner`` (:class:`Trainer`).
"""
from lmgnn_fast.train.config import Config, ConfigError, load_config
from lmgnn_fast.train.errors import DataError, TrainingError
from lmgnn_fast.train.runner import Trainer

__all__ = ["Config", "ConfigError", "DataError", "TrainingError", "Trainer", "load_config", "train"]


def train(cfg: Config, graph=None) -> dict:
    """Run the stages of ``cfg``; returns the per-stage val/test metrics."""
    return Trainer(cfg, graph=graph).run()
