"""Preprocess once, train many epochs: an on-disk cache of network-ready arrays, keyed by the plan.

``<root>/<dataset>-<plan.preprocessing_key()>/`` holds per case ``<id>.npy`` (float32, channels first:
``[C, Z, Y, X]``), ``<id>_seg.npy`` (uint8 mask, segmentation) and ``<id>.json`` (geometry of the cached
grid, foreground voxel locations per class, the class label). The JSON is written last, so a case is
cached exactly when its JSON exists; an interrupted run resumes where it stopped. Arrays are read back
memory-mapped: epochs after the first decode no DICOM or NIfTI and copy only the patches they use.

What is cached depends on the task:
- segmentation: the whole image resampled to the target spacing, normalised, cropped to the foreground;
- lesion classification: a cube around each lesion (1.5 x the patch, room for rotation and shifts);
- whole-image classification: the image resampled and padded/cropped to the patch size.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmap.data.dataset import Case, check_mask
from medmap.data.preprocess import (
    channels_first,
    crop,
    extract_patch,
    lesion_patch,
    normalize,
    resample,
    segmentation_input,
)
from medmap.errors import DatasetError, MedmapError
from medmap.intended_use import case_record, lesion_record
from medmap.plan import Plan
from medmap.progress import track

LOCATIONS_PER_CLASS = 5_000  # foreground voxels remembered per class, for oversampled patch centres


@dataclass
class CachedCase:
    case_id: str
    image: Path
    mask: Path | None
    label: int | None
    meta: dict

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Memory-mapped image ``[C, Z, Y, X]`` and mask ``[Z, Y, X]`` (or None)."""
        image = np.load(self.image, mmap_mode="r")
        return image, (np.load(self.mask, mmap_mode="r") if self.mask else None)


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")  # processes on a shared cache never collide
    np.save(tmp, np.ascontiguousarray(array))
    os.replace(tmp, path)


def _geometry(image) -> dict:
    return {
        "spacing": list(image.spacing),
        "origin": list(image.origin),
        "direction": image.direction.tolist(),
        "shape": list(image.shape),
    }


def _segmentation_case(case: Case, plan: Plan, folder: Path, rng: np.random.Generator) -> None:
    source = case.load_image()
    array, bbox, resampled = segmentation_input(source, plan.normalization, plan.target_spacing)
    image = crop(resampled, bbox)
    mask_image = case.load_mask()
    mask = None
    if mask_image is not None:
        check_mask(case.case_id, source, mask_image, plan.labels)
        mask = crop(resample(mask_image, plan.target_spacing, "nearest"), bbox)
    _save(folder / f"{case.case_id}.npy", array)
    locations = {}
    if mask is not None:
        seg = mask.array.astype(np.uint8)
        _save(folder / f"{case.case_id}_seg.npy", seg)
        for value in (int(v) for v in np.unique(seg) if v > 0):
            where = np.argwhere(seg == value)
            pick = where[rng.choice(len(where), min(len(where), LOCATIONS_PER_CLASS), replace=False)]
            locations[str(value)] = pick.tolist()
    meta = {
        "case_id": case.case_id,
        "label": case.label,
        "bbox": [list(b) for b in bbox],
        "geometry": _geometry(image),
        "class_locations": locations,
        "use": case_record(source, plan.modality),
    }
    (folder / f"{case.case_id}.json").write_text(json.dumps(meta))


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
        _save(folder / f"{case.case_id}.npy", normalized_cube(raw, plan))
        meta = {
            "case_id": case.case_id,
            "label": case.label,
            "lesion": list(case.lesion.position),
            "spacing": list(plan.target_spacing),
            "use": {**image_record, "lesion": lesion_record(centre_of(raw, plan), plan.modality)},
        }
        (folder / f"{case.case_id}.json").write_text(json.dumps(meta))


def raw_lesion_cube(image, position, plan: Plan) -> np.ndarray:
    """The cube around a lesion that training cuts its (shifted) patches from, 1.5 x the patch, before
    normalisation (intensities as stored: HU for CT). `normalized_cube` makes it what the cache holds;
    inference cuts the centred patch from the same cube (`medmap.data.loader`)."""
    side = int(np.ceil(1.5 * max(plan.patch_size) / 2) * 2)
    size = (side, side, side) if plan.input_mode != "2d" else (1, side, side)
    return lesion_patch(image, position, size, plan.target_spacing, float(image.array.min()))


def normalized_cube(raw: np.ndarray, plan: Plan) -> np.ndarray:
    """A raw lesion cube normalised, channels first, float32."""
    cube = normalize(raw, plan.normalization)
    return (cube if cube.ndim == 4 else cube[np.newaxis]).astype(np.float32)


