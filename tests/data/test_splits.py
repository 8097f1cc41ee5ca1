"""Splits never put one patient on both sides; folds keep the classes balanced."""

import numpy as np
import pytest

from medmap.data.dataset import Case
from medmap.data.splits import kfold, train_val_test
from medmap.errors import DatasetError


def cases(n_patients=30, per_patient=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for p in range(n_patients):
        label = int(rng.random() < 0.3)  # imbalanced classes
        for k in range(int(rng.integers(1, per_patient + 1))):
            out.append(Case(f"p{p}-{k}", [f"img{p}.nii.gz"], patient_id=f"P{p}", label=label))
    return out


def patients(items):
    return {c.patient_id for c in items}


def test_kfold_is_patient_disjoint_and_stratified():
    data = cases()
    folds = kfold(data, 5, seed=1)
    assert len(folds) == 5
    seen = set()
    overall = np.mean([c.label for c in data])
    for fold in folds:
        assert not patients(fold.train) & patients(fold.val)
        assert len(fold.train) + len(fold.val) == len(data)
        assert abs(np.mean([c.label for c in fold.val]) - overall) < 0.2
        seen |= {c.case_id for c in fold.val}
    assert seen == {c.case_id for c in data}  # every case validated exactly once overall


def test_train_val_test_by_patient_and_fixed_splits_respected():
    data = cases()
    data[0].split = "test"
    parts = train_val_test(data, val=0.2, test=0.2, seed=0)
    assert sum(len(v) for v in parts.values()) == len(data)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not patients(parts[a]) & patients(parts[b]), (a, b)
    assert data[0] in parts["test"]
    assert all(c in parts["test"] for c in data if c.patient_id == data[0].patient_id)  # the patient follows
    assert 0.1 < len(patients(parts["val"])) / 30 < 0.35


def test_too_few_patients():
    with pytest.raises(DatasetError, match="at least 5 patients"):
        kfold(cases(n_patients=3), 5)
