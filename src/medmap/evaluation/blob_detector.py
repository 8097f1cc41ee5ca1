"""A classical nodule detector to measure learned detectors against: Laplacian-of-Gaussian blobs inside
the lungs of a chest CT (the baseline of issue 13, scored by `medmap.evaluation.detection` like any
detector).

1. The CT is resampled to isotropic voxels (``spacing_mm``), so a sphere looks like a sphere at every scale.
2. The lungs: air (below -400 HU) that, slice by slice, does not touch the plane's edges (the air around
   the body does; in 3-D a thin wall blurred by resampling can join them), closed by a few millimetres
   so nodules on the pleura and the vessels are inside.
3. Scale-normalised LoG (``-sigma^2 * laplacian``, bright blobs positive) at scales for nodule diameters
   ``min_mm`` to ``max_mm`` (a sphere of radius r answers most at sigma = r / sqrt(3)); its local maxima
   over space and scale inside the lungs are the candidates, scored by their response times the share of
   air around them (`_surrounded_by_air`: walls and vessel crossings are not surrounded by lung), their
   diameter from the best scale, their centres in LPS millimetres.

Written here (scikit-image's ``blob_log`` returns no response to rank by and works in voxels): the
ranking is what a FROC curve needs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medmap.data.preprocess import resample
from medmap.evaluation.detection import Detection
from medmap.io.image import Image


def lung_mask(hu: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Air inside the body, closed by about 5 mm (juxta-pleural nodules and vessels included)."""
    air = hu < -400
    inside = np.zeros_like(air)
    for k, plane in enumerate(air):  # slice by slice: the air around the body touches the plane's edges
        labels, _ = ndimage.label(plane)
        edges = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel()]))
        inside[k] = plane & ~np.isin(labels, edges)
    radius = max(1, round(5.0 / spacing_mm))
    ball = np.linalg.norm(np.indices((2 * radius + 1,) * 3) - radius, axis=0) <= radius
    closed = ndimage.binary_closing(np.pad(inside, radius), structure=ball)[(slice(radius, -radius),) * 3]
    return ndimage.binary_fill_holes(closed)


def _surrounded_by_air(hu: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """The share of 26 points at 1.75 radii around each candidate that are air: a nodule sits in lung (a
    pleural one on half of it), an edge of the chest wall or mediastinum sits half in tissue, a vessel
    crossing has tissue along its axis."""
    directions = np.array([d for d in np.ndindex(3, 3, 3) if d != (1, 1, 1)], float) - 1
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    points = centres[:, None, :] + 1.75 * radii[:, None, None] * directions[None]
    index = np.clip(np.rint(points).astype(int), 0, np.array(hu.shape) - 1)
    return (hu[index[..., 0], index[..., 1], index[..., 2]] < -400).mean(axis=1)


def detect_blobs(
    image: Image,
    *,
    spacing_mm: float = 1.5,
    min_mm: float = 3.0,
    max_mm: float = 30.0,
    scales: int = 8,
    keep: int = 50,
) -> list[Detection]:
    """Up to ``keep`` candidate nodules of a chest CT (HU), best first, centres in LPS mm."""
    iso = resample(image, (spacing_mm,) * 3, "linear")
    hu = np.asarray(iso.array, np.float32)
    lungs = lung_mask(hu, spacing_mm)
    if not lungs.any():
        return []
    contrast = np.clip(hu, -1000, 400)  # calcium no brighter than soft tissue: size, not density, is sought
    radii_mm = np.geomspace(min_mm / 2, max_mm / 2, scales)
    sigmas = radii_mm / np.sqrt(3) / spacing_mm
    stack = np.stack([-(s**2) * ndimage.gaussian_laplace(contrast, s) for s in sigmas])
    peaks = (stack == ndimage.maximum_filter(stack, size=3)) & (stack > 0) & lungs[np.newaxis]
    scale, k, j, i = np.nonzero(peaks)
    responses = stack[scale, k, j, i] * _surrounded_by_air(hu, np.stack([k, j, i], 1), radii_mm[scale] / spacing_mm)
    order = np.argsort(-responses)[:keep]
    centres = iso.index_to_world(np.stack([k[order], j[order], i[order]], axis=1).astype(float))
    return [
        Detection(tuple(float(v) for v in centre), float(responses[n]), float(2 * radii_mm[scale[n]]))
        for centre, n in zip(np.atleast_2d(centres), order, strict=True)
    ]
