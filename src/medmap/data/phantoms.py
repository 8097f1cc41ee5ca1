"""Generated images with known anatomy: the built-in demo data and the tests' ground truth.

Deterministic by seed. Anatomy is drawn slice by slice (memory stays near the int16 output); lesions
are painted afterwards inside a small box around each, with a soft edge one voxel wide so that their
borders show partial-volume values as a real scanner's would.

What distinguishes the nodule classes (see docs/demo-data.md): malignant nodules are larger on average
(diameter log-normal around 9.5 mm vs 7 mm, the distributions overlap widely), lobulated, often spiculated and
sometimes part-solid; benign nodules are smooth and round, and a third of them carry a calcified core.
Size alone therefore separates them only partly; shape and density carry the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmap.io.image import Image, ImageMeta

AXIAL = np.column_stack([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]])


def _grid(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """In-plane LPS coordinates (mm) of an axial grid centred on the isocentre."""
    _, ny, nx = shape
    y = (np.arange(ny) - (ny - 1) / 2) * spacing[1]
    x = (np.arange(nx) - (nx - 1) / 2) * spacing[2]
    return np.meshgrid(y, x, indexing="ij")


def _centred(shape, spacing, direction=AXIAL) -> tuple[float, float, float]:
    return tuple(-np.asarray(direction) @ (np.asarray(spacing) * (np.asarray(shape) - 1) / 2))


def _soft(signed_distance_mm: np.ndarray, edge_mm: float) -> np.ndarray:
    """Fraction of a voxel inside a surface, from its signed distance (positive inside)."""
    return np.clip(0.5 + signed_distance_mm / max(edge_mm, 1e-6), 0.0, 1.0)


# --- lesions ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Nodule:
    position: tuple[float, float, float]  # LPS mm
    diameter_mm: float
    malignant: bool
    lobulation: float  # relative amplitude of low-frequency bumps on the surface
    spikes: int  # number of spicules
    calcified: bool
    solid_hu: float


def _random_directions(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _paint_nodule(vol: np.ndarray, img_origin, spacing, nodule: Nodule, rng: np.random.Generator) -> None:
    """Blend one nodule into ``vol`` (float HU, axial grid, [slice, row, column])."""
    r0 = nodule.diameter_mm / 2
    reach = r0 * (1.6 if nodule.spikes else 1.3) + 2 * max(spacing)
    centre = np.asarray(nodule.position)
    # world (x, y, z) of array axes (column, row, slice) on an axial grid
    idx_c = (centre - np.asarray(img_origin)) / np.asarray(spacing)[::-1]  # (column, row, slice) indices
    lo = np.maximum(np.floor(idx_c - reach / np.asarray(spacing)[::-1]).astype(int), 0)
    hi = np.minimum(np.ceil(idx_c + reach / np.asarray(spacing)[::-1]).astype(int) + 1, np.asarray(vol.shape)[::-1])
    if np.any(hi <= lo):
        return
    zs = img_origin[2] + np.arange(lo[2], hi[2]) * spacing[0] - centre[2]
    ys = img_origin[1] + np.arange(lo[1], hi[1]) * spacing[1] - centre[1]
    xs = img_origin[0] + np.arange(lo[0], hi[0]) * spacing[2] - centre[0]
    dz, dy, dx = np.meshgrid(zs, ys, xs, indexing="ij")
    dist = np.sqrt(dx**2 + dy**2 + dz**2) + 1e-6
    unit = np.stack([dx, dy, dz], axis=-1) / dist[..., None]
    radius = np.full(dist.shape, r0)
    for d in _random_directions(rng, 4):  # lobulation: smooth bumps
        radius += (
            r0
            * nodule.lobulation
            * rng.uniform(0.5, 1.0)
            * np.cos(rng.integers(2, 4) * np.arccos(np.clip(unit @ d, -1, 1)))
        )
    if nodule.malignant:  # irregular margin: fine-scale roughness
        for d in _random_directions(rng, 3):
            radius += r0 * 0.06 * np.cos(7 * np.arccos(np.clip(unit @ d, -1, 1)) + rng.uniform(0, 6.28))
    inside = _soft(radius - dist, min(spacing))
    for d in _random_directions(rng, nodule.spikes):  # spicules: thin cones reaching out of the surface
        length, width = r0 * rng.uniform(1.4, 2.2), np.deg2rad(rng.uniform(4, 8))
        angle = np.arccos(np.clip(unit @ d, -1, 1))
        spike = _soft(np.minimum(width - angle, (length - dist) / max(length, 1e-6) * width), width * 0.5)
        inside = np.maximum(inside, spike * 0.8)
    sub = vol[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
    density = np.full(dist.shape, nodule.solid_hu)
    if nodule.calcified:  # central (benign-pattern) calcification
        density = np.where(dist < r0 * rng.uniform(0.35, 0.6), rng.uniform(250, 700), density)
    sub[...] = sub * (1 - inside) + density * inside


def _nodule(rng: np.random.Generator, position, malignant: bool) -> Nodule:
    if malignant:
        diameter = float(np.clip(rng.lognormal(np.log(9.5), 0.38), 4.0, 26.0))
        return Nodule(
            tuple(position),
            diameter,
            True,
            rng.uniform(0.10, 0.22),
            int(rng.choice([0, 3, 5, 7])),
            False,
            float(rng.choice([30.0, 30.0, -250.0])) + rng.normal(0, 10),
        )
    diameter = float(np.clip(rng.lognormal(np.log(7.0), 0.35), 3.0, 16.0))
    return Nodule(
        tuple(position), diameter, False, rng.uniform(0.0, 0.04), 0, bool(rng.random() < 0.35), 30.0 + rng.normal(0, 10)
    )


# --- chest CT --------------------------------------------------------------------------------------------------------
def _chest_slice(yy, xx, t: float, half_w: float, half_d: float) -> tuple[np.ndarray, np.ndarray]:
    """HU and lung mask of one axial slice; ``t`` in [0, 1] from the lung bases to the apices."""
    slab = np.full(yy.shape, -1000.0)
    body = (xx / half_w) ** 2 + (yy / half_d) ** 2 <= 1.0
    slab[body] = -90.0  # subcutaneous fat
    muscle = (xx / (half_w - 12)) ** 2 + (yy / (half_d - 12)) ** 2 <= 1.0
    slab[muscle] = 45.0
    lungs = np.zeros(yy.shape, bool)
    rx, ry = 0.36 * half_w * (1.0 - 0.35 * t), 0.62 * half_d * (1.0 - 0.25 * t)
    for side in (-1.0, 1.0):
        lungs |= ((xx - side * 0.45 * half_w) / rx) ** 2 + ((yy + 0.05 * half_d) / ry) ** 2 <= 1.0
    slab[lungs] = -860.0
    if t < 0.6:  # heart, in the lower chest, left of the midline
        hx, hy = 0.3 * half_w * (1 - 0.8 * t), 0.35 * half_d
        heart = ((xx - 0.12 * half_w) / hx) ** 2 + ((yy + 0.15 * half_d) / hy) ** 2 <= 1
        lungs &= ~heart
        slab[heart] = 40.0
    spine = (xx / 14.0) ** 2 + ((yy - 0.72 * half_d) / 14.0) ** 2 <= 1.0
    slab[spine] = 650.0
    for side in (-1.0, 1.0):  # pulmonary vessels: tubes branching through the lungs
        for k, offset in enumerate((0.25, 0.45, 0.65)):
            cx = side * offset * half_w + 6 * np.sin(5 * t + k)
            cy = -0.05 * half_d + (k - 1) * 0.25 * half_d * np.cos(3 * t)
            vessel = (xx - cx) ** 2 + (yy - cy) ** 2 <= (3.0 - k * 0.7) ** 2
            slab[vessel & lungs] = 35.0
    return slab, lungs


@dataclass
class ChestCase:
    image: Image
    nodules: list[Nodule]


def chest_ct(
    shape: tuple[int, int, int] = (60, 256, 256),
    spacing: tuple[float, float, float] = (2.5, 0.78, 0.78),
    *,
    seed: int = 0,
    n_nodules: int = 3,
    malignant_fraction: float = 0.5,
    noise_hu: float = 15.0,
) -> ChestCase:
    """An axial chest CT (HU, int16) with lung nodules placed inside the lungs, none overlapping."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    yy, xx = _grid(shape, spacing)
    half_w, half_d = 0.46 * nx * spacing[2], 0.34 * ny * spacing[1]
    origin = _centred(shape, spacing)
    vol = np.empty(shape, dtype=np.float32)
    lung_slices = np.zeros(shape, dtype=bool)
    for k in range(nz):
        vol[k], lung_slices[k] = _chest_slice(yy, xx, k / max(nz - 1, 1), half_w, half_d)
    nodules: list[Nodule] = []
    candidates = np.argwhere(lung_slices[2:-2]) + np.array([2, 0, 0])
    for _ in range(n_nodules):
        malignant = bool(rng.random() < malignant_fraction)
        for _attempt in range(200):
            k, j, i = candidates[rng.integers(len(candidates))]
            pos = (origin[0] + i * spacing[2], origin[1] + j * spacing[1], origin[2] + k * spacing[0])
            nodule = _nodule(rng, pos, malignant)
            clear = all(
                np.linalg.norm(np.subtract(pos, o.position)) > (o.diameter_mm + nodule.diameter_mm) for o in nodules
            )
            margin = int(np.ceil(nodule.diameter_mm / 2 / min(spacing[1:]))) + 1
            in_lung = (
                lung_slices[k, max(j - margin, 0) : j + margin + 1, max(i - margin, 0) : i + margin + 1].mean() > 0.9
            )
            if clear and in_lung:
                nodules.append(nodule)
                break
    for nodule in nodules:
        _paint_nodule(vol, origin, spacing, nodule, rng)
    vol += rng.normal(0.0, noise_hu, size=vol.shape).astype(np.float32)
    arr = np.clip(np.rint(vol), -1024, 3071).astype(np.int16)
    meta = ImageMeta(modality="CT", body_part="CHEST", window_center=-600.0, window_width=1500.0)
    return ChestCase(Image(arr, spacing, origin, AXIAL, meta), nodules)


