"""A segmentation model's answer for one case: ``labels.nii.gz`` on the input's grid, each segment's
volume and size in ``result.json``, and for DICOM input a DICOM SEG (plus Secondary Capture overlays
when asked)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from medmap.io.image import Image
from medmap.io.load import save
from medmap.tasks.base import Answer

if TYPE_CHECKING:
    from medmap.inference.predictor import InputCase, Predictor


def segment_summary(labels: Image, foreground: list) -> dict:
    """Per segment: volume (ml), voxels, connected components, equivalent-sphere diameter of the largest."""
    voxel_ml = float(np.prod(labels.spacing)) / 1000
    out = {}
    for label in foreground:
        mask = labels.array == label.value
        components, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        largest = int(np.bincount(components.ravel())[1:].max()) if n else 0
        out[label.name] = {
            "label": label.value,
            "voxels": int(mask.sum()),
            "volume_ml": round(float(mask.sum()) * voxel_ml, 3),
            "components": int(n),
            "largest_component_diameter_mm": round(float(np.cbrt(6 * largest * voxel_ml * 1000 / np.pi)), 2),
        }
    return out


def predict_case(predictor: Predictor, case: InputCase, image: Image, folder: Path) -> Answer:
    folder.mkdir(parents=True, exist_ok=True)
    foreground = predictor.bundle.foreground
    labels = predictor.models.segment(image)
    outputs = {"labels": str(save(labels, folder / "labels.nii.gz"))}
    result: dict = {"segments": segment_summary(labels, foreground)}
    if image.meta.slices:  # DICOM input: the answer as DICOM too
        from medmap.dicomout.seg import write_segmentation

        segments = [(label.value, label.name, label.meaning) for label in foreground]
        seg = write_segmentation(
            labels,
            image,
            segments,
            folder / "seg.dcm",
            algorithm=predictor.algorithm,
            algorithm_version=predictor.version,
        )
        outputs["seg"] = str(seg)
        if predictor.overlays:
            from medmap.dicomout.overlay import write_overlays

            written = write_overlays(
                labels,
                image,
                folder / "overlays",
                [s[:2] for s in segments],
                algorithm=f"{predictor.algorithm} {predictor.version}",
            )
            outputs["overlays"] = str(folder / "overlays")
            result["overlay_images"] = len(written)
    return Answer(result, outputs, labels)
