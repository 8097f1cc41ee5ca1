"""What a label object points at, read the same way for RTSTRUCT and SEG: its SOP class, the image series
it references, and the frame of reference both must share."""

from __future__ import annotations

from pathlib import Path

from medmap.errors import DatasetError
from medmap.io.image import Image

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_OBJECT_CLASSES = {RTSTRUCT_SOP_CLASS: "RTSTRUCT", SEG_SOP_CLASS: "SEG"}


def referenced_series_uid(ds) -> str:
    """The Series Instance UID of the images the object annotates ("" when it names none): an RTSTRUCT's
    RT Referenced Series, a SEG's Referenced Series."""
    for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in ref.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                return str(series.get("SeriesInstanceUID", ""))
    for series in ds.get("ReferencedSeriesSequence", []):
        return str(series.get("SeriesInstanceUID", ""))
    return ""


def check_frame_of_reference(path: Path, what: str, uid: str, image: Image) -> None:
    """Labels drawn on another frame of reference than the image's are in other coordinates: refuse."""
    if uid and image.meta.frame_of_reference_uid and uid != image.meta.frame_of_reference_uid:
        raise DatasetError(
            f"{path}: {what} are on frame of reference {uid}, the image on {image.meta.frame_of_reference_uid}"
        )
