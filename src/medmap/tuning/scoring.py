"""How a search scores a candidate on the validation cases, per task: the per-case values it reads from
the candidate's validation evaluation, and the statistic over a set of cases that ranks it.

Segmentation: each case's mean foreground Dice (labels the case did not annotate left out), and their
mean. Classification: each case's label and class probabilities, and the AUC over the cases (macro
one-vs-rest when multi-class), the metric the task already selects its best epoch by. The leaderboard
bootstraps the cases and applies the statistic to each resample, so both kinds get the same paired
intervals.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmap import run_folder as runs
from medmap.run_folder import RunFolder

Values = dict[str, object]  # case id -> a float (segmentation) or [label index, p_0, ..., p_k] (classification)


def mean(values: list) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def auc(values: list) -> float:
    """AUC of the cases' probabilities against their labels (NaN when a class is missing from them)."""
    from sklearn.metrics import roc_auc_score

    from medmap.evaluation.metrics import binary_auc

    rows = np.asarray(values, dtype=float)
    if rows.ndim != 2 or len(rows) < 2:
        return float("nan")
    labels, probabilities = rows[:, 0].astype(int), rows[:, 1:]
    if len(np.unique(labels)) < probabilities.shape[1]:
        return float("nan")  # a resample without every class has no AUC
    if probabilities.shape[1] == 2:  # the Mann-Whitney form: bootstraps call this thousands of times
        return binary_auc(labels, probabilities[:, 1])
    probabilities = probabilities / np.maximum(probabilities.sum(axis=1, keepdims=True), 1e-12)
    return float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))


def dice_cases(evaluation: Path, split: str = "val") -> Values:
    """Each case's mean foreground Dice (classes it did not annotate left out) from an evaluation folder's
    ``metrics.json`` (the run folder itself for its test evaluation)."""
    cases = RunFolder(evaluation).read(runs.METRICS)["cases"]
    out: Values = {}
    for case_id, scored in cases.items():
        values = [c["dice"] for c in scored["classes"].values() if c["dice"] is not None and not math.isnan(c["dice"])]
        if values:
            out[case_id] = sum(values) / len(values)
    return out


def probability_cases(evaluation: Path, split: str = "val") -> Values:
    """Each case's label index and class probabilities from an evaluation's ``predictions_<split>.csv``."""
    with open(evaluation / f"predictions_{split}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    columns = [k for k in rows[0] if k.startswith("p_")]
    names = [k[2:] for k in columns]
    return {
        row["case_id"]: [float(names.index(row["label"])), *(float(row[k]) for k in columns)]
        for row in rows
        if row["label"] in names
    }


@dataclass(frozen=True)
class Scoring:
    metric: str  # as the leaderboard names it
    monitor: str  # the validation metric in a run's history (pruning reads it after each epoch)
    read: Callable[..., Values]  # (an evaluation folder, its split) -> per-case values
    statistic: Callable[[list], float]  # per-case values of a set of cases -> the score


SCORINGS = {
    "segmentation": Scoring("mean Dice", "dice", dice_cases, mean),
    "classification": Scoring("AUC", "auc", probability_cases, auc),
}


def scoring_for(task: str) -> Scoring:
    return SCORINGS[task]
