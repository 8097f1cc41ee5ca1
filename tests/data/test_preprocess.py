"""Resampling keeps geometry and never blends labels; patches sit where the world coordinate says."""

import numpy as np
import pytest
import SimpleITK as sitk

from medmap.data.preprocess import (
    crop,
    extract_patch,
    foreground_bbox,
    lesion_patch,
    normalize,
    resample,
    resample_like,
)
from medmap.io.image import Image, ImageMeta
from medmap.plan import Normalization
from tests.builders import rotation, volume


def test_resample_then_inverse_restores_the_grid_exactly():
    img = volume(shape=(12, 30, 26), spacing=(2.5, 0.7, 0.8), direction=rotation(0.3, -0.1, 0.2))
    there = resample(img, (1.0, 1.0, 1.0))
    assert there.spacing == (1.0, 1.0, 1.0) and np.allclose(there.origin, img.origin)
    assert np.allclose(there.direction, img.direction)
    back = resample_like(there, img)
    assert back.shape == img.shape and back.spacing == img.spacing
    assert back.origin == img.origin and np.array_equal(back.direction, img.direction)


def test_resample_matches_simpleitk_physical_points():
    img = volume(shape=(10, 20, 18), spacing=(3.0, 0.9, 0.6), direction=rotation(0.1, 0.2, 0.3))
    out = resample(img, (1.5, 1.5, 1.5))
    ref = out.to_sitk()
    np.testing.assert_allclose(ref.TransformIndexToPhysicalPoint((4, 5, 6)), out.index_to_world([6, 5, 4]), atol=1e-6)
    # value at an output voxel equals SimpleITK's linear interpolation of the input at that point
    value = sitk.Resample(img.to_sitk(), ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    assert np.allclose(sitk.GetArrayFromImage(value)[3:6, 3:6, 3:6], out.array[3:6, 3:6, 3:6], atol=1e-3)


def test_label_values_are_never_interpolated():
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 2, 7], size=(10, 25, 25)).astype(np.uint8)
    img = Image(labels, (2.0, 0.8, 0.8), (5.0, -3.0, 8.0), rotation(0.2, 0.0, 0.1))
    for spacing in ((1.0, 1.0, 1.0), (3.3, 0.55, 1.7)):
        out = resample(img, spacing, "nearest")
        assert set(np.unique(out.array)) <= {0, 1, 2, 7} and out.array.dtype == np.uint8
        back = resample_like(out, img, "nearest")
        assert set(np.unique(back.array)) <= {0, 1, 2, 7}


def test_bright_voxel_at_a_known_position_is_the_patch_centre():
    img = volume(shape=(20, 40, 36), spacing=(2.5, 0.7, 0.8), direction=rotation(0.2, 0.1, 0.3))
    img.array[:] = -1000
    img.array[11, 17, 21] = 3000
    position = img.index_to_world([11, 17, 21])
    for spacing, size in (((0.7, 0.7, 0.7), (9, 9, 9)), ((2.5, 0.7, 0.8), (5, 8, 8)), ((1.0, 1.0, 1.0), (10, 12, 14))):
        patch = lesion_patch(img, position, size, spacing, -1000.0)
        assert patch.shape == size
        assert np.unravel_index(np.argmax(patch), patch.shape) == tuple(s // 2 for s in size)


def test_patch_near_the_border_is_padded():
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(1, 4, 5, 6)
    patch = extract_patch(arr, np.array([0.0, 0.0, 0.0]), (3, 3, 3), pad_value=-1)
    assert patch.shape == (1, 3, 3, 3) and patch[0, 1, 1, 1] == arr[0, 0, 0, 0]
    assert (patch[0, 0] == -1).all() and patch[0, 2, 2, 2] == arr[0, 1, 1, 1]


def test_crop_to_body_moves_the_origin():
    img = volume(shape=(8, 30, 30))
    img.array[:] = -1000
    img.array[2:6, 10:20, 5:25] = 40
    img.meta = ImageMeta(modality="CT")
    bbox = foreground_bbox(img, margin=1)
    assert bbox == ((1, 7), (9, 21), (4, 26))
    cropped = crop(img, bbox)
    np.testing.assert_allclose(cropped.origin, img.index_to_world([1, 9, 4]))
    assert np.array_equal(cropped.array, img.array[1:7, 9:21, 4:26])


def test_normalisation_schemes():
    x = np.array([-2000.0, -100.0, 0.0, 100.0, 3000.0])
    ct = normalize(x, Normalization(scheme="ct", clip_low=-100, clip_high=100, mean=0, std=50))
    assert ct.tolist() == [-2.0, -2.0, 0.0, 2.0, 2.0]
    z = normalize(x, Normalization(scheme="zscore"))
    assert z.mean() == pytest.approx(0, abs=1e-6) and z.std() == pytest.approx(1, abs=1e-5)
    unit = normalize(x, Normalization(scheme="per_image"))
    assert unit.min() == 0 and unit.max() == 1
