"""Detection scored as LUNA16 scores it: FROC and CPM, with a bootstrap interval by scan.

Every position is a centre in LPS millimetres (the patient coordinates DICOM uses), never a voxel index:
the matching below is the same whatever the grids of the scans. A detection *hits* a nodule when its
centre lies within the nodule's radius of the nodule's centre (LUNA16's criterion); a nodule counts as
found at the best score of the detections that hit it; a detection that hits no nodule is a false
positive. Lowering the score threshold from the highest score traces the FROC curve (sensitivity against
false positives per scan); its sensitivities at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan
(linear interpolation on the curve, as LUNA16's evaluation script and MONAI's FROC helper do) and their
mean, the CPM (competition performance metric), summarise it. The operating points are passed here
explicitly: MONAI's helper defaults to others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # false positives per scan (LUNA16, nnDetection, MONAI)


@dataclass(frozen=True)
class Nodule:
    centre: tuple[float, float, float]  # LPS mm
    diameter_mm: float


@dataclass(frozen=True)
class Detection:
    centre: tuple[float, float, float]  # LPS mm
    score: float
    diameter_mm: float | None = None  # the detector's estimate, when it gives one


@dataclass
class Scan:
    """One scan's truth and detections (``case_id`` names it in per-case files)."""

    case_id: str
    nodules: list[Nodule]
    detections: list[Detection] = field(default_factory=list)


def hits(detection: Detection, nodules: Sequence[Nodule]) -> bool:
    """Whether ``detection``'s centre lies within any nodule's radius."""
    return any(np.linalg.norm(np.subtract(detection.centre, n.centre)) <= n.diameter_mm / 2 for n in nodules)


def match(scan: Scan) -> tuple[np.ndarray, np.ndarray]:
    """(best hitting score per nodule, NaN where none hits it; scores of the false-positive detections)."""
    best = np.full(len(scan.nodules), np.nan)
    false_positives = []
    centres = np.array([n.centre for n in scan.nodules], float).reshape(-1, 3)
    radii = np.array([n.diameter_mm / 2 for n in scan.nodules], float)
    for detection in scan.detections:
        distance = np.linalg.norm(centres - np.asarray(detection.centre, float), axis=1)
        hits = np.flatnonzero(distance <= radii)
        if hits.size == 0:
            false_positives.append(detection.score)
            continue
        for i in hits:  # one detection may lie within two touching nodules: it finds both
            best[i] = detection.score if np.isnan(best[i]) else max(best[i], detection.score)
    return best, np.asarray(false_positives, float)


def froc(scans: Sequence[Scan], rates: Sequence[float] = FP_RATES) -> dict:
    """The FROC curve of ``scans`` and its sensitivities at ``rates`` false positives per scan, and the CPM
    (their mean). Sensitivity is over every nodule of every scan; a nodule no detection hits is never found."""
    found, fps = zip(*(match(scan) for scan in scans), strict=True) if scans else ((), ())
    found = np.concatenate(found) if found else np.zeros(0)
    fps = np.concatenate(fps) if fps else np.zeros(0)
    total, n_scans = len(found), max(len(scans), 1)
    thresholds = np.unique(np.concatenate([found[~np.isnan(found)], fps]))[::-1]  # high to low
    sensitivity = np.array([np.sum(found >= t) / total if total else np.nan for t in thresholds])
    fp_per_scan = np.array([np.sum(fps >= t) / n_scans for t in thresholds])
    at = [float("nan")] * len(rates)
    if total:
        # the curve's upper envelope: at each false-positive rate the best sensitivity reached with it
        curve_fps = np.unique(np.concatenate([[0.0], fp_per_scan]))
        curve_sens = np.array([max([0.0, *sensitivity[fp_per_scan == fp]]) for fp in curve_fps])
        at = [float(np.interp(rate, curve_fps, curve_sens)) for rate in rates]
    return {
        "nodules": int(total),
        "scans": len(scans),
        "found_at_any_score": int(np.sum(~np.isnan(found))),
        "rates": list(rates),
        "sensitivity_at": at,
        "cpm": float(np.mean(at)) if total else float("nan"),
        "curve": {
            "fp_per_scan": fp_per_scan.tolist(),
            "sensitivity": sensitivity.tolist(),
            "thresholds": thresholds.tolist(),
        },
    }


def threshold_at(curve: dict, fp_per_scan: float) -> float | None:
    """The lowest score threshold of a `froc` curve with at most ``fp_per_scan`` false positives per scan;
    None when even the highest score allows more."""
    allowed = [t for t, f in zip(curve["thresholds"], curve["fp_per_scan"], strict=True) if f <= fp_per_scan]
    return float(min(allowed)) if allowed else None


