"""DICOM Spatial Registration (rigid / affine) of a moving series onto a fixed one, written with pydicom.

highdicom has no registration objects, so this writer builds the IOD (PS3.3 A.39) itself. The object
joins the fixed series' study and frame of reference (the registered one); its Registration Sequence
holds two items: the fixed frame of reference with the identity, and the moving (source) frame of
reference with the matrix that takes moving-frame patient coordinates into the fixed frame. medmap's
transforms map fixed points to moving points (ITK), so the matrix written is that transform's
inverse, both in patient LPS mm.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medmap import __version__
from medmap.dicomout.seg import MANUFACTURER, source_datasets
from medmap.errors import ConfigError
from medmap.io.image import Image

SPATIAL_REGISTRATION = "1.2.840.10008.5.1.4.1.1.66.1"
MATRIX_TYPES = {"rigid": "RIGID", "affine": "AFFINE"}
_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip


def homogeneous(matrix: np.ndarray, translation: np.ndarray, center: np.ndarray) -> np.ndarray:
    """The 4x4 of an ITK matrix transform: y = M (x - c) + c + t."""
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = np.asarray(center) + np.asarray(translation) - np.asarray(matrix) @ np.asarray(center)
    return out


def spatial_registration(fixed: Image, moving: Image, fixed_to_moving: np.ndarray, kind: str) -> Dataset:
    """The Spatial Registration object; ``fixed_to_moving`` is medmap's 4x4 (fixed points -> moving points)."""
    if kind not in MATRIX_TYPES:
        raise ConfigError(f"a Spatial Registration holds rigid or affine matrices, not {kind!r}")
    for name, image in (("fixed", fixed), ("moving", moving)):
        if not image.meta.frame_of_reference_uid or not image.meta.slices:
            raise ConfigError(
                f"the {name} image was not read from DICOM with a frame of reference: no registration object"
            )
    fixed_sources = source_datasets(fixed, pixels=False)
    moving_sources = source_datasets(moving, pixels=False)
    first = fixed_sources[0]
    now = datetime.datetime.now()
    ds = Dataset()
    for keyword in _PATIENT_STUDY:
        setattr(ds, keyword, getattr(first, keyword, ""))
    ds.SOPClassUID = SPATIAL_REGISTRATION
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "REG"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9001
    ds.SeriesDescription = f"medmap {kind} registration"
    ds.Laterality = getattr(first, "Laterality", "")  # General Series, Type 2C: empty when not known
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = fixed.meta.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = __version__
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SeriesDate, ds.SeriesTime = ds.ContentDate, ds.ContentTime
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    ds.ContentLabel = "MEDMAP_REG"
    ds.ContentDescription = f"medmap {kind} registration onto the fixed series"  # LO: 64 characters at most
    ds.ContentCreatorName = ""
    moving_to_fixed = np.linalg.inv(fixed_to_moving)
    ds.RegistrationSequence = Sequence(
        [
            _registration_item(fixed.meta.frame_of_reference_uid, fixed_sources, np.eye(4), "RIGID"),
            _registration_item(moving.meta.frame_of_reference_uid, moving_sources, moving_to_fixed, MATRIX_TYPES[kind]),
        ]
    )
    _references(ds, fixed_sources + moving_sources)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SPATIAL_REGISTRATION
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"  # pydicom's
    ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _registration_item(frame_of_reference: str, sources: list, matrix: np.ndarray, matrix_type: str) -> Dataset:
    item = Dataset()
    item.FrameOfReferenceUID = frame_of_reference
    item.ReferencedImageSequence = Sequence([_instance(s) for s in sources])
    step = Dataset()
    step.FrameOfReferenceTransformationMatrixType = matrix_type
    step.FrameOfReferenceTransformationMatrix = [f"{v:.10g}" for v in np.asarray(matrix).ravel()]
    registration = Dataset()
    registration.MatrixSequence = Sequence([step])
    registration.RegistrationTypeCodeSequence = Sequence()
    item.MatrixRegistrationSequence = Sequence([registration])
    return item


def _instance(source) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return ref


def _references(ds: Dataset, sources: list) -> None:
    """Common Instance Reference: series of the object's own study, then those of other studies."""
    studies: dict[str, dict[str, list]] = {}
    for source in sources:
        studies.setdefault(source.StudyInstanceUID, {}).setdefault(source.SeriesInstanceUID, []).append(source)

    def series_items(series: dict[str, list]) -> Sequence:
        items = []
        for uid, members in series.items():
            item = Dataset()
            item.SeriesInstanceUID = uid
            item.ReferencedInstanceSequence = Sequence([_instance(s) for s in members])
            items.append(item)
        return Sequence(items)

    ds.ReferencedSeriesSequence = series_items(studies.pop(ds.StudyInstanceUID, {}))
    if studies:
        others = []
        for study_uid, series in studies.items():
            item = Dataset()
            item.StudyInstanceUID = study_uid
            item.ReferencedSeriesSequence = series_items(series)
            others.append(item)
        ds.StudiesContainingOtherReferencedInstancesSequence = Sequence(others)


def write_spatial_registration(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def read_matrix(path: Path) -> np.ndarray:
    """The moving-to-fixed 4x4 of a Spatial Registration medmap wrote (its second item; the first is the
    fixed frame of reference's identity)."""
    import pydicom

    ds = pydicom.dcmread(path)
    values = (
        ds.RegistrationSequence[1].MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrix
    )
    return np.asarray([float(v) for v in values]).reshape(4, 4)
