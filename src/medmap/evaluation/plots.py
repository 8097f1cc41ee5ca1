"""Plots a person would rather look at than read: ROC, confusion matrix, reliability, training curves.

Each returns PNG bytes (matplotlib, Agg backend) so the report can embed them in one HTML file.
"""

from __future__ import annotations

import io

import numpy as np


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _figure(width: float = 4.2, height: float = 3.8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def roc_plot(curves: dict[str, dict], title: str = "ROC curve") -> bytes:
    """``curves``: name -> {"fpr": [...], "tpr": [...], "auc": float, "auc_ci": [lo, hi]}."""
    fig, ax = _figure()
    for name, c in curves.items():
        lo, hi = c.get("auc_ci", [float("nan")] * 2)
        ax.plot(c["fpr"], c["tpr"], lw=2, label=f"{name}: AUC {c['auc']:.3f} ({lo:.3f}-{hi:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def confusion_plot(matrix: list[list[int]], labels: list[str]) -> bytes:
    fig, ax = _figure(3.6, 3.2)
    m = np.asarray(matrix)
    ax.imshow(m, cmap="Blues")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    return _png(fig)


def reliability_plot(bins: list[dict], ece: float) -> bytes:
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    if bins:
        ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o-", label="model")
        for b in bins:
            ax.annotate(
                str(b["count"]), (b["predicted"], b["observed"]), fontsize=7, xytext=(3, -9), textcoords="offset points"
            )
    ax.set(
        xlabel="predicted probability",
        ylabel="observed frequency",
        title=f"reliability (ECE {ece:.3f})",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def training_curves(history: list[dict], monitor: str) -> bytes:
    fig, ax = _figure(6.0, 3.4)
    epochs = [h["epoch"] + 1 for h in history]
    ax.plot(epochs, [h["loss"] for h in history], label="training loss", c="tab:blue")
    ax.set(xlabel="epoch", ylabel="loss")
    other = ax.twinx()
    other.plot(epochs, [h["val"].get(monitor, np.nan) for h in history], label=f"validation {monitor}", c="tab:orange")
    other.set_ylabel(f"validation {monitor}")
    fig.legend(loc="upper center", ncol=2, fontsize=8)
    return _png(fig)


def gradcam_panel(items: list[tuple[str, np.ndarray, np.ndarray]]) -> bytes:
    """Rows of (title, image slice, heat map slice): the input in grey with the Grad-CAM map over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(items))
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image, cam) in zip(axes.ravel(), items, strict=False):
        ax.imshow(image, cmap="gray")
        ax.imshow(cam, cmap="jet", alpha=0.35, vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
    fig.suptitle("Grad-CAM: where the network looked (central slice)", fontsize=9)
    return _png(fig)
