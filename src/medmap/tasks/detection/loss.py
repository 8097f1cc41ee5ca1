"""The detector's loss: segmentation's batch Dice + cross-entropy, with the findings' voxels weighted up
in the cross-entropy.

Findings are small: the demo's nodules fill about 0.1 % of a chest CT. Under plain Dice + CE a U-Net
first learns to call everything background and leaves that state only after many hundred steps (nnU-Net
and nnDetection buy those steps with 250 000 iterations; medmap's short budgets cannot). Weighting the
findings' voxels in the cross-entropy by the square root of the background-to-finding voxel ratio of the
training scans (capped) keeps their gradient alive from the first steps; the square root, not the full
ratio, keeps the detector from painting every bright vessel. The weight is derived here from the
training scans only and written to the run's log line.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from medmap.data.cache import CachedCase
from medmap.tasks.segmentation.loss import SegmentationLoss

log = logging.getLogger("medmap.train")
MAX_WEIGHT = 100.0


def finding_weight(train: list[CachedCase]) -> float:
    """sqrt(background voxels / finding voxels) over the training scans, within [1, MAX_WEIGHT]."""
    found = total = 0
    for case in train:
        _, mask = case.arrays()
        if mask is not None:
            found += int(np.count_nonzero(mask))
            total += int(mask.size)
    if found == 0:
        return 1.0
    return float(np.clip(np.sqrt((total - found) / found), 1.0, MAX_WEIGHT))


class FindingLoss(SegmentationLoss):
    def __init__(self, weight: float) -> None:
        super().__init__("dice_ce")
        self.weight = weight
        self.loss.cross_entropy = nn.CrossEntropyLoss(weight=torch.tensor([1.0, weight]))
