"""One image in, one label map out, on exactly the input's grid.

The steps mirror training's preprocessing (`medmap.data.preprocess.segmentation_input`: resample to
the plan's spacing, crop to the body, normalise), then the sliding window, then the way back: the
labels are pasted into the resampled grid (background outside the crop) and resampled with nearest
neighbour onto the input's own grid (shape, spacing, origin and direction identical), then the
post-processing chosen on validation is applied.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medmap.data.laterality import lateral_axes
from medmap.data.preprocess import resample_like, segmentation_input
from medmap.errors import ConfigError
from medmap.inference.postprocess import PostProcessing
from medmap.inference.sliding_window import Predictor, sliding_window
from medmap.io.image import Image
from medmap.plan import Plan


def check_input(image: Image, plan: Plan, name: str = "input") -> None:
    """The image must be something the plan's network can read (clear errors otherwise)."""
    if image.channels != plan.channels:
        raise ConfigError(f"{name}: {image.channels} channel(s), the model expects {plan.channels}")
    if plan.input_mode == "3d" and image.is_2d:
        raise ConfigError(f"{name}: a 2-D image, the model segments 3-D volumes")


def segment_image(
    image: Image,
    plan: Plan,
    predictors: Predictor | Sequence[Predictor],
    *,
    postprocessing: PostProcessing | None = None,
    device: str | torch.device = "cpu",
    mirror: bool | None = None,
    overlap: float | None = None,
    progress: bool = False,
) -> Image:
    """The label map of ``image`` (uint8, on ``image``'s grid) from patch-trained networks."""
    result, bbox, resampled = _windows(image, plan, predictors, device, mirror, overlap, progress)
    full = np.zeros(resampled.shape, np.uint8)
    full[tuple(slice(a, b) for a, b in bbox)] = result.labels
    labels = resample_like(Image(full, resampled.spacing, resampled.origin, resampled.direction), image, "nearest")
    array = labels.array.astype(np.uint8)
    if postprocessing is not None:
        array = postprocessing.apply(array, image.spacing)
    return image.with_array(array, modality="SEG")


def class_probability(
    image: Image,
    plan: Plan,
    predictors: Predictor | Sequence[Predictor],
    value: int,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Image:
    """The blended probability of label ``value`` on the network's grid (the image resampled to the plan's
    spacing; zero outside the body crop): what a detector turns into scored findings. Positions read from
    it are world positions like any other (its geometry is the resampled image's)."""
    result, bbox, resampled = _windows(image, plan, predictors, device, None, None, progress, probabilities=True)
    full = np.zeros(resampled.shape, np.float32)
    full[tuple(slice(a, b) for a, b in bbox)] = result.probabilities[value]
    return Image(full, resampled.spacing, resampled.origin, resampled.direction)


def mirror_axes_at_test_time(plan: Plan, image: Image) -> list[int]:
    """The plan's flip axes this image may be mirrored on: never its own left-right axes when the labels
    are lateralised (the image's orientation may differ from every training image's)."""
    kept = lateral_axes(image.direction, image.shape) if plan.augmentation.keep_sides else ()
    two_d = plan.spatial_dims == 2
    return [a for a in plan.augmentation.flip_axes if not (two_d and a == 0) and a not in kept]


def _windows(image, plan, predictors, device, mirror, overlap, progress, *, probabilities: bool = False):
    """The sliding window over ``image`` preprocessed as in training: (result, body crop, resampled image)."""
    check_input(image, plan)
    array, bbox, resampled = segmentation_input(image, plan.normalization, plan.target_spacing)
    settings = plan.inference
    use_mirror = settings.mirror if mirror is None else mirror
    axes = mirror_axes_at_test_time(plan, resampled) if use_mirror else []
    result = sliding_window(
        array,
        predictors,
        plan.patch_size,
        overlap=settings.overlap if overlap is None else overlap,
        batch_size=settings.batch_size,
        mirror_axes=axes,
        spatial_dims=plan.spatial_dims,
        device=device,
        progress=progress,
        return_probabilities=probabilities,
    )
    return result, bbox, resampled
