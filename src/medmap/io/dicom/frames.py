"""From instances to frames, and from frames to a regular grid.

A *frame* is one 2-D image with its own position, orientation, pixel spacing and rescale: a
single-frame instance is one frame; an enhanced multi-frame instance holds many, each described by its
per-frame functional groups. Treating both the same way means one sorting and checking routine serves
classic series, enhanced multi-frame objects and mixtures of the two.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medmap.errors import CorruptFileError, MedmapWarning, SeriesError
from medmap.io.dicom.files import DicomFile, header_value
from medmap.io.guard import MAX_POSITION_MM, MAX_SPACING_MM, reading

ORIENTATION_TOL = 1e-3  # direction cosines that differ by less are the same orientation
TILT_TOL_DEG = 0.05
UNIT_TOL = 0.01  # ImageOrientationPatient: unit vectors within this (rounded cosines pass)
ORTHOGONAL_TOL = 1e-3  # and orthogonal within this
MAX_RESCALE = 1e9


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
    spacing_known: bool = True  # False when the frames carry no pixel spacing (1 mm was assumed)


def _floats(value, n: int) -> np.ndarray | None:
    # Plain Python on these few numbers: numpy's per-call overhead on 2-6 values cost a quarter of the load.
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return np.array(values) if len(values) == n and all(map(math.isfinite, values)) else None


def _float(value, default: float | None = None) -> float | None:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _absent(value) -> bool:
    return value is None or value == "" or (isinstance(value, list | MultiValue) and len(value) == 0)


def _vector(ds: Dataset | None, keyword: str, n: int, where: str) -> np.ndarray | None:
    """``n`` finite numbers, None when absent; present but damaged is an error, never a default."""
    value = header_value(ds, keyword)
    if _absent(value):
        return None
    items = value if isinstance(value, list | tuple | MultiValue) else [value]
    arr = _floats(items, n)
    if arr is None:
        raise CorruptFileError(f"{where}: {keyword} {_shown(value)} is not {n} finite numbers")
    return arr


def _scalar(ds: Dataset | None, keyword: str, where: str) -> float | None:
    arr = _vector(ds, keyword, 1, where)
    return None if arr is None else float(arr[0])


def _shown(value) -> str:
    text = "\\".join(map(str, value)) if isinstance(value, list | tuple | MultiValue) else str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _positive(ds: Dataset | None, keyword: str, where: str) -> float | None:
    value = _scalar(ds, keyword, where)
    if value is not None and not 0 < value <= MAX_SPACING_MM:
        raise CorruptFileError(f"{where}: {keyword} {value:g} mm is not a positive length")
    return value


def _position(ds: Dataset | None, where: str) -> np.ndarray | None:
    pos = _vector(ds, "ImagePositionPatient", 3, where)
    if pos is not None and max(map(abs, pos.tolist())) > MAX_POSITION_MM:
        raise CorruptFileError(f"{where}: ImagePositionPatient {pos.tolist()} is more than 1 km from the origin")
    return pos


def _orientation(ds: Dataset | None, where: str) -> np.ndarray | None:
    iop = _vector(ds, "ImageOrientationPatient", 6, where)
    if iop is None:
        return None
    r0, r1, r2, c0, c1, c2 = iop.tolist()
    unit = abs(math.hypot(r0, r1, r2) - 1) <= UNIT_TOL and abs(math.hypot(c0, c1, c2) - 1) <= UNIT_TOL
    if not unit or abs(r0 * c0 + r1 * c1 + r2 * c2) > ORTHOGONAL_TOL:
        raise CorruptFileError(f"{where}: ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors")
    return iop


def _first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    if ds is None:
        return None
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _spacing_of(ds: Dataset | None, where: str) -> tuple[float, float] | None:
    if ds is None:
        return None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        ps = _vector(ds, keyword, 2, where)
        if ps is not None:
            rows, columns = ps.tolist()
            if not (0 < rows <= MAX_SPACING_MM and 0 < columns <= MAX_SPACING_MM):
                raise CorruptFileError(f"{where}: {keyword} {ps.tolist()} mm is not two positive lengths")
            return rows, columns
    return None


def _rescale_of(ds: Dataset | None, where: str) -> tuple[float, float] | None:
    """(slope, intercept), None when neither is present. Damaged, zero or absurd values are errors: a
    wrong rescale turns every voxel into a wrong HU without any other sign."""
    slope, intercept = _scalar(ds, "RescaleSlope", where), _scalar(ds, "RescaleIntercept", where)
    if slope is None and intercept is None:
        return None
    if slope is None or intercept is None:  # DICOM has both or neither; pydicom then ignores the one
        present = "RescaleSlope" if intercept is None else "RescaleIntercept"
        raise CorruptFileError(f"{where}: {present} without its partner; the rescale is ambiguous")
    if slope == 0 or abs(slope) > MAX_RESCALE or abs(intercept) > MAX_RESCALE:
        raise CorruptFileError(f"{where}: rescale slope {slope:g} / intercept {intercept:g} is not usable")
    return slope, intercept


def _enhanced_frames(f: DicomFile) -> list[Frame]:
    """Frames of an enhanced multi-frame instance, from its shared and per-frame functional groups."""
    ds = f.ds
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) < f.n_frames:
        raise CorruptFileError(
            f"{f.path}: {len(per_frame)} per-frame functional groups for NumberOfFrames "
            f"{header_value(ds, 'NumberOfFrames') or '(missing)'}"
        )
    if len(per_frame) > f.n_frames:  # the pixel data holds no more frames (checked with the header)
        warnings.warn(
            MedmapWarning(
                f"{f.path}: {len(per_frame)} per-frame functional groups for {f.n_frames} frame(s); the first are used"
            ),
            stacklevel=2,
        )
        per_frame = per_frame[: f.n_frames]
    frames = []
    for groups in (shared, *per_frame):  # every value of the groups parses, or the file is damaged
        if groups is not None:
            groups.walk(lambda _ds, _elem: None)
    for i, groups in enumerate(per_frame):

        def group(keyword: str, groups: Dataset = groups) -> Dataset | None:
            return _first_item(groups, keyword) or _first_item(shared, keyword)

        where = f"{f.path} frame {i + 1}"
        measures = group("PixelMeasuresSequence")
        rescale = _rescale_of(group("PixelValueTransformationSequence"), where) or _rescale_of(ds, where) or (1.0, 0.0)
        frames.append(
            Frame(
                f,
                i,
                _position(group("PlanePositionSequence"), where),
                _orientation(group("PlaneOrientationSequence"), where),
                _spacing_of(measures, where) or _spacing_of(ds, where),
                *rescale,
                slice_thickness=_positive(measures, "SliceThickness", where),
            )
        )
    return frames


def _legacy_multiframe(f: DicomFile) -> list[Frame]:
    """Frames of a classic multi-frame instance (NM, RT dose, US/XA cine): one geometry for all frames.

    Frames are spatial slices only when the object says how they are spaced (GridFrameOffsetVector for
    RT dose, SpacingBetweenSlices for NM tomography); otherwise they are cine/time frames without position.
    """
    ds = f.ds
    where = str(f.path)
    source = ds if "ImagePositionPatient" in ds else _first_item(ds, "DetectorInformationSequence")
    ipp = _position(source, where)
    iop = _orientation(source, where)
    slope, intercept = _rescale_of(ds, where) or (1.0, 0.0)
    spacing = _spacing_of(ds, where)
    thickness = _positive(ds, "SliceThickness", where)
    n = f.n_frames
    offsets = None
    if ipp is not None and iop is not None:
        grid = _vector(ds, "GridFrameOffsetVector", n, where) if "GridFrameOffsetVector" in ds else None
        step = _positive(ds, "SpacingBetweenSlices", where)
        if grid is not None:
            if np.abs(grid).max() > MAX_POSITION_MM:
                raise CorruptFileError(f"{where}: GridFrameOffsetVector reaches beyond 1 km")
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
        frames.append(Frame(f, i, pos, ori, spacing, slope, intercept, thickness))
    return frames


def frames_of(f: DicomFile) -> list[Frame]:
    """Every frame of one instance, each with the geometry and rescale that apply to it.

    Damaged geometry or rescale values (non-finite, garbled, zero or absurd) raise `CorruptFileError`
    naming the file: a default in their place would load the image in the wrong place or in wrong HU.
    """
    with reading(f.path, "damaged image header"):
        return _frames_of(f)


def _frames_of(f: DicomFile) -> list[Frame]:
    ds = f.ds
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(f)
    if f.n_frames > 1:
        return _legacy_multiframe(f)
    where = str(f.path)
    source = ds if "ImagePositionPatient" in ds else _first_item(ds, "DetectorInformationSequence")
    slope, intercept = _rescale_of(ds, where) or (1.0, 0.0)
    return [
        Frame(
            f,
            None,
            _position(source, where),
            _orientation(source, where),
            _spacing_of(ds, where),
            slope,
            intercept,
            _positive(ds, "SliceThickness", where),
        )
    ]


def check_instances(frames: list[Frame], label: str) -> None:
    """Every instance of a series must describe its pixels the same way and have its own SOP Instance UID.

    One 8-bit, RGB or unsigned slice among 16-bit signed ones would otherwise decide (or break) the
    output type of the whole volume; a repeated SOP Instance UID is a copied or mislabelled slice.
    """
    sizes: dict[tuple[int, int], Frame] = {}
    for fr in frames:
        fmt = fr.file.pixel_format
        sizes.setdefault((fmt.rows, fmt.columns), fr)
    if len(sizes) > 1:
        (s1, f1), (s2, f2) = list(sizes.items())[:2]
        raise SeriesError(
            f"series {label}: mixed image sizes, {f1.where} is {s1[1]}x{s1[0]} but {f2.where} is {s2[1]}x{s2[0]}"
        )
    first = frames[0].file
    seen: dict[str, DicomFile] = {}
    for f in {id(fr.file): fr.file for fr in frames}.values():
        a, b = first.pixel_format, f.pixel_format
        for name in ("samples", "bits_allocated", "bits_stored", "signed", "photometric", "float_bits", "modality_lut"):
            if getattr(a, name) != getattr(b, name):
                raise SeriesError(
                    f"series {label}: mixed pixel formats, {first.path} has {name} {getattr(a, name)} but "
                    f"{f.path} has {getattr(b, name)}"
                )
        other = seen.setdefault(f.sop_instance_uid, f)
        if other is not f:
            raise SeriesError(
                f"series {label}: {other.path} and {f.path} have the same SOP Instance UID "
                f"{f.sop_instance_uid[:64]} (a copied or mislabelled slice)"
            )


def _check_same(frames: list[Frame], label: str) -> None:
    ref = frames[0]
    ref_orientation = ref.orientation.tolist()
    for fr in frames[1:]:
        if max(abs(a - b) for a, b in zip(fr.orientation.tolist(), ref_orientation, strict=True)) > ORIENTATION_TOL:
            raise SeriesError(
                f"series {label}: mixed orientations, {fr.where} differs from {ref.where} "
                "(a localizer or a reformat in the same series?)"
            )
        same_spacing = (
            ref.pixel_spacing is None
            or fr.pixel_spacing is None
            or all(
                math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-8)
                for a, b in zip(fr.pixel_spacing, ref.pixel_spacing, strict=True)
            )
        )
        if not same_spacing:
            raise SeriesError(
                f"series {label}: mixed pixel spacing, {fr.where} has {fr.pixel_spacing} mm but "
                f"{ref.where} has {ref.pixel_spacing} mm"
            )


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


NO_PIXEL_SPACING = "no pixel spacing in the file: 1 mm assumed"


def _spacing_known(notes: list[str]) -> bool:
    return NO_PIXEL_SPACING not in notes


def _in_plane(fr: Frame) -> tuple[np.ndarray, np.ndarray, tuple[float, float], list[str]]:
    notes = []
    if fr.orientation is not None:
        row_dir = _unit(fr.orientation[:3])
        col_dir = fr.orientation[3:]
        col_dir = _unit(col_dir - (col_dir @ row_dir) * row_dir)  # rounded cosines: make them exactly orthogonal
    else:
        row_dir, col_dir = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    spacing = fr.pixel_spacing
    if spacing is None:
        spacing = (1.0, 1.0)
        notes.append(NO_PIXEL_SPACING)
    return row_dir, col_dir, spacing, notes


def layout(frames: list[Frame], label: str) -> Layout:
    """Sort frames into a regular grid and check it; raise `SeriesError` where the grid would lie.

    Frames are sorted by their position projected on the slice normal (InstanceNumber is not trusted).
    A gap larger than 1.5 slice spacings is a missing slice and an error (stacking across it would put
    every later slice at the wrong place); small irregularity and gantry tilt are reported as notes.
    """
    if not frames:
        raise SeriesError(f"series {label}: no frames")
    check_instances(frames, label)
    first = frames[0]
    row_dir, col_dir, (ps_row, ps_col), notes = _in_plane(first)
    normal = np.cross(row_dir, col_dir)
    with reading(first.file.path, "damaged image header"):
        step = _positive(first.file.ds, "SpacingBetweenSlices", str(first.file.path))
    thickness = first.slice_thickness or step or 1.0

    if len(frames) == 1:
        origin = first.position if first.position is not None else np.zeros(3)
        direction = np.column_stack([normal, col_dir, row_dir])
        return Layout(frames, (thickness, ps_row, ps_col), tuple(origin), direction, notes, _spacing_known(notes))

    located = all(fr.position is not None and fr.orientation is not None for fr in frames)
    if not located:
        if len({id(fr.file) for fr in frames}) == 1:
            # One multi-frame object without per-frame positions (cine, projections): keep stored order.
            notes.append("frames have no position (cine or projection frames): kept in stored order")
            origin = first.position if first.position is not None else np.zeros(3)
            direction = np.column_stack([normal, col_dir, row_dir])
            spacing = (thickness, ps_row, ps_col)
            return Layout(frames, spacing, tuple(origin), direction, notes, _spacing_known(notes))
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
    if dz > MAX_SPACING_MM:
        raise SeriesError(f"series {label}: slices {dz:g} mm apart, the positions are damaged")
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
    return Layout(frames, (dz, ps_row, ps_col), tuple(frames[0].position), direction, notes, _spacing_known(notes))
