"""DICOM Segmentation (SEG) of a label map predicted on a DICOM series, written with highdicom.

One segment per foreground label, with its coded meaning and the algorithm identification; one frame
per source slice *including empty ones* (``omit_empty_frames=False``): tools that skip empty frames
leave viewers to place the remaining frames by position alone, and some misplace them. The SEG shares
the source's study and frame of reference and references every source instance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medmap import __version__
from medmap.colours import label_colour
from medmap.dicomout.codes import Meaning
from medmap.errors import ConfigError
from medmap.io.image import Image

MANUFACTURER = "medmap"


def algorithm_identification(name: str, version: str):
    from highdicom import AlgorithmIdentificationSequence
    from pydicom.sr.codedict import codes

    return AlgorithmIdentificationSequence(name=name, version=version, family=codes.DCM.ArtificialIntelligence)


def source_datasets(image: Image, *, pixels: bool = True) -> list:
    """The DICOM instances ``image`` was read from: one per slice, in slice order, for a classic series;
    the one multi-frame instance (Enhanced CT/MR) whose frames are the slices (``SliceRef.frame``).
    ``pixels=False`` reads headers only (writers that reference the sources but never decode them)."""
    import pydicom

    refs = image.meta.slices
    if not refs:
        raise ConfigError("a DICOM result needs the DICOM series the image was read from (this image has none)")
    if any(ref.frame is not None for ref in refs):
        if len({ref.path for ref in refs}) != 1:
            raise ConfigError("a volume assembled from several multi-frame instances cannot be referenced yet")
        return [_with_type2(pydicom.dcmread(refs[0].path, stop_before_pixels=not pixels))]
    return [_with_type2(pydicom.dcmread(ref.path, stop_before_pixels=not pixels)) for ref in refs]


# Type 2 attributes of the Patient and General Study modules that highdicom copies from the source into
# every derived object: a source that omits one (allowed for some IODs, common in the wild) would
# otherwise fail the writer with an AttributeError. Empty is what the standard says "unknown" is.
_COPIED_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _with_type2(ds):
    """The source dataset (an in-memory copy; the file is untouched) with absent Type 2 values empty."""
    for keyword in _COPIED_TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def in_source_frame_order(image: Image, array: np.ndarray) -> np.ndarray:
    """``array`` (one 2-D plane per slice of ``image``) reordered to the source's frame order: a multi-frame
    source may store its frames in any order, and a SEG's frames follow the source's."""
    frames = [ref.frame for ref in image.meta.slices]
    if frames[0] is None:
        return array
    ordered = np.zeros_like(array)
    ordered[frames] = array
    return ordered


def write_segmentation(
    labels: Image,
    source: Image,
    segments: list[tuple[int, str, Meaning]],
    path: str | Path,
    *,
    algorithm: str,
    algorithm_version: str,
    series_number: int = 901,
) -> Path:
    """Write ``labels`` (on ``source``'s grid) as a binary DICOM SEG. ``segments``: (label value, name, meaning)."""
    import highdicom as hd

    if labels.shape != source.shape:
        raise ConfigError(f"label map {labels.shape} is not on the source series' grid {source.shape}")
    datasets = source_datasets(source, pixels=False)  # highdicom reads the sources' metadata, never their pixels
    array = np.asarray(labels.array)
    segment_map = np.zeros(array.shape, np.uint8)  # label values -> segment numbers 1..N
    descriptions = []
    algorithm_id = algorithm_identification(algorithm, algorithm_version)
    for number, (value, name, meaning) in enumerate(segments, start=1):
        segment_map[array == value] = number
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name[:64],
                segmented_property_category=meaning.category.to_highdicom(),
                segmented_property_type=meaning.type.to_highdicom(),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm_id,
                tracking_uid=hd.UID(),
                tracking_id=f"{name} {number}",
                display_color=hd.color.CIELabColor.from_rgb(*label_colour(name, value)),  # viewers draw it so
            )
        )
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=in_source_frame_order(source, segment_map),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm[:64],
        software_versions=f"medmap {__version__}",
        device_serial_number="0",
        series_description=f"{algorithm} segmentation"[:64],
        omit_empty_frames=False,
    )
    path = Path(path)
    seg.save_as(path)
    return path
