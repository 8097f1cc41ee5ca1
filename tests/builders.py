"""Volumes and DICOM objects the tests build: known geometry, so loaders can be checked against it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedCTImageStorage, EnhancedMRImageStorage, ExplicitVRLittleEndian, generate_uid

from medmap.data.cache import PreprocessedCache
from medmap.io.dicom.writer import SeriesInfo, write_series
from medmap.io.image import Image, ImageMeta
from medmap.plan import Normalization, Plan
from medmap.tasks import task_for

AXIAL = np.column_stack([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]])  # [normal, down a column, along a row]


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """An oblique direction matrix with DICOM handedness (slice normal = row x column), like AXIAL."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx @ AXIAL


def volume(shape=(9, 24, 20), spacing=(2.5, 0.7, 0.8), origin=(-10.0, 20.0, 30.0), direction=AXIAL, seed=0) -> Image:
    """Random HU-like voxels: every voxel differs from its neighbours, so any misplaced slice shows."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(-1000, 2000, size=shape).astype(np.int16)
    return Image(arr, spacing, origin, direction, ImageMeta(modality="CT"))


def write_ct(image: Image, folder: Path, **info) -> list[Path]:
    return write_series(image, folder, info=SeriesInfo(**info) if info else None)


def write_enhanced_ct(image: Image, path: Path, *, frame_order=None, modality: str = "CT") -> Path:
    """The same volume as one Enhanced CT (or MR) multi-frame object (frames optionally stored out of order)."""
    n = image.shape[0]
    order = list(range(n)) if frame_order is None else list(frame_order)
    ds = Dataset()
    ds.SOPClassUID = EnhancedCTImageStorage if modality == "CT" else EnhancedMRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality = modality
    ds.PatientName, ds.PatientID = "MULTI^FRAME", "MF1"
    ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName, ds.AccessionNumber = "", "O", "", ""
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20260101", "120000", "1", 1, 1
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns = image.shape[1], image.shape[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{image.spacing[1]:.10g}", f"{image.spacing[2]:.10g}"]
    measures.SliceThickness = f"{image.spacing[0]:.10g}"
    shared.PixelMeasuresSequence = Sequence([measures])
    orient = Dataset()
    orient.ImageOrientationPatient = [f"{v:.10g}" for v in (*image.direction[:, 2], *image.direction[:, 1])]
    shared.PlaneOrientationSequence = Sequence([orient])
    rescale = Dataset()
    rescale.RescaleIntercept, rescale.RescaleSlope = "-1024", "1"
    rescale.RescaleType = "HU" if modality == "CT" else "US"
    shared.PixelValueTransformationSequence = Sequence([rescale])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in order:
        item, plane = Dataset(), Dataset()
        pos = np.asarray(image.origin) + k * image.spacing[0] * image.direction[:, 0]
        plane.ImagePositionPatient = [f"{v:.10g}" for v in pos]
        item.PlanePositionSequence = Sequence([plane])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    stored = (image.array[order].astype(np.int32) + 1024).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def tiny_demo_size():
    """A demo dataset small enough for tests: 6 nodules, 3 + 1 liver volumes, a few radiographs."""
    from medmap.data.demo import DemoSize

    return DemoSize(chest_patients=2, nodules_per_patient=(3, 4), liver_train=3, liver_test=1, radiograph_patients=4)


def ball_case(seed: int, shape=(14, 28, 28), spacing=(3.0, 1.5, 1.5)):
    """An MR-like volume: a bright ball (label 1) holding a darker core (label 2), with noise."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    centre = [n * s / 2 + rng.uniform(-4, 4) for n, s in zip(shape, spacing, strict=True)]
    r = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
    label = np.zeros(shape, np.uint8)
    label[r < rng.uniform(9, 13)] = 1
    label[r < 4.5] = 2
    intensity = np.choose(label, [10.0, 100.0, 55.0]) + rng.normal(0, 5, shape)
    direction = rotation(0.1 * seed, 0.0, 0.05)
    origin = (seed * 3.0, -20.0, 5.0)
    image = Image(intensity.astype(np.float32), spacing, origin, direction)
    return image, image.with_array(label)


