"""Loss and metric curves of a run as one PNG (matplotlib, Agg backend)."""
from __future__ import annotations

import os

__all__ = ["plot_curves"]


def plot_curves(history: dict[str, list[dict]], path: str) -> None:
    """``history[stage]`` is a list of records with ``step`` and any of ``loss`` and
    ``val_<metric>``; draws loss per step and validation metrics per epoch, one column per
    stage. Written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    stages = [s for s in sorted(history) if history[s]]
    if not stages:
        return
    fig, axes = plt.subplots(2, len(stages), figsize=(4.5 * len(stages), 6), squeeze=False)
    for j, s in enumerate(stages):
        recs = history[s]
        loss = [(r["step"], r["loss"]) for r in recs if "loss" in r]
        ax = axes[0][j]
        if loss:
            ax.plot([x for x, _ in loss], [y for _, y in loss], lw=1)
        ax.set_title(f"{s}: training loss")
        ax.set_xlabel("step")
        ax = axes[1][j]
        keys = sorted({k for r in recs for k in r if k.startswith("val_")})
        for k in keys:
            pts = [(r["step"], r[k]) for r in recs if k in r]
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=k[4:])
        ax.set_title(f"{s}: validation")
        ax.set_xlabel("step")
        if keys:
            ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
