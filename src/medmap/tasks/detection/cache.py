"""How detection cases enter the preprocessed cache: the image as segmentation caches it, with its findings
drawn as spheres (label 1, their diameter) on the image's own grid; foreground-oversampled patches then
centre on findings as they centre on tumours."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medmap.data.dataset import Case
from medmap.data.fingerprint import lesion_mask
from medmap.errors import DatasetError, MedmapError
from medmap.io.image import Image
from medmap.plan import Plan
from medmap.tasks.segmentation.cache import cache_labelled_image


def outside(case: Case, image: Image) -> list[str]:
    """A sentence for each of the case's findings that lies outside ``image``."""
    problems = []
    for lesion in case.lesions:
        index = image.world_to_index(np.asarray(lesion.position, dtype=float))
        if np.any(index < -0.5) or np.any(index > np.asarray(image.shape) - 0.5):
            problems.append(
                f"finding at {tuple(lesion.position)} mm (LPS) lies outside its image "
                f"(voxel {tuple(np.round(index, 1))} of {image.shape})"
            )
    return problems


def finding_mask(case: Case, image: Image) -> Image:
    """The case's findings as a label map on ``image``'s grid; refuses a finding outside the image."""
    problems = outside(case, image)
    if problems:
        raise DatasetError(f"case {case.case_id}: {problems[0]}")
    drawn = lesion_mask(image, [f.position for f in case.lesions], [f.diameter_mm / 2 for f in case.lesions])
    return image.with_array(drawn.astype(np.uint8), modality="SEG")


def cache_cases(cases: list[Case], plan: Plan, folder: Path, rng: np.random.Generator) -> None:
    for case in cases:
        try:
            source = case.load_image()
            cache_labelled_image(case, source, finding_mask(case, source), plan, folder, rng)
        except DatasetError:
            raise
        except MedmapError as exc:
            raise DatasetError(f"case {case.case_id}: {exc}") from None
