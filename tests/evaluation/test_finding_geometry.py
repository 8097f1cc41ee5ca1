"""Findings live in LPS millimetres; the grids they are drawn on and read from may be oblique and
anisotropic. Checked against SimpleITK, an independent implementation of the same index/world mapping."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import medmap
from medmap.data.dataset import Case, Lesion
from medmap.evaluation.detection import Detection, Nodule, Scan
from medmap.io.image import Image, ImageMeta
from medmap.tasks.detection.cache import finding_mask
from medmap.tasks.detection.findings import diameter_scale, findings, rescaled


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


def test_cores_in_a_haze_are_findings_of_their_own_and_weak_regions_stay_candidates():
    """A model early in training is unsure over a whole lobe: the haze (0.2) joins everything at the
    candidate floor. Each core (above one half) must still be its own finding at its own centre, as LUNA16
    scores centres; a weak region apart from any core stays a low-scored candidate."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (40, 60, 60)], indexing="ij"), -1)
    prob = np.zeros((40, 60, 60), np.float32)
    prob[5:35, 5:55, 5:40] = 0.2  # the haze: one region above the floor, 30 x 50 x 35 voxels
    centres = [(12.0, 15.0, 12.0), (28.0, 45.0, 30.0)]
    for c, peak in zip(centres, (0.9, 0.7), strict=True):
        prob[np.linalg.norm(grid - c, axis=-1) <= 3] = peak
    prob[np.linalg.norm(grid - (20, 30, 50), axis=-1) <= 2] = 0.3  # a weak candidate apart from the haze
    image = Image(prob, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3), ImageMeta(modality="CT"))
    found = findings(image)
    assert [round(f.score, 2) for f in found] == [0.9, 0.7, 0.3]
    for f, c in zip(found, centres, strict=False):
        assert np.allclose(f.centre, image.index_to_world(np.asarray(c)), atol=0.01)
        assert f.diameter_mm == pytest.approx(6.0, rel=0.2)  # the core's size, not the haze's
    assert np.allclose(found[2].centre, image.index_to_world(np.asarray((20.0, 30.0, 50.0))), atol=0.01)


def test_the_diameter_factor_is_the_median_over_nodules_found_at_the_threshold():
    """Each nodule is measured by its best-scoring hit at the threshold; misses, findings below the
    threshold and false positives do not count; too few found leaves the sizes as drawn."""
    scans = [
        Scan(
            "a",
            [Nodule((0, 0, 0), 10.0), Nodule((50, 0, 0), 6.0)],
            [
                Detection((1, 0, 0), 0.9, 12.5),  # best hit of the first: 10 / 12.5 = 0.8
                Detection((0, 1, 0), 0.8, 5.0),  # a lower-scored hit of the same nodule: not its measure
                Detection((50, 1, 0), 0.7, 8.0),  # 6 / 8 = 0.75
                Detection((90, 0, 0), 0.95, 40.0),  # a false positive
            ],
        ),
        Scan(
            "b",
            [Nodule((0, 0, 0), 8.0), Nodule((30, 0, 0), 5.0)],
            [Detection((0, 0, 1), 0.6, 8.0), Detection((30, 0, 0), 0.2, 1.0)],
        ),
    ]
    assert diameter_scale(scans, 0.5) == (pytest.approx(0.8), 3)  # 0.75, 0.8, 1.0 (b's second is below 0.5)
    assert diameter_scale(scans[:1], 0.5) == (1.0, 2)
    (found,) = rescaled([Detection((0, 0, 0), 0.9, 12.5)], 0.8)
    assert found.diameter_mm == pytest.approx(10.0) and found.score == 0.9
