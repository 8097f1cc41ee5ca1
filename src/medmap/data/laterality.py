"""Left and right: which labels are lateralised, and which array axes carry the patient's left-right.

Why this exists: mirroring a patch across the patient's left-right axis turns a left parotid into one
drawn on the right. When the labels name sides (``Parotid_L`` / ``Parotid_R``) or are each other's
mirror image about the mid-sagittal plane (two lungs, two kidneys), a network trained on such mirrored
patches learns that either side may carry either name, and names about half the voxels on the wrong
side. The planner asks this module whether the labels are lateralised and which array axes to keep
unmirrored; test-time mirroring asks again per image (the axis is the patient's, from the direction
cosines, never an array index taken on trust).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# Tokens that name a side in structure names: English, TG-263 suffixes, Latin / Italian / German.
SIDE_TOKENS = {
    "left": "L", "l": "L", "lt": "L", "lft": "L", "sin": "L", "sinister": "L", "sinistra": "L", "links": "L",
    "right": "R", "r": "R", "rt": "R", "rgt": "R", "dx": "R", "dexter": "R", "destra": "R", "rechts": "R",
}  # fmt: skip
LR_COMPONENT = 0.26  # an axis whose LPS x component exceeds cos(75 deg) moves points across the midline
PAIR_CONSISTENCY = 0.8  # share of the cases holding both classes in which they must sit as mirror images


def side_of(name: str) -> str | None:
    """'L', 'R' or None: the side a structure name states (``Parotid_L``, ``L Parotid``, ``PAROTID LT``)."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)  # camelCase: ParotidLeft -> Parotid Left
    sides = {SIDE_TOKENS[t] for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t in SIDE_TOKENS}
    return sides.pop() if len(sides) == 1 else None


def lateral_names(labels: dict[int, str]) -> dict[int, str]:
    """The foreground labels whose names state a side, with that side."""
    return {int(k): side for k, v in labels.items() if int(k) != 0 and (side := side_of(str(v)))}


VIEWED = np.column_stack([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]])  # a picture as viewed: columns across, rows down


def patient_direction(direction: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The direction cosines to reason about sides with. A one-slice image with the identity direction has
    no geometry of its own (a picture, an array): its columns are taken to run across the patient and its
    rows down, as a radiograph or photograph is viewed."""
    d = np.asarray(direction, dtype=np.float64)
    return VIEWED if shape[0] == 1 and np.allclose(d, np.eye(3)) else d


def lateral_axes(direction: np.ndarray, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Array axes (slice=0, row=1, column=2) along which a step moves the point left or right."""
    d = patient_direction(direction, shape)
    return tuple(a for a in range(3) if abs(d[0, a]) > LR_COMPONENT)


@dataclass(frozen=True)
class Placement:
    """Where one class lies in one case, in LPS mm: its centre, its spread along x, its voxel count."""

    centre: tuple[float, float, float]
    x_low: float  # 5th and 95th percentiles of the class's voxels along the patient's x (left-right)
    x_high: float
    voxels: int


def placements(mask, max_points: int = 20_000, seed: int = 0) -> dict[int, Placement]:
    """Each foreground class's placement in the mask `Image` (a bounded sample of its voxels)."""
    rng = np.random.default_rng(seed)
    out: dict[int, Placement] = {}
    full = np.asarray(mask.array)
    direction = patient_direction(mask.direction, mask.shape)
    step = max(1, int(np.ceil((full.size / 2**22) ** (1 / 3))))  # a coarser look at large masks: enough for sides
    array = full[::step, ::step, ::step]
    for value in np.unique(array):
        if int(value) == 0:
            continue
        index = np.argwhere(array == value) * step
        count = len(index)
        if count > max_points:
            index = index[rng.choice(count, max_points, replace=False)]
        world = index * np.asarray(mask.spacing) @ direction.T  # LPS offsets from the origin (enough to compare)
        out[int(value)] = Placement(
            centre=tuple(float(v) for v in world.mean(axis=0)),
            x_low=float(np.percentile(world[:, 0], 5)),
            x_high=float(np.percentile(world[:, 0], 95)),
            voxels=int(count) * step**3,
        )
    return out


def _mirror_images(a: Placement, b: Placement) -> int:
    """+1 when a lies to the patient's left of b as its mirror image, -1 to its right, 0 when not a pair.

    A pair: apart along x (their 5-95 % x ranges do not overlap), closer in y and z than in x, and of
    comparable size (within a factor of three), as two lungs, kidneys or parotids are."""
    dx = a.centre[0] - b.centre[0]
    separated = a.x_high < b.x_low or b.x_high < a.x_low
    aligned = max(abs(a.centre[1] - b.centre[1]), abs(a.centre[2] - b.centre[2])) < abs(dx)
    comparable = max(a.voxels, b.voxels) <= 3 * min(a.voxels, b.voxels)
    if not (separated and aligned and comparable):
        return 0
    return 1 if dx > 0 else -1  # LPS: +x is the patient's left


def mirror_pairs(per_case: list[dict[int, Placement]]) -> list[tuple[int, int]]:
    """Class pairs that sit as mirror images on fixed sides in (nearly) every case holding both."""
    classes = sorted({k for case in per_case for k in case})
    pairs = []
    for i, a in enumerate(classes):
        for b in classes[i + 1 :]:
            both = [case for case in per_case if a in case and b in case]
            if not both:
                continue
            sides = [_mirror_images(case[a], case[b]) for case in both]
            if max(sides.count(1), sides.count(-1)) >= PAIR_CONSISTENCY * len(both):
                pairs.append((a, b))
    return pairs