def split_of(dataset):
    """The run's split of a dataset (its task's, seed 0)."""
    return task_for(dataset.task).split(dataset.cases, seed=0)


def lesion_manifest(tmp_path, rows, sidecar=None):
    """One CT series ``ct`` under ``tmp_path`` and a lesion manifest ``m.csv`` of ``rows`` (image, x offset
    in mm from the centre, label), each row its own patient; ``sidecar`` becomes ``labels.json``."""
    import csv
    import json

    img = volume(shape=(9, 40, 40))
    write_ct(img, tmp_path / "ct")
    centre = img.index_to_world([4, 20, 20])
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "x", "y", "z", "label", "patient_id", "case_id"])
        writer.writeheader()
        for i, (image, offset, label) in enumerate(rows):
            writer.writerow(
                {
                    "image": image,
                    "x": centre[0] + offset,
                    "y": centre[1],
                    "z": centre[2],
                    "label": label,
                    "patient_id": f"P{i}",
                    "case_id": f"nodule-{i}",
                }
            )
    if sidecar:
        (tmp_path / "labels.json").write_text(json.dumps(sidecar))
    return tmp_path / "m.csv"


def small_plan(task: str = "segmentation", **fields) -> Plan:
    """The one Plan builder of the tests: a small network on small patches, no normalisation; ``fields``
    override any field (as a planner's decision would)."""
    segmentation = task == "segmentation"
    base = {
        "dataset": "t",
        "task": task,
        "modality": "CT",
        "labels": {0: "background", 1: "foreground"} if segmentation else {0: "benign", 1: "malignant"},
        "input_mode": "3d",
        "target_spacing": (1.0, 1.0, 1.0),
        "normalization": Normalization(scheme="none"),
        "patch_size": (8, 16, 16),
        "batch_size": 2,
        "network": "unet" if segmentation else "smallcnn",
        "network_width": 8,
        "network_depth": 3,
    }
    return Plan(**{**base, **fields})


def blobs_plan() -> Plan:
    return small_plan(
        "classification",
        dataset="blobs",
        modality="OT",
        labels={0: "dark", 1: "bright"},
        input_mode="2d",
        patch_size=(1, 16, 16),
        batch_size=8,
        network_depth=4,
    )


