"""Generated images with known anatomy: the built-in demo data and the tests' ground truth.

Deterministic by seed. Built slice by slice so that a full 512x512x300 CT (the size of the loading
benchmark) needs little more memory than its int16 output.
"""

from __future__ import annotations

import numpy as np

from medmap.io.image import Image, ImageMeta


def chest_ct(
    shape: tuple[int, int, int] = (60, 256, 256),
    spacing: tuple[float, float, float] = (2.5, 0.78, 0.78),
    *,
    seed: int = 0,
    n_nodules: int = 3,
    direction: np.ndarray | None = None,
    noise_hu: float = 15.0,
) -> Image:
    """An axial chest CT in HU (int16): air, body wall, two lungs, spine, vessels and lung nodules.

    ``spacing`` and ``shape`` follow medmap's axis order (slice, row, column). The patient is centred;
    the origin puts the volume's centre at LPS (0, 0, 0).
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    dz, dy, dx = spacing
    y = (np.arange(ny) - ny / 2) * dy  # mm, posterior positive
    x = (np.arange(nx) - nx / 2) * dx  # mm, patient's left positive
    yy, xx = np.meshgrid(y, x, indexing="ij")
    half_width = 0.42 * nx * dx
    half_depth = 0.32 * ny * dy
    nodules = []
    for _ in range(n_nodules):
        side = rng.choice([-1.0, 1.0])
        nodules.append(
            (
                rng.uniform(0.25, 0.75) * nz * dz,  # z (mm from first slice)
                side * rng.uniform(0.15, 0.25) * nx * dx,  # x
                rng.uniform(-0.08, 0.08) * ny * dy,  # y
                rng.uniform(3.0, 9.0),  # radius mm
            )
        )
    out = np.empty(shape, dtype=np.int16)
    for k in range(nz):
        z = k * dz
        t = z / max(nz * dz, 1e-6)  # 0 at the bottom slice, 1 at the top: lungs taper upwards
        body = (xx / half_width) ** 2 + (yy / half_depth) ** 2 <= 1.0
        slab = np.full((ny, nx), -1000.0)
        slab[body] = 40.0
        lung_rx, lung_ry = 0.17 * nx * dx * (1.0 - 0.3 * t), 0.22 * ny * dy * (1.0 - 0.2 * t)
        for side in (-1.0, 1.0):
            lung = ((xx - side * 0.2 * nx * dx) / lung_rx) ** 2 + ((yy + 0.02 * ny * dy) / lung_ry) ** 2 <= 1.0
            slab[lung] = -850.0
        spine = (xx / (0.05 * nx * dx)) ** 2 + ((yy - 0.22 * ny * dy) / (0.05 * ny * dy)) ** 2 <= 1.0
        slab[spine] = 700.0
        for side in (-1.0, 1.0):  # vessels: thin tubes that run through the lungs
            vessel = (xx - side * (0.12 + 0.03 * np.sin(3 * t)) * nx * dx) ** 2 + (yy - 0.01 * ny * dy) ** 2 <= 4.0**2
            slab[vessel] = 40.0
        for nz_mm, nx_mm, ny_mm, r in nodules:
            dzk = z - nz_mm
            if abs(dzk) < r:
                rr = np.sqrt(r**2 - dzk**2)
                slab[(xx - nx_mm) ** 2 + (yy - ny_mm) ** 2 <= rr**2] = 30.0
        slab += rng.normal(0.0, noise_hu, size=slab.shape)
        out[k] = np.clip(np.rint(slab), -1024, 3071)
    direction = np.column_stack([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]]) if direction is None else direction
    origin = -np.asarray(direction) @ (np.asarray(spacing) * (np.asarray(shape) - 1) / 2)
    meta = ImageMeta(modality="CT", body_part="CHEST", window_center=-600.0, window_width=1500.0)
    return Image(out, spacing, tuple(origin), direction, meta)
