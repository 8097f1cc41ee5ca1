"""Segmentation training patches: a `Plan.foreground_oversample` share of them is centred on a voxel of a
foreground class chosen uniformly among the classes present (small tumours get seen); the rest are
centred anywhere in the case. Evaluation patches are the case's centre."""

from __future__ import annotations

import numpy as np
import torch

from medmap.data.annotation import as_target
from medmap.data.cache import CachedCase
from medmap.data.preprocess import extract_patch
from medmap.plan import Plan


def patch_centre(case: CachedCase, plan: Plan, shape, rng: np.random.Generator, train: bool) -> np.ndarray:
    locations = case.meta.get("class_locations") or {}
    if train and locations and rng.random() < plan.foreground_oversample:
        points = locations[rng.choice(sorted(locations))]
        return np.asarray(points[rng.integers(len(points))], dtype=float)
    if not train:
        return (np.asarray(shape) - 1) / 2
    half = np.asarray(plan.patch_size) // 2
    low, high = np.minimum(half, np.asarray(shape) - 1), np.maximum(np.asarray(shape) - 1 - half, half)
    return np.array([rng.uniform(a, b) if b > a else a for a, b in zip(low, high, strict=True)])


def sample(case: CachedCase, plan: Plan, rng: np.random.Generator, train: bool) -> dict:
    """An image patch ``[C, *patch]`` and its label patch (zeros for a case without a mask), as a target
    that says which labels the case left unannotated (`medmap.data.annotation`)."""
    image, mask = case.arrays()
    patch = plan.patch_size
    centre = patch_centre(case, plan, image.shape[1:], rng, train)
    x = extract_patch(image, centre, patch, float(image.min()))
    y = extract_patch(mask, centre, patch, 0) if mask is not None else np.zeros(patch, np.uint8)
    target = as_target(y, case.meta.get("unannotated", ()), case.case_id)
    return {"image": torch.from_numpy(x), "target": torch.from_numpy(target)}
