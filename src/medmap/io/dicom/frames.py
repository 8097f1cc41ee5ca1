"""From instances to frames, and from frames to a regular grid.

A *frame* is one 2-D image with its own position, orientation, pixel spacing and rescale: a
single-frame instance is one frame; an enhanced multi-frame instance holds many, each described by its
per-frame functional groups. Treating both the same way means one sorting and checking routine serves
classic series, enhanced multi-frame objects and mixtures of the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from medmap.errors import SeriesError
from medmap.io.dicom.files import DicomFile, header_value

ORIENTATION_TOL = 1e-3  # direction cosines that differ by less are the same orientation
TILT_TOL_DEG = 0.05


@dataclass(frozen=True)
class Frame:
    file: DicomFile
    index: int | None  # 0-based frame number in a multi-frame instance; None for single-frame
    position: np.ndarray | None  # ImagePositionPatient (LPS mm)
    orientation: np.ndarray | None  # ImageOrientationPatient (6 direction cosines)
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) in mm
    slope: float = 1.0
    intercept: float = 0.0
    slice_thickness: float | None = None

    @property
    def where(self) -> str:
        return str(self.file.path) if self.index is None else f"{self.file.path} frame {self.index + 1}"


@dataclass
class Layout:
    """Frames sorted into a regular grid, with its geometry (axis order as in `medmap.io.image`)."""

    frames: list[Frame]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    notes: list[str] = field(default_factory=list)


def _floats(value, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _float(value, default: float | None = None) -> float | None:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    if ds is None:
        return None
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _spacing_of(ds: Dataset | None) -> tuple[float, float] | None:
    if ds is None:
        return None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        if keyword in ds:
            ps = _floats(header_value(ds, keyword), 2)
            if ps is not None and np.all(ps > 0):
                return float(ps[0]), float(ps[1])
    return None


def _rescale_of(ds: Dataset | None) -> tuple[float, float] | None:
    slope, intercept = header_value(ds, "RescaleSlope"), header_value(ds, "RescaleIntercept")
    if slope is None and intercept is None:
        return None
    return _float(slope, 1.0) or 1.0, _float(intercept, 0.0) or 0.0


def _enhanced_frames(f: DicomFile) -> list[Frame]:
    """Frames of an enhanced multi-frame instance, from its shared and per-frame functional groups."""
    ds = f.ds
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.PerFrameFunctionalGroupsSequence
    frames = []
    for i, groups in enumerate(per_frame):

        def group(keyword: str, groups: Dataset = groups) -> Dataset | None:
            return _first_item(groups, keyword) or _first_item(shared, keyword)

        plane = group("PlanePositionSequence")
        orient = group("PlaneOrientationSequence")
        measures = group("PixelMeasuresSequence")
        rescale = _rescale_of(group("PixelValueTransformationSequence")) or _rescale_of(ds) or (1.0, 0.0)
        frames.append(
            Frame(
                f,
                i,
                _floats(plane.get("ImagePositionPatient"), 3) if plane is not None else None,
                _floats(orient.get("ImageOrientationPatient"), 6) if orient is not None else None,
                _spacing_of(measures) or _spacing_of(ds),
                *rescale,
                slice_thickness=_float(measures.get("SliceThickness")) if measures is not None else None,
            )
        )
    return frames


def _legacy_multiframe(f: DicomFile) -> list[Frame]:
    """Frames of a classic multi-frame instance (NM, RT dose, US/XA cine): one geometry for all frames.

    Frames are spatial slices only when the object says how they are spaced (GridFrameOffsetVector for
    RT dose, SpacingBetweenSlices for NM tomography); otherwise they are cine/time frames without position.
    """
    ds = f.ds
    source = ds if "ImagePositionPatient" in ds else _first_item(ds, "DetectorInformationSequence")
    ipp = _floats(source.get("ImagePositionPatient"), 3) if source is not None else None
    iop = _floats(source.get("ImageOrientationPatient"), 6) if source is not None else None
    slope, intercept = _rescale_of(ds) or (1.0, 0.0)
    spacing = _spacing_of(ds)
    n = f.n_frames
    offsets = None
    if ipp is not None and iop is not None:
        grid = _floats(ds.get("GridFrameOffsetVector", []), n) if "GridFrameOffsetVector" in ds else None
        step = _float(ds.get("SpacingBetweenSlices"))
        if grid is not None:
            offsets = grid
        elif step:
            offsets = np.arange(n) * step
    frames = []
    for i in range(n):
        if offsets is not None:
            normal = np.cross(iop[:3], iop[3:])
            pos, ori = ipp + offsets[i] * normal, iop
        else:
            pos, ori = None, iop
        frames.append(Frame(f, i, pos, ori, spacing, slope, intercept, _float(ds.get("SliceThickness"))))
    return frames


def frames_of(f: DicomFile) -> list[Frame]:
    """Every frame of one instance, each with the geometry and rescale that apply to it."""
    ds = f.ds
    if f.n_frames > 1 and "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(f)
    if f.n_frames > 1:
        return _legacy_multiframe(f)
    source = ds if "ImagePositionPatient" in ds else _first_item(ds, "DetectorInformationSequence")
    slope, intercept = _rescale_of(ds) or (1.0, 0.0)
    return [
        Frame(
            f,
            None,
            _floats(header_value(source, "ImagePositionPatient"), 3),
            _floats(header_value(source, "ImageOrientationPatient"), 6),
            _spacing_of(ds),
            slope,
            intercept,
            _float(header_value(ds, "SliceThickness")),
        )
    ]


def _check_same(frames: list[Frame], label: str) -> None:
    sizes: dict[tuple[int, int], Frame] = {}
    for fr in frames:
        fmt = fr.file.pixel_format
        sizes.setdefault((fmt.rows, fmt.columns), fr)
    if len(sizes) > 1:
        (s1, f1), (s2, f2) = list(sizes.items())[:2]
        raise SeriesError(
            f"series {label}: mixed image sizes, {f1.where} is {s1[1]}x{s1[0]} but {f2.where} is {s2[1]}x{s2[0]}"
        )
    ref = frames[0]
    for fr in frames[1:]:
        if np.abs(fr.orientation - ref.orientation).max() > ORIENTATION_TOL:
            raise SeriesError(
                f"series {label}: mixed orientations, {fr.where} differs from {ref.where} "
                "(a localizer or a reformat in the same series?)"
            )
        if ref.pixel_spacing and fr.pixel_spacing and not np.allclose(fr.pixel_spacing, ref.pixel_spacing, rtol=1e-4):
            raise SeriesError(
                f"series {label}: mixed pixel spacing, {fr.where} has {fr.pixel_spacing} mm but "
                f"{ref.where} has {ref.pixel_spacing} mm"
            )


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _in_plane(fr: Frame) -> tuple[np.ndarray, np.ndarray, tuple[float, float], list[str]]:
    notes = []
    if fr.orientation is not None:
        row_dir, col_dir = _unit(fr.orientation[:3]), _unit(fr.orientation[3:])
    else:
        row_dir, col_dir = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    spacing = fr.pixel_spacing
    if spacing is None:
        spacing = (1.0, 1.0)
        notes.append("no pixel spacing in the file: 1 mm assumed")
    return row_dir, col_dir, spacing, notes


def layout(frames: list[Frame], label: str) -> Layout:
    """Sort frames into a regular grid and check it; raise `SeriesError` where the grid would lie.

    Frames are sorted by their position projected on the slice normal (InstanceNumber is not trusted).
    A gap larger than 1.5 slice spacings is a missing slice and an error (stacking across it would put
    every later slice at the wrong place); small irregularity and gantry tilt are reported as notes.
    """
    if not frames:
        raise SeriesError(f"series {label}: no frames")
    first = frames[0]
    row_dir, col_dir, (ps_row, ps_col), notes = _in_plane(first)
    normal = np.cross(row_dir, col_dir)
    thickness = first.slice_thickness or _float(first.file.ds.get("SpacingBetweenSlices")) or 1.0

    if len(frames) == 1:
        origin = first.position if first.position is not None else np.zeros(3)
        direction = np.column_stack([normal, col_dir, row_dir])
        return Layout(frames, (thickness, ps_row, ps_col), tuple(origin), direction, notes)

    located = all(fr.position is not None and fr.orientation is not None for fr in frames)
    if not located:
        if len({id(fr.file) for fr in frames}) == 1:
            # One multi-frame object without per-frame positions (cine, projections): keep stored order.
            notes.append("frames have no position (cine or projection frames): kept in stored order")
            origin = first.position if first.position is not None else np.zeros(3)
            direction = np.column_stack([normal, col_dir, row_dir])
            return Layout(frames, (thickness, ps_row, ps_col), tuple(origin), direction, notes)
        missing = next(fr for fr in frames if fr.position is None or fr.orientation is None)
        raise SeriesError(
            f"series {label}: {len(frames)} images without ImagePositionPatient/ImageOrientationPatient "
            f"(e.g. {missing.where}); projection images cannot be stacked, load them one file at a time"
        )

    _check_same(frames, label)
    depth = np.array([float(fr.position @ normal) for fr in frames])
    order = np.argsort(depth, kind="stable")
    frames = [frames[i] for i in order]
    depth = depth[order]
    steps = np.diff(depth)

    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        a, b = frames[dup[0]], frames[dup[0] + 1]
        raise SeriesError(
            f"series {label}: {dup.size + 1} slices share a position, e.g. {a.where} and {b.where} at "
            f"{depth[dup[0]]:.2f} mm along the normal (several echoes, phases or acquisitions in one series?)"
        )
    dz = float(np.median(steps))
    gaps = np.flatnonzero(steps > 1.5 * dz)
    if gaps.size:
        g = gaps[0]
        raise SeriesError(
            f"series {label}: missing slice(s) between {frames[g].where} and {frames[g + 1].where} "
            f"(gap {steps[g]:.2f} mm where slices are {dz:.2f} mm apart; {gaps.size} gap(s) in all)"
        )
    if steps.max() - steps.min() > 0.01 * dz:
        notes.append(f"irregular slice spacing ({steps.min():.3f} to {steps.max():.3f} mm): median {dz:.3f} mm used")

    span = frames[-1].position - frames[0].position
    cos = abs(float(_unit(span) @ normal))
    tilt = float(np.degrees(np.arccos(min(1.0, cos))))
    if tilt > TILT_TOL_DEG:
        notes.append(
            f"gantry tilt of {tilt:.2f} degrees: slices are sheared; the grid follows the slice normal "
            "(as SimpleITK does), so positions drift in-plane by up to "
            f"{np.linalg.norm(span - (span @ normal) * normal):.1f} mm across the volume"
        )
    direction = np.column_stack([normal, col_dir, row_dir])
    return Layout(frames, (dz, ps_row, ps_col), tuple(frames[0].position), direction, notes)
