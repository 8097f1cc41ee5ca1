"""How well a registration aligned what matters: warped label maps against the fixed image's own."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from medmap.evaluation.segmentation import class_metrics

TOLERANCE_MM = 2.0  # surface Dice tolerance (the segmentation evaluation's default is per class; one here)


def warp_label(label: sitk.Image, fixed: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """A moving image's label map on the fixed grid, nearest neighbour (labels are names, not numbers)."""
    return sitk.Resample(label, fixed, transform, sitk.sitkNearestNeighbor, 0, label.GetPixelID())


def warp_image(moving: sitk.Image, fixed: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """The moving image on the fixed grid, linear interpolation, 0 outside the moving image."""
    return sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, moving.GetPixelID())


def label_overlap(warped: sitk.Image, fixed_label: sitk.Image) -> dict[str, dict[str, float]]:
    """Dice, HD95 and surface Dice of every label value present in either map (background 0 left out)."""
    pred = sitk.GetArrayFromImage(warped)
    truth = sitk.GetArrayFromImage(fixed_label)
    spacing = fixed_label.GetSpacing()[::-1]  # array order
    values = sorted(set(np.unique(pred).tolist()) | set(np.unique(truth).tolist()) - {0})
    out = {}
    for value in values:
        if value == 0:
            continue
        metrics = class_metrics(pred == value, truth == value, spacing, TOLERANCE_MM)
        out[str(value)] = {k: metrics[k] for k in ("dice", "hd95_mm", "nsd")}
    return out


def mean_dice(overlap: dict[str, dict[str, float]]) -> float:
    values = [m["dice"] for m in overlap.values() if np.isfinite(m["dice"])]
    return float(np.mean(values)) if values else float("nan")
