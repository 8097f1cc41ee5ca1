"""Findings live in LPS millimetres; the grids they are drawn on and read from may be oblique and
anisotropic. Checked against SimpleITK, an independent implementation of the same index/world mapping."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import medmap
from medmap.data.dataset import Case, Lesion
from medmap.io.image import Image, ImageMeta
from medmap.tasks.detection.cache import finding_mask
from medmap.tasks.detection.findings import findings


def oblique_image(shape=(30, 48, 40), spacing=(2.5, 0.7, 0.9)) -> Image:
    # columns of ``direction`` are the world directions of the array axes (z, y, x), tilted on two axes
    direction = Rotation.from_euler("xy", [20, -15], degrees=True).as_matrix()[:, ::-1]
    return Image(np.zeros(shape, np.int16), spacing, (-30.0, 12.0, -80.0), direction, ImageMeta(modality="CT"))


def test_index_and_world_agree_with_simpleitk_on_an_oblique_anisotropic_grid(tmp_path):
    import SimpleITK as sitk

    image = oblique_image()
    medmap.save(image, tmp_path / "oblique.mha")
    reference = sitk.ReadImage(str(tmp_path / "oblique.mha"))
    rng = np.random.default_rng(0)
    for zyx in rng.uniform(0, 29, size=(20, 3)):
        world = reference.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in zyx[::-1]))  # ITK: x, y, z
        assert np.allclose(image.index_to_world(zyx), world, atol=1e-6)
        back = reference.TransformPhysicalPointToContinuousIndex(world)
        assert np.allclose(image.world_to_index(np.asarray(world)), back[::-1], atol=1e-6)


def test_a_finding_drawn_and_found_on_an_oblique_grid_keeps_its_world_centre_and_size(tmp_path):
    import SimpleITK as sitk

    image = oblique_image()
    centre = tuple(float(v) for v in image.index_to_world([14.3, 22.6, 19.1]))
    case = Case("oblique", [], "P", lesions=[Lesion(centre, 12.0)])
    mask = finding_mask(case, image)
    medmap.save(mask, tmp_path / "mask.mha")
    reference = sitk.ReadImage(str(tmp_path / "mask.mha"))
    inside = np.argwhere(mask.array == 1)
    worlds = np.array([reference.TransformIndexToPhysicalPoint([int(v) for v in i[::-1]]) for i in inside])
    assert np.linalg.norm(worlds - centre, axis=1).max() <= 6.0 + 1e-6  # every drawn voxel within the radius
    volume = len(inside) * float(np.prod(image.spacing))
    assert volume == pytest.approx(np.pi / 6 * 12.0**3, rel=0.1)
    (found,) = findings(mask.with_array(mask.array * np.float32(0.9)))
    assert np.linalg.norm(np.subtract(found.centre, centre)) < 0.5  # world centre, not an index
    assert found.diameter_mm == pytest.approx(12.0, rel=0.05) and found.score == pytest.approx(0.9)
