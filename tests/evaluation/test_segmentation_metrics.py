"""medmap's segmentation metrics equal MONAI's on random masks; lesion matching and empty-mask rules."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from medmap.evaluation.segmentation import case_metrics, class_metrics, lesion_detection, summarize


def random_blobs(shape, seed, threshold=0.6):
    """Smooth random blobs: irregular, multi-component masks with real surfaces (not salt and pepper)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=2.0)
    return field > threshold * field.std()


def onehot(mask):
    m = torch.from_numpy(mask)
    return torch.stack([~m, m]).float()[None]  # [1, 2, ...]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 0.8, 0.7)])
def test_metrics_equal_monai(seed, spacing):
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
        compute_surface_dice,
    )

    pred = random_blobs((20, 30, 28), seed)
    truth = random_blobs((20, 30, 28), seed + 100)
    tolerance = 2.0
    ours = class_metrics(pred, truth, spacing, tolerance)
    p, t = onehot(pred), onehot(truth)
    # Tolerances: overlap metrics are exact counts (1e-6); distances are float32 in MONAI (1e-4 relative).
    assert ours["dice"] == pytest.approx(float(compute_dice(p, t, include_background=False)), abs=1e-6)
    assert ours["iou"] == pytest.approx(float(compute_iou(p, t, include_background=False)), abs=1e-6)
    hd95 = float(compute_hausdorff_distance(p, t, percentile=95, spacing=spacing))
    assert ours["hd95_mm"] == pytest.approx(hd95, rel=1e-4)
    msd = float(compute_average_surface_distance(p, t, symmetric=True, spacing=spacing))
    assert ours["msd_mm"] == pytest.approx(msd, rel=1e-4)
    nsd = float(compute_surface_dice(p, t, [tolerance], spacing=spacing))
    assert ours["nsd"] == pytest.approx(nsd, abs=1e-6)


def test_perfect_and_empty_cases():
    truth = np.zeros((10, 12, 12), bool)
    truth[3:7, 4:8, 4:8] = True
    perfect = class_metrics(truth, truth, (1, 1, 1), 1.0)
    assert perfect["dice"] == 1 and perfect["hd95_mm"] == 0 and perfect["nsd"] == 1
    none = class_metrics(np.zeros_like(truth), np.zeros_like(truth), (1, 1, 1), 1.0)
    assert np.isnan(none["dice"]) and np.isnan(none["hd95_mm"])
    missed = class_metrics(np.zeros_like(truth), truth, (1, 1, 1), 1.0)
    assert missed["dice"] == 0 and missed["nsd"] == 0 and np.isnan(missed["hd95_mm"])


def test_distances_are_in_millimetres():
    truth = np.zeros((12, 12, 12), bool)
    truth[4:8, 4:8, 4:8] = True
    shifted = np.roll(truth, 1, axis=0)  # one slice along the 5 mm axis
    m = class_metrics(shifted, truth, (5.0, 1.0, 1.0), 2.0)
    assert m["hd95_mm"] == pytest.approx(5.0)


def test_lesion_detection_counts_components():
    truth = np.zeros((20, 20, 20), bool)
    truth[2:5, 2:5, 2:5] = True  # lesion A: found
    truth[10:13, 10:13, 10:13] = True  # lesion B: missed
    pred = np.zeros_like(truth)
    pred[3:6, 3:6, 3:6] = True  # overlaps A
    pred[15:18, 2:4, 2:4] = True  # a false positive
    assert lesion_detection(pred, truth) == {"lesions": 2, "detected": 1, "predicted": 2, "false_positives": 1}


def test_case_metrics_and_summary():
    labels = {0: "background", 1: "liver", 2: "tumour"}
    truth = np.zeros((10, 16, 16), np.uint8)
    truth[2:8, 2:14, 2:14] = 1
    truth[4:6, 5:8, 5:8] = 2
    pred = truth.copy()
    pred[2, 2:14, 2:14] = 0
    cases = {
        "a": case_metrics(pred, truth, (2.0, 1.0, 1.0), labels),
        "b": case_metrics(truth, truth, (2, 1, 1), labels),
    }
    assert cases["b"]["classes"]["liver"]["dice"] == 1
    assert cases["a"]["lesions"]["tumour"]["detected"] == 1
    summary = summarize(cases, labels, n_boot=200)
    liver = summary["classes"]["liver"]["dice"]
    assert liver["n"] == 2 and liver["ci"][0] <= liver["mean"] <= liver["ci"][1] <= 1
    assert summary["lesions"]["tumour"]["recall"] == 1.0
