"""The model card says what the run measured, and says it in words where the evidence is weak: a small test
set, a margin over the baseline the data do not support, uncalibrated probabilities, missed lesions,
false positives, synthetic training data."""

import json
import shutil

from medmap.inference.model_card import model_card
from medmap.plan import Plan


def classification_run(tmp_path, balls_run, *, n=12, supported=False, synthetic=True):
    run = tmp_path / "run"
    run.mkdir()
    plan = Plan.load(balls_run[0] / "plan.json").model_copy(
        update={"task": "classification", "labels": {0: "benign", 1: "malignant"}, "lesion_level": True}
    )
    plan.save(run / "plan.json")
    metrics = {
        "n": n,
        "positives": 4,
        "auc": 0.81,
        "auc_ci": [0.55, 0.97],
        "threshold": 0.4,
        "ece": 0.17,
        "sensitivity": 0.75,
        "sensitivity_ci": [0.3, 0.95],
        "specificity": 0.625,
        "specificity_ci": [0.3, 0.86],
        "fn": 1,
        "fp": 3,
        "sample_warning": "only 12 test cases (4 positive): ... indicative",
    }
    baseline = {
        "name": "size only",
        "auc": 0.77,
        "auc_ci": [0.5, 0.95],
        "comparison": {
            "delta_auc": 0.04,
            "delta_ci": [-0.1, 0.2] if not supported else [0.02, 0.2],
            "supported": supported,
        },
    }
    (run / "metrics.json").write_text(json.dumps({"split": "test", "metrics": metrics, "baseline": baseline}))
    record = {
        "data": {
            "path": "/d",
            "digest": "abc",
            "cases": {"train": 30, "val": 8, "test": 12},
            "synthetic": synthetic,
            "classes": {"test": {"benign": 8, "malignant": 4}},
        }
    }
    (run / "provenance.json").write_text(json.dumps(record))
    shutil.copy(balls_run[0] / "history.json", run / "history.json")
    shutil.copy(balls_run[0] / "config.json", run / "config.json")
    return run, plan


def card_of(run, plan):
    return model_card(run, plan, [], {"weights/model-0.pt": "00"}, "x-classification-000", None, None, 1)


def test_weak_evidence_is_said_in_words(tmp_path, balls_run):
    card = card_of(*classification_run(tmp_path, balls_run))
    assert "Not validated on real patients" in card
    assert "**the model does not beat this baseline**" in card
    assert "does not beat size only on its own test set" in card
    assert "not calibrated (ECE 0.170)" in card
    assert "**Evidence:** only 12 test cases" in card
    assert "| sensitivity | 0.750 | 0.300-0.950 |" in card
    assert "missed 1 of 4 positives and flagged 3 of 8 negatives" in card
    assert "it does not find lesions" in card
    assert "- test: 8 benign, 4 malignant" in card


def test_supported_margin_on_real_data_says_so(tmp_path, balls_run):
    card = card_of(*classification_run(tmp_path, balls_run, supported=True, synthetic=False))
    assert "the margin is supported by the data" in card and "does not beat" not in card
    assert "Not validated on real patients" not in card


def test_segmentation_card_names_weak_classes_and_false_positives(balls_run, tmp_path):
    run = tmp_path / "seg"
    shutil.copytree(balls_run[0], run, ignore=shutil.ignore_patterns("cache", "checkpoints", "predictions*"))
    stored = json.loads((run / "metrics.json").read_text())
    stored["metrics"]["classes"]["core"]["dice"]["mean"] = 0.41
    stored["metrics"]["lesions"] = {
        "core": {"lesions": 5, "detected": 3, "recall": 0.6, "recall_ci": [0.23, 0.88], "false_positives_per_case": 2.5}
    }
    (run / "metrics.json").write_text(json.dumps(stored))
    card = card_of(run, Plan.load(run / "plan.json"))
    assert "core: mean Dice 0.41 is weak" in card
    assert "core: 2.5 false-positive components per case" in card and "missed 2 of 5 lesions" in card
    assert "## Provenance" in card and "seed 0" in card
