"""A probability map becomes scored findings, and a list of scored findings an operating point.

The detector labels voxels (a U-Net trained on the findings drawn as spheres, as Retina U-Net's
segmentation branch is). Its findings come from two levels of its probability map:

- each connected *core* (probability above ``CORE``, one half) is a finding: score its highest
  probability, centre its probability-weighted centroid, diameter that of the sphere of its volume;
- each region above ``floor`` that holds no core is a weak finding (the candidates the low end of the
  FROC curve needs), measured the same way over the whole region.

Cores are split out of the low-probability haze around them: a region above the floor can span a lobe
(a model early in training is unsure everywhere), and one finding for it would sit at the lobe's centre
with the lobe's size and hide every nodule inside.

Chosen on validation scans and kept with the run (``threshold.json``): the operating threshold, and the
factor that turns a core's size into the nodule's diameter (a network taught with the findings weighted
up draws them larger than they are: 1.3 x on the demo).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from medmap.evaluation.detection import Detection, Scan, froc, hits, threshold_at
from medmap.io.image import Image

FLOOR = 0.1  # probability above which a region is a candidate at all
CORE = 0.5  # probability above which voxels are the finding itself (the spheres the network was taught)
LIMIT = 100  # candidates kept per scan, best first


def findings(probability: Image, *, floor: float = FLOOR, limit: int = LIMIT) -> list[Detection]:
    """Scored findings of a probability map (on any grid: centres are world positions)."""
    prob = np.asarray(probability.array, np.float32)
    connectivity = np.ones((3, 3, 3))
    cores, n_cores = ndimage.label(prob > max(CORE, floor), structure=connectivity)
    weak, n_weak = ndimage.label(prob > floor, structure=connectivity)
    if n_weak and n_cores:  # the weak regions that hold a core are that core's haze, not findings of their own
        haze = np.isin(weak, np.unique(weak[cores > 0]))
        weak, n_weak = ndimage.label((weak > 0) & ~haze, structure=connectivity)
    parts = [_measured(prob, regions, n) for regions, n in ((cores, n_cores), (weak, n_weak)) if n]
    if not parts:
        return []
    scores, centres, voxels = (np.concatenate(column) for column in zip(*parts, strict=True))
    diameters = np.cbrt(6 * voxels * float(np.prod(probability.spacing)) / np.pi)
    world = probability.index_to_world(centres)
    order = np.argsort(-scores, kind="stable")[:limit]
    return [Detection(tuple(float(v) for v in world[i]), float(scores[i]), float(diameters[i])) for i in order]


def _measured(prob: np.ndarray, regions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(highest probability, probability-weighted centroid in voxels, voxel count) of each labelled region."""
    index = np.arange(1, n + 1)
    scores = np.asarray(ndimage.maximum(prob, regions, index), float)
    centres = np.atleast_2d(np.asarray(ndimage.center_of_mass(prob, regions, index), float))
    voxels = np.asarray(ndimage.sum(np.ones_like(prob), regions, index), float)
    return scores, centres, voxels


def operating_threshold(scans: list[Scan], fp_per_scan: float = 1.0) -> float:
    """The lowest score threshold at which these scans have at most ``fp_per_scan`` false positives per
    scan (chosen on validation scans, never on the evaluated ones); 1.0 when there is no candidate."""
    threshold = threshold_at(froc(scans)["curve"], fp_per_scan)
    return 1.0 if threshold is None else threshold


MIN_MATCHED = 3  # found nodules a diameter factor is measured from at least; else the sizes are left as drawn


def diameter_scale(scans: list[Scan], threshold: float) -> tuple[float, int]:
    """(median true / estimated diameter over the nodules found at ``threshold``, how many), from
    validation scans; (1.0, n) when fewer than ``MIN_MATCHED`` are found. Each nodule is measured by the
    best-scoring finding whose centre lies within its radius (the LUNA16 hit)."""
    ratios = []
    for scan in scans:
        for nodule in scan.nodules:
            hitting = [d for d in scan.detections if d.score >= threshold and d.diameter_mm and hits(d, [nodule])]
            if hitting:
                ratios.append(nodule.diameter_mm / max(hitting, key=lambda d: d.score).diameter_mm)
    if len(ratios) < MIN_MATCHED:
        return 1.0, len(ratios)
    return float(np.clip(np.median(ratios), 0.5, 2.0)), len(ratios)


def rescaled(found: list[Detection], scale: float) -> list[Detection]:
    """``found`` with each diameter multiplied by ``scale`` (the run's validation-measured factor)."""
    if scale == 1.0:
        return found
    return [replace(d, diameter_mm=d.diameter_mm * scale) if d.diameter_mm else d for d in found]
