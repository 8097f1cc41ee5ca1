"""Load a DICOM series (or one file) as an `Image` with its geometry and metadata."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from pydicom.multival import MultiValue

from medmap.errors import MedmapError, MedmapWarning, NotAnImageError, SeriesError
from medmap.io.dicom.files import DicomFile, Series, read_header, scan
from medmap.io.dicom.frames import Frame, Layout, frames_of, layout
from medmap.io.dicom.pixels import DoesNotFit, fill, output_dtypes, stored_range
from medmap.io.image import Image, ImageMeta, SliceRef


def series_frames(series: Series) -> list[Frame]:
    return [fr for f in series.files for fr in frames_of(f)]


def plan_series(series: Series) -> Layout:
    """The grid a series would load into, without reading pixels (``medmap info`` uses it)."""
    return layout(series_frames(series), series.label)


def _first_number(value) -> float | None:
    """First value of a possibly multi-valued DS (WindowCenter may hold several windows)."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _window(ds) -> tuple[float | None, float | None]:
    source = ds
    if "WindowCenter" not in ds and "SharedFunctionalGroupsSequence" in ds:
        voi = ds.SharedFunctionalGroupsSequence[0].get("FrameVOILUTSequence")
        source = voi[0] if voi else ds
    return _first_number(source.get("WindowCenter")), _first_number(source.get("WindowWidth"))


def _meta(series: Series, lay: Layout) -> ImageMeta:
    ds = series.first
    fr0 = lay.frames[0]
    center, width = _window(ds)
    fmt = series.files[0].pixel_format
    photometric = fmt.photometric
    if photometric == "MONOCHROME1" and center is not None:
        lo, hi = stored_range(fmt)
        center = (lo + hi) * fr0.slope + 2 * fr0.intercept - center
    return ImageMeta(
        modality=str(ds.get("Modality", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=series.uid,
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        slices=tuple(SliceRef(fr.file.path, fr.file.sop_instance_uid, fr.index) for fr in lay.frames),
        rescale_slope=float(fr0.slope),
        rescale_intercept=float(fr0.intercept),
        window_center=center,
        window_width=width,
        photometric=photometric,
        body_part=str(ds.get("BodyPartExamined", "")),
        series_description=str(ds.get("SeriesDescription", "")),
        source_path=series.files[0].path if len(series.files) == 1 else series.files[0].path.parent,
        notes=tuple(lay.notes),
    )


def load_series(series: Series, *, progress: bool = False) -> Image:
    """Assemble a series into one volume; raise `SeriesError` if its frames do not form a grid."""
    lay = plan_series(series)
    for note in lay.notes:
        warnings.warn(MedmapWarning(f"series {series.label}: {note}"), stacklevel=2)
    fmt = series.files[0].pixel_format
    shape: tuple[int, ...] = (len(lay.frames), fmt.rows, fmt.columns)
    if fmt.colour:
        shape = (*shape, 3)
    for dtype in output_dtypes(lay.frames):
        out = np.empty(shape, dtype=dtype)
        try:
            fill(out, lay.frames, progress=progress)
            break
        except DoesNotFit:
            continue
    return Image(out, lay.spacing, lay.origin, lay.direction, _meta(series, lay))


def choose_series(found: list[Series], where: str | os.PathLike, series_uid: str | None = None) -> Series:
    """The one series to load: the named one, or the only one; otherwise say which exist."""
    if series_uid:
        for s in found:
            if s.uid == series_uid:
                return s
        raise SeriesError(f"{where}: no series with SeriesInstanceUID {series_uid}")
    if len(found) > 1:
        listing = "; ".join(f"{s.uid} ({s.modality}, {s.n_frames} images)" for s in found[:5])
        raise SeriesError(
            f"{where}: holds {len(found)} series, choose one with series_uid / --series: {listing}"
            + (" ..." if len(found) > 5 else "")
        )
    return found[0]


def load_dicom(path: str | os.PathLike, series_uid: str | None = None, *, progress: bool = False) -> Image:
    """Load a DICOM file, or the (only or named) image series under a folder."""
    path = Path(path)
    if path.is_file():
        f: DicomFile = read_header(path)
        if not f.has_pixels:
            kind = f.ds.get("Modality", "") or str(getattr(f.ds.get("SOPClassUID"), "name", "unknown"))
            raise NotAnImageError(f"{path}: DICOM object without pixel data ({kind}), not an image")
        return load_series(Series(f.series_uid or f.sop_instance_uid, [f]), progress=progress)
    result = scan(path, progress=progress)
    if not result.series:
        example = f", e.g. {result.skipped[0][0]}: {result.skipped[0][1]}" if result.skipped else ""
        raise MedmapError(f"{path}: no DICOM image series found{example}")
    return load_series(choose_series(result.series, path, series_uid), progress=progress)