def centre_of(raw: np.ndarray, plan: Plan) -> np.ndarray:
    """The network's patch (``plan.patch_size``, first channel) at the centre of a raw lesion cube: the
    region the classifier looks at, which the intended-use check describes."""
    first = raw[0] if raw.ndim == 4 else raw
    return extract_patch(first, (np.asarray(first.shape) - 1) / 2, tuple(plan.patch_size), float(first.min()))


def whole_image_input(image, plan: Plan):
    """A whole image as a classifier sees it: resampled, normalised, centre padded/cropped to the patch.
    Returns the array ``[C, *patch]`` and the resampled image (whose geometry the cache records)."""
    image = resample(image, plan.target_spacing, "linear")
    array = channels_first(normalize(image.array, plan.normalization), image.channels)
    centre = (np.asarray(array.shape[1:]) - 1) / 2
    return extract_patch(array, centre, plan.patch_size, float(array.min())).astype(np.float32), image


def _whole_image_case(case: Case, plan: Plan, folder: Path) -> None:
    source = case.load_image()
    array, image = whole_image_input(source, plan)
    _save(folder / f"{case.case_id}.npy", array)
    meta = {
        "case_id": case.case_id,
        "label": case.label,
        "geometry": _geometry(image),
        "use": case_record(source, plan.modality),
    }
    (folder / f"{case.case_id}.json").write_text(json.dumps(meta))


def _job(cases: list[Case], plan: Plan, folder: Path, seed: int) -> None:
    """Preprocess a group of cases; any user-caused error is re-raised naming the case."""
    rng = np.random.default_rng(seed)
    if cases[0].lesion is not None and plan.task == "classification":
        _lesion_cases(cases, plan, folder)
        return
    for case in cases:
        try:
            if plan.task == "segmentation":
                _segmentation_case(case, plan, folder, rng)
            else:
                _whole_image_case(case, plan, folder)
        except DatasetError:
            raise
        except MedmapError as exc:
            raise DatasetError(f"case {case.case_id}: {exc}") from None


def use_record(case: Case, cached: CachedCase, plan: Plan) -> dict:
    """The case's intended-use record (`medmap.intended_use.case_record`): from the cache, or computed
    from the source for a case cached by a medmap that did not record it."""
    if "use" in cached.meta:
        return cached.meta["use"]
    image = case.load_image()
    record = case_record(image, plan.modality)
    if case.lesion is not None and plan.task == "classification":
        record["lesion"] = lesion_record(
            centre_of(raw_lesion_cube(image, case.lesion.position, plan), plan), plan.modality
        )
    return record


class PreprocessedCache:
    """The cache folder of one dataset under one plan."""

    def __init__(self, root: str | os.PathLike, plan: Plan) -> None:
        self.plan = plan
        self.folder = Path(root) / f"{plan.dataset}-{plan.preprocessing_key()}"

    def is_cached(self, case: Case) -> bool:
        return (self.folder / f"{case.case_id}.json").is_file()

    def build(
        self, cases: list[Case], *, workers: int | None = None, progress: bool = False, seed: int = 0
    ) -> list[CachedCase]:
        """Preprocess the cases not cached yet (in ``workers`` processes) and return all of them."""
        self.folder.mkdir(parents=True, exist_ok=True)
        plan_file, plan_json = self.folder / "plan.json", self.plan.model_dump_json(indent=2)
        if not plan_file.is_file() or plan_file.read_text() != plan_json:  # readers on other ranks: no rewrite
            plan_file.write_text(plan_json)
        groups: dict[str, list[Case]] = {}
        for case in cases:
            if not self.is_cached(case):
                key = case.image_key if case.lesion is not None else case.case_id
                groups.setdefault(key, []).append(case)
        jobs = list(groups.values())
        workers = workers or min(2, os.cpu_count() or 1)
        if jobs and workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(workers) as pool:
                futures = [pool.submit(_job, group, self.plan, self.folder, seed + i) for i, group in enumerate(jobs)]
                for future in track(futures, "preprocessing", enabled=progress):
                    future.result()
        else:
            for i, group in enumerate(track(jobs, "preprocessing", enabled=progress)):
                _job(group, self.plan, self.folder, seed + i)
        return [self.get(case) for case in cases]

    def get(self, case: Case) -> CachedCase:
        meta = json.loads((self.folder / f"{case.case_id}.json").read_text())
        mask = self.folder / f"{case.case_id}_seg.npy"
        return CachedCase(
            case.case_id, self.folder / f"{case.case_id}.npy", mask if mask.exists() else None, meta.get("label"), meta
        )
