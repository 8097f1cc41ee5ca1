"""What a classifier sees, cut one way for training, evaluation and prediction.

A lesion-level classifier looks at a cube around each lesion position (1.5 x the patch: room for the
rotations and shifts of training); the cache holds that cube normalised, prediction cuts the same cube
from the new image, and both take the centred patch of it through `classifier_input`. A whole-image
classifier sees the image resampled and centre padded/cropped to the patch (`whole_image_input`).
"""

from __future__ import annotations

import numpy as np
import torch

from medmap.data.preprocess import channels_first, extract_patch, lesion_patch, normalize, resample
from medmap.plan import Plan


def raw_lesion_cube(image, position, plan: Plan) -> np.ndarray:
    """The cube around a lesion that training cuts its (shifted) patches from, 1.5 x the patch, before
    normalisation (intensities as stored: HU for CT). `normalized_cube` makes it what the cache holds;
    inference cuts the centred patch from the same cube."""
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


def orthogonal_planes(image: np.ndarray, centre: np.ndarray, patch) -> np.ndarray:
    """2.5-D input: the axial, coronal and sagittal planes through ``centre`` as channels."""
    side = max(patch[1:])
    cube = extract_patch(image, centre, (side, side, side), float(image.min()))
    mid = side // 2
    planes = [cube[:, mid], cube[:, :, mid], cube[:, :, :, mid]]
    return np.concatenate(planes, axis=0)[:, np.newaxis]


def classifier_input(array: np.ndarray, plan: Plan, shift: np.ndarray | None = None) -> np.ndarray:
    """The patch a classifier sees from a cached array ``[C, Z, Y, X]`` (a lesion cube or a whole image):
    centred (plus ``shift`` voxels in training), or the three planes in 2.5-D mode. Training, evaluation
    and prediction all call this one function."""
    centre = (np.asarray(array.shape[1:]) - 1) / 2
    if shift is not None:
        centre = centre + shift
    if plan.input_mode == "2.5d":
        return orthogonal_planes(array, centre, plan.patch_size)
    return extract_patch(array, centre, plan.patch_size, float(array.min()))


def sample(case, plan: Plan, rng: np.random.Generator, train: bool) -> dict:
    """A cached case as a training or evaluation item: its input (lesion patches shifted a little in
    training, so the lesion is near, not always at, the centre) and its class (-1 when unlabelled)."""
    image, _ = case.arrays()
    shift = None
    if train and "lesion" in case.meta:
        jitter = np.asarray(plan.patch_size) * 0.08 * plan.augmentation.strength
        shift = rng.uniform(-jitter, jitter) * (np.asarray(image.shape[1:]) > 1)
    x = classifier_input(image, plan, shift)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(x)),
        "target": torch.tensor(-1 if case.label is None else case.label),
    }
