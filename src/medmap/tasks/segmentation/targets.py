"""What a segmentation case needs to be trained on or scored: a readable mask on its image's grid whose
values are all declared labels (`medmap dataset check`; training refuses the same through `check_mask`)."""

from __future__ import annotations

import numpy as np

from medmap.data.dataset import Case, exists, rounded
from medmap.errors import MedmapError
from medmap.io.image import Image


def target_problems(case: Case, image: Image | None, labels: dict[int, str]) -> list[str]:
    if case.mask is None:
        return ["no mask"]
    if not exists(case.mask):
        return [f"mask {case.mask} is missing"]
    if image is None:
        return []
    try:
        mask = case.load_mask(image)
    except MedmapError as exc:
        return [f"mask unreadable: {exc}"]
    problems = []
    if not mask.same_geometry(image, tol=1e-3):
        problems.append(
            f"mask geometry differs from the image (mask {mask.shape} spacing {rounded(mask.spacing)} origin "
            f"{rounded(mask.origin)}; image {image.shape} spacing {rounded(image.spacing)} origin "
            f"{rounded(image.origin)})"
        )
    values = {int(v) for v in np.unique(mask.array)}
    undeclared = sorted(values - set(labels)) if labels else []
    if undeclared:
        problems.append(f"mask has label values {undeclared} not declared in the dataset's labels {sorted(labels)}")
    return problems