# --- abdominal CT with liver and tumours ------------------------------------------------------------------------------
@dataclass
class AbdomenCase:
    image: Image
    label: Image  # 0 background, 1 liver, 2 tumour
    tumour_diameters_mm: list[float]


def abdomen_ct(
    shape: tuple[int, int, int] = (48, 160, 160),
    spacing: tuple[float, float, float] = (4.0, 2.0, 2.0),
    *,
    seed: int = 0,
    n_tumours: tuple[int, int] = (1, 4),
    noise_hu: float = 12.0,
) -> AbdomenCase:
    """Portal-venous-like abdominal CT: body wall, spine, aorta, kidneys, liver with tumours.

    The liver sits in the patient's right upper abdomen (negative x in LPS), its shape varied by
    smooth random bumps; tumours (1-5 cm, hypo- or hyperdense) lie inside it. Labels follow MSD Task03.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    yy, xx = _grid(shape, spacing)
    origin = _centred(shape, spacing)
    zz_mm = origin[2] + np.arange(nz) * spacing[0]
    half_w, half_d = 0.44 * nx * spacing[2], 0.33 * ny * spacing[1]
    liver_hu, z_mid = rng.uniform(95, 115), rng.uniform(-0.1, 0.15) * nz * spacing[0]
    lc = np.array([-0.38 * half_w + rng.normal(0, 6), -0.1 * half_d + rng.normal(0, 5), z_mid])
    lr = np.array([0.55 * half_w, 0.6 * half_d, 0.3 * nz * spacing[0]]) * rng.uniform(0.9, 1.1, size=3)
    bumps = [(_random_directions(rng, 1)[0], rng.uniform(0.05, 0.12), int(rng.integers(2, 4))) for _ in range(4)]
    vol = np.empty(shape, np.float32)
    label = np.zeros(shape, np.uint8)
    for k, z in enumerate(zz_mm):
        slab = np.full(yy.shape, -1000.0)
        body = (xx / half_w) ** 2 + (yy / half_d) ** 2 <= 1.0
        slab[body] = -95.0
        inner = (xx / (half_w - 15)) ** 2 + (yy / (half_d - 15)) ** 2 <= 1.0
        slab[inner] = (20.0 + 15 * np.sin(xx / 9) * np.cos(yy / 7))[inner]  # bowel / mesentery-like soft tissue
        slab[(xx / 15.0) ** 2 + ((yy - 0.7 * half_d) / 15.0) ** 2 <= 1] = 650.0  # vertebra
        slab[(xx - 12) ** 2 + (yy - 0.45 * half_d) ** 2 <= 9.0**2] = 170.0  # aorta
        for side in (-1.0, 1.0):  # kidneys
            kz = (z - (z_mid - 0.25 * nz * spacing[0])) / (0.18 * nz * spacing[0])
            if abs(kz) < 1:
                kidney = ((xx - side * 0.45 * half_w) / 24) ** 2 + ((yy - 0.45 * half_d) / 32) ** 2 <= 1 - kz**2
                slab[kidney] = 160.0
        d = np.stack([xx - lc[0], yy - lc[1], np.full_like(xx, z - lc[2])], -1) / lr
        r = np.linalg.norm(d, axis=-1) + 1e-6
        scale = np.ones_like(r)
        for direction, amp, freq in bumps:
            scale += amp * np.cos(freq * np.arccos(np.clip((d / r[..., None]) @ direction, -1, 1)))
        inside = _soft((scale - r) * lr.min(), min(spacing))
        liver = inside > 0.5
        slab = slab * (1 - inside) + liver_hu * inside
        vol[k] = slab
        label[k][liver & body] = 1
    diameters = []
    liver_idx = np.argwhere(label == 1)
    for _ in range(int(rng.integers(n_tumours[0], n_tumours[1] + 1))):
        diameter = float(rng.uniform(10, 50))
        hu = liver_hu + (rng.uniform(-65, -35) if rng.random() < 0.75 else rng.uniform(35, 60))
        for _attempt in range(100):
            k, j, i = liver_idx[rng.integers(len(liver_idx))]
            centre = np.array([origin[0] + i * spacing[2], origin[1] + j * spacing[1], zz_mm[k]])
            ext = np.ceil(diameter / 2 / np.asarray(spacing)).astype(int) + 1  # (slice, row, col)
            sl = tuple(slice(max(c - e, 0), c + e + 1) for c, e in zip((k, j, i), ext, strict=True))
            if label[sl].size and (label[sl] > 0).mean() > 0.8:
                break
        else:
            continue
        zs = zz_mm[sl[0]] - centre[2]
        ys = origin[1] + np.arange(sl[1].start, min(sl[1].stop, ny)) * spacing[1] - centre[1]
        xs = origin[0] + np.arange(sl[2].start, min(sl[2].stop, nx)) * spacing[2] - centre[0]
        dz, dy, dx = np.meshgrid(zs, ys, xs, indexing="ij")
        radius = diameter / 2 * (1 + 0.08 * np.sin(3 * np.arctan2(dy, dx)))
        inside = _soft(radius - np.sqrt(dx**2 + dy**2 + dz**2), min(spacing)) * np.isin(label[sl], (1, 2))
        sub = vol[sl]
        sub[...] = sub * (1 - inside) + hu * inside
        label[sl][(inside > 0.5) & (label[sl] > 0)] = 2
        diameters.append(diameter)
    vol += rng.normal(0, noise_hu, size=vol.shape).astype(np.float32)
    arr = np.clip(np.rint(vol), -1024, 3071).astype(np.int16)
    meta = ImageMeta(modality="CT", body_part="ABDOMEN", window_center=60.0, window_width=400.0)
    image = Image(arr, spacing, origin, AXIAL, meta)
    return AbdomenCase(image, image.with_array(label, modality=""), diameters)


# --- chest radiographs ------------------------------------------------------------------------------------------
def chest_radiograph(size: int = 256, pixel_mm: float = 1.4, *, seed: int = 0, consolidation: bool = False) -> Image:
    """A frontal chest radiograph (12-bit, higher = denser), optionally with a lobar consolidation.

    Consolidation: a patchy, ill-defined opacity filling part of one lung field (with air bronchograms
    as darker branching lines), the finding a 2-D classifier must learn to see.
    """
    rng = np.random.default_rng(seed)
    c = (np.arange(size) - (size - 1) / 2) * pixel_mm
    yy, xx = np.meshgrid(c, c, indexing="ij")
    half_w, half_h = 0.42 * size * pixel_mm * rng.uniform(0.92, 1.05), 0.46 * size * pixel_mm
    img = np.full(yy.shape, 200.0)
    body = (xx / half_w) ** 2 + (yy / (half_h * 1.2)) ** 2 <= 1
    img[body] = 1400.0
    lungs = np.zeros(yy.shape, bool)
    for side in (-1.0, 1.0):
        lx, ly = side * 0.45 * half_w, -0.05 * half_h
        lungs |= ((xx - lx) / (0.36 * half_w)) ** 2 + ((yy - ly) / (0.62 * half_h)) ** 2 <= 1
    img[lungs] = 650.0
    heart = ((xx - 0.15 * half_w) / (0.3 * half_w)) ** 2 + ((yy - 0.3 * half_h) / (0.3 * half_h)) ** 2 <= 1
    img[heart] = 1500.0
    img[np.abs(xx) < 0.08 * half_w] = np.maximum(img[np.abs(xx) < 0.08 * half_w], 1550.0)  # spine/mediastinum
    for k in range(9):  # ribs: arcs across each lung field
        y0 = -0.6 * half_h + k * 0.13 * half_h
        arc = np.abs(yy - (y0 + 0.0006 * xx**2)) < 2.2
        img[arc & body] += 260.0
    if consolidation:
        side = rng.choice([-1.0, 1.0])
        cx, cy = side * 0.45 * half_w + rng.normal(0, 8), rng.uniform(-0.1, 0.4) * half_h
        rx, ry = rng.uniform(20, 40), rng.uniform(25, 50)
        blob = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) * rng.uniform(1.2, 2.0))
        texture = 0.6 + 0.4 * np.sin(xx / rng.uniform(3, 6) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(3, 6))
        opacity = blob * texture * lungs * rng.uniform(550, 800)
        bronchi = (np.abs(np.sin((xx - cx) / 7 + 0.3 * (yy - cy) / 7)) < 0.08) & (blob > 0.3)
        img += opacity - bronchi * 150 * lungs
    img += rng.normal(0, 25, size=img.shape)
    arr = np.clip(np.rint(img), 0, 4095).astype(np.uint16)
    meta = ImageMeta(modality="DX", body_part="CHEST", window_center=1100.0, window_width=2200.0)
    return Image(arr[np.newaxis], (1.0, pixel_mm, pixel_mm), (-c[-1], -c[-1], 0.0), np.eye(3), meta)
