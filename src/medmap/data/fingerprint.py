"""A dataset's fingerprint: the facts the planner decides from (as nnU-Net does), computed once.

Intensity statistics are taken inside the foreground (mask > 0 for segmentation; a sphere around each
lesion for lesion classification; the whole image otherwise), from a bounded random sample per image so
that memory stays flat however large the dataset is.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from pydantic import BaseModel

from medmap.data import laterality
from medmap.data.dataset import Dataset, check_mask
from medmap.errors import DatasetError, MedmapError
from medmap.io.image import Image
from medmap.progress import track

SAMPLES_PER_IMAGE = 20_000


class IntensityStats(BaseModel):
    mean: float
    std: float
    p00_5: float
    p99_5: float
    min: float
    max: float
    integer_valued: bool = False  # every sampled intensity a whole number (8-bit patches, raw counts, HU)


class Fingerprint(BaseModel):
    dataset: str
    task: str
    modality: str
    channels: int
    n_cases: int
    n_images: int
    spacings: list[tuple[float, float, float]]
    shapes: list[tuple[int, int, int]]
    intensity: IntensityStats
    class_frequencies: dict[int, float]  # segmentation: voxel share per label; classification: case share
    lesion_diameters_mm: list[float] = []
    lesion_cases: bool = False
    # per image: the array axes that carry the patient's left-right (from its direction cosines)
    lateral_axes: list[tuple[int, ...]] = []
    # label pairs that lie as mirror images on fixed sides (two lungs, two parotids), from the masks
    mirror_pairs: list[tuple[int, int]] = []
    images_without_spacing: int = 0  # images whose source gives no physical pixel size (pictures, npz)
    # segmentation: of the images with a target, how many annotate each foreground label (partial annotation)
    labelled_images: int = 0
    annotated_images: dict[int, int] = {}

    @property
    def median_spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.median(np.asarray(self.spacings), axis=0))

    @property
    def median_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in np.median(np.asarray(self.shapes), axis=0))

    @property
    def is_2d(self) -> bool:
        return all(s[0] == 1 for s in self.shapes)


def lesion_mask(image: Image, centres: list[tuple[float, float, float]], radius_mm: list[float]) -> np.ndarray:
    mask = np.zeros(image.shape, bool)
    for centre, radius in zip(centres, radius_mm, strict=True):
        c = image.world_to_index(np.asarray(centre))
        reach = np.ceil(radius / np.asarray(image.spacing)).astype(int)
        lo = np.maximum(np.floor(c).astype(int) - reach, 0)
        hi = np.minimum(np.ceil(c).astype(int) + reach + 1, image.shape)
        if np.any(hi <= lo):
            continue
        grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij")
        dist = np.sqrt(sum(((g - ci) * s) ** 2 for g, ci, s in zip(grids, c, image.spacing, strict=True)))
        mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] |= dist <= radius
    return mask


def compute_fingerprint(
    dataset: Dataset, *, progress: bool = False, seed: int = 0, cases: list | None = None
) -> Fingerprint:
    """Statistics of ``cases`` (default: every case the layout does not mark as test)."""
    rng = np.random.default_rng(seed)
    training = list(cases) if cases is not None else [c for c in dataset.cases if c.split != "test"]
    by_image: dict[str, list] = {}
    for case in training:
        by_image.setdefault(case.image_key, []).append(case)
    spacings, shapes, samples, channels, modality = [], [], [], 1, dataset.modality
    voxel_counts: Counter = Counter()
    lateral_axes, placements, without_spacing = [], [], 0
    labelled, annotated = 0, Counter()
    for cases in track(list(by_image.values()), "fingerprinting", enabled=progress):
        try:
            image = cases[0].load_image()
        except MedmapError as exc:
            raise DatasetError(f"case {cases[0].case_id}: {exc}") from None
        modality = modality or image.meta.modality
        channels = image.channels
        spacings.append(image.spacing)
        shapes.append(image.shape)
        lateral_axes.append(laterality.lateral_axes(image.direction, image.shape))
        without_spacing += not image.meta.spacing_known
        values = image.array if image.channels == 1 else image.array[..., 0]
        if dataset.task == "segmentation" and cases[0].mask is not None:
            mask_image, unannotated = cases[0].load_target(image)
            check_mask(cases[0].case_id, image, mask_image, dataset.labels)
            labelled += 1
            annotated.update(v for v in dataset.labels if v and v not in unannotated)
            mask = mask_image.array
            labels, counts = np.unique(mask, return_counts=True)
            voxel_counts.update(dict(zip(labels.tolist(), counts.tolist(), strict=True)))
            foreground = values[mask > 0]
            placements.append(laterality.placements(mask_image, seed=seed))
        elif dataset.task == "detection":  # the findings as spheres (a scan may have none)
            found = [lesion for c in cases for lesion in c.lesions]
            inside = lesion_mask(image, [f.position for f in found], [f.diameter_mm / 2 for f in found])
            voxel_counts.update({0: int(inside.size - inside.sum()), 1: int(inside.sum())})
            foreground = values[inside]
        elif any(c.lesion for c in cases):
            lesions = [c.lesion for c in cases if c.lesion]
            radii = [max((lesion.diameter_mm or 10.0) / 2, 2.0) for lesion in lesions]
            foreground = values[lesion_mask(image, [lesion.position for lesion in lesions], radii)]
        else:
            foreground = values.ravel()
        if foreground.size:
            take = min(SAMPLES_PER_IMAGE, foreground.size)
            samples.append(rng.choice(foreground, take, replace=False).astype(np.float64))
    pooled = np.concatenate(samples) if samples else np.zeros(1)
    intensity = IntensityStats(
        mean=float(pooled.mean()),
        std=float(pooled.std()),
        p00_5=float(np.percentile(pooled, 0.5)),
        p99_5=float(np.percentile(pooled, 99.5)),
        min=float(pooled.min()),
        max=float(pooled.max()),
        integer_valued=bool(np.all(pooled == np.round(pooled))),
    )
    if dataset.task in ("segmentation", "detection"):
        total = sum(voxel_counts.values()) or 1
        frequencies = {int(k): v / total for k, v in sorted(voxel_counts.items())}
    else:
        counts = Counter(c.label for c in training if c.label is not None)
        frequencies = {int(k): v / max(sum(counts.values()), 1) for k, v in sorted(counts.items())}
    diameters = [c.lesion.diameter_mm for c in training if c.lesion and c.lesion.diameter_mm]
    diameters += [f.diameter_mm for c in training for f in c.lesions]
    return Fingerprint(
        dataset=dataset.name,
        task=dataset.task,
        modality=modality or "",
        channels=channels,
        n_cases=len(training),
        n_images=len(by_image),
        spacings=spacings,
        shapes=shapes,
        intensity=intensity,
        class_frequencies=frequencies,
        lesion_diameters_mm=diameters,
        lesion_cases=any(c.lesion for c in training),
        lateral_axes=lateral_axes,
        mirror_pairs=laterality.mirror_pairs(placements),
        images_without_spacing=without_spacing,
        labelled_images=labelled,
        annotated_images={int(v): annotated[v] for v in sorted(dataset.labels) if v} if labelled else {},
    )
