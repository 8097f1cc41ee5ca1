"""A DICOM label object (RTSTRUCT or SEG) turned into a label map on the series it references.

The series is found by its Series Instance UID beside the object (its folder and the folder above, as
exports lay them out: ``study/image/`` and ``study/rtstruct/``) or given. Label values come from a
``labels.json`` (names matched spelling-free, `medmap.io.labels.names`) or, without one, each structure
gets its own value in file order.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from medmap.errors import DatasetError, MedmapWarning
from medmap.io.guard import reading
from medmap.io.image import Image
from medmap.io.labels.names import NameMatch, label_names, match_names
from medmap.io.labels.rtstruct import StructureSet, label_map, read_rtstruct
from medmap.io.labels.seg import SegmentSet, is_seg, read_seg, seg_label_map


def referenced_series(path: Path, series_uid: str) -> Path:
    """The folder (or file) of the image series ``series_uid`` that the object at ``path`` references,
    found beside it."""
    from medmap.io.dicom.series import scan

    if not series_uid:
        raise DatasetError(f"{path}: references no image series; give the image (--image)")
    here = path.parent
    for folder in (here, here.parent):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the label objects beside the images are not images
            found = [s for s in scan(folder).series if s.uid == series_uid]
        if found:
            parents = {p.parent for p in found[0].paths}
            return parents.pop() if len(parents) == 1 else folder
    raise DatasetError(
        f"{path}: the series it references ({series_uid}) is not in {here} or {here.parent}; give the image (--image)"
    )


def read_label_object(path: str | Path) -> StructureSet | SegmentSet:
    """An RTSTRUCT or a DICOM SEG, by its SOP class."""
    import pydicom

    path = Path(path)
    with reading(path, "not a readable DICOM label object"):
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
    if is_seg(ds):
        return read_seg(path)
    return read_rtstruct(path)


def structure_names(label_object: StructureSet | SegmentSet) -> list[str]:
    if isinstance(label_object, SegmentSet):
        return list(label_object.segments)
    return [s.name for s in label_object.structures]


def name_match(path: str | Path, labels: dict[int, list[str]]) -> NameMatch:
    """Which structures of the object match which labels, without rasterising anything (dataset check)."""
    label_object = read_label_object(path)
    return match_names(structure_names(label_object), labels, source=str(path))


def load_label_object(
    path: str | Path, image: Image | None = None, labels: dict[int, list[str]] | None = None
) -> tuple[Image, dict[int, str], NameMatch]:
    """(label map on the image's grid, value -> name, which structures matched what)."""
    from medmap.io.load import load

    label_object = read_label_object(path)
    if image is None:
        image = load(referenced_series(label_object.path, label_object.series_uid), label_object.series_uid)
    elif label_object.series_uid and image.meta.series_uid and image.meta.series_uid != label_object.series_uid:
        raise DatasetError(
            f"{path}: references series {label_object.series_uid}, the image given is series {image.meta.series_uid}"
        )
    names = structure_names(label_object)
    if labels is None:  # every structure that holds something, in file order
        empty = [n for n in names if isinstance(label_object, StructureSet) and not label_object.named(n).contours]
        if empty:
            warnings.warn(MedmapWarning(f"{path}: ROI(s) without contours, not converted: {', '.join(empty)}"),
                          stacklevel=2)  # fmt: skip
        names = [n for n in names if n not in empty]
        labels = {i: [name] for i, name in enumerate(names, start=1)}
    match = match_names(names, labels, source=str(path))
    if isinstance(label_object, SegmentSet):
        mask, _ = seg_label_map(label_object, image, match.values)
    else:
        mask, _ = label_map(label_object, image, match.values)
    return mask, label_names(labels), match


def is_label_object(path: Path) -> bool:
    """Whether ``path`` is a DICOM file holding an RTSTRUCT (read up to its first elements only)."""
    import pydicom

    if not path.is_file():
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
    except Exception:  # not DICOM at all: the image readers decide
        return False
    from medmap.io.labels.rtstruct import is_rtstruct

    return is_rtstruct(ds) or is_seg(ds)