def froc_with_ci(
    scans: Sequence[Scan], *, n_boot: int = 1000, seed: int = 0, rates: Sequence[float] = FP_RATES
) -> dict:
    """`froc`, plus 95 % percentile intervals of the CPM and of each operating point over resamples of
    whole scans (nodules of one scan are not independent; the scan is the unit, as a patient would be)."""
    result = froc(scans, rates)
    rng = np.random.default_rng(seed)
    cpms, points = [], []
    for _ in range(n_boot):
        draw = [scans[i] for i in rng.integers(0, len(scans), len(scans))]
        if not any(scan.nodules for scan in draw):
            continue
        resampled = froc(draw, rates)
        cpms.append(resampled["cpm"])
        points.append(resampled["sensitivity_at"])
    if cpms:
        result["cpm_ci"] = [float(np.percentile(cpms, 2.5)), float(np.percentile(cpms, 97.5))]
        result["sensitivity_at_ci"] = np.percentile(np.asarray(points), [2.5, 97.5], axis=0).T.tolist()
    else:
        result["cpm_ci"] = [float("nan"), float("nan")]
        result["sensitivity_at_ci"] = [[float("nan")] * 2 for _ in rates]
    return result


SIZES = ((0.0, 6.0, "< 6 mm"), (6.0, 10.0, "6-10 mm"), (10.0, float("inf"), ">= 10 mm"))  # Lung-RADS-like bins


def by_size(scans: Sequence[Scan], threshold: float) -> dict[str, dict]:
    """Nodules of each size found by a detection scoring at least ``threshold`` (found, nodules, share)."""
    out = {}
    for low, high, name in SIZES:
        found = total = 0
        for scan in scans:
            best, _ = match(scan)
            for nodule, score in zip(scan.nodules, best, strict=True):
                if low <= nodule.diameter_mm < high:
                    total += 1
                    found += int(not np.isnan(score) and score >= threshold)
        out[name] = {"found": found, "nodules": total, "sensitivity": found / total if total else float("nan")}
    return out


def box_iou(a: tuple[Sequence[float], float], b: tuple[Sequence[float], float]) -> float:
    """IoU of the axis-aligned cubes (in LPS mm) of two (centre, diameter) findings: the box a sphere of
    that diameter fills, as box-based detectors (nnDetection, MONAI) would report it."""
    (ca, da), (cb, db) = a, b
    low = np.maximum(np.subtract(ca, da / 2), np.subtract(cb, db / 2))
    high = np.minimum(np.add(ca, da / 2), np.add(cb, db / 2))
    inter = float(np.prod(np.clip(high - low, 0, None)))
    return inter / (da**3 + db**3 - inter) if inter > 0 else 0.0


def average_precision(scans: Sequence[Scan], iou: float = 0.1) -> float:
    """AP at box IoU ``iou`` (nnDetection's headline metric at 0.1): detections of all scans ranked by
    score, each a true positive when its box overlaps a nodule not yet taken by a higher-scoring one by at
    least ``iou``; precision interpolated at 101 recall points (COCO's rule). NaN without nodules, or when a
    detection has no diameter (no box)."""
    total = sum(len(s.nodules) for s in scans)
    ranked = sorted(((d.score, i, d) for i, s in enumerate(scans) for d in s.detections), key=lambda t: -t[0])
    if total == 0 or any(d.diameter_mm is None for _, _, d in ranked):
        return float("nan")
    taken = [np.zeros(len(s.nodules), bool) for s in scans]
    tp = np.zeros(len(ranked))
    for k, (_, i, d) in enumerate(ranked):
        overlaps = [box_iou((d.centre, d.diameter_mm), (n.centre, n.diameter_mm)) for n in scans[i].nodules]
        free = [int(j) for j in np.argsort(overlaps)[::-1] if overlaps[j] >= iou and not taken[i][j]]
        if free:  # the best-overlapping nodule no higher-scoring detection took
            taken[i][free[0]], tp[k] = True, 1.0
    recall = np.cumsum(tp) / total
    precision = np.cumsum(tp) / np.arange(1, len(ranked) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(ranked) else precision
    points = [envelope[recall >= r].max() if np.any(recall >= r) else 0.0 for r in np.linspace(0, 1, 101)]
    return float(np.mean(points))


def paired_cpm_difference(model: Sequence[Scan], other: Sequence[Scan], seed: int, n_boot: int = 1000) -> dict:
    """CPM(model) - CPM(other) on the same scans with its paired bootstrap interval (the same resampled
    scans for both); ``supported`` when the whole interval is above 0."""
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(model), len(model))
        if not any(model[i].nodules for i in idx):
            continue
        deltas.append(froc([model[i] for i in idx])["cpm"] - froc([other[i] for i in idx])["cpm"])
    low, high = np.percentile(deltas, [2.5, 97.5]).tolist() if deltas else [float("nan")] * 2
    delta = froc(model)["cpm"] - froc(other)["cpm"]
    return {"delta_cpm": float(delta), "delta_ci": [float(low), float(high)], "supported": bool(low > 0)}
