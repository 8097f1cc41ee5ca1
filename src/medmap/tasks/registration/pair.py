"""A fixed and a moving image as registration takes them, with the checks that make a bad pair name itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medmap.errors import MedmapError
from medmap.io.image import Image
from medmap.io.load import load


class RegistrationError(MedmapError):
    """A pair that cannot be registered (2-D with 3-D, no common field of view, mismatched labels)."""


@dataclass(frozen=True)
class Pair:
    """The two images (and optional label maps on their grids) in SimpleITK form, 2-D or 3-D alike."""

    fixed: sitk.Image
    moving: sitk.Image
    fixed_name: str
    moving_name: str
    fixed_label: sitk.Image | None = None
    moving_label: sitk.Image | None = None
    fixed_image: Image | None = None  # as read (its metadata: the DICOM series a registration object references)
    moving_image: Image | None = None

    @property
    def dimension(self) -> int:
        return self.fixed.GetDimension()


def to_sitk(image: Image, name: str, *, label: bool = False) -> sitk.Image:
    """One channel (a colour picture becomes its mean channel), 2-D images as 2-D, intensities as float32."""
    array = image.array
    if array.ndim == 4:
        if label:
            raise RegistrationError(f"{name}: a label map has {array.shape[3]} channels; it needs one")
        array = array.mean(axis=3)
    flat = image.with_array(array.astype(np.uint16 if label else np.float32))
    out = flat.to_sitk()
    return out[:, :, 0] if image.is_2d else out


def read_pair(fixed: Path, moving: Path, *, fixed_label: Path | None = None, moving_label: Path | None = None) -> Pair:
    """Read both images (any format `medmap.io.load` reads, DICOM series folders included) and check them."""
    images = {name: load(path) for name, path in (("fixed", fixed), ("moving", moving))}
    if images["fixed"].is_2d != images["moving"].is_2d:
        flat, deep = (fixed, moving) if images["fixed"].is_2d else (moving, fixed)
        raise RegistrationError(f"{flat} is a 2-D image and {deep} a 3-D one: a pair must be both 2-D or both 3-D")
    labels = {}
    for name, path in (("fixed", fixed_label), ("moving", moving_label)):
        if path is None:
            continue
        label = load(path)
        if not label.same_geometry(images[name]):
            raise RegistrationError(f"{path}: the label map is not on the grid of the {name} image {images[name]}")
        labels[name] = to_sitk(label, str(path), label=True)
    if (fixed_label is None) != (moving_label is None):
        given = fixed_label or moving_label
        raise RegistrationError(f"{given}: labels are scored on both images; give the other image's label map too")
    return Pair(
        fixed=to_sitk(images["fixed"], str(fixed)),
        moving=to_sitk(images["moving"], str(moving)),
        fixed_name=str(fixed),
        moving_name=str(moving),
        fixed_label=labels.get("fixed"),
        moving_label=labels.get("moving"),
        fixed_image=images["fixed"],
        moving_image=images["moving"],
    )


def overlap_share(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> float:
    """Share of the fixed image's voxels whose transformed position falls inside the moving image."""
    inside = sitk.Image(moving.GetSize(), sitk.sitkUInt8)
    inside.CopyInformation(moving)
    inside = inside + 1
    mapped = sitk.Resample(inside, fixed, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return float(sitk.GetArrayViewFromImage(mapped).mean())


def common_share(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> float:
    """How much of the smaller field of view the two images share: the larger of (fixed inside moving) and
    (moving inside fixed), so that an MR of one thigh inside a whole-body PET counts as overlapping."""
    forward = overlap_share(fixed, moving, transform)
    if forward >= 0.5:
        return forward
    try:
        inverse = transform.GetInverse()
    except RuntimeError:  # a B-spline or field has no closed-form inverse: the forward share is what there is
        return forward
    return max(forward, overlap_share(moving, fixed, inverse))
