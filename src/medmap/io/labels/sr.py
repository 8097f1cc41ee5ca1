"""Lesion marks from a TID 1500 Measurement Report (a radiologist's, or medmap's own) as detection targets.

Each Measurement Group (TID 1410 / 1411) with a location becomes one mark: a centre in patient
coordinates (LPS mm) and a diameter. The location is read from the group's SCOORD3D (frame-of-reference
coordinates) or SCOORD (pixel coordinates on one referenced image, turned into LPS with that image's
position, orientation and pixel spacing). Graphic types and what they give:

- POINT: the centre (a size must come from a measurement);
- ELLIPSE (two axes, four points) and ELLIPSOID (three axes, six points): centre, diameter = mean axis;
- CIRCLE (SCOORD: centre and a point on it): centre, diameter = twice the radius;
- POLYLINE of two points (a diameter drawn across the lesion): its midpoint and length;
- POLYGON / closed POLYLINE / MULTIPOINT: the mean of its points, diameter = its largest extent.

A Diameter measurement (SCT 81827009) wins over the drawn size; else the mean of Long Axis and Short
Axis, else Long Axis. Why by hand rather than highdicom's parser: third-party reports (OHIF, Slicer)
differ in which optional rows they fill, and a walk over the content tree reads them all the same way,
saying which group it could not place. A group located only by a segment of a SEG, or without any
location, is skipped with its reason; a group stating its finding type Absent is a negative read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmap.errors import DatasetError
from medmap.io.guard import reading
from medmap.io.labels.references import LABEL_OBJECT_CLASSES

SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
}
NOT_IMAGES = {*SR_CLASSES, *LABEL_OBJECT_CLASSES}  # evidence that is not the marked images
MEASUREMENT_GROUP = "125007"
TRACKING_IDENTIFIER = "112039"
FINDING = "121071"
SOURCE_SERIES = "121232"
REFERENCED_SEGMENT = ("121214", "121191")  # Referenced Segment, Referenced Segmentation Frame
DIAMETER, LONG_AXIS, SHORT_AXIS = "81827009", "103339001", "103340004"
ABSENT = "272519000"  # SCT Absent
TO_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "um": 0.001}


@dataclass(frozen=True)
class Mark:
    identifier: str  # the group's tracking identifier
    position: tuple[float, float, float]  # LPS mm
    diameter_mm: float | None
    finding: str  # what it is ("Nodule")
    evaluations: tuple[str, ...] = ()  # qualitative findings stated ("Malignant")


@dataclass(frozen=True)
class LesionReport:
    path: Path
    series_uid: str  # the images marked
    frame_of_reference_uid: str
    marks: tuple[Mark, ...]
    negative: bool  # a read that states the finding absent
    skipped: tuple[str, ...]  # groups not placed, each with why


@dataclass
class _Location:
    points: np.ndarray  # (N, 3) LPS mm, or (N, 2) pixel coordinates when ``image`` is set
    graphic: str
    image: str = ""  # the SOP Instance UID of an SCOORD's image


def is_sr(ds) -> bool:
    return str(ds.get("SOPClassUID", "")) in SR_CLASSES


def _code(item, sequence: str = "ConceptNameCodeSequence") -> tuple[str, str]:
    codes = item.get(sequence) or []
    return (str(codes[0].get("CodeValue", "")), str(codes[0].get("CodeMeaning", ""))) if codes else ("", "")


def _children(item) -> list:
    return list(item.get("ContentSequence") or [])


def _walk(items):
    for item in items:
        yield item
        yield from _walk(_children(item))


def read_lesion_report(path: str | Path, instances: dict[str, object] | None = None) -> LesionReport:
    """The marks of a TID 1500 report. ``instances`` (SOP Instance UID -> header of the marked series)
    places SCOORD (pixel) coordinates; without it a report using them is refused with the reason."""
    import pydicom

    path = Path(path)
    with reading(path, "not a readable DICOM SR"):
        ds = pydicom.dcmread(path)
    if not is_sr(ds):
        raise DatasetError(f"{path}: not a structured report (SOP class {ds.get('SOPClassUID', 'none')})")
    groups = [
        item
        for item in _walk(_children(ds))
        if item.get("ValueType") == "CONTAINER" and _code(item)[0] == MEASUREMENT_GROUP
    ]
    if not groups:
        raise DatasetError(f"{path}: holds no measurement group (not a TID 1500 measurement report)")
    marks, skipped, negative, frames, sources = [], [], False, set(), set()
    for number, group in enumerate(groups, start=1):
        rows = _children(group)
        name = next((str(r.get("TextValue", "")) for r in rows if _code(r)[0] == TRACKING_IDENTIFIER), "")
        name = name or f"group {number}"
        findings = [
            _code(r, "ConceptCodeSequence") for r in rows if r.get("ValueType") == "CODE" and _code(r)[0] == FINDING
        ]
        finding = findings[0][1] if findings else "finding"
        evaluations = tuple(meaning for _, meaning in findings[1:])
        sources |= {str(r.get("UID", "")) for r in _walk(rows) if _code(r)[0] == SOURCE_SERIES} - {""}
        if any(_code(r, "ConceptCodeSequence")[0] == ABSENT for r in rows if r.get("ValueType") == "CODE"):
            negative = True
            continue
        location = _location(rows)
        if location is None:
            by_segment = any(_code(r)[0] in REFERENCED_SEGMENT for r in _walk(rows))
            why = "located by a segment of a SEG" if by_segment else "no location"
            skipped.append(f"{name}: {why} (medmap reads points, ellipses, ellipsoids, circles and lines)")
            continue
        if location.image:
            location = _in_patient(path, name, location, instances)
        frames |= {
            str(r.get("ReferencedFrameOfReferenceUID", "")) for r in _walk(rows) if r.get("ValueType") == "SCOORD3D"
        }
        centre, drawn = _centre_and_size(location)
        size = _measured_diameter(rows) or drawn
        marks.append(Mark(name, tuple(float(v) for v in centre), size, finding, evaluations))
    series = _marked_series(path, ds, sources)
    return LesionReport(path, series, "".join(sorted(frames - {""})[:1]), tuple(marks), negative, tuple(skipped))


def marked_series_uid(path: str | Path) -> str:
    """The series a report marks (its groups' source series, else the one image series in its evidence)."""
    import pydicom

    path = Path(path)
    with reading(path, "not a readable DICOM SR"):
        ds = pydicom.dcmread(path)
    sources = {str(r.get("UID", "")) for r in _walk(_children(ds)) if _code(r)[0] == SOURCE_SERIES} - {""}
    return _marked_series(path, ds, sources)


def _location(rows) -> _Location | None:
    for row in _walk(rows):
        kind = row.get("ValueType")
        if kind not in ("SCOORD3D", "SCOORD") or "GraphicData" not in row:
            continue
        data = np.asarray(row.GraphicData, dtype=float)
        if kind == "SCOORD3D":
            return _Location(data.reshape(-1, 3), str(row.get("GraphicType", "")))
        images = [c for c in _children(row) if c.get("ValueType") == "IMAGE"]
        sop = images[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID if images else ""
        return _Location(data.reshape(-1, 2), str(row.get("GraphicType", "")), image=str(sop) or "?")
    return None


def _in_patient(path: Path, name: str, location: _Location, instances: dict | None) -> _Location:
    """SCOORD pixel coordinates (column, row; 0,0 the top-left corner of the first pixel) in LPS mm."""
    header = (instances or {}).get(location.image)
    if header is None:
        raise DatasetError(
            f"{path}: mark {name!r} is drawn on image {location.image}, which is not in the marked series found"
        )
    origin = np.asarray(header.ImagePositionPatient, dtype=float)
    row_dir, col_dir = np.asarray(header.ImageOrientationPatient, dtype=float).reshape(2, 3)
    row_spacing, col_spacing = (float(v) for v in header.PixelSpacing)
    columns, rows = location.points[:, 0] - 0.5, location.points[:, 1] - 0.5  # pixel centres at .5
    world = origin + columns[:, None] * col_spacing * row_dir + rows[:, None] * row_spacing * col_dir
    return _Location(world, location.graphic)


def _centre_and_size(location: _Location) -> tuple[np.ndarray, float | None]:
    points, graphic = location.points, location.graphic
    if graphic == "POINT" or len(points) == 1:
        return points[0], None
    if graphic == "CIRCLE":
        return points[0], 2 * float(np.linalg.norm(points[1] - points[0]))
    if graphic in ("ELLIPSE", "ELLIPSOID"):
        axes = [float(np.linalg.norm(points[i + 1] - points[i])) for i in range(0, len(points) - 1, 2)]
        return points.mean(axis=0), float(np.mean(axes))
    if graphic == "POLYLINE" and len(points) == 2:
        return points.mean(axis=0), float(np.linalg.norm(points[1] - points[0]))
    if len(points) > 1 and np.allclose(points[0], points[-1]):
        points = points[:-1]  # a closed outline repeats its first point
    extent = max(float(np.linalg.norm(a - b)) for a in points for b in points)
    return points.mean(axis=0), extent


def _measured_diameter(rows) -> float | None:
    measured = {}
    for row in rows:
        if row.get("ValueType") != "NUM" or not row.get("MeasuredValueSequence"):
            continue
        value = row.MeasuredValueSequence[0]
        unit = _code(value, "MeasurementUnitsCodeSequence")[0]
        if _code(row)[0] in (DIAMETER, LONG_AXIS, SHORT_AXIS) and unit in TO_MM:
            measured[_code(row)[0]] = float(value.NumericValue) * TO_MM[unit]
    if DIAMETER in measured:
        return measured[DIAMETER]
    if LONG_AXIS in measured and SHORT_AXIS in measured:
        return (measured[LONG_AXIS] + measured[SHORT_AXIS]) / 2
    return measured.get(LONG_AXIS)


def _marked_series(path: Path, ds, sources: set[str]) -> str:
    """The series the marks are on: the groups' source series, else the one image series in evidence."""
    evidence = {
        str(series.get("SeriesInstanceUID", ""))
        for seq in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence")
        for study in ds.get(seq) or []
        for series in study.get("ReferencedSeriesSequence") or []
        if not any(
            str(i.get("ReferencedSOPClassUID", "")) in NOT_IMAGES for i in series.get("ReferencedSOPSequence") or []
        )
    } - {""}
    named = sources or evidence
    if len(named) > 1:
        raise DatasetError(f"{path}: marks lie on {len(named)} series ({', '.join(sorted(named))}); one is expected")
    return named.pop() if named else ""
