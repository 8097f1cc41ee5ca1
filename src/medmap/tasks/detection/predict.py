"""A detector's answer for one case: the findings at or above the bundle's operating threshold (chosen on
validation at one false positive per scan), each with its centre in LPS mm, diameter and score, in
``result.json``. (The DICOM SR of the findings, and classifying each, come with find-then-classify.)"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medmap.io.image import Image
from medmap.tasks.base import Answer
from medmap.tasks.detection.findings import findings

if TYPE_CHECKING:
    from medmap.inference.predictor import InputCase, Predictor


def predict_case(predictor: Predictor, case: InputCase, image: Image, folder: Path) -> Answer:
    threshold = predictor.bundle.threshold if predictor.bundle.threshold is not None else 0.5
    found = [f for f in findings(predictor.models.class_probability(image, 1)) if f.score >= threshold]
    folder.mkdir(parents=True, exist_ok=True)
    name = predictor.bundle.foreground[0].name if predictor.bundle.foreground else "finding"
    listed = [
        {
            "finding": name,
            "position_lps_mm": [round(v, 2) for v in f.centre],
            "diameter_mm": round(f.diameter_mm, 2),
            "score": round(f.score, 4),
        }
        for f in found
    ]
    return Answer({"coordinates": "LPS mm", "threshold": threshold, "findings": listed}, {})
