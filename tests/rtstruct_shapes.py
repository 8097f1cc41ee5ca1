"""Analytic shapes as RTSTRUCT contours on CT grids, with their exact masks (voxel centres inside the
shape): the conformance cases of tests/labels/test_rtstruct.py and benchmarks/label_objects.py."""

import numpy as np

from medmap.io.image import Image, ImageMeta
from tests.builders import AXIAL, rotation, write_ct

CENTRE = np.array([4.0, -6.0, 30.0])  # LPS mm
POINTS = 180  # vertices per circle


def ct_grid(direction=AXIAL, shape=(28, 64, 64), spacing=(2.0, 1.1, 1.1)) -> Image:
    """A CT grid centred on CENTRE."""
    half = (np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    origin = CENTRE - np.asarray(direction) @ half
    return Image(np.zeros(shape, np.int16), spacing, tuple(origin), direction, ImageMeta(modality="CT"))


def circle(centre_plane, radius, u, v, n=POINTS):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return centre_plane + radius * (np.cos(t) * u + np.sin(t) * v)


def slice_planes(image: Image):
    """(slice centre in LPS, in-plane unit vectors u, v, height along the normal from CENTRE) per slice."""
    normal, down, along = image.direction[:, 0], image.direction[:, 1], image.direction[:, 2]
    for k in range(image.shape[0]):
        centre = image.index_to_world([k, (image.shape[1] - 1) / 2, (image.shape[2] - 1) / 2])
        yield k, centre, along, down, float((centre - CENTRE) @ normal)


def analytic_shape(kind: str, image: Image):
    """(contours, the exact mask: voxel centres inside the analytic shape)."""
    world = image.index_to_world(np.indices(image.shape).reshape(3, -1).T).reshape(*image.shape, 3) - CENTRE
    n, d, a = (world @ image.direction[:, i] for i in range(3))  # coordinates along normal, column, row
    planar = np.hypot(d, a)
    contours = []
    if kind == "sphere":
        exact = n**2 + planar**2 <= 20.0**2
        for _, c, u, v, h in slice_planes(image):
            if abs(h) < 20.0:
                contours.append(circle(c, np.sqrt(20.0**2 - h**2), u, v))
    elif kind == "box":
        exact = (np.abs(n) <= 15.0) & (np.abs(d) <= 12.0) & (np.abs(a) <= 18.0)
        for _, c, u, v, h in slice_planes(image):
            if abs(h) <= 15.0:
                corners = [(-18, -12), (18, -12), (18, 12), (-18, 12)]
                contours.append(np.array([c + x * u + y * v for x, y in corners]))
    elif kind in ("hollow_cylinder", "ring"):
        # hollow cylinder: a tube along the normal; ring: a torus (outer and inner contour change per slice)
        inner_outer = []
        for _, c, u, v, h in slice_planes(image):
            if kind == "hollow_cylinder" and abs(h) <= 16.0:
                inner_outer.append((c, u, v, 9.0, 20.0))
            elif kind == "ring" and abs(h) < 7.0:
                w = np.sqrt(7.0**2 - h**2)
                inner_outer.append((c, u, v, 16.0 - w, 16.0 + w))
        for c, u, v, inner, outer in inner_outer:
            contours += [circle(c, outer, u, v), circle(c, inner, u, v)[::-1]]  # the inner one as drawn: reversed
        if kind == "hollow_cylinder":
            exact = (np.abs(n) <= 16.0) & (planar >= 9.0) & (planar <= 20.0)
        else:
            exact = (planar - 16.0) ** 2 + n**2 <= 7.0**2
    return contours, exact


def write_grid_series(tmp_path, image: Image, positions=None):
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
