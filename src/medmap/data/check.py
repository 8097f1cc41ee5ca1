"""Validate a dataset before anyone trains on it: list every problem, each with its case named."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmap.data.dataset import Case, Dataset, NpzSlot
from medmap.errors import MedmapError
from medmap.io.image import Image
from medmap.progress import track


@dataclass(frozen=True)
class Problem:
    case_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.case_id}: {self.message}"


def _exists(source) -> bool:
    return source.file.exists() if isinstance(source, NpzSlot) else Path(source).exists()


def _check_case(case: Case, dataset: Dataset, image: Image | None, load_error: str | None) -> list[Problem]:
    problems = []
    say = lambda msg: problems.append(Problem(case.case_id, msg))  # noqa: E731
    needs_target = case.split != "test"
    if load_error:
        say(load_error)
    if dataset.task == "classification" and needs_target and case.label is None:
        say("no label")
    if dataset.task == "segmentation" and needs_target:
        if case.mask is None:
            say("no mask")
        elif not _exists(case.mask):
            say(f"mask {case.mask} is missing")
        elif image is not None:
            try:
                mask = case.load_mask()
            except MedmapError as exc:
                say(f"mask unreadable: {exc}")
                mask = None
            if mask is not None:
                if not mask.same_geometry(image, tol=1e-3):
                    say(
                        f"mask geometry differs from the image (mask {mask.shape} spacing {_r(mask.spacing)} origin "
                        f"{_r(mask.origin)}; image {image.shape} spacing {_r(image.spacing)} origin {_r(image.origin)})"
                    )
                values = {int(v) for v in np.unique(mask.array)}
                undeclared = sorted(values - set(dataset.labels)) if dataset.labels else []
                if undeclared:
                    declared = sorted(dataset.labels)
                    say(f"mask has label values {undeclared} not declared in the dataset's labels {declared}")
    if case.lesion is not None and image is not None:
        idx = image.world_to_index(np.asarray(case.lesion.position))
        if np.any(idx < -0.5) or np.any(idx > np.asarray(image.shape) - 0.5):
            say(
                f"lesion at {_r(case.lesion.position)} mm (LPS) lies outside the image "
                f"(voxel {_r(idx)} of {image.shape})"
            )
    return problems


def _r(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def check_dataset(dataset: Dataset, *, progress: bool = False) -> list[Problem]:
    """Every problem found: missing files or targets, geometry mismatches, undeclared label values,
    lesions outside their image, patients in more than one split."""
    problems: list[Problem] = []
    images: dict[str, tuple[Image | None, str | None]] = {}
    for case in track(dataset.cases, f"checking {dataset.name}", enabled=progress):
        missing = [s for s in case.images if not _exists(s)]
        if missing:
            problems.append(Problem(case.case_id, f"image {missing[0]} is missing"))
            continue
        if case.image_key not in images:
            try:
                images[case.image_key] = (case.load_image(), None)
            except MedmapError as exc:
                images[case.image_key] = (None, f"image unreadable: {exc}")
        image, error = images[case.image_key]
        problems += _check_case(case, dataset, image, error)
    splits: dict[str, set[str]] = {}
    for case in dataset.cases:
        if case.split:
            splits.setdefault(case.patient_id, set()).add(case.split)
    for patient, names in sorted(splits.items()):
        if len(names) > 1:
            problems.append(Problem(f"patient {patient}", f"appears in several splits: {', '.join(sorted(names))}"))
    return problems
