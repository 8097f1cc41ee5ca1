"""Resample, normalise, crop and cut patches: the exact operations training and inference share.

Every function takes and returns `Image`s (or arrays with the `Image` they came from), so geometry is
carried, never recomputed: a resample keeps origin and direction, a crop moves the origin to the
crop's first voxel, and resampling back onto a reference reproduces the reference's grid exactly.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from medmap.io.image import Image
from medmap.plan import Normalization

Order = Literal["nearest", "linear", "cubic"]
CT_BODY_HU = -500.0  # CT voxels above this are inside the body: the foreground a crop keeps


def _interpolator(order: Order):
    import SimpleITK as sitk

    return {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear, "cubic": sitk.sitkBSpline}[order]


def _resample(image: Image, spacing, size, origin, direction, order: Order, fill: float) -> Image:
    import SimpleITK as sitk

    source = image.to_sitk()
    f = sitk.ResampleImageFilter()
    f.SetOutputSpacing([float(s) for s in spacing[::-1]])
    f.SetSize([int(s) for s in size[::-1]])
    f.SetOutputOrigin([float(o) for o in origin])
    f.SetOutputDirection(np.asarray(direction)[:, ::-1].flatten().tolist())
    f.SetInterpolator(_interpolator(order))
    f.SetDefaultPixelValue(float(fill))
    if order != "nearest" and np.issubdtype(image.array.dtype, np.integer):
        f.SetOutputPixelType(
            sitk.sitkFloat32 if source.GetNumberOfComponentsPerPixel() == 1 else sitk.sitkVectorFloat32
        )
    out = Image.from_sitk(f.Execute(source), image.meta)
    return out


def resample(image: Image, spacing: tuple[float, float, float], order: Order = "linear") -> Image:
    """The same field of view on a grid of ``spacing`` (origin and direction kept).

    Labels must use ``order="nearest"``: their values are then a subset of the input's, never blends.
    A one-slice (2-D) image keeps its single slice whatever the slice spacing asked for.
    """
    spacing = tuple(float(s) for s in spacing)
    if image.is_2d:
        spacing = (image.spacing[0], spacing[1], spacing[2])
    if np.allclose(spacing, image.spacing, rtol=1e-6):
        return image
    size = [max(1, round(n * s / t)) for n, s, t in zip(image.shape, image.spacing, spacing, strict=True)]
    fill = float(image.array.min()) if image.array.size else 0.0
    return _resample(image, spacing, size, image.origin, image.direction, order, fill if order != "nearest" else 0)


def resample_like(image: Image, reference: Image, order: Order = "linear", fill: float | None = None) -> Image:
    """``image`` on exactly ``reference``'s grid (shape, spacing, origin, direction): the inverse step."""
    if image.same_geometry(reference, tol=1e-9):
        return image
    fill = float(image.array.min()) if fill is None else fill
    return _resample(
        image,
        reference.spacing,
        reference.shape,
        reference.origin,
        reference.direction,
        order,
        fill if order != "nearest" else 0,
    )


def normalize(array: np.ndarray, norm: Normalization, foreground: np.ndarray | None = None) -> np.ndarray:
    """Intensities as the network sees them (float32). See `medmap.plan.Normalization`."""
    x = array.astype(np.float32, copy=True)
    if norm.scheme == "ct":
        np.clip(x, norm.clip_low, norm.clip_high, out=x)
        x -= np.float32(norm.mean)
        x /= np.float32(norm.std)
    elif norm.scheme == "fixed":
        x -= np.float32(norm.mean)
        x /= np.float32(norm.std)
    elif norm.scheme == "zscore":
        values = x[foreground] if foreground is not None and foreground.any() else x
        x -= values.mean()
        x /= max(float(values.std()), 1e-6)
    elif norm.scheme == "per_image":
        lo, hi = float(x.min()), float(x.max())
        x -= lo
        x /= max(hi - lo, 1e-6)
    return x


