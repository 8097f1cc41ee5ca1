"""`load` and `save`: one entry point for every format medmap reads and writes."""

from __future__ import annotations

import os
from pathlib import Path

from medmap.errors import InputNotFoundError, NotDicomError, OutputError, UnsupportedFormatError
from medmap.io import formats
from medmap.io.image import Image

_READERS = {
    **dict.fromkeys(formats.NIFTI_SUFFIXES, formats.read_nifti),
    **dict.fromkeys(formats.ITK_SUFFIXES, formats.read_itk),
    **dict.fromkeys(formats.RASTER_SUFFIXES, formats.read_raster),
}
_WRITERS = {
    **dict.fromkeys(formats.NIFTI_SUFFIXES, formats.write_nifti),
    **dict.fromkeys((".nrrd", ".mha"), formats.write_itk),
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"), formats.write_raster),
}


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a file whose suffix names a non-DICOM image format medmap reads (.nii.gz, .png, ...)."""
    path = Path(path)
    return path.is_file() and formats.suffix_of(path) in _READERS


def load(path: str | os.PathLike, series_uid: str | None = None, *, progress: bool = False) -> Image:
    """Load a NIfTI/NRRD/MHA/PNG/JPEG file, a DICOM file, or the image series under a DICOM folder.

    A folder holding several series needs ``series_uid``; the error lists the series found.
    """
    from medmap.io.dicom import load_dicom

    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        return load_dicom(path, series_uid, progress=progress)
    reader = _READERS.get(formats.suffix_of(path))
    if reader is not None:
        return reader(path)
    try:
        return load_dicom(path, progress=progress)
    except NotDicomError:
        known = ", ".join(sorted(_READERS))
        raise UnsupportedFormatError(
            f"{path}: not DICOM, and the suffix '{formats.suffix_of(path)}' is not one of {known}"
        ) from None


def save(image: Image, path: str | os.PathLike) -> Path:
    """Write an image; the format follows the suffix (.nii.gz, .nii, .nrrd, .mha, .png, ...)."""
    path = Path(path)
    writer = _WRITERS.get(formats.suffix_of(path))
    if writer is None:
        raise OutputError(f"{path}: cannot write '{formats.suffix_of(path)}'; use one of {', '.join(sorted(_WRITERS))}")
    if not path.parent.exists():
        raise OutputError(f"{path}: folder {path.parent} does not exist")
    return writer(image, path)
