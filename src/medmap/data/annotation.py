"""Partial annotation: a label that a case did not annotate is unknown in that case, not background.

Radiotherapy contour sets are partial as a rule (a plan contours the organs near its target). Training on
such a case as if every missing structure were background teaches the network to erase those organs.
So a case records which labels it left unannotated, and its training target says so in the target itself:
a background voxel of a case that did not annotate the labels S holds ``-(1 + sum(2**k for k in S))``
("background or one of S"); annotated voxels keep their label. Every consumer reads the target through
the functions here: the marginal loss (`medmap.tasks.segmentation.loss`), the validation Dice and the
post-processing choice; per-case metrics leave an unannotated label out of that case.

Why in the target, not beside it: a patch, its flips and warps and a batch of them carry the rule with
them, and a case that annotates everything gives exactly the target it always had.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from medmap.errors import DatasetError

MAX_LABEL = 30  # labels 1..30 fit the bits of an int32 target


def as_target(mask: np.ndarray, unannotated: Iterable[int], case_id: str = "", dtype=np.int64) -> np.ndarray:
    """The target of a label map: background voxels marked "background or one of the unannotated labels"
    when the case left any out; the label map itself otherwise (int64 for torch's losses; int32 keeps a
    whole volume small)."""
    out = np.asarray(mask).astype(dtype)
    bits = unknown_code(unannotated, case_id)
    if bits:
        out[out == 0] = -(1 + bits)
    return out


def unknown_code(unannotated: Iterable[int], case_id: str = "") -> int:
    values = sorted({int(v) for v in unannotated})
    if values and (values[0] < 1 or values[-1] > MAX_LABEL):
        raise DatasetError(
            f"case {case_id}: partial annotation works for label values 1-{MAX_LABEL}; this case leaves out {values}"
        )
    return sum(1 << v for v in values)


def decidable(target, value: int):
    """Where the target can say whether a voxel is ``value``: everywhere but the unknown background of
    a case that did not annotate ``value`` (numpy arrays or torch tensors)."""
    if isinstance(target, torch.Tensor):
        unknown = target < 0
        return ~(unknown & ((((-target - 1).clamp(min=0)) >> value) & 1).bool())
    target = np.asarray(target)
    unknown = target < 0
    return ~(unknown & ((((-target - 1).clip(min=0)) >> value) & 1).astype(bool))


def annotates(target: np.ndarray, value: int) -> bool:
    """Whether the case whose (whole) target this is annotated ``value``."""
    return bool(np.all(decidable(target, value)))


def allowed(target: torch.Tensor, classes: int) -> torch.Tensor:
    """``[B, K, ...]`` boolean: which classes each voxel may be (one for an annotated voxel; background
    and the case's unannotated labels for its unknown background)."""
    values = torch.arange(classes, device=target.device).view(1, -1, *[1] * (target.dim() - 1))
    t = target.unsqueeze(1)
    unknown = t < 0
    bits = (-t - 1).clamp(min=0)
    maybe = (values == 0) | (((bits >> values) & 1) == 1)
    return torch.where(unknown, maybe, t == values)
