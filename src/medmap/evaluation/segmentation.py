"""Segmentation metrics per case and class, in millimetres; lesion-wise detection.

Overlap: Dice, IoU, sensitivity, precision, and the case's pixel accuracy. Surface: the 95th-percentile
Hausdorff distance, the mean (symmetric) surface distance and the normalised surface Dice at a tolerance
in mm. Definitions follow MONAI's (surfaces are the voxels removed by one binary erosion; distances from
each surface voxel to the nearest surface voxel of the other mask, with the voxel spacing; HD95 is the
larger of the two directed 95th percentiles), and the tests check equality with MONAI's functions.

Why not call MONAI per metric: each of its functions extracts the surfaces and measures the distances
again; here both are done once per class and serve HD95, mean distance and surface Dice together.

Empty masks: Dice/IoU are NaN when both masks are empty (nothing to find, nothing found) and 0 when only
one is; surface distances are NaN when either is empty (no surface to measure), surface Dice 0 when
exactly one is. Means over cases skip NaNs and say how many cases counted.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from medmap.evaluation.metrics import sample_size_warning, wilson_interval

CONNECTIVITY_3D = ndimage.generate_binary_structure(3, 3)  # 26-neighbours: diagonal touches join a lesion


def _bbox(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    where = np.argwhere(mask)
    low = np.maximum(where.min(0) - margin, 0)
    high = np.minimum(where.max(0) + margin + 1, mask.shape)
    return tuple(slice(a, b) for a, b in zip(low, high, strict=True))


def surfaces(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Surface voxel coordinates (index units) of two boolean masks, cropped jointly as MONAI does."""
    union = pred | truth
    box = _bbox(union)
    p, t = pred[box], truth[box]
    return np.argwhere(ndimage.binary_erosion(p) ^ p), np.argwhere(ndimage.binary_erosion(t) ^ t)


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """(prediction surface -> truth surface, truth surface -> prediction surface) distances in mm."""
    sp, st = surfaces(pred, truth)
    scale = np.asarray(spacing, dtype=float)
    sp, st = sp * scale, st * scale
    return cKDTree(st, leafsize=32).query(sp, k=1)[0], cKDTree(sp, leafsize=32).query(st, k=1)[0]


def class_metrics(pred: np.ndarray, truth: np.ndarray, spacing, tolerance_mm: float) -> dict[str, float]:
    """Every metric of one class on one case (``pred``, ``truth``: boolean masks on the same grid)."""
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    nan = float("nan")
    either = tp + fp + fn > 0
    out = {
        "dice": 2 * tp / (2 * tp + fp + fn) if either else nan,
        "iou": tp / (tp + fp + fn) if either else nan,
        "sensitivity": tp / (tp + fn) if tp + fn else nan,
        "precision": tp / (tp + fp) if tp + fp else nan,
        "volume_ml_predicted": (tp + fp) * float(np.prod(spacing)) / 1000,
        "volume_ml_truth": (tp + fn) * float(np.prod(spacing)) / 1000,
        "hd95_mm": nan,
        "msd_mm": nan,
        "nsd": nan if not either else 0.0,
    }
    if tp + fp and tp + fn:
        d_pt, d_tp = surface_distances(pred, truth, spacing)
        out["hd95_mm"] = float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))
        out["msd_mm"] = float(np.concatenate([d_pt, d_tp]).mean())
        within = np.count_nonzero(d_pt <= tolerance_mm) + np.count_nonzero(d_tp <= tolerance_mm)
        out["nsd"] = within / (len(d_pt) + len(d_tp))
    return out


def lesion_detection(pred: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """Connected components of one class matched by overlap: a true lesion is detected when any predicted
    voxel of the class lies in it; a predicted component overlapping no true lesion is a false positive."""
    truth_components, n_truth = ndimage.label(truth, structure=CONNECTIVITY_3D)
    pred_components, n_pred = ndimage.label(pred, structure=CONNECTIVITY_3D)
    detected = len(np.unique(truth_components[pred & (truth_components > 0)]))
    matched = len(np.unique(pred_components[truth & (pred_components > 0)]))
    return {"lesions": n_truth, "detected": detected, "predicted": n_pred, "false_positives": n_pred - matched}


UNSCORED = dict.fromkeys(
    ("dice", "iou", "sensitivity", "precision", "volume_ml_predicted", "volume_ml_truth", "hd95_mm", "msd_mm", "nsd"),
    float("nan"),
)  # a label the case did not annotate: no figure (the summaries skip NaN)


def case_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing,
    labels: dict[int, str],
    *,
    tolerance_mm: float = 2.0,
    unannotated: tuple[int, ...] = (),
) -> dict:
    """Per-class metrics of one case (label maps on one grid), its pixel accuracy and lesion detection of
    every class but the first foreground one (the organ). A label the case did not annotate
    (``unannotated``) is not scored in it: its figures are NaN and its pixels leave the accuracy."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    foreground = [k for k in sorted(labels) if k != 0]
    per_class = {
        labels[k]: dict(UNSCORED) if k in unannotated else class_metrics(pred == k, truth == k, spacing, tolerance_mm)
        for k in foreground
    }
    scored = ~np.isin(pred, unannotated) if unannotated else np.ones(pred.shape, bool)
    accuracy = float((pred == truth)[scored].mean()) if scored.any() else float("nan")
    result = {"pixel_accuracy": accuracy, "classes": per_class, "lesions": {}}
    if unannotated:
        result["unannotated"] = [labels[k] for k in foreground if k in unannotated]
    for k in foreground[1:]:
        if k not in unannotated:
            result["lesions"][labels[k]] = lesion_detection(pred == k, truth == k)
    return result


def summarize(cases: dict[str, dict], labels: dict[int, str], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean (and bootstrap 95 % CI over cases) of every per-class metric; lesion recall and false
    positives per case pooled over cases."""
    rng = np.random.default_rng(seed)
    names = [labels[k] for k in sorted(labels) if k != 0]
    summary: dict = {"n": len(cases), "classes": {}, "lesions": {}}
    summary["pixel_accuracy"] = float(np.nanmean([c["pixel_accuracy"] for c in cases.values()])) if cases else None
    for name in names:
        rows = [c["classes"][name] for c in cases.values()]
        entry = {}
        for metric in ("dice", "iou", "sensitivity", "precision", "hd95_mm", "msd_mm", "nsd"):
            values = np.array([r[metric] for r in rows], dtype=float)
            values = values[~np.isnan(values)]
            if not len(values):
                entry[metric] = {"mean": None, "ci": None, "n": 0}
                continue
            boots = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n_boot)]
            entry[metric] = {
                "mean": float(values.mean()),
                "ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
                "n": len(values),
            }
        summary["classes"][name] = entry
    for name in names:
        rows = [c["lesions"][name] for c in cases.values() if name in c["lesions"]]
        if rows:
            total = sum(r["lesions"] for r in rows)
            summary["lesions"][name] = {
                "lesions": total,
                "detected": sum(r["detected"] for r in rows),
                "recall": sum(r["detected"] for r in rows) / total if total else None,
                "recall_ci": wilson_interval(sum(r["detected"] for r in rows), total),
                "false_positives_per_case": sum(r["false_positives"] for r in rows) / len(rows),
            }
    summary["sample_warning"] = sample_size_warning(len(cases))
    return summary
