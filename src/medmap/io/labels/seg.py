"""DICOM SEG: a segmentation object's segments as a label map on the series it segments (highdicom reads it).

Each segment is placed by its frames' own positions (Plane Position / Orientation, as highdicom
assembles them into a volume), not by the source frames they may reference (exports rarely declare
their spatial locations preserved), then resampled by nearest neighbour onto the image's grid (an
identity copy when the grids agree): binary, fractional (more than half is inside) and sparse or
unsorted frames land where they are. A segment whose frames lie outside the image is refused with its
name. Overlapping segments (a SEG allows them) go to the smaller segment, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmap.errors import DatasetError
from medmap.io.guard import reading
from medmap.io.image import Image
from medmap.io.labels.references import SEG_SOP_CLASS, check_frame_of_reference, referenced_series_uid
from medmap.io.labels.rtstruct import paint


@dataclass(frozen=True)
class SegmentSet:
    path: Path
    segments: dict[str, int]  # segment label -> segment number
    series_uid: str
    frame_of_reference_uid: str
    seg: object  # the highdicom Segmentation


def is_seg(ds) -> bool:
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS


def read_seg(path: str | Path) -> SegmentSet:
    import highdicom as hd

    path = Path(path)
    with reading(path, "not a readable DICOM SEG"):
        seg = hd.seg.segread(path)
        numbers = seg.get_segment_numbers()
        segments: dict[str, int] = {}
        for n in numbers:
            label = str(seg.get_segment_description(n).segment_label).strip() or f"segment {n}"
            if label in segments:
                raise DatasetError(f"{path}: segments {segments[label]} and {n} are both labelled {label!r}")
            segments[label] = int(n)
        return SegmentSet(path, segments, referenced_series_uid(seg), str(seg.get("FrameOfReferenceUID", "")), seg)


def seg_label_map(
    segments: SegmentSet, image: Image, values: dict[str, int], *, overlap: str = "smaller"
) -> tuple[Image, dict[int, str]]:
    """The segments named in ``values`` (segment label -> label value) on ``image``'s grid."""
    check_frame_of_reference(segments.path, "segments", segments.frame_of_reference_uid, image)
    masks = {}
    with reading(segments.path, "DICOM SEG frames cannot be read"):
        for name in values:
            masks[name] = _on_grid(segments, segments.segments[name], image)
    return paint(masks, values, image, source=str(segments.path), overlap=overlap)


def _on_grid(segments: SegmentSet, number: int, image: Image) -> np.ndarray:
    """One segment on ``image``'s grid, placed by its frames' own positions (highdicom's volume geometry):
    a SEG's references to source frames are optional and, in exports, often not spatially faithful."""
    from medmap.data.preprocess import resample_like

    volume = segments.seg.get_volume(segment_numbers=[number], dtype=np.float32)
    spacing = np.linalg.norm(volume.affine[:3, :3], axis=0)
    own = Image((volume.array[..., 0] > 0.5).astype(np.uint8), tuple(spacing), tuple(volume.affine[:3, 3]),
                volume.affine[:3, :3] / spacing)  # fmt: skip
    centre = own.index_to_world((np.asarray(own.shape) - 1) / 2)
    inside = image.world_to_index(centre)
    if np.any(inside < -0.5) or np.any(inside > np.asarray(image.shape) - 0.5):
        raise DatasetError(f"{segments.path}: segment {number} lies outside the image (its frames match no slice)")
    return resample_like(own, image, order="nearest").array.astype(bool)
