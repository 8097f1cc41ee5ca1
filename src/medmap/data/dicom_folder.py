"""A folder of DICOM studies as a segmentation dataset: each RTSTRUCT or SEG in it is a case, on the image
series it references, with a ``labels.json`` in the folder naming each label's structures.

Why: that is how a hospital export arrives (``patient/study/series`` folders, the contours beside the
images); asking for a conversion step first is where silent errors happen. The label objects are found
by their SOP class, their series by the Series Instance UID they reference; the patient is the file's
Patient ID, so splits stay by patient.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from medmap.data.dataset import Case, Dataset, LabelObject
from medmap.errors import DatasetError, MedmapWarning
from medmap.io.labels.names import label_names, read_label_names
from medmap.io.labels.references import LABEL_OBJECT_CLASSES, referenced_series_uid


def is_dicom_label_folder(path: Path) -> bool:
    return path.is_dir() and (path / "labels.json").is_file() and not (path / "dataset.json").exists()


def dicom_headers(root: Path):
    """(path, header) of every DICOM file under ``root`` (pixels not read)."""
    import pydicom

    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # not DICOM (labels.json, notes): not part of the dataset
                continue
            yield path, ds


def read_dicom_folder(root: Path) -> Dataset:
    labels = read_label_names(root / "labels.json")
    structures = tuple((v, tuple(n)) for v, n in sorted(labels.items()))
    series_folders: dict[str, Path] = {}
    modality: dict[str, str] = {}
    objects = []
    for path, ds in dicom_headers(root):
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class in LABEL_OBJECT_CLASSES:
            objects.append((path, str(ds.get("PatientID", "")) or path.parent.name, referenced_series_uid(ds)))
        elif "PixelData" in ds or ds.get("Rows"):
            uid = str(ds.get("SeriesInstanceUID", ""))
            series_folders.setdefault(uid, path.parent)
            modality.setdefault(uid, str(ds.get("Modality", "")))
    if not objects:
        raise DatasetError(f"{root}: holds no RTSTRUCT or DICOM SEG (labels.json says this is a DICOM label folder)")
    cases = []
    for path, patient, series_uid in objects:
        folder = series_folders.get(series_uid)
        if folder is None:
            warnings.warn(
                MedmapWarning(
                    f"{path}: the series it references ({series_uid or 'none named'}) is not in {root}; left out"
                ),
                stacklevel=2,
            )
            continue
        case_id = f"{patient}-{len([c for c in cases if c.patient_id == patient]) + 1}"
        mask = LabelObject(path, structures)
        cases.append(Case(case_id, [folder], patient_id=patient, mask=mask, series_uid=series_uid))
    if not cases:
        raise DatasetError(f"{root}: none of its {len(objects)} label object(s) has its image series in the folder")
    kinds = sorted({modality[c.series_uid] for c in cases if c.series_uid in modality})
    return Dataset(
        root.name,
        root,
        "segmentation",
        "dicom",
        label_names(labels),
        cases,
        modality=kinds[0] if len(kinds) == 1 else "",
    )
