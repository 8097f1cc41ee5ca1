"""How classification cases enter the preprocessed cache (`medmap.data.cache`).

- lesion classification: a cube around each lesion (1.5 x the patch, room for rotation and shifts), one
  image read for all the lesions in it;
- whole-image classification: the image resampled and padded/cropped to the patch size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medmap.data.cache import CachedCase, geometry_of, save_array
from medmap.data.dataset import Case
from medmap.errors import DatasetError, MedmapError
from medmap.intended_use import case_record, lesion_record
from medmap.plan import Plan
from medmap.tasks.classification.inputs import centre_of, normalized_cube, raw_lesion_cube, whole_image_input


def cache_cases(cases: list[Case], plan: Plan, folder: Path) -> None:
    """A group of cases (the lesions of one image, or one whole image) into the cache folder."""
    if cases[0].lesion is not None:
        _lesion_cases(cases, plan, folder)
        return
    for case in cases:
        try:
            _whole_image_case(case, plan, folder)
        except DatasetError:
            raise
        except MedmapError as exc:
            raise DatasetError(f"case {case.case_id}: {exc}") from None


def _lesion_cases(cases: list[Case], plan: Plan, folder: Path) -> None:
    try:
        image = cases[0].load_image()
    except MedmapError as exc:
        others = f" (and {len(cases) - 1} other lesion(s) in this image)" if len(cases) > 1 else ""
        raise DatasetError(f"case {cases[0].case_id}{others}: {exc}") from None
    image_record = case_record(image, plan.modality)
    for case in cases:
        index = image.world_to_index(np.asarray(case.lesion.position, dtype=float))
        if np.any(index < -0.5) or np.any(index > np.asarray(image.shape) - 0.5):
            raise DatasetError(
                f"case {case.case_id}: lesion at {tuple(case.lesion.position)} mm (LPS) lies outside "
                f"its image {case.images[0]} (voxel {tuple(np.round(index, 1))} of {image.shape})"
            )
        raw = raw_lesion_cube(image, case.lesion.position, plan)
        save_array(folder / f"{case.case_id}.npy", normalized_cube(raw, plan))
        meta = {
            "case_id": case.case_id,
            "label": case.label,
            "lesion": list(case.lesion.position),
            "spacing": list(plan.target_spacing),
            "use": {**image_record, "lesion": lesion_record(centre_of(raw, plan), plan.modality)},
        }
        (folder / f"{case.case_id}.json").write_text(json.dumps(meta))


def _whole_image_case(case: Case, plan: Plan, folder: Path) -> None:
    source = case.load_image()
    array, image = whole_image_input(source, plan)
    save_array(folder / f"{case.case_id}.npy", array)
    meta = {
        "case_id": case.case_id,
        "label": case.label,
        "geometry": geometry_of(image),
        "use": case_record(source, plan.modality),
    }
    (folder / f"{case.case_id}.json").write_text(json.dumps(meta))


def use_record(case: Case, cached: CachedCase, plan: Plan) -> dict:
    """The case's intended-use record (`medmap.intended_use.case_record`, with its lesion's): from the
    cache, or computed from the source for a case cached by a medmap that did not record it."""
    if "use" in cached.meta:
        return cached.meta["use"]
    image = case.load_image()
    record = case_record(image, plan.modality)
    if case.lesion is not None:
        record["lesion"] = lesion_record(
            centre_of(raw_lesion_cube(image, case.lesion.position, plan), plan), plan.modality
        )
    return record
