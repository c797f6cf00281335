"""Inference on a finished run, as its own layer: load a run without a trainer, answer
requests for every task type, write or serve the answers.

- :func:`load_run` (``run.py``) reads a run directory into a :class:`LoadedRun`: config,
  graph, the chosen stage's checkpoint, and the LM rows the run stored with a hash of each
  text (``rows.py``; only new or changed texts go through the LM). No process group, no
  shared memory, nothing written.
- :class:`TaskModel` (``protocol.py``) is the one protocol both kinds of model implement
  (``models.py``): the stage-1 LM with its heads, the graph models of stages 2 and 3.
  ``embed`` rows of nodes (the run's, or a request's extra nodes through a
  :class:`GraphView`, ``view.py``), ``node_logits``, ``pair_scores``, ``candidate_scores``,
  ``evaluate`` (the training's own evaluation protocol; ``python -m lmgnn_fast.evaluate``).
- :class:`LoadedRun` answers with :class:`NodePredictions`, :class:`PairPredictions` and
  :class:`LinkCandidates` (``results.py``), written by ``writer.py`` -- the one writer of
  output tables, used by the trainer's outputs as well -- or served as JSON
  (``app.py``, ``python -m lmgnn_fast.serve``).

Layering: ``writer``, ``rows``, ``results`` and ``protocol`` import nothing above
``lmgnn_fast.io`` (the trainer's outputs use the writer and store the rows);
``view``, ``models`` and ``run`` sit on top of ``lmgnn_fast.train``; the command lines
(``predict``, ``evaluate``, ``serve``) on top of them. The names below are imported on
first use, so importing ``lmgnn_fast.inference.writer`` does not import the trainer.
"""
from __future__ import annotations

import importlib

__all__ = ["load_run", "LoadedRun", "TaskModel", "GraphView", "NodePredictions", "PairPredictions",
           "LinkCandidates", "PredictError", "write_results"]

_HOME = {"load_run": "run", "LoadedRun": "run", "TaskModel": "protocol", "GraphView": "view",
         "PredictError": "view", "NodePredictions": "results", "PairPredictions": "results",
         "LinkCandidates": "results", "write_results": "writer"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"lmgnn_fast.inference.{_HOME[name]}"), name)
    raise AttributeError(f"module 'lmgnn_fast.inference' has no attribute {name!r}")
