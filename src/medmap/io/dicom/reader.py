"""Load a DICOM series (or one file) as an `Image` with its geometry and metadata."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from pydicom.multival import MultiValue

from medmap.errors import CorruptFileError, MedmapError, MedmapWarning, NotAnImageError, SeriesError
from medmap.io.dicom.files import DicomFile, header_value, read_header, reading
from medmap.io.dicom.frames import Frame, Layout, frames_of, layout
from medmap.io.dicom.pixels import DoesNotFit, fill, output_dtypes, stored_range
from medmap.io.dicom.series import ScanResult, Series, scan
from medmap.io.image import Image, ImageMeta, SliceRef


def series_frames(series: Series) -> list[Frame]:
    return [fr for f in series.files for fr in frames_of(f)]


def plan_series(series: Series) -> Layout:
    """The grid a series would load into, without reading pixels (``medmap info`` uses it).

    Raises for everything the headers alone show: a damaged member file, mixed pixel formats, a
    repeated SOP Instance UID, damaged geometry, missing or duplicate slices.
    """
    if series.damaged:
        path, why = series.damaged[0]
        more = f" (and {len(series.damaged) - 1} more damaged file(s))" if len(series.damaged) > 1 else ""
        raise CorruptFileError(f"{path}: {why}; series {series.uid[:64]} cannot be loaded without it{more}")
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
    """The display window, if the header has a usable one (it is a display hint: damage is ignored)."""
    source = ds
    if "WindowCenter" not in ds and ds.get("SharedFunctionalGroupsSequence"):
        voi = ds.SharedFunctionalGroupsSequence[0].get("FrameVOILUTSequence")
        source = voi[0] if voi else ds
    try:
        center = _first_number(header_value(source, "WindowCenter"))
        width = _first_number(header_value(source, "WindowWidth"))
    except ValueError:  # a damaged display hint is no hint
        return None, None
    if center is None or width is None or not (np.isfinite(center) and np.isfinite(width) and width > 0):
        return None, None
    return center, width


def _text(ds, keyword: str) -> str:
    value = header_value(ds, keyword)
    if isinstance(value, list):
        value = "\\".join(map(str, value))
    return "" if value is None else str(value).strip()


def series_text(series: Series, keyword: str) -> str:
    """A text attribute of the series' first file ('' when absent or damaged: for display only)."""
    try:
        return _text(series.first, keyword) if series.files else ""
    except (ValueError, KeyError):
        return ""


def _meta(series: Series, lay: Layout) -> ImageMeta:
    with reading(series.files[0].path, "damaged header"):
        return _meta_of(series, lay)


def _meta_of(series: Series, lay: Layout) -> ImageMeta:
    ds = series.first
    fr0 = lay.frames[0]
    center, width = _window(ds)
    fmt = series.files[0].pixel_format
    photometric = fmt.photometric
    if photometric == "MONOCHROME1" and center is not None:
        lo, hi = stored_range(fmt)
        center = (lo + hi) * fr0.slope + 2 * fr0.intercept - center
    return ImageMeta(
        modality=_text(ds, "Modality"),
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=series.uid,
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        slices=tuple(SliceRef(fr.file.path, fr.file.sop_instance_uid, fr.index) for fr in lay.frames),
        rescale_slope=float(fr0.slope),
        rescale_intercept=float(fr0.intercept),
        window_center=center,
        window_width=width,
        photometric=photometric,
        body_part=_text(ds, "BodyPartExamined"),
        series_description=_text(ds, "SeriesDescription"),
        source_path=series.files[0].path if len(series.files) == 1 else series.files[0].path.parent,
        notes=tuple(lay.notes),
        spacing_known=lay.spacing_known,
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
    meta = _meta(series, lay)
    with reading(series.files[0].path, "damaged image header"):
        dtypes = output_dtypes(lay.frames)
    for dtype in dtypes:
        try:
            out = np.empty(shape, dtype=dtype)
        except MemoryError:
            gib = np.prod(shape) * np.dtype(dtype).itemsize / 1024**3
            raise MedmapError(f"series {series.label}: needs {gib:.1f} GiB of memory, more than is free") from None
        try:
            fill(out, lay.frames, progress=progress)
            return Image(out, lay.spacing, lay.origin, lay.direction, meta)
        except DoesNotFit:
            continue
    # The safe dtype holds every value the header allows; pixels beyond it contradict the header.
    raise CorruptFileError(f"series {series.label}: pixel values outside the range BitsStored and the rescale allow")


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
        problems = result.damaged or result.skipped
        example = f", e.g. {problems[0][0]}: {problems[0][1]}" if problems else ""
        raise MedmapError(f"{path}: no DICOM image series found{example}")
    series = choose_series(result.series, path, series_uid)
    check_neighbours(series, result)
    return load_series(series, progress=progress)


def check_neighbours(series: Series, result: ScanResult) -> None:
    """Refuse a series with an unreadable DICOM file in its folder: of unknown series, it may be a slice
    (a missing end slice leaves no gap to detect, so loading would silently cut the volume short)."""
    folders = {p.parent for p in series.paths}
    for damaged, why in result.damaged:
        if damaged.parent in folders:
            raise CorruptFileError(
                f"{damaged}: {why}; it sits with series {series.uid[:64]} and may be one of its slices"
            )
