"""Connected-component post-processing, each step kept only if it helps on validation cases.

Candidates, tried in this order (greedily, each on top of the ones kept):
1. keep the largest connected component of the whole foreground (an organ with its lesions is one
   object; islands elsewhere are false positives);
2. per class, keep only its largest component (an organ class; wrong for lesion classes, which
   validation then rejects);
3. per pair of classes, remove components of one that touch no voxel of the other (tumour outside the liver);
4. per class, remove components smaller than a volume (50, 200 or 1000 mm^3): specks a network leaves.

A removed component takes the label that surrounds it most (a tumour speck inside the liver becomes
liver, not a hole).

A step is kept when it raises the mean foreground Dice over the validation cases (nnU-Net's rule).
The choice and the Dice before and after each step are saved in the run (``postprocessing.json``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from medmap.evaluation.segmentation import CONNECTIVITY_3D

MIN_VOLUMES_MM3 = (50.0, 200.0, 1000.0)


@dataclass
class PostProcessing:
    largest_foreground: bool = False
    largest_of: list[int] = field(default_factory=list)  # class values reduced to their largest component
    inside: dict[int, int] = field(default_factory=dict)  # class -> class its components must touch
    min_volume_mm3: dict[int, float] = field(default_factory=dict)  # class -> smallest component kept
    log: list[str] = field(default_factory=list)  # what was tried on validation, with the Dice

    def apply(self, labels: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
        out = labels.copy()
        if self.largest_foreground:
            out[~_largest(out > 0)] = 0
        for value in self.largest_of:
            mask = out == value
            _fill(out, mask & ~_largest(mask))
        for value, container in self.inside.items():
            _fill(out, _not_touching(out == value, out == container))
        for value, volume in self.min_volume_mm3.items():
            _fill(out, _smaller_than(out == value, volume / float(np.prod(spacing))))
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> PostProcessing:
        path = Path(path)
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        data["inside"] = {int(k): int(v) for k, v in data.get("inside", {}).items()}
        data["min_volume_mm3"] = {int(k): float(v) for k, v in data.get("min_volume_mm3", {}).items()}
        return cls(**data)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    structure = CONNECTIVITY_3D if mask.ndim == 3 else ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    return ndimage.label(mask, structure=structure)


def _largest(mask: np.ndarray) -> np.ndarray:
    components, n = _components(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def _smaller_than(mask: np.ndarray, voxels: float) -> np.ndarray:
    components, n = _components(mask)
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(components.ravel())
    small = np.flatnonzero(sizes < voxels)
    return np.isin(components, small[small > 0])


def _fill(labels: np.ndarray, remove: np.ndarray) -> None:
    """Give each component of ``remove`` the most common label on its outer border (face neighbours not in
    ``remove``; the smallest label wins a tie; 0 when it has no border), in place.

    Vectorised over all components at once: a component per loop iteration (one dilation each) took 85 s
    on a weak model's label maps with tens of thousands of specks, this takes well under a second. Border
    labels never change (only ``remove`` voxels are written), so the order of components never mattered."""
    components, n = _components(remove)
    if n == 0:
        return
    keys = []  # border voxel index * (n + 1) + component: each border voxel counted once per component
    for axis in range(labels.ndim):
        for step in (1, -1):
            beside = _shifted(components, axis, step)  # beside[v]: the component next to v along the axis
            voxels = np.flatnonzero((beside > 0) & ~remove)
            keys.append(voxels.astype(np.int64) * (n + 1) + beside.ravel()[voxels])
    unique = np.unique(np.concatenate(keys))
    voxel, component = np.divmod(unique, n + 1)
    counts = np.zeros((n + 1, int(labels.max()) + 1), dtype=np.int64)
    np.add.at(counts, (component, labels.ravel()[voxel]), 1)
    fill = np.where(counts.any(axis=1), counts.argmax(axis=1), 0).astype(labels.dtype)
    labels[remove] = fill[components[remove]]


def _shifted(array: np.ndarray, axis: int, step: int) -> np.ndarray:
    """``out[v] = array[v + step]`` along ``axis`` (zero where that falls outside)."""
    out = np.zeros_like(array)
    inside, source = [slice(None)] * array.ndim, [slice(None)] * array.ndim
    inside[axis], source[axis] = (slice(0, -1), slice(1, None)) if step == 1 else (slice(1, None), slice(0, -1))
    out[tuple(inside)] = array[tuple(source)]
    return out


def _not_touching(mask: np.ndarray, container: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` whose component has no voxel next to (or in) ``container``."""
    components, n = _components(mask)
    if n == 0:
        return np.zeros_like(mask)
    grown = ndimage.binary_dilation(container, structure=CONNECTIVITY_3D if mask.ndim == 3 else None)
    keep = np.unique(components[grown & (components > 0)])
    return (components > 0) & ~np.isin(components, keep)


def mean_dice(pairs: list[tuple[np.ndarray, np.ndarray]], classes: list[int]) -> float:
    """Mean Dice over (case, class) pairs; a truth that marks a class unannotated
    (`medmap.data.annotation`) leaves that case's class out."""
    from medmap.data.annotation import annotates

    scores = []
    for pred, truth in pairs:
        partial = bool((truth < 0).any()) if np.issubdtype(truth.dtype, np.signedinteger) else False
        for value in classes:
            if partial and not annotates(truth, value):
                continue
            p, t = pred == value, truth == value
            total = np.count_nonzero(p) + np.count_nonzero(t)
            if total:
                scores.append(2 * np.count_nonzero(p & t) / total)
    return float(np.mean(scores)) if scores else float("nan")


def choose_postprocessing(
    pairs: list[tuple[np.ndarray, np.ndarray]], labels: dict[int, str], spacings: list | None = None
) -> PostProcessing:
    """The steps that raise the mean foreground Dice on (prediction, truth) validation pairs (label maps
    on grids of ``spacings``, 1 mm when not given)."""
    spacings = spacings or [(1.0, 1.0, 1.0)] * len(pairs)
    classes = [k for k in sorted(labels) if k != 0]
    chosen = PostProcessing()
    best = mean_dice(pairs, classes)
    chosen.log.append(f"validation mean Dice without post-processing: {best:.4f} ({len(pairs)} cases)")
    candidates: list[tuple[str, dict]] = [("largest foreground component", {"largest_foreground": True})]
    candidates += [(f"largest component of {labels[k]}", {"largest_of": [k]}) for k in classes]
    candidates += [
        (f"remove {labels[a]} not touching {labels[b]}", {"inside": {a: b}}) for a in classes for b in classes if a != b
    ]
    candidates += [
        (f"remove {labels[k]} components under {v:g} mm3", {"min_volume_mm3": {k: v}})
        for k in classes
        for v in MIN_VOLUMES_MM3
    ]
    for name, change in candidates:
        trial = PostProcessing(
            largest_foreground=chosen.largest_foreground or change.get("largest_foreground", False),
            largest_of=chosen.largest_of + change.get("largest_of", []),
            inside={**chosen.inside, **change.get("inside", {})},
            min_volume_mm3={**chosen.min_volume_mm3, **change.get("min_volume_mm3", {})},
        )
        if any(a in trial.inside.values() and a in trial.inside for a in trial.inside):
            continue  # chains (a inside b inside a) make no sense
        score = mean_dice([(trial.apply(p, s), t) for (p, t), s in zip(pairs, spacings, strict=True)], classes)
        kept = score > best + 1e-6
        chosen.log.append(f"{name}: {score:.4f} -> {'kept' if kept else 'rejected'}")
        if kept:
            trial.log = chosen.log
            chosen, best = trial, score
    return chosen
