"""What pydicom itself makes of a file's pixels: the reference medmap's loader must equal.

Kept independent of medmap's code: pydicom decodes, pydicom applies the modality LUT (or the
per-frame functional groups' rescale for enhanced objects), and MONOCHROME1 is inverted by the rule
medmap documents (within the rescaled range of the stored bits).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, apply_modality_lut

PYDICOM_TEST_FILES = sorted(
    p for p in (Path(pydicom.__file__).parent / "data" / "test_files").rglob("*") if p.is_file()
)


def _frame_rescale(ds, i: int) -> tuple[float, float] | None:
    for groups in (ds.PerFrameFunctionalGroupsSequence[i], ds.get("SharedFunctionalGroupsSequence", [None])[0]):
        if groups is not None and "PixelValueTransformationSequence" in groups:
            item = groups.PixelValueTransformationSequence[0]
            return float(item.get("RescaleSlope", 1)), float(item.get("RescaleIntercept", 0))
    return None


def pydicom_reference(path: Path) -> np.ndarray | None:
    """Frames ``(n, rows, cols[, 3])`` as float64, or None where pydicom cannot decode the file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
            arr = ds.pixel_array
        except Exception:
            return None
    photometric = str(ds.get("PhotometricInterpretation", ""))
    colour = int(ds.get("SamplesPerPixel", 1)) > 1 or photometric == "PALETTE COLOR"
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.ndim == (3 if colour else 2):
        arr = arr[np.newaxis]
    if colour or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return arr.astype(np.float64)
    frames = []
    for i in range(arr.shape[0]):
        rescale = _frame_rescale(ds, i) if "PerFrameFunctionalGroupsSequence" in ds else None
        if rescale is None:
            frame = np.asarray(apply_modality_lut(arr[i], ds), dtype=np.float64)
            slope = float(ds.get("RescaleSlope", 1) or 1)
            intercept = float(ds.get("RescaleIntercept", 0) or 0)
        else:
            slope, intercept = rescale
            frame = arr[i] * slope + intercept
        if photometric == "MONOCHROME1":
            bits = int(ds.BitsStored)
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if ds.PixelRepresentation else (0, (1 << bits) - 1)
            frame = (lo + hi) * slope + 2 * intercept - frame
        frames.append(frame)
    return np.stack(frames)
