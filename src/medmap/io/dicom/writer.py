"""Write an `Image` as a classic single-frame DICOM series (CT or MR Image Storage).

Used to turn generated phantoms into real DICOM series (demo data, tests, benchmarks) and to export a
NIfTI volume to DICOM. The files carry everything a PACS, a viewer and dciodvfy expect of the CT/MR
Image IODs: patient/study/series/frame-of-reference/equipment modules, image plane geometry and the
rescale that turns stored values into HU.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from medmap.errors import OutputError
from medmap.io.image import Image
from medmap.progress import track

_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}


@dataclass
class SeriesInfo:
    """Identity of the series to write. Defaults are an obviously synthetic patient."""

    patient_name: str = "MEDMAP^PHANTOM"
    patient_id: str = "PHANTOM-0001"
    patient_sex: str = "O"
    patient_birth_date: str = ""
    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    study_date: str = field(default_factory=lambda: dt.date.today().strftime("%Y%m%d"))
    study_time: str = "120000"
    study_id: str = "1"
    accession_number: str = ""
    series_number: int = 1
    series_description: str = ""
    body_part: str = ""
    manufacturer: str = "medmap"
    rescale_intercept: float = -1024.0  # CT: stored = HU + 1024, unsigned, as most scanners do
    rescale_slope: float = 1.0
    window_center: float | None = None
    window_width: float | None = None


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _ds(v: float) -> str:
    """A DS value of at most 16 characters."""
    text = f"{v:.10g}"
    return text if len(text) <= 16 else f"{v:.6g}"


def _base_dataset(image: Image, modality: str, info: SeriesInfo, stored: np.ndarray) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = _SOP_CLASS[modality]
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality == "CT" else ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = info.patient_birth_date
    ds.PatientSex = info.patient_sex
    ds.StudyInstanceUID = info.study_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = info.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = info.study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = info.study_id
    ds.AccessionNumber = info.accession_number
    ds.Modality = modality
    ds.SeriesInstanceUID = info.series_uid
    ds.SeriesNumber = info.series_number
    if info.series_description:
        ds.SeriesDescription = info.series_description
    if info.body_part:
        ds.BodyPartExamined = info.body_part
    else:
        ds.Laterality = ""  # Type 2C: without a body part nobody can tell whether it is paired; "unknown"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = info.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = info.manufacturer
    ds.AcquisitionNumber = 1
    ds.PixelSpacing = [_ds(image.spacing[1]), _ds(image.spacing[2])]
    ds.SliceThickness = _ds(image.spacing[0])
    row_dir, col_dir = image.direction[:, 2], image.direction[:, 1]
    ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape[1], image.shape[2]
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.RescaleIntercept = _ds(info.rescale_intercept)
    ds.RescaleSlope = _ds(info.rescale_slope)
    if modality == "CT":
        ds.RescaleType = "HU"
        ds.KVP = "120"
    else:
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.EchoTime = ds.RepetitionTime = ""
        ds.EchoTrainLength = ""
        ds.MagneticFieldStrength = "1.5"
    if info.window_center is not None and info.window_width is not None:
        ds.WindowCenter, ds.WindowWidth = _ds(info.window_center), _ds(info.window_width)
    return ds


def _stored_values(image: Image, info: SeriesInfo) -> np.ndarray:
    """Stored integers for the rescale in ``info``; refuse values that the rescale cannot represent."""
    values = (image.array.astype(np.float64) - info.rescale_intercept) / info.rescale_slope
    stored = np.rint(values)
    if np.abs(stored - values).max(initial=0) > 1e-3:
        raise OutputError("image values are not representable with the chosen rescale slope/intercept")
    lo, hi = stored.min(initial=0), stored.max(initial=0)
    for dtype in (np.uint16, np.int16):
        if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
            return stored.astype(dtype)
    raise OutputError(f"image values {lo}..{hi} (stored) do not fit 16 bits; choose another rescale")


def write_series(
    image: Image,
    out_dir: str | os.PathLike,
    *,
    modality: str = "CT",
    info: SeriesInfo | None = None,
    progress: bool = False,
) -> list[Path]:
    """Write one file per slice into ``out_dir`` (created; must be empty) and return their paths."""
    if modality not in _SOP_CLASS:
        raise OutputError(f"writing {modality} series is not supported (CT or MR)")
    if image.channels != 1:
        raise OutputError("only single-channel images can be written as a CT/MR series")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise OutputError(f"{out_dir}: folder is not empty; refusing to mix series")
    out_dir.mkdir(parents=True, exist_ok=True)
    info = info or SeriesInfo(rescale_intercept=-1024.0 if modality == "CT" else 0.0)
    stored = _stored_values(image, info)
    base = _base_dataset(image, modality, info, stored)
    normal_step = image.direction[:, 0] * image.spacing[0]
    paths = []
    for k in track(range(image.shape[0]), f"writing {modality} series", enabled=progress):
        ds = Dataset()
        ds.update(base)
        sop_uid = generate_uid()
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        position = np.asarray(image.origin) + k * normal_step
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(float(position @ image.direction[:, 0]))
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = base.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = out_dir / f"{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_radiograph(
    image: Image,
    path: str | os.PathLike,
    *,
    info: SeriesInfo | None = None,
    monochrome1: bool = False,
    view_position: str = "PA",
) -> Path:
    """Write a 2-D image as Digital X-Ray Image Storage - For Presentation (12-bit, unsigned).

    ``monochrome1`` stores the inverted values with PhotometricInterpretation MONOCHROME1, as many
    detectors do; a reader that honours the photometric interpretation gets the same picture back.
    """
    if not image.is_2d or image.channels != 1:
        raise OutputError("a radiograph must be a single-channel 2-D image")
    path = Path(path)
    if path.exists():
        raise OutputError(f"{path}: exists; refusing to overwrite")
    info = info or SeriesInfo()
    values = np.rint(image.array[0]).astype(np.int64)
    if values.min() < 0 or values.max() > 4095:
        raise OutputError(f"radiograph values must lie in 0..4095 (12 bits), got {values.min()}..{values.max()}")
    stored = (4095 - values if monochrome1 else values).astype(np.uint16)
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    ds.SOPInstanceUID = sop_uid = generate_uid()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientName, ds.PatientID = info.patient_name, info.patient_id
    ds.PatientBirthDate, ds.PatientSex = info.patient_birth_date, info.patient_sex
    ds.StudyInstanceUID, ds.SeriesInstanceUID = info.study_uid, info.series_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = info.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = info.study_time
    ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", info.study_id, info.accession_number
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DX", info.series_number, 1
    if info.series_description:
        ds.SeriesDescription = info.series_description
    ds.BodyPartExamined = info.body_part or "CHEST"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = info.manufacturer
    ds.PatientOrientation = ["L", "F"] if view_position == "PA" else ["R", "F"]
    ds.ViewPosition = view_position
    ds.ImageLaterality = "U"
    ds.PositionerType = ""
    ds.AcquisitionContextSequence = Sequence()
    ds.AnatomicRegionSequence = Sequence([_code("51185008", "SCT", "Chest")])
    if view_position == "PA":
        ds.ViewCodeSequence = Sequence([_code("399348003", "SCT", "postero-anterior")])
    ds.ImagerPixelSpacing = [_ds(image.spacing[1]), _ds(image.spacing[2])]
    ds.DetectorType = "DIRECT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape[1], image.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = -1 if monochrome1 else 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    # DX "for presentation" must say how to display it: the given window, or the full 12-bit range
    center, width = info.window_center or 2048.0, info.window_width or 4096.0
    ds.WindowCenter, ds.WindowWidth = _ds(4095 - center if monochrome1 else center), _ds(width)
    ds.PixelData = stored.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
