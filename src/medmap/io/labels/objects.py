"""A DICOM label object (RTSTRUCT) turned into a label map on the series it references.

The series is found by its Series Instance UID beside the object (its folder and the folder above, as
exports lay them out: ``study/image/`` and ``study/rtstruct/``) or given. Label values come from a
``labels.json`` (names matched spelling-free, `medmap.io.labels.names`) or, without one, each structure
gets its own value in file order.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from medmap.errors import DatasetError
from medmap.io.image import Image
from medmap.io.labels.names import NameMatch, label_names, match_names
from medmap.io.labels.rtstruct import StructureSet, label_map, read_rtstruct


def referenced_series(structures: StructureSet) -> Path:
    """The folder (or file) of the image series the object references, found beside it."""
    from medmap.io.dicom.files import scan

    if not structures.series_uid:
        raise DatasetError(f"{structures.path}: references no image series; give the image (--image)")
    here = structures.path.parent
    for folder in (here, here.parent):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the label objects beside the images are not images
            found = [s for s in scan(folder).series if s.uid == structures.series_uid]
        if found:
            paths = found[0].paths
            parents = {p.parent for p in paths}
            return parents.pop() if len(parents) == 1 else folder
    raise DatasetError(
        f"{structures.path}: the series it references ({structures.series_uid}) is not in {here} or {here.parent}; "
        "give the image (--image)"
    )


def load_label_object(
    path: str | Path, image: Image | None = None, labels: dict[int, list[str]] | None = None
) -> tuple[Image, dict[int, str], NameMatch]:
    """(label map on the image's grid, value -> name, which structures matched what)."""
    from medmap.io.load import load

    structures = read_rtstruct(path)
    if image is None:
        image = load(referenced_series(structures), structures.series_uid)
    elif structures.series_uid and image.meta.series_uid and image.meta.series_uid != structures.series_uid:
        raise DatasetError(
            f"{path}: references series {structures.series_uid}, the image given is series {image.meta.series_uid}"
        )
    names = [s.name for s in structures.structures]
    if labels is None:
        labels = {i: [name] for i, name in enumerate(names, start=1)}
    match = match_names(names, labels, source=str(path))
    mask, _ = label_map(structures, image, match.values)
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

    return is_rtstruct(ds)
