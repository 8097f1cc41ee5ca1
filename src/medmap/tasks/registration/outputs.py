"""The result folder of one registered pair: images on the fixed grid, the field, the transform, a record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medmap.dicomout.registration import MATRIX_TYPES, homogeneous, spatial_registration, write_spatial_registration
from medmap.errors import OutputError
from medmap.tasks.registration.classical import Registration
from medmap.tasks.registration.evaluate import label_overlap, mean_dice, warp_image, warp_label
from medmap.tasks.registration.field import displacement_field, regularity
from medmap.tasks.registration.pair import Pair

WARPED, DISPLACEMENT, TRANSFORM, FULL_TRANSFORM = (
    "warped.nii.gz",
    "displacement.nii.gz",
    "transform.tfm",
    "transform.h5",
)
WARPED_LABEL, RECORD, DICOM_REGISTRATION = "warped_label.nii.gz", "registration.json", "registration.dcm"


def check_output_folder(out: Path, inputs: list[Path | None]) -> Path:
    """A new or empty folder that is none of the inputs (nothing the user gave is overwritten); checked
    before the work, created by `write_result` after it, so a refused pair leaves nothing behind."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"{out}: exists and is not empty; choose a new folder")
    for given in inputs:
        if given is not None and Path(given).resolve() == out.resolve():
            raise OutputError(f"{out}: is an input; choose a new folder")
    return out


def write_result(pair: Pair, result: Registration, out: Path) -> dict:
    """Write the folder (``WARPED``, ``DISPLACEMENT``, ``TRANSFORM``, labels, ``RECORD``) and return the record."""
    out.mkdir(parents=True, exist_ok=True)
    field = displacement_field(result.transform, pair.fixed)
    _write(warp_image(pair.moving, pair.fixed, result.transform), out / WARPED)
    _write(field, out / DISPLACEMENT)
    sitk.WriteTransform(result.linear, str(out / TRANSFORM))
    if result.method in ("bspline", "syn"):
        sitk.WriteTransform(result.transform, str(out / FULL_TRANSFORM))
    record = {
        "fixed": pair.fixed_name,
        "moving": pair.moving_name,
        "method": result.method,
        "convention": "transforms map fixed-image points to moving-image points (ITK), world mm, LPS",
        "seconds": round(result.seconds, 3),
        "metric_mutual_information": result.metric,
        "overlap": result.overlap,
        "regularity": regularity(field),
        "notes": result.notes,
        "files": {"warped": WARPED, "displacement": DISPLACEMENT, "linear_transform": TRANSFORM}
        | ({"transform": FULL_TRANSFORM} if result.method in ("bspline", "syn") else {}),
    }
    if pair.moving_label is not None and pair.fixed_label is not None:
        warped = warp_label(pair.moving_label, pair.fixed, result.transform)
        _write(warped, out / WARPED_LABEL)
        before = warp_label(pair.moving_label, pair.fixed, sitk.TranslationTransform(pair.dimension))
        after, unmoved = label_overlap(warped, pair.fixed_label), label_overlap(before, pair.fixed_label)
        record["labels"] = {"before": unmoved, "after": after}
        record["mean_dice"] = {"before": mean_dice(unmoved), "after": mean_dice(after)}
        record["files"]["warped_label"] = WARPED_LABEL
    refusal = _no_dicom_because(pair, result)
    if refusal is None:
        _write_dicom_registration(pair, result, out / DICOM_REGISTRATION)
        record["files"]["dicom_registration"] = DICOM_REGISTRATION
    else:
        record["notes"].append("no DICOM registration object: " + refusal)
    (out / RECORD).write_text(json.dumps(record, indent=2, allow_nan=True))
    return record


def _no_dicom_because(pair: Pair, result: Registration) -> str | None:
    """Why this result gets no Spatial Registration, or None when it gets one."""
    if result.method not in MATRIX_TYPES:
        return f"{result.method} is deformable (the Deformable Spatial Registration writer is not built yet)"
    if pair.dimension != 3:
        return "2-D images (a Spatial Registration relates volumes' frames of reference)"
    if any(i is None or not i.meta.frame_of_reference_uid for i in (pair.fixed_image, pair.moving_image)):
        return "both images must be DICOM series with a frame of reference"
    return None


def _write_dicom_registration(pair: Pair, result: Registration, path: Path) -> Path:
    linear = result.linear
    matrix = homogeneous(
        np.asarray(linear.GetMatrix()).reshape(3, 3),
        np.asarray(linear.GetTranslation()),
        np.asarray(linear.GetCenter()),
    )
    return write_spatial_registration(
        spatial_registration(pair.fixed_image, pair.moving_image, matrix, result.method), path
    )


def _write(image: sitk.Image, path: Path) -> None:
    sitk.WriteImage(image, str(path), useCompression=True)
