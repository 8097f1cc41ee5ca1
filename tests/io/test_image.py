import numpy as np
import pytest
import SimpleITK as sitk

from medmap.io.image import Image
from tests.builders import rotation, volume


def test_index_world_round_trip_on_an_oblique_grid():
    img = volume(direction=rotation(0.3, -0.2, 0.5), spacing=(3.0, 0.5, 0.9))
    idx = np.array([[0, 0, 0], [8, 23, 19], [1.5, 2.25, 7.0]])
    world = img.index_to_world(idx)
    np.testing.assert_allclose(world[0], img.origin)
    np.testing.assert_allclose(img.world_to_index(world), idx, atol=1e-9)
    # the affine and index_to_world agree
    np.testing.assert_allclose((img.affine @ np.c_[idx, np.ones(3)].T).T[:, :3], world)


def test_sitk_bridge_keeps_voxels_and_physical_points():
    img = volume(direction=rotation(0.1, 0.4, -0.3))
    s = img.to_sitk()
    # SimpleITK indexes (x, y, z) = (column, row, slice)
    point = s.TransformIndexToPhysicalPoint((5, 7, 3))
    np.testing.assert_allclose(point, img.index_to_world([3, 7, 5]), atol=1e-9)
    assert s[5, 7, 3] == img.array[3, 7, 5]
    back = Image.from_sitk(s)
    assert back.same_geometry(img, tol=1e-12)
    assert np.array_equal(back.array, img.array)


def test_sitk_2d_image_becomes_one_slice():
    s = sitk.GetImageFromArray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    s.SetSpacing((0.5, 0.25))
    img = Image.from_sitk(s)
    assert img.shape == (1, 3, 4) and img.is_2d
    assert img.spacing[1:] == (0.25, 0.5)


def test_with_array_keeps_geometry_and_rejects_other_shapes():
    img = volume()
    mask = img.with_array(img.array > 0)
    assert mask.same_geometry(img)
    with pytest.raises(ValueError, match="does not match"):
        img.with_array(np.zeros((2, 2, 2)))


def test_invalid_geometry_is_refused():
    with pytest.raises(ValueError, match="spacing"):
        Image(np.zeros((2, 2, 2)), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="singular"):
        Image(np.zeros((2, 2, 2)), direction=np.zeros((3, 3)))
