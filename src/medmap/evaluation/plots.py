"""Plots a person would rather look at than read: ROC, confusion matrix, reliability, training curves.

Each returns PNG bytes (matplotlib, Agg backend) so the report can embed them in one HTML file.
"""

from __future__ import annotations

import io

import numpy as np

from medmap.colours import hex_colour, label_colour


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


def froc_plot(curves: dict[str, dict], title: str = "FROC") -> bytes:
    """``curves``: name -> a `medmap.evaluation.detection.froc` result (curve, operating points, CPM)."""
    fig, ax = _figure()
    for name, c in curves.items():
        lo, hi = c.get("cpm_ci", [float("nan")] * 2)
        fps, sens = c["curve"]["fp_per_scan"], c["curve"]["sensitivity"]
        line = ax.step(fps, sens, where="post", lw=2, label=f"{name}: CPM {c['cpm']:.3f} ({lo:.3f}-{hi:.3f})")
        ax.plot(c["rates"], c["sensitivity_at"], "o", ms=4, color=line[0].get_color())
    ax.set_xscale("log", base=2)
    ax.set(xlabel="false positives per scan", ylabel="sensitivity", title=title, xlim=(0.1, 10), ylim=(0, 1.02))
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
    """Training and validation loss (left axis) and the validation metric that picks the best epoch (right)."""
    fig, ax = _figure(6.0, 3.4)
    epochs = [h["epoch"] + 1 for h in history]
    ax.plot(epochs, [h["loss"] for h in history], label="training loss", c="tab:blue")
    val_loss = [h["val"].get("loss") for h in history]
    if any(v is not None for v in val_loss):  # runs made before it was recorded have none
        ax.plot(epochs, [np.nan if v is None else v for v in val_loss], label="validation loss", c="tab:blue", ls="--")
    ax.set(xlabel="epoch", ylabel="loss")
    other = ax.twinx()
    other.plot(epochs, [h["val"].get(monitor, np.nan) for h in history], label=f"validation {monitor}", c="tab:orange")
    other.set_ylabel(f"validation {monitor}")
    fig.legend(loc="upper center", ncol=3, fontsize=8)
    return _png(fig)


FLAT_MAP = 0.05  # a Grad-CAM slice whose values span less than this shows nothing: it is left out


