"""`Case` and `Dataset`: what a model learns from, independent of how it was laid out on disk.

A case is one training example: an image (one or more channels), and its target: a whole-image class,
a mask, or one lesion (world position + class) for lesion-centred classification. Several lesion cases
may share one image; preprocessing then handles the image once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from medmap.errors import ConfigError, DatasetError
from medmap.io.image import Image, ImageMeta

Task = Literal["classification", "segmentation", "detection"]
TASKS: tuple[str, ...] = get_args(Task)


def check_task_name(name: str) -> None:
    """Refuse a task medmap does not have (before anything is read or planned for it)."""
    if name not in TASKS:
        raise ConfigError(f"task {name!r}: medmap trains {', '.join(TASKS[:-1])} and {TASKS[-1]}")


@dataclass(frozen=True)
class NpzSlot:
    """One image inside a MedMNIST-style npz file: ``file[key][index]``."""

    file: Path
    key: str
    index: int


@dataclass(frozen=True)
class LabelObject:
    """A DICOM label object (RTSTRUCT or SEG) as a case's mask: rasterised onto the case's image when loaded, its
    structures matched to the labels by name (`medmap.io.labels.names`)."""

    file: Path
    labels: tuple[tuple[int, tuple[str, ...]], ...]  # label value -> accepted structure names

    def __str__(self) -> str:
        return str(self.file)


ImageSource = Path | NpzSlot


def exists(source: ImageSource | LabelObject) -> bool:
    return source.file.exists() if isinstance(source, NpzSlot | LabelObject) else Path(source).exists()


def rounded(values) -> str:
    """A position or size as problems print it: ``(1.25, 3, 400)``."""
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def load_source(source: ImageSource, series_uid: str | None = None) -> Image:
    if isinstance(source, NpzSlot):
        with np.load(source.file, mmap_mode="r") as npz:
            arr = np.asarray(npz[source.key][source.index])
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:  # 2-D RGB: (H, W, C)
            arr = arr[np.newaxis]
        return Image(arr, meta=ImageMeta(source_path=source.file, spacing_known=False))
    from medmap.io.load import load

    return load(source, series_uid)


@dataclass(frozen=True)
class Lesion:
    """A finding at a world position (LPS mm), for lesion-centred classification and detection. A
    detection table's lesion also keeps its class index and table line when the table has labels (the
    detector splits its patients as the classifier of the same table does)."""

    position: tuple[float, float, float]
    diameter_mm: float | None = None
    label: int | None = None
    line: int | None = None


@dataclass
class Case:
    case_id: str
    images: list[ImageSource]  # one per channel
    patient_id: str
    label: int | None = None  # classification target (class index)
    mask: ImageSource | LabelObject | None = None  # segmentation target
    lesion: Lesion | None = None  # lesion-centred classification: where to look
    lesions: list[Lesion] = field(default_factory=list)  # detection: every finding of the image (may be none)
    split: str | None = None  # "train" / "val" / "test" when the layout fixes it
    series_uid: str | None = None  # for a DICOM folder holding several series
    mask_values: dict[int, int] | None = None  # stored mask value -> label index, where they differ (0/255 PNGs)

    @property
    def image_key(self) -> str:
        """Identifies the image (cases of lesions in the same image share it)."""
        return "|".join(str(s) for s in self.images)

    def load_image(self) -> Image:
        """All channels on one grid; more than one channel becomes a trailing channel axis."""
        first = load_source(self.images[0], self.series_uid)
        if len(self.images) == 1:
            return first
        arrays = [first.array]
        for source in self.images[1:]:
            other = load_source(source, self.series_uid)
            if not other.same_geometry(first, tol=1e-3):
                from medmap.errors import MedmapError

                raise MedmapError(f"case {self.case_id}: channel {source} is not on the grid of {self.images[0]}")
            arrays.append(other.array)
        return Image(np.stack(arrays, axis=-1), first.spacing, first.origin, first.direction, first.meta)

    def load_mask(self, image: Image | None = None) -> Image | None:
        """The mask with its label indices (`load_target` without the labels it leaves unannotated)."""
        return self.load_target(image)[0]

    def load_target(self, image: Image | None = None) -> tuple[Image | None, tuple[int, ...]]:
        """(the mask with its label indices, the labels this case did not annotate). Stored values are
        mapped by ``mask_values`` (a value the mapping does not know is an error naming the case, never
        passed on as some other label). A label object is rasterised onto ``image`` (this case's image,
        passed where the caller has loaded it already); a label it has no structure for was not annotated
        in this case (`medmap.data.annotation`). Mask files annotate every label."""
        if self.mask is None:
            return None, ()
        if isinstance(self.mask, LabelObject):
            return self._rasterised(self.mask, image)
        mask = load_source(self.mask)
        if self.mask_values is None or mask.array.ndim == 4:  # a colour mask: refused by check_mask
            return mask, ()
        stored = np.unique(mask.array)
        unknown = sorted(int(v) for v in stored if int(v) not in self.mask_values)
        if unknown:
            raise DatasetError(
                f"case {self.case_id}: mask {self.mask} has values {unknown} that are not among the declared "
                f"{sorted(self.mask_values)}"
            )
        out = np.zeros(mask.shape, np.uint8 if len(self.mask_values) < 256 else np.uint16)
        for value in stored:
            out[mask.array == value] = self.mask_values[int(value)]
        return mask.with_array(out), ()

    def _rasterised(self, source: LabelObject, image: Image | None) -> tuple[Image, tuple[int, ...]]:
        """The label object on this case's image grid, and the labels it has no structure for. One that
        annotates none of the labels teaches nothing: refused, naming what it holds."""
        from medmap.io.labels.objects import load_label_object

        image = image if image is not None else self.load_image()
        mask, names, match = load_label_object(source.file, image, {v: list(n) for v, n in source.labels})
        if match.missing and not match.values:
            absent = ", ".join(f"{v} ({names[v]})" for v in match.missing)
            raise DatasetError(
                f"case {self.case_id}: {source.file} annotates none of the labels {absent} (found: "
                + (", ".join(match.unmatched) or "no structures")
                + ")"
            )
        return mask, tuple(match.missing)


@dataclass
class Dataset:
    name: str
    root: Path
    task: Task
    layout: str  # "msd", "nnunet", "medmnist", "csv"
    labels: dict[int, str]  # segmentation: value -> name (0 = background); classification: index -> class
    cases: list[Case]
    modality: str = ""
    channel_names: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Case]:
        return [c for c in self.cases if c.split == name]

    @property
    def patients(self) -> list[str]:
        return sorted({c.patient_id for c in self.cases})


def check_mask(case_id: str, image, mask, labels: dict[int, str]) -> None:
    """A mask must lie on its image's grid and hold only declared label values (named in the error)."""
    if mask.shape != image.shape:
        raise DatasetError(f"case {case_id}: mask shape {mask.shape} differs from its image's {image.shape}")
    if not mask.same_geometry(image, tol=1e-3):
        raise DatasetError(
            f"case {case_id}: mask geometry (spacing {mask.spacing}, origin {mask.origin}) differs from "
            f"its image's (spacing {image.spacing}, origin {image.origin})"
        )
    values = {int(v) for v in np.unique(mask.array)}
    undeclared = sorted(values - {int(k) for k in labels})
    if undeclared:
        raise DatasetError(
            f"case {case_id}: mask has label values {undeclared} not declared in the labels {sorted(labels)}"
        )
