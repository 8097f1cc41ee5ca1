"""How segmentation cases enter the preprocessed cache (`medmap.data.cache`): the whole image resampled
to the target spacing, normalised and cropped to the foreground; the mask on the same grid; up to
`LOCATIONS_PER_CLASS` voxel positions of every foreground class, from which training centres its
oversampled patches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medmap.data.cache import CachedCase, geometry_of, save_array
from medmap.data.dataset import Case, check_mask
from medmap.data.preprocess import crop, resample, segmentation_input
from medmap.errors import DatasetError, MedmapError
from medmap.intended_use import case_record
from medmap.io.image import Image
from medmap.plan import Plan

LOCATIONS_PER_CLASS = 5_000  # foreground voxels remembered per class, for oversampled patch centres


def cache_cases(cases: list[Case], plan: Plan, folder: Path, rng: np.random.Generator) -> None:
    for case in cases:
        try:
            _segmentation_case(case, plan, folder, rng)
        except DatasetError:
            raise
        except MedmapError as exc:
            raise DatasetError(f"case {case.case_id}: {exc}") from None


def _segmentation_case(case: Case, plan: Plan, folder: Path, rng: np.random.Generator) -> None:
    source = case.load_image()
    mask_image, unannotated = case.load_target(source)
    if mask_image is not None:
        check_mask(case.case_id, source, mask_image, plan.labels)
    cache_labelled_image(case, source, mask_image, plan, folder, rng, unannotated)


def cache_labelled_image(
    case: Case,
    source: Image,
    mask_image: Image | None,
    plan: Plan,
    folder: Path,
    rng: np.random.Generator,
    unannotated: tuple[int, ...] = (),
) -> None:
    """An image and its label map (on the image's grid, checked) into the cache: what every task that
    labels voxels caches (segmentation reads its masks; detection draws its findings as spheres), with
    the labels the case did not annotate (`medmap.data.annotation`)."""
    array, bbox, resampled = segmentation_input(source, plan.normalization, plan.target_spacing)
    image = crop(resampled, bbox)
    mask = None
    if mask_image is not None:
        mask = crop(resample(mask_image, plan.target_spacing, "nearest"), bbox)
    save_array(folder / f"{case.case_id}.npy", array)
    locations = {}
    if mask is not None:
        seg = mask.array.astype(np.uint8)
        save_array(folder / f"{case.case_id}_seg.npy", seg)
        for value in (int(v) for v in np.unique(seg) if v > 0):
            where = np.argwhere(seg == value)
            pick = where[rng.choice(len(where), min(len(where), LOCATIONS_PER_CLASS), replace=False)]
            locations[str(value)] = pick.tolist()
    meta = {
        "case_id": case.case_id,
        "label": case.label,
        "bbox": [list(b) for b in bbox],
        "geometry": geometry_of(image),
        "class_locations": locations,
        "unannotated": list(unannotated),
        "use": case_record(source, plan.modality),
    }
    (folder / f"{case.case_id}.json").write_text(json.dumps(meta))


def use_record(case: Case, cached: CachedCase, plan: Plan) -> dict:
    """The case's intended-use record: from the cache, or from the source for an older cache."""
    return cached.meta["use"] if "use" in cached.meta else case_record(case.load_image(), plan.modality)
