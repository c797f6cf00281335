"""Values of ``auto`` options, derived from the graph and the device.

- ``stage1.max_items``: task items per stage-1 epoch. Every item goes through the LM with
  gradients, the costly part of a run on a CPU (MiniLM-L6, 32 tokens: about 75 ms per text
  on 2 CPU cores, a few ms on a GPU). On a CPU at most :data:`CPU_STAGE1_ITEMS` per epoch (a
  seeded random subset, new each epoch); on a GPU every training item.
- ``stage2.batch_size``: the largest power of two at most ``items / 20``, within [16, 128],
  so that an epoch has about 20 optimizer steps or more even on a small task (with 670
  training nodes and batches of 128 the R-GCN was still improving on validation after 30
  epochs of 6 steps).
"""
from __future__ import annotations

__all__ = ["CPU_STAGE1_ITEMS", "resolve_auto", "stage2_batch_size"]

CPU_STAGE1_ITEMS = 2048


def stage2_batch_size(num_items: int) -> int:
    """The ``auto`` stage-2 batch size for ``num_items`` training items."""
    b = 16
    while b * 2 <= min(128, num_items / 20):
        b *= 2
    return b


def resolve_auto(cfg, num_train_items: int, device_type: str) -> list[str]:
    """Replace the ``None`` (auto) values of ``cfg`` in place.

    Args:
        cfg: the run's :class:`~lmgnn_fast.train.config.Config`.
        num_train_items: training items of the target task (nodes, edges or positive pairs).
        device_type: ``"cpu"`` or ``"cuda"``.

    Returns:
        One ``"section.key = value (auto ...)"`` line per value set, for the run's log.
    """
    lines = []
    if cfg.stage1.max_items is None:
        cfg.stage1.max_items = CPU_STAGE1_ITEMS if device_type == "cpu" else 0
        lines.append(f"stage1.max_items = {cfg.stage1.max_items} (auto: {device_type}; 0 = all)")
    if cfg.stage2.batch_size is None:
        cfg.stage2.batch_size = stage2_batch_size(num_train_items)
        lines.append(f"stage2.batch_size = {cfg.stage2.batch_size} (auto: {num_train_items} training items)")
    return lines
