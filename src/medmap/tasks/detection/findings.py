"""A probability map becomes scored findings, and a list of scored findings an operating point.

The detector labels voxels (a U-Net trained on the findings drawn as spheres, as Retina U-Net's
segmentation branch is); its findings are the connected regions where the probability of the finding
exceeds ``floor``: the score is the region's highest probability, the centre its probability-weighted
centroid, the diameter that of the sphere with the volume of its voxels above one half. A low floor keeps
the weak candidates the FROC curve needs; the operating threshold is chosen on validation scans.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medmap.evaluation.detection import Detection, Scan, froc, threshold_at
from medmap.io.image import Image

FLOOR = 0.1  # probability above which a region is a candidate at all
LIMIT = 100  # candidates kept per scan, best first


def findings(probability: Image, *, floor: float = FLOOR, limit: int = LIMIT) -> list[Detection]:
    """Scored findings of a probability map (on any grid: centres are world positions)."""
    prob = np.asarray(probability.array, np.float32)
    regions, n = ndimage.label(prob > floor, structure=np.ones((3, 3, 3)))
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    scores = np.asarray(ndimage.maximum(prob, regions, index), float)
    centres = np.atleast_2d(np.asarray(ndimage.center_of_mass(prob, regions, index), float))
    core = np.asarray(ndimage.sum(prob > 0.5, regions, index), float)
    size = np.asarray(ndimage.sum(np.ones_like(prob), regions, index), float)
    voxels = np.where(core > 0, core, size)
    diameters = np.cbrt(6 * voxels * float(np.prod(probability.spacing)) / np.pi)
    world = probability.index_to_world(centres)
    order = np.argsort(-scores)[:limit]
    return [Detection(tuple(float(v) for v in world[i]), float(scores[i]), float(diameters[i])) for i in order]


def operating_threshold(scans: list[Scan], fp_per_scan: float = 1.0) -> float:
    """The lowest score threshold at which these scans have at most ``fp_per_scan`` false positives per
    scan (chosen on validation scans, never on the evaluated ones); 1.0 when there is no candidate."""
    threshold = threshold_at(froc(scans)["curve"], fp_per_scan)
    return 1.0 if threshold is None else threshold
