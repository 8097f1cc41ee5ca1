"""Splits by patient: no patient's images on both sides of a split, classes balanced across folds.

Splitting by case instead leaks: two nodules of one patient, or two radiographs of one patient, share
anatomy and acquisition, and a model scored on a patient it trained on looks better than it is.
Splits a layout already fixes (MedMNIST's, a manifest's ``split`` column) are respected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmap.data.dataset import Case
from medmap.errors import DatasetError


@dataclass(frozen=True)
class Fold:
    index: int
    train: list[Case]
    val: list[Case]


def _strata(cases: list[Case]) -> np.ndarray:
    """Class label for classification; for segmentation, whether the case has a mask (one stratum)."""
    return np.array([c.label if c.label is not None else 0 for c in cases])


def kfold(cases: list[Case], k: int, seed: int = 0) -> list[Fold]:
    """Stratified K-fold grouped by patient over the cases that are not held-out test cases."""
    from sklearn.model_selection import StratifiedGroupKFold

    pool = [c for c in cases if c.split != "test"]
    patients = {c.patient_id for c in pool}
    if k < 2:
        raise DatasetError(f"--folds {k}: need at least 2 folds")
    if len(patients) < k:
        raise DatasetError(f"{k} folds need at least {k} patients; the dataset has {len(patients)}")
    strata = _strata(pool)
    counts = np.bincount(strata)
    smallest = int(counts[counts > 0].min()) if len(strata) else 0
    if smallest < k:
        raise DatasetError(f"{k} folds need at least {k} cases of every class; the rarest class has {smallest}")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    groups = [c.patient_id for c in pool]
    for i, (train, val) in enumerate(splitter.split(np.zeros(len(pool)), strata, groups)):
        folds.append(Fold(i, [pool[j] for j in train], [pool[j] for j in val]))
    return folds


def train_val_test(cases: list[Case], *, val: float = 0.2, test: float = 0.2, seed: int = 0) -> dict[str, list[Case]]:
    """Train/val/test by patient, stratified. Cases with a ``split`` from the layout keep it; the rest
    are assigned so that each share holds about ``val`` / ``test`` of the patients."""
    fixed = {name: [c for c in cases if c.split == name] for name in ("train", "val", "test")}
    out = {name: list(items) for name, items in fixed.items()}
    patient_split = {c.patient_id: name for name in ("test", "val", "train") for c in fixed[name]}
    free = []
    for c in cases:
        if c.split in ("train", "val", "test"):
            continue
        if c.patient_id in patient_split:  # a patient's other cases follow the split the layout gave it
            out[patient_split[c.patient_id]].append(c)
        else:
            free.append(c)
    if not free:
        return out
    n_patients = len({c.patient_id for c in free})
    remaining = free
    for name, share in (("test", test if not fixed["test"] else 0.0), ("val", val if not fixed["val"] else 0.0)):
        if share <= 0 or n_patients < 3:
            continue
        k = max(2, round(1 / share))
        counts = np.bincount(_strata(remaining))
        k = min(k, len({c.patient_id for c in remaining}), int(counts[counts > 0].min()))
        if k < 2:  # too few cases of some class to hold any out: everything stays in training
            continue
        first = kfold(remaining, k, seed)[0]
        out[name] += first.val
        remaining = first.train
    out["train"] += remaining
    return out
