"""RTSTRUCT conformance: analytic shapes written as contours with pydicom, rasterised onto their series,
compared with the exact masks (voxel centres inside the shape): Dice >= 0.95, HD95 <= 2 mm, volume error
<= 3 % on each, as RTMaskConformanceTest asks; and the ways a structure set goes wrong, named."""

import warnings

import numpy as np
import pytest

from medmap.errors import DatasetError, MedmapWarning
from medmap.evaluation.segmentation import class_metrics
from medmap.io.image import Image, ImageMeta
from medmap.io.labels.rtstruct import even_odd_fill, label_map, rasterise, read_rtstruct
from medmap.io.load import load
from tests.builders import write_rtstruct
from tests.rtstruct_shapes import CASES, analytic_shape, ct_grid, slice_planes, write_grid_series


@pytest.mark.parametrize("case", list(CASES))
def test_analytic_shapes_meet_the_conformance_thresholds(tmp_path, case):
    kind, direction, references = CASES[case]
    grid = ct_grid(direction)
    paths = write_grid_series(tmp_path, grid)
    contours, exact = analytic_shape(kind, grid)
    rt = write_rtstruct(paths, {kind: contours}, tmp_path / "rt.dcm", image_references=references)
    image = load(tmp_path / "ct")
    structures = read_rtstruct(rt)
    assert structures.series_uid == image.meta.series_uid
    labels, names = label_map(structures, image, {kind: 1})
    mask = labels.array == 1
    m = class_metrics(mask, exact, image.spacing, tolerance_mm=1.0)
    volume_error = abs(int(mask.sum()) - int(exact.sum())) / int(exact.sum())
    assert m["dice"] >= 0.95 and m["hd95_mm"] <= 2.0 and volume_error <= 0.03, (m["dice"], m["hd95_mm"], volume_error)
    assert names == {0: "background", 1: kind}


def test_a_non_uniformly_spaced_series_keeps_each_contour_on_its_own_slice(tmp_path):
    """Slices 2 mm apart, then 2.6 mm apart: contours follow each slice's own position."""
    grid = ct_grid(shape=(20, 48, 48))
    heights = [2.0 * k for k in range(10)] + [18.0 + 2.6 * (k + 1) for k in range(10)]
    paths = write_grid_series(tmp_path, grid, positions=heights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = load(tmp_path / "ct")
    # one square per slice, its side telling which slice it was drawn on
    contours = []
    for k, height in enumerate(heights):
        c = np.asarray(grid.origin) + grid.direction[:, 0] * height + grid.direction[:, 1] * 24 * 1.1
        c = c + grid.direction[:, 2] * 24 * 1.1
        s = 2 + k % 5
        u, v = grid.direction[:, 2], grid.direction[:, 1]
        contours.append(np.array([c + x * u + y * v for x, y in [(-s, -s), (s, -s), (s, s), (-s, s)]]))
    rt = write_rtstruct(paths, {"squares": contours}, tmp_path / "rt.dcm")
    mask = rasterise(read_rtstruct(rt).named("squares"), image)
    slice_positions = [(np.asarray(image.index_to_world([k, 0, 0])) - np.asarray(image.origin)) @ grid.direction[:, 0]
                       for k in range(image.shape[0])]  # fmt: skip
    for k, height in enumerate(heights):
        nearest = int(np.argmin(np.abs(np.asarray(slice_positions) - height)))
        assert mask[nearest].any(), f"slice {k} lost"


def test_a_structure_thinner_than_a_voxel_is_kept(tmp_path):
    grid = ct_grid(shape=(6, 40, 40))
    paths = write_grid_series(tmp_path, grid)
    thin = []
    for _, c, u, v, _h in slice_planes(grid):
        thin.append(np.array([c + x * u + y * v for x, y in [(-10, 0.1), (10, 0.1), (10, 0.4), (-10, 0.4)]]))
    rt = write_rtstruct(paths, {"wire": thin}, tmp_path / "rt.dcm")
    mask = rasterise(read_rtstruct(rt).named("wire"), load(tmp_path / "ct"))
    assert all(mask[k].any() for k in range(grid.shape[0]))
    assert mask.sum() <= grid.shape[0] * 25  # a line of voxels, not a blob


def test_even_odd_fill_makes_inner_contours_holes_whatever_their_orientation():
    outer = np.array([[2, 2], [2, 17], [17, 17], [17, 2]], float)
    inner = np.array([[6, 6], [6, 13], [13, 13], [13, 6]], float)
    for hole in (inner, inner[::-1]):
        filled = even_odd_fill([outer, hole], (20, 20))
        assert filled[4, 4] and not filled[9, 9] and not filled[0, 0]
        # centres on an edge count on one side only (half-open rows and columns): 15 x 15 outer, 7 x 7 hole
        assert filled.sum() == 15 * 15 - 7 * 7


def test_bad_structure_sets_name_the_object_and_the_roi(tmp_path):
    grid = ct_grid(shape=(6, 40, 40))
    paths = write_grid_series(tmp_path, grid)
    image = load(tmp_path / "ct")
    _, c, u, v, _ = next(slice_planes(grid))
    far = [np.array([c + x * u + y * v for x, y in [(-5, -5), (5, -5), (5, 5), (-5, 5)]]) + 500 * grid.direction[:, 0]]
    edge = [np.array([c + x * u + y * v for x, y in [(-5, -5), (90, -5), (90, 5), (-5, 5)]])]
    rt = write_rtstruct(paths, {"Far": far, "Edge": edge, "Empty": []}, tmp_path / "rt.dcm")
    structures = read_rtstruct(rt)
    with pytest.warns(MedmapWarning, match=r"rt.dcm: ROI 'Far': 1 contour\(s\) on planes the image does not hold"):
        assert not rasterise(structures.named("Far"), image, source=str(rt)).any()
    with pytest.warns(MedmapWarning, match=r"ROI 'Edge': 1 contour\(s\) reach outside the image"):
        assert rasterise(structures.named("Edge"), image, source=str(rt)).any()
    with pytest.raises(DatasetError, match=r"rt.dcm: ROI 'Empty' has no contours"):
        label_map(structures, image, {"Empty": 1})
    other = Image(image.array, image.spacing, image.origin, image.direction, ImageMeta(frame_of_reference_uid="1.2.3"))
    with pytest.raises(DatasetError, match=r"rt\.dcm: contours are on frame of reference"):
        label_map(structures, other, {"Edge": 1})
    with pytest.raises(DatasetError, match="not an RTSTRUCT"):
        read_rtstruct(paths[0])
