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
from tests.builders import AXIAL, rotation, write_ct, write_rtstruct

CENTRE = np.array([4.0, -6.0, 30.0])  # LPS mm
POINTS = 180  # vertices per circle


def _grid(direction=AXIAL, shape=(28, 64, 64), spacing=(2.0, 1.1, 1.1)) -> Image:
    """A CT grid centred on CENTRE."""
    half = (np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    origin = CENTRE - np.asarray(direction) @ half
    return Image(np.zeros(shape, np.int16), spacing, tuple(origin), direction, ImageMeta(modality="CT"))


def _circle(centre_plane, radius, u, v, n=POINTS):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return centre_plane + radius * (np.cos(t) * u + np.sin(t) * v)


def _planes(image: Image):
    """(slice centre in LPS, in-plane unit vectors u, v, height along the normal from CENTRE) per slice."""
    normal, down, along = image.direction[:, 0], image.direction[:, 1], image.direction[:, 2]
    for k in range(image.shape[0]):
        centre = image.index_to_world([k, (image.shape[1] - 1) / 2, (image.shape[2] - 1) / 2])
        yield k, centre, along, down, float((centre - CENTRE) @ normal)


def _shape(kind: str, image: Image):
    """(contours, the exact mask: voxel centres inside the analytic shape)."""
    world = image.index_to_world(np.indices(image.shape).reshape(3, -1).T).reshape(*image.shape, 3) - CENTRE
    n, d, a = (world @ image.direction[:, i] for i in range(3))  # coordinates along normal, column, row
    planar = np.hypot(d, a)
    contours = []
    if kind == "sphere":
        exact = n**2 + planar**2 <= 20.0**2
        for _, c, u, v, h in _planes(image):
            if abs(h) < 20.0:
                contours.append(_circle(c, np.sqrt(20.0**2 - h**2), u, v))
    elif kind == "box":
        exact = (np.abs(n) <= 15.0) & (np.abs(d) <= 12.0) & (np.abs(a) <= 18.0)
        for _, c, u, v, h in _planes(image):
            if abs(h) <= 15.0:
                corners = [(-18, -12), (18, -12), (18, 12), (-18, 12)]
                contours.append(np.array([c + x * u + y * v for x, y in corners]))
    elif kind in ("hollow_cylinder", "ring"):
        # hollow cylinder: a tube along the normal; ring: a torus (outer and inner contour change per slice)
        inner_outer = []
        for _, c, u, v, h in _planes(image):
            if kind == "hollow_cylinder" and abs(h) <= 16.0:
                inner_outer.append((c, u, v, 9.0, 20.0))
            elif kind == "ring" and abs(h) < 7.0:
                w = np.sqrt(7.0**2 - h**2)
                inner_outer.append((c, u, v, 16.0 - w, 16.0 + w))
        for c, u, v, inner, outer in inner_outer:
            contours += [_circle(c, outer, u, v), _circle(c, inner, u, v)[::-1]]  # the inner one as drawn: reversed
        if kind == "hollow_cylinder":
            exact = (np.abs(n) <= 16.0) & (planar >= 9.0) & (planar <= 20.0)
        else:
            exact = (planar - 16.0) ** 2 + n**2 <= 7.0**2
    return contours, exact


def _series(tmp_path, image: Image, positions=None):
    paths = write_ct(image, tmp_path / "ct")
    if positions is not None:  # move slices along the normal: a non-uniformly spaced series
        import pydicom

        for path, height in zip(paths, positions, strict=True):
            ds = pydicom.dcmread(path)
            k = int(ds.InstanceNumber) - 1
            at = np.asarray(image.origin) + image.direction[:, 0] * height + 0 * k
            ds.ImagePositionPatient = [f"{v:.4f}" for v in at]
            ds.save_as(path)
    return paths


CASES = {
    "sphere": ("sphere", AXIAL, True),
    "box": ("box", AXIAL, True),
    "hollow cylinder": ("hollow_cylinder", AXIAL, True),
    "ring with a hole": ("ring", AXIAL, True),
    "oblique series": ("sphere", rotation(0.35, -0.25, 0.2), True),
    "no ContourImageSequence": ("hollow_cylinder", AXIAL, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_analytic_shapes_meet_the_conformance_thresholds(tmp_path, case):
    kind, direction, references = CASES[case]
    grid = _grid(direction)
    paths = _series(tmp_path, grid)
    contours, exact = _shape(kind, grid)
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
    grid = _grid(shape=(20, 48, 48))
    heights = [2.0 * k for k in range(10)] + [18.0 + 2.6 * (k + 1) for k in range(10)]
    paths = _series(tmp_path, grid, positions=heights)
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
    grid = _grid(shape=(6, 40, 40))
    paths = _series(tmp_path, grid)
    thin = []
    for _, c, u, v, _h in _planes(grid):
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
    grid = _grid(shape=(6, 40, 40))
    paths = _series(tmp_path, grid)
    image = load(tmp_path / "ct")
    _, c, u, v, _ = next(_planes(grid))
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
