"""Training curves as a PNG (``RUN_DIR/training_curves.png``): loss, accuracy and learning rate per epoch."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from common.plots import save_png


def plot_history(history: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path | None:
    """Draw the per-epoch records of a run (``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy``, ``lr``)."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    axes[0].set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    axes[0].legend()
    axes[1].plot(epochs, [100 * h["val_accuracy"] for h in history], marker="o", color="tab:green")
    best = max(history, key=lambda h: h["val_accuracy"])
    axes[1].axhline(100 * best["val_accuracy"], color="grey", linestyle="--", linewidth=0.8)
    axes[1].set(title=f"validation accuracy (best {100 * best['val_accuracy']:.2f}% at epoch {best['epoch']})",
                xlabel="epoch", ylabel="%")
    axes[2].plot(epochs, [h["lr"] for h in history], marker="o", color="tab:orange")
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch", ylabel="lr")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_png(fig, path)