def foreground_bbox(image: Image, mask: np.ndarray | None = None, margin: int = 2) -> tuple[tuple[int, int], ...]:
    """Voxel bounds (start, stop) per spatial axis of the foreground: the mask, the body for CT, else nonzero."""
    if mask is None:
        values = image.array if image.channels == 1 else image.array[..., 0]
        mask = values > CT_BODY_HU if image.meta.modality == "CT" else values != values.min()
    if not mask.any():
        return tuple((0, n) for n in image.shape)
    bounds = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        bounds.append((max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, image.shape[axis])))
    return tuple(bounds)


def crop(image: Image, bbox: tuple[tuple[int, int], ...]) -> Image:
    """The sub-volume ``bbox`` with its origin moved to the first kept voxel."""
    slices = tuple(slice(a, b) for a, b in bbox)
    origin = image.index_to_world([a for a, _ in bbox])
    return Image(image.array[slices], image.spacing, tuple(origin), image.direction, image.meta)


def extract_patch(
    array: np.ndarray, centre: np.ndarray, size: tuple[int, int, int], pad_value: float = 0.0
) -> np.ndarray:
    """``array[..., z, y, x]`` patch of ``size`` centred on fractional index ``centre``, padded where it
    leaves the array. Leading axes (channels) are kept. Voxel ``size // 2`` of the patch is the voxel
    nearest ``centre``."""
    size = np.asarray(size)
    start = np.floor(np.asarray(centre) + 0.5).astype(int) - size // 2
    spatial = np.asarray(array.shape[-3:])
    lo, hi = np.maximum(start, 0), np.minimum(start + size, spatial)
    out = np.full((*array.shape[:-3], *size), pad_value, dtype=array.dtype)
    if np.all(hi > lo):
        src = (..., *(slice(a, b) for a, b in zip(lo, hi, strict=True)))
        dst = (..., *(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True)))
        out[dst] = array[src]
    return out


def region_around(image: Image, position, extent_mm: float, spacing, order: Order = "linear") -> Image:
    """A cube of ``extent_mm`` centred on an LPS ``position``, resampled to ``spacing`` (axis-aligned with
    the image). Only the region is resampled, not the whole volume: cheap for lesion-centred work."""
    centre = image.world_to_index(np.asarray(position, dtype=float))
    half = extent_mm / 2 / np.asarray(image.spacing) + 2
    bbox = tuple(
        (int(max(np.floor(c - h), 0)), int(min(np.ceil(c + h) + 1, n)))
        for c, h, n in zip(centre, half, image.shape, strict=True)
    )
    if image.is_2d:
        bbox = ((0, 1), *bbox[1:])
    if any(b <= a for a, b in bbox):
        bbox = tuple((0, 1) for _ in range(3))  # outside the image: an all-padding region follows
    return resample(crop(image, bbox), spacing, order)


def lesion_patch(image: Image, position, size: tuple[int, int, int], spacing, pad_value: float) -> np.ndarray:
    """The ``size`` patch at ``spacing`` whose centre voxel sits at the LPS ``position``."""
    extent = float(max(np.asarray(size) * np.asarray(spacing))) + 4 * max(spacing)
    region = region_around(image, position, extent, spacing)
    centre = region.world_to_index(np.asarray(position, dtype=float))
    array = region.array if region.channels == 1 else np.moveaxis(region.array, -1, 0)
    return extract_patch(array, centre, size, pad_value)


def channels_first(array: np.ndarray, channels: int) -> np.ndarray:
    """``[Z, Y, X]`` or ``[Z, Y, X, C]`` -> ``[C, Z, Y, X]``."""
    return array[np.newaxis] if channels == 1 and array.ndim == 3 else np.moveaxis(array, -1, 0)


def segmentation_input(image: Image, norm: Normalization, spacing) -> tuple[np.ndarray, tuple, Image]:
    """What a segmentation network sees of ``image``: resampled to ``spacing``, cropped to the foreground,
    normalised, channels first (float32). Also returns the crop box and the resampled image, whose grid a
    prediction is pasted back on. Training (the cache) and inference both call this one function."""
    resampled = resample(image, spacing, "linear")
    bbox = foreground_bbox(resampled)
    cropped = crop(resampled, bbox)
    values = cropped.array if cropped.channels == 1 else cropped.array[..., 0]
    array = channels_first(normalize(cropped.array, norm, values != values.min()), cropped.channels)
    return array.astype(np.float32, copy=False), bbox, resampled
