"""Validate a dataset before anyone trains on it: list every problem, each with its case named."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmap.data.dataset import Case, Dataset, LabelObject, exists, rounded
from medmap.errors import MedmapError
from medmap.io.image import Image
from medmap.progress import track


@dataclass(frozen=True)
class Problem:
    case_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.case_id}: {self.message}"


def _check_case(case: Case, task, image: Image | None, load_error: str | None, labels: dict[int, str]) -> list[Problem]:
    problems = []
    say = lambda msg: problems.append(Problem(case.case_id, msg))  # noqa: E731
    needs_target = case.split != "test"
    if load_error:
        say(load_error)
    if needs_target:
        for message in task.target_problems(case, image, labels):
            say(message)
    if case.lesion is not None and image is not None:
        idx = image.world_to_index(np.asarray(case.lesion.position))
        if np.any(idx < -0.5) or np.any(idx > np.asarray(image.shape) - 0.5):
            say(
                f"lesion at {rounded(case.lesion.position)} mm (LPS) lies outside the image "
                f"(voxel {rounded(idx)} of {image.shape})"
            )
    return problems


def _unannotated_labels(dataset: Dataset) -> list[Problem]:
    """Labels that none of the label objects (RTSTRUCT / SEG) annotates: nothing to learn them from. A
    label some cases leave out is partial annotation, which trains (`medmap.data.annotation`)."""
    from medmap.io.labels.objects import name_match

    cases = [c for c in dataset.cases if isinstance(c.mask, LabelObject) and c.split != "test"]
    annotated: set[int] = set()
    for case in cases:
        try:
            annotated |= set(name_match(case.mask.file, {v: list(n) for v, n in case.mask.labels}).values.values())
        except MedmapError:  # reported with its case
            continue
    never = [v for v in sorted(dataset.labels) if v and v not in annotated] if cases else []
    return [
        Problem(f"label {v} ({dataset.labels[v]})", f"none of the {len(cases)} label objects annotates it")
        for v in never
    ]


def check_dataset(dataset: Dataset, task, *, progress: bool = False) -> list[Problem]:
    """Every problem found: missing files, missing or wrong targets (what a case of ``task``, the dataset's
    `medmap.tasks.Task`, needs), lesions outside their image, patients in more than one split."""
    problems: list[Problem] = []
    images: dict[str, tuple[Image | None, str | None]] = {}
    for case in track(dataset.cases, f"checking {dataset.name}", enabled=progress):
        missing = [s for s in case.images if not exists(s)]
        if missing:
            problems.append(Problem(case.case_id, f"image {missing[0]} is missing"))
            continue
        if case.image_key not in images:
            try:
                images[case.image_key] = (case.load_image(), None)
            except MedmapError as exc:
                images[case.image_key] = (None, f"image unreadable: {exc}")
        image, error = images[case.image_key]
        problems += _check_case(case, task, image, error, dataset.labels)
    problems += _unannotated_labels(dataset)
    splits: dict[str, set[str]] = {}
    for case in dataset.cases:
        if case.split:
            splits.setdefault(case.patient_id, set()).add(case.split)
    for patient, names in sorted(splits.items()):
        if len(names) > 1:
            problems.append(Problem(f"patient {patient}", f"appears in several splits: {', '.join(sorted(names))}"))
    return problems
