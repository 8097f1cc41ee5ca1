"""Connected-component post-processing, each step kept only if it helps on validation cases.

Candidates, tried in this order (greedily, each on top of the ones kept):
1. keep the largest connected component of the whole foreground (an organ with its lesions is one
   object; islands elsewhere are false positives);
2. per class, keep only its largest component (an organ class; wrong for lesion classes, which
   validation then rejects);
3. per pair of classes, remove components of one that touch no voxel of the other (tumour outside the liver).

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


@dataclass
class PostProcessing:
    largest_foreground: bool = False
    largest_of: list[int] = field(default_factory=list)  # class values reduced to their largest component
    inside: dict[int, int] = field(default_factory=dict)  # class -> class its components must touch
    log: list[str] = field(default_factory=list)  # what was tried on validation, with the Dice

    def apply(self, labels: np.ndarray) -> np.ndarray:
        out = labels.copy()
        if self.largest_foreground:
            out[~_largest(out > 0)] = 0
        for value in self.largest_of:
            mask = out == value
            out[mask & ~_largest(mask)] = 0
        for value, container in self.inside.items():
            out[_not_touching(out == value, out == container)] = 0
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


def _not_touching(mask: np.ndarray, container: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` whose component has no voxel next to (or in) ``container``."""
    components, n = _components(mask)
    if n == 0:
        return np.zeros_like(mask)
    grown = ndimage.binary_dilation(container, structure=CONNECTIVITY_3D if mask.ndim == 3 else None)
    keep = np.unique(components[grown & (components > 0)])
    return (components > 0) & ~np.isin(components, keep)


def mean_dice(pairs: list[tuple[np.ndarray, np.ndarray]], classes: list[int]) -> float:
    scores = []
    for pred, truth in pairs:
        for value in classes:
            p, t = pred == value, truth == value
            total = np.count_nonzero(p) + np.count_nonzero(t)
            if total:
                scores.append(2 * np.count_nonzero(p & t) / total)
    return float(np.mean(scores)) if scores else float("nan")


def choose_postprocessing(pairs: list[tuple[np.ndarray, np.ndarray]], labels: dict[int, str]) -> PostProcessing:
    """The steps that raise the mean foreground Dice on (prediction, truth) validation pairs."""
    classes = [k for k in sorted(labels) if k != 0]
    chosen = PostProcessing()
    best = mean_dice(pairs, classes)
    chosen.log.append(f"validation mean Dice without post-processing: {best:.4f} ({len(pairs)} cases)")
    candidates: list[tuple[str, dict]] = [("largest foreground component", {"largest_foreground": True})]
    candidates += [(f"largest component of {labels[k]}", {"largest_of": [k]}) for k in classes]
    candidates += [
        (f"remove {labels[a]} not touching {labels[b]}", {"inside": {a: b}}) for a in classes for b in classes if a != b
    ]
    for name, change in candidates:
        trial = PostProcessing(
            largest_foreground=chosen.largest_foreground or change.get("largest_foreground", False),
            largest_of=chosen.largest_of + change.get("largest_of", []),
            inside={**chosen.inside, **change.get("inside", {})},
        )
        if any(a in trial.inside.values() and a in trial.inside for a in trial.inside):
            continue  # chains (a inside b inside a) make no sense
        score = mean_dice([(trial.apply(p), t) for p, t in pairs], classes)
        kept = score > best + 1e-6
        chosen.log.append(f"{name}: {score:.4f} -> {'kept' if kept else 'rejected'}")
        if kept:
            trial.log = chosen.log
            chosen, best = trial, score
    return chosen
