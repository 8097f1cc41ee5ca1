"""A folder of DICOM studies with TID 1500 reports as a detection dataset: each report's marks are the
findings of the series it marks, so a radiologist's marks train the detector with no table to write.

The series is found by the UID the report names, anywhere in the folder; the patient is its Patient ID.
A mark without a size (a bare point) is refused: the detector learns each finding's extent. Two reports
marking one series are refused too (which reader is the truth is the user's call, not a silent merge).
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

from medmap.data.dataset import Case, Dataset, Lesion
from medmap.errors import DatasetError, MedmapWarning
from medmap.io.labels.sr import is_sr, read_lesion_report


def holds_reports(root: Path) -> bool:
    from medmap.data.dicom_folder import dicom_headers

    return root.is_dir() and any(is_sr(ds) for _, ds in dicom_headers(root))


def read_sr_folder(root: Path) -> Dataset:
    from medmap.data.dicom_folder import dicom_headers

    reports, series = [], {}
    for path, ds in dicom_headers(root):
        if is_sr(ds):
            reports.append(path)
        elif "PixelData" in ds or ds.get("Rows"):
            series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    if not reports:
        raise DatasetError(f"{root}: holds no structured report (detection from a DICOM folder reads TID 1500 marks)")
    # SOP Instance UID -> header over every image series: an SCOORD names its image, not its series
    instances = {str(ds.get("SOPInstanceUID", "")): ds for files in series.values() for _, ds in files}
    cases, marked, findings = [], {}, Counter()
    for path in reports:
        report = read_lesion_report(path, instances)
        if not report.marks and not report.negative:
            warnings.warn(MedmapWarning(f"{path}: no mark medmap can place ({'; '.join(report.skipped)}); left out"),
                          stacklevel=2)  # fmt: skip
            continue
        for why in report.skipped:
            warnings.warn(MedmapWarning(f"{path}: {why}; that group is left out"), stacklevel=2)
        if report.series_uid not in series:
            raise DatasetError(f"{path}: the series it marks ({report.series_uid or 'none named'}) is not in {root}")
        if report.series_uid in marked:
            raise DatasetError(f"{path} and {marked[report.series_uid]} both mark series {report.series_uid}; keep one")
        marked[report.series_uid] = path
        unsized = [m.identifier for m in report.marks if not m.diameter_mm]
        if unsized:
            raise DatasetError(
                f"{path}: mark {unsized[0]!r} has no size (a point without a Diameter or Long Axis measurement); "
                "the detector needs each finding's diameter"
            )
        files = series[report.series_uid]
        patient = str(files[0][1].get("PatientID", "")) or files[0][0].parent.name
        lesions = [Lesion(m.position, m.diameter_mm) for m in report.marks]
        findings.update(m.finding.lower() for m in report.marks)
        case_id = f"{patient}-{len([c for c in cases if c.patient_id == patient]) + 1}"
        folder = files[0][0].parent
        cases.append(Case(case_id, [folder], patient_id=patient, lesions=lesions, series_uid=report.series_uid))
    if not cases:
        raise DatasetError(f"{root}: none of its {len(reports)} report(s) holds a mark medmap can place")
    finding = findings.most_common(1)[0][0] if findings else "finding"
    if len(findings) > 1:
        warnings.warn(
            MedmapWarning(f"{root}: marks name {len(findings)} kinds of finding ({', '.join(findings)}); all are "
                          f"detected as one, {finding!r}"),
            stacklevel=2,
        )  # fmt: skip
    return Dataset(root.name, root, "detection", "dicom", {0: "background", 1: finding}, cases)
