"""Pictures of what a detector got wrong, for the report: each missed nodule and each false positive at
the operating threshold, as the axial slice through its centre with a circle of its diameter (a person
checks these faster than a table of coordinates). Crops are taken while each scan is in memory, so the
evaluation never loads a scan twice."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmap.evaluation.detection import Scan, hits, match
from medmap.io.image import Image

HALF_WIDTH_MM = 24.0  # the crop reaches this far from the centre in the slice (a 48 mm square)
LIMIT = 8  # pictures per kind and scan at most (the report shows the first ones of all scans)


@dataclass
class Crop:
    kind: str  # "missed" or "false positive"
    caption: str
    picture: np.ndarray  # the slice's crop (rows, columns), intensities as stored
    centre: tuple[float, float]  # (row, column) of the finding in the crop
    radius: tuple[float, float]  # the circle's half-axes in pixels (rows, columns)


def crops(image: Image, scan: Scan, threshold: float, limit: int = LIMIT) -> list[Crop]:
    """The missed nodules and the false positives scoring at least ``threshold`` of one scan."""
    best, _ = match(scan)
    wanted = [
        ("missed", n.centre, n.diameter_mm, f"{scan.case_id}: missed, {n.diameter_mm:.1f} mm")
        for n, score in zip(scan.nodules, best, strict=True)
        if np.isnan(score) or score < threshold
    ][:limit]
    false = [d for d in scan.detections if d.score >= threshold and not hits(d, scan.nodules)]
    wanted += [
        ("false positive", d.centre, d.diameter_mm or 6.0, f"{scan.case_id}: score {d.score:.2f}")
        for d in sorted(false, key=lambda d: -d.score)[:limit]
    ]
    grey = image.array if image.channels == 1 else image.array[..., 0]
    return [_crop(grey, image, *item) for item in wanted]


def _crop(grey: np.ndarray, image: Image, kind: str, centre, diameter: float, caption: str) -> Crop:
    z, y, x = (float(v) for v in image.world_to_index(np.asarray(centre, float)))
    k = int(np.clip(round(z), 0, grey.shape[0] - 1))
    half = [max(1, round(HALF_WIDTH_MM / s)) for s in image.spacing[1:]]
    rows = np.clip(np.arange(round(y) - half[0], round(y) + half[0] + 1), 0, grey.shape[1] - 1)
    cols = np.clip(np.arange(round(x) - half[1], round(x) + half[1] + 1), 0, grey.shape[2] - 1)
    picture = grey[k][np.ix_(rows, cols)]
    radius = (diameter / 2 / image.spacing[1], diameter / 2 / image.spacing[2])
    start = (round(y) - half[0], round(x) - half[1])  # before clipping: the edge rows repeat, places hold
    return Crop(kind, f"{caption}, slice {k}", picture, (y - start[0], x - start[1]), radius)


def finding_crops(image: Image, listed: list[dict]) -> list[Crop]:
    """One crop per finding of a `medmap predict` result (``findings`` of result.json), captioned with
    its number, diameter, score and class when classified: the node's page shows these."""
    grey = image.array if image.channels == 1 else image.array[..., 0]
    out = []
    for number, item in enumerate(listed[:12], start=1):
        caption = f"{item['finding']} {number}: {item['diameter_mm']:.1f} mm, score {item['score']:.2f}"
        classified = item.get("classification", {})
        if "decision" in classified:
            caption += f", {classified['decision']} {max(classified['probabilities'].values()):.2f}"
        out.append(_crop(grey, image, "finding", item["position_lps_mm"], item["diameter_mm"], caption))
    return out
