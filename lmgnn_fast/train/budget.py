"""Values of ``auto`` options, derived from the graph and the device.

- ``stage1.max_items``: task items per stage-1 epoch. The texts an item sends through the LM
  with gradients are the costly part of a run on a CPU (MiniLM-L6, 32 tokens: about 40 ms per
  text, forward and backward, on 2 quiet CPU cores; a few ms on a GPU), so the CPU budget is
  :data:`CPU_STAGE1_TEXTS` texts per epoch: that many items for node classification (one
  text each), half as many edges for edge classification (two endpoints), and
  ``CPU_STAGE1_TEXTS / (2 + num_negatives / batch_size)`` edges for link prediction (two
  endpoints plus the batch's sampled negatives) -- 2,048 nodes or 910 edges with the
  defaults; a seeded random subset, new each epoch. On a GPU every training item.
- ``stage2.batch_size``: the largest power of two at most ``items / 20``, within [16, 128],
  so that an epoch has about 20 optimizer steps or more even on a small task (with 670
  training nodes and batches of 128 the R-GCN was still improving on validation after 30
  epochs of 6 steps).
"""
from __future__ import annotations

__all__ = ["CPU_STAGE1_TEXTS", "resolve_auto", "stage1_texts_per_item", "stage2_batch_size"]

CPU_STAGE1_TEXTS = 2048


def stage1_texts_per_item(cfg, task_type: str) -> float:
    """Texts one stage-1 task item sends through the LM (on average, per step's batch)."""
    if task_type == "link_prediction":
        return 2 + cfg.stage1.num_negatives / max(1, cfg.stage1.batch_size)
    if task_type == "edge_classification":
        return 2.0
    return 1.0


def stage2_batch_size(num_items: int) -> int:
    """The ``auto`` stage-2 batch size for ``num_items`` training items."""
    b = 16
    while b * 2 <= min(128, num_items / 20):
        b *= 2
    return b


def resolve_auto(cfg, num_train_items: int, device_type: str, task_type: str = "node_classification") -> list[str]:
    """Replace the ``None`` (auto) values of ``cfg`` in place.

    Args:
        cfg: the run's :class:`~lmgnn_fast.train.config.Config`.
        num_train_items: training items of the target task (nodes, edges or positive pairs).
        device_type: ``"cpu"`` or ``"cuda"``.
        task_type: the target task's type (what one item costs in stage 1).

    Returns:
        One ``"section.key = value (auto ...)"`` line per value set, for the run's log.
    """
    lines = []
    if cfg.stage1.max_items is None:
        if device_type == "cpu":
            cfg.stage1.max_items = int(CPU_STAGE1_TEXTS / stage1_texts_per_item(cfg, task_type))
            why = f"cpu, {CPU_STAGE1_TEXTS} LM texts per epoch"
        else:
            cfg.stage1.max_items, why = 0, f"{device_type}; 0 = all"
        lines.append(f"stage1.max_items = {cfg.stage1.max_items} (auto: {why})")
    if cfg.stage2.batch_size is None:
        cfg.stage2.batch_size = stage2_batch_size(num_train_items)
        lines.append(f"stage2.batch_size = {cfg.stage2.batch_size} (auto: {num_train_items} training items)")
    return lines
