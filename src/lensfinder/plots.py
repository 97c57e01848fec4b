"""Figures people would rather look at than read: training curves, ROC and PR curves."""

from __future__ import annotations

import numpy as np

from lensfinder.files import atomic_path


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 100, tight: bool = True) -> None:
    """Write ``fig`` to ``path`` atomically (laid out tight first) and close it."""
    if tight:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    pyplot().close(fig)


def save_note(path, text: str) -> None:
    """A small figure that says why there is nothing to show (an empty mosaic, say)."""
    fig, ax = pyplot().subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    save_figure(fig, path, tight=False)


def plot_training_curves(history, path, title=""):
    """Loss (train, validation) and validation AUC per epoch; the best-AUC epoch marked."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(history["epoch"], history["train_loss"], label="train")
    ax1.plot(history["epoch"], history["val_loss"], label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("binary cross-entropy")
    ax1.set_yscale("log")
    ax1.legend()
    ax2.plot(history["epoch"], history["val_auc"], color="C2")
    best = history["val_auc"].idxmax() if history["val_auc"].notna().any() else None
    if best is not None:
        ax2.axvline(history["epoch"][best], color="grey", ls=":", label=f"best epoch {history['epoch'][best]}")
        ax2.legend(loc="lower right")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation AUC")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def plot_roc_pr(labels, scores, path, label="", curves=None):
    """ROC and precision-recall curves; ``curves`` adds more (name -> scores) to compare."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    plt = pyplot()
    curves = dict(curves or {})
    curves.setdefault(label or "model", scores)
    labels = np.asarray(labels)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, s in curves.items():
        fpr, tpr, _ = roc_curve(labels, s)
        ax1.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.4f})")
        prec, rec, _ = precision_recall_curve(labels, s)
        ax2.plot(rec, prec, label=name)
    ax1.plot([0, 1], [0, 1], color="grey", ls=":")
    ax1.set_xlabel("false positive rate")
    ax1.set_ylabel("true positive rate")
    ax1.set_xscale("log")
    ax1.set_xlim(1e-3, 1)
    ax1.legend(loc="lower right", fontsize=8)
    ax2.set_xlabel("recall")
    ax2.set_ylabel("precision")
    ax2.set_title(f"validation: {int(labels.sum())} lenses, {int((1 - labels).sum())} nonlenses", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