def gradcam_panel(items: list[tuple[str, np.ndarray, np.ndarray]]) -> bytes | None:
    """Rows of (title, image slice, heat map slice): the input in grey with the Grad-CAM map over it, on one
    colour scale with its bar. Maps flat on the shown slice are left out (the title says how many); None
    when every map is flat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [item for item in items if float(np.ptp(item[2])) >= FLAT_MAP]
    dropped, items = len(items) - len(shown), shown
    if not items:
        return None
    cols = min(4, len(items))
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    heat = None
    for ax, (title, image, cam) in zip(axes.ravel(), items, strict=False):
        ax.imshow(image, cmap="gray")
        heat = ax.imshow(cam, cmap="inferno", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
    fig.colorbar(heat, ax=axes.ravel().tolist(), fraction=0.03, label="Grad-CAM (0 = ignored, 1 = most used)")
    note = f"; {dropped} flat map(s) left out" if dropped else ""
    fig.suptitle(f"Grad-CAM: where the network looked (central slice{note})", fontsize=9)
    return _png(fig)


def _views(volume: np.ndarray, centre: tuple[int, int, int]) -> list[tuple[str, np.ndarray]]:
    """The three planes through ``centre``; only the slice itself for a 2-D image (one slice: an
    (X, Y, 1) NIfTI as MSD and nnU-Net store 2-D data), whose other planes are one pixel thick."""
    z, y, x = centre
    if volume.shape[0] == 1:
        return [("axial", volume[0])]
    return [("axial", volume[z]), ("coronal", volume[:, y]), ("sagittal", volume[:, :, x])]


def _window_of(image: np.ndarray, window: tuple[float, float] | None) -> tuple[float, float]:
    """(low, high) display limits: the given window (centre, width), else the 1st-99th percentiles
    (MR and other uncalibrated intensities must not be shown through a CT window)."""
    if window is not None:
        return window[0] - window[1] / 2, window[0] + window[1] / 2
    low, high = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    return float(low), float(max(high, low + 1e-6))


def overlay_panel(
    cases: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    spacing_of: list[tuple[float, float, float]],
    labels: dict[int, str],
    window: tuple[float, float] | None = (60.0, 400.0),
) -> bytes:
    """Rows of cases, columns axial / coronal / sagittal through the centre of the true foreground: the CT
    (``window`` centre/width, HU) with each class in its label colour (`medmap.colours`), truth as a solid
    and the prediction as a dashed contour. ``cases``: (title, image [Z, Y, X], truth, prediction) on one
    grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    foreground = [k for k in sorted(labels) if k != 0]
    columns = 1 if all(case[1].shape[0] == 1 for case in cases) else 3
    fig, axes = plt.subplots(len(cases), columns, figsize=(3.2 * columns, 3.3 * len(cases)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for row, ((title, image, truth, pred), spacing) in enumerate(zip(cases, spacing_of, strict=True)):
        low, high = _window_of(image, window)
        where = np.argwhere(truth > 0) if (truth > 0).any() else np.argwhere(pred > 0)
        centre = tuple(int(v) for v in (np.median(where, 0) if len(where) else np.asarray(image.shape) // 2))
        images = _views(image, centre)
        aspects = [spacing[1] / spacing[2], spacing[0] / spacing[2], spacing[0] / spacing[1]][: len(images)]
        views = zip(images, _views(truth, centre), _views(pred, centre), aspects, strict=True)
        for col, ((view, picture), (_, t), (_, p), aspect) in enumerate(views):
            ax = axes[row, col]
            origin = "upper" if view == "axial" else "lower"  # head up in coronal and sagittal views
            ax.imshow(picture, cmap="gray", vmin=low, vmax=high, aspect=aspect, origin=origin)
            for value in foreground:
                for mask, style in ((t, "-"), (p, "--")):
                    if (mask == value).any() and min(mask.shape) >= 2:  # contour needs a 2x2 grid at least
                        ax.contour(
                            (mask == value).astype(float),
                            levels=[0.5],
                            colors=[hex_colour(label_colour(labels[value], value))],
                            linewidths=1.0,
                            linestyles=style,
                            origin=origin,
                        )
            ax.set_title(f"{title} - {view}" if col == 0 else view, fontsize=8)
            ax.axis("off")
    handles = []
    for value in foreground:
        colour = hex_colour(label_colour(labels[value], value))
        handles.append(Line2D([], [], color=colour, label=f"{labels[value]} truth"))
        handles.append(Line2D([], [], color=colour, ls="--", label=f"{labels[value]} predicted"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    return _png(fig)


def metric_boxplot(per_case: dict[str, dict], metric: str, names: list[str]) -> bytes:
    """One box of ``metric`` per class over the cases (points drawn too: few cases, show them all)."""
    fig, ax = _figure(4.2, 3.4)
    data = [
        [c["classes"][n][metric] for c in per_case.values() if not np.isnan(c["classes"][n][metric])] for n in names
    ]
    ax.boxplot(data, tick_labels=names, showfliers=False)
    for i, values in enumerate(data, start=1):
        ax.scatter(np.full(len(values), i) + np.linspace(-0.08, 0.08, len(values)), values, s=10, c="tab:blue")
    ax.set(ylabel=metric.replace("_", " "), title=f"{metric.replace('_', ' ')} per case")
    return _png(fig)


def thumbnail(
    image: np.ndarray,
    labels: np.ndarray | None,
    window: tuple[float, float] = (60.0, 400.0),
    names: dict[int, str] | None = None,
) -> bytes:
    """A small axial picture for a result list: the slice with the most foreground, each label's contour
    in its label colour (``names``: label value -> name, which sets the colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = int(np.argmax((labels > 0).sum(axis=(1, 2)))) if labels is not None and labels.any() else image.shape[0] // 2
    low, high = window[0] - window[1] / 2, window[0] + window[1] / 2
    fig, ax = plt.subplots(figsize=(2.4, 2.4))
    ax.imshow(image[z], cmap="gray", vmin=low, vmax=high)
    if labels is not None:
        for value in (int(v) for v in np.unique(labels[z]) if v > 0):
            colour = hex_colour(label_colour((names or {}).get(value, ""), value))
            ax.contour((labels[z] == value).astype(float), levels=[0.5], colors=[colour])
    ax.axis("off")
    return _png(fig)


def finding_gallery(crops: list, title: str, window: tuple[float, float] | None = (-600.0, 1500.0)) -> bytes:
    """Up to six crops per row (`medmap.tasks.detection.gallery.Crop`), each with a circle of the
    finding's diameter; ``window`` (centre, width) defaults to a lung window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    columns = min(6, len(crops))
    rows = -(-len(crops) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, crop in zip(axes.ravel(), crops, strict=False):
        low, high = _window_of(crop.picture, window)
        ax.imshow(crop.picture, cmap="gray", vmin=low, vmax=high)
        colour = "#ff9f1c" if crop.kind == "missed" else "#e71d36"
        (r, c), (rr, rc) = crop.centre, crop.radius
        ax.add_patch(Ellipse((c, r), 2 * rc + 2, 2 * rr + 2, fill=False, color=colour, lw=1.2))
        ax.set_title(crop.caption, fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _png(fig)