def write_blobs(folder: Path):
    """80 2-D pictures in MedMNIST npz layout (50 train, 15 val, 15 test) whose class is whether a central
    disc is brighter than the background; returns the dataset."""
    from medmap.data.layouts import read_dataset

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    disc = (yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 16
    arrays, labels = [], []
    for _ in range(80):
        label = int(rng.random() < 0.5)
        img = rng.normal(0, 1, (16, 16)) + disc * (1.5 if label else -1.5)
        arrays.append(img.astype(np.float32))
        labels.append(label)
    np.savez(
        folder / "blobs.npz",
        train_images=np.stack(arrays[:50]),
        train_labels=np.array(labels[:50])[:, None],
        val_images=np.stack(arrays[50:65]),
        val_labels=np.array(labels[50:65])[:, None],
        test_images=np.stack(arrays[65:]),
        test_labels=np.array(labels[65:])[:, None],
    )
    return read_dataset(folder / "blobs.npz")


def cached(dataset, plan, tmp_path, split):
    """The cases of one split of ``dataset`` through the cache under ``tmp_path``."""
    return PreprocessedCache(tmp_path / "cache", plan, task_for(plan)).build(
        [c for c in dataset.cases if c.split == split], workers=1
    )


def untrained_bundle(table: Path, task: str, overrides: list[str], root: Path, threshold: float = 0.5) -> Path:
    """A bundle of ``task`` planned from ``table`` with freshly initialised weights (seed 0): for tests of
    the plumbing around a model (find-then-classify, the node's routes), not of what it learned."""
    import json

    import torch

    from medmap.data.layouts import read_dataset
    from medmap.inference.bundle import create_bundle
    from medmap.tasks import task_for
    from medmap.training.run import prepare_plan

    dataset = read_dataset(table, "detection" if task == "detection" else None)
    plan = prepare_plan(dataset, overrides=overrides, device="cpu", progress=False)
    run = root / f"{task}-run"
    (run / "checkpoints").mkdir(parents=True)
    plan.save(run / "plan.json")
    torch.manual_seed(0)
    torch.save(task_for(plan).build_network(plan, None).state_dict(), run / "checkpoints" / "best.pt")
    (run / "threshold.json").write_text(json.dumps({"threshold": threshold}))
    return create_bundle(run, root / f"{task}-bundle")


def paired_organs_case(seed: int, shape=(1, 40, 56)):
    """A one-slice image of a symmetric body holding two identical discs, the patient's left one labelled 1
    and the right one 2: only the side tells them apart (as with the parotids). No geometry of its own, so
    its columns run across the patient (`medmap.data.laterality.lateral_axes`); +column is the left (LPS)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[1], : shape[2]].astype(float)
    cy, cx = shape[1] / 2 + rng.uniform(-2, 2), shape[2] / 2 + rng.uniform(-2, 2)
    body = ((yy - cy) / (shape[1] / 2 - 3)) ** 2 + ((xx - cx) / (shape[2] / 2 - 3)) ** 2 < 1
    offset, radius = rng.uniform(10, 13), rng.uniform(4.0, 5.5)
    label = np.zeros(shape[1:], np.uint8)
    label[(yy - cy) ** 2 + (xx - (cx + offset)) ** 2 < radius**2] = 1
    label[(yy - cy) ** 2 + (xx - (cx - offset)) ** 2 < radius**2] = 2
    pixels = np.where(body, 40.0, 0.0) + np.where(label > 0, 60.0, 0.0) + rng.normal(0, 4, shape[1:])
    image = Image(pixels[np.newaxis].astype(np.float32))
    return image, image.with_array(label[np.newaxis])


def _item(**values) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def write_rtstruct(
    series: list[Path], contours: dict[str, list[np.ndarray]], path: Path, *, image_references: bool = True
) -> Path:
    """An RTSTRUCT over the written ``series``: ``contours`` maps ROI names to closed planar contours ((N, 3)
    LPS mm each). ``image_references=False`` leaves out every ContourImageSequence (re-exported sets)."""
    import pydicom

    first = pydicom.dcmread(series[0], stop_before_pixels=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "RTSTRUCT", generate_uid(), first.StudyInstanceUID
    ds.PatientID, ds.PatientName, ds.FrameOfReferenceUID = first.PatientID, first.PatientName, first.FrameOfReferenceUID
    ds.StructureSetLabel = "test"
    refs = [
        _item(ReferencedSOPClassUID=first.SOPClassUID, ReferencedSOPInstanceUID=d.SOPInstanceUID)
        for d in (pydicom.dcmread(p, stop_before_pixels=True) for p in series)
    ]
    series_ref = _item(SeriesInstanceUID=first.SeriesInstanceUID)
    if image_references:
        series_ref.ContourImageSequence = Sequence(refs)
    study_class = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management, as every RTSTRUCT names its study
    study_ref = _item(ReferencedSOPClassUID=study_class, ReferencedSOPInstanceUID=first.StudyInstanceUID)
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    frame = _item(FrameOfReferenceUID=first.FrameOfReferenceUID)
    frame.RTReferencedStudySequence = Sequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    slices = [pydicom.dcmread(p, stop_before_pixels=True) for p in series]
    normal = np.cross(*np.asarray(first.ImageOrientationPatient, float).reshape(2, 3))
    heights = np.array([np.asarray(d.ImagePositionPatient, float) @ normal for d in slices])
    rois, roi_contours = [], []
    for number, (name, polygons) in enumerate(contours.items(), start=1):
        rois.append(_item(ROINumber=number, ROIName=name, ReferencedFrameOfReferenceUID=first.FrameOfReferenceUID,
                            ROIGenerationAlgorithm="MANUAL"))  # fmt: skip
        items = []
        for polygon in polygons:
            item = _item(ContourGeometricType="CLOSED_PLANAR", NumberOfContourPoints=len(polygon))
            item.ContourData = [f"{v:.4f}" for v in np.asarray(polygon).ravel()]
            if image_references:  # the slice it lies on, as planning systems write it (Type 3)
                on = slices[int(np.argmin(np.abs(heights - np.asarray(polygon).mean(axis=0) @ normal)))]
                item.ContourImageSequence = Sequence(
                    [_item(ReferencedSOPClassUID=on.SOPClassUID, ReferencedSOPInstanceUID=on.SOPInstanceUID)]
                )
            items.append(item)
        roi_contours.append(_item(ReferencedROINumber=number, ROIDisplayColor=[255, 0, 0]))
        roi_contours[-1].ContourSequence = Sequence(items)
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(rois), Sequence(roi_contours)
    ds.RTROIObservationsSequence = Sequence(  # Type 1 in the RT ROI Observations module
        [_item(ObservationNumber=n, ReferencedROINumber=n, RTROIInterpretedType="ORGAN", ROIInterpreter="")
         for n in range(1, len(rois) + 1)]
    )  # fmt: skip
    ds.save_as(path, enforce_file_format=True)
    return path


def defined_length_nesting(depth: int) -> bytes:
    """A private (0009,1010) sequence nested ``depth`` deep with defined lengths (explicit VR little endian),
    as bytes: pydicom would need a recursion as deep to write it (hostile-input tests and the fuzzer)."""
    import struct

    out = bytearray()
    for level in range(depth):
        value = 8 + 20 * (depth - 1 - level)  # this level's item header, then the deeper levels
        out += struct.pack("<HH", 0x0009, 0x1010) + b"SQ\x00\x00" + struct.pack("<I", value)
        out += struct.pack("<HHI", 0xFFFE, 0xE000, value - 8)
    return bytes(out)


def kidneys_export(
    folder: Path, seed: int, names=("Kidney_L", "Kidney_R"), shape=(10, 40, 48), uncontoured=(), **info
) -> Path:
    """A CT series with two bright discs left and right, and an RTSTRUCT outlining them, side by side in
    ``folder/image`` and ``folder/rt`` as exports lay them out; the structures named in ``uncontoured``
    are in the image but not in the RTSTRUCT (partial annotation); ``info`` as `SeriesInfo` (``modality``
    "MR" writes an MR series)."""
    rng = np.random.default_rng(seed)
    spacing = (3.0, 1.5, 1.5)
    _, yy, xx = np.indices(shape)
    centres = {names[0]: 34 + rng.uniform(-1, 1), names[1]: 14 + rng.uniform(-1, 1)}  # +column: patient left
    pixels = rng.normal(0, 10, shape)
    for x in centres.values():
        pixels[(yy - 20) ** 2 + (xx - x) ** 2 < 7**2] += 200
    modality = info.pop("modality", "CT")
    image = Image(pixels.astype(np.int16), spacing, (0.0, 0.0, 0.0), AXIAL, ImageMeta(modality=modality))
    series_info = SeriesInfo(**{"patient_id": f"PATIENT-{seed}", **info})
    paths = write_series(image, folder / "image", modality=modality, info=series_info)
    contours = {}
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    for name, x in centres.items():
        if name in uncontoured:
            continue
        rings = [np.column_stack([np.full(64, k), 20 + 7 * np.sin(t), x + 7 * np.cos(t)]) for k in range(shape[0])]
        contours[name] = [image.index_to_world(r) for r in rings]
    (folder / "rt").mkdir()
    return write_rtstruct(paths, contours, folder / "rt" / "rtstruct.dcm")


def fundus_photo(seed: int, shape=(64, 80)) -> tuple[np.ndarray, np.ndarray]:
    """An RGB photograph holding dark thin 'vessels' (2 px lines) on a reddish disc, and its vessel mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    vessels = np.zeros(shape, bool)
    for _ in range(4):
        angle, offset = rng.uniform(0, np.pi), rng.uniform(-20, 20)
        distance = np.abs((xx - shape[1] / 2) * np.sin(angle) - (yy - shape[0] / 2) * np.cos(angle) - offset)
        vessels |= distance < 1.0
    rgb = np.stack([np.full(shape, 170.0), np.full(shape, 80.0), np.full(shape, 40.0)], -1)
    rgb[vessels] *= 0.45
    rgb += rng.normal(0, 6, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), vessels
