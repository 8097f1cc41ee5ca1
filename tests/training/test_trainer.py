"""A tiny classification run trains end to end, its loss falls, and resume reproduces it exactly."""

import json

import pytest
import torch

from medmap.data.dataset import Case
from medmap.tasks import task_for
from medmap.training.config import TrainConfig
from medmap.training.run import evaluate_run, train_run
from medmap.training.trainer import Trainer
from tests.builders import blobs_plan, cached, lesion_manifest


def test_loss_falls_and_validation_auc_rises(blobs, tmp_path):
    plan = blobs_plan()
    config = TrainConfig(epochs=6, learning_rate=3e-3, warmup_epochs=1, workers=0, samples_per_epoch=64)
    result = Trainer(task_for(plan), plan, config, tmp_path / "run").fit(
        cached(blobs, plan, tmp_path, "train"), cached(blobs, plan, tmp_path, "val")
    )
    losses = [h["loss"] for h in result["history"]]
    assert losses[-1] < losses[0] * 0.7
    assert result["best"] > 0.9
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_a_budgeted_run_with_a_minimum_of_epochs_shortens_them_instead(blobs, tmp_path):
    """A search's candidate: a budget too short for the plan's epochs still gives three validated epochs."""
    from medmap.data.loader import PatchDataset

    plan = blobs_plan()
    train, val = cached(blobs, plan, tmp_path, "train"), cached(blobs, plan, tmp_path, "val")

    def planned(minimum: int, budget: float) -> dict:
        trainer = Trainer(task_for(plan), plan, TrainConfig(workers=0, budget_seconds=budget, min_epochs=minimum),
                          tmp_path / f"min{minimum}")  # fmt: skip
        model, loss = trainer.task.build_network(plan, None), trainer.task.build_loss(plan, train, 0.0)
        return trainer.plan_epochs(model, loss, train, PatchDataset(val, plan, trainer.task, train=False))

    single, three = planned(1, 0.01), planned(3, 0.01)  # less than the timing itself takes
    assert single["epochs"] == 1 and three["epochs"] == 3
    assert three["steps_per_epoch"] < three["planned_steps_per_epoch"]  # epochs shortened, not the budget exceeded


def test_resume_reproduces_an_uninterrupted_run(blobs, tmp_path):
    plan = blobs_plan()
    train, val = cached(blobs, plan, tmp_path, "train"), cached(blobs, plan, tmp_path, "val")
    config = TrainConfig(epochs=4, workers=0, samples_per_epoch=32, patience=100)
    Trainer(task_for(plan), plan, config, tmp_path / "straight").fit(train, val)
    interrupted = Trainer(task_for(plan), plan, config, tmp_path / "resumed")
    interrupted.fit(train, val, stop_after=lambda history: len(history) == 2)
    assert len(json.loads((tmp_path / "resumed" / "history.json").read_text())) == 2  # interrupted after 2
    Trainer(task_for(plan), plan, config, tmp_path / "resumed").fit(train, val, resume=True)
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    same_seed = tmp_path / "again"
    Trainer(task_for(plan), plan, config, same_seed).fit(train, val)
    c = torch.load(same_seed / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], c[k]) for k in a)  # --seed makes a CPU run reproducible


def test_train_run_writes_report_and_evaluate_reads_it(blobs, tmp_path):
    data = blobs.root
    summary = train_run(
        data,
        tmp_path / "run",
        overrides=["network=smallcnn", "network_width=8"],
        config=TrainConfig(epochs=3, workers=0, samples_per_epoch=64),
    )
    assert summary["split"] == "test" and summary["metrics"]["n"] == 15
    run = tmp_path / "run"
    for name in ("plan.json", "split.json", "threshold.json", "predictions_test.csv", "metrics.json", "report.html"):
        assert (run / name).is_file(), name
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and "Youden" in html
    assert 'alt="gradcam"' in html and 'alt="roc"' in html and 'alt="training"' in html
    assert json.loads((run / "threshold.json").read_text())["chosen_on"] == "validation"
    again = evaluate_run(run, data, split="val")
    assert again["split"] == "val" and (run / "evaluation-val" / "report.html").is_file()


def test_missing_labels_and_existing_run_are_refused(blobs, tmp_path):
    from medmap.errors import DatasetError, OutputError

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("keep me")
    with pytest.raises(OutputError, match="--resume"):
        train_run(blobs.root, tmp_path / "run")
    assert (tmp_path / "run" / "x").read_text() == "keep me"
    unlabeled = Case("u1", [blobs.cases[0].images[0]], patient_id="u1")
    with pytest.raises(DatasetError, match="case u1 has no label"):
        task_for(blobs.task).check_targets([unlabeled], "train")


def test_pretrained_start_and_frozen_encoder(blobs, tmp_path):
    plan = blobs_plan()
    train, val = cached(blobs, plan, tmp_path, "train"), cached(blobs, plan, tmp_path, "val")
    Trainer(task_for(plan), plan, TrainConfig(epochs=2, workers=0, samples_per_epoch=32), tmp_path / "first").fit(
        train, val
    )
    weights = tmp_path / "first" / "checkpoints" / "best.pt"
    start = torch.load(weights)
    config = TrainConfig(epochs=1, workers=0, samples_per_epoch=32, pretrained=str(weights), freeze_encoder_epochs=1)
    Trainer(task_for(plan), plan, config, tmp_path / "second").fit(train, val)
    after = torch.load(tmp_path / "second" / "checkpoints" / "last.pt", weights_only=False)["model"]
    convs = [k for k in start if k.startswith("features.") and k.endswith("weight")]
    assert convs and all(torch.equal(start[k], after[k]) for k in convs)  # frozen: the encoder did not move
    assert not torch.equal(start["head.2.weight"], after["head.2.weight"])  # the head trained
    report = json.loads((tmp_path / "second" / "pretrained.json").read_text())
    assert len(report["loaded"]) == len(start) and not report["skipped"]


def test_folds_train_k_models_and_ensemble_them(blobs, tmp_path):
    summary = train_run(
        blobs.root,
        tmp_path / "run",
        overrides=["network_width=8"],
        folds=3,
        config=TrainConfig(epochs=2, workers=0, samples_per_epoch=32),
    )
    run = tmp_path / "run"
    assert summary["folds"] == 3 and len(list(run.glob("fold-*/checkpoints/best.pt"))) == 3
    threshold = json.loads((run / "threshold.json").read_text())
    assert threshold["chosen_on"] == "out-of-fold validation"
    oof = (run / "predictions_out_of_fold.csv").read_text().splitlines()
    assert len(oof) == 1 + 65  # every train+val case predicted once, by the model that did not train on it
    assert summary["metrics"]["n"] == 15


@pytest.mark.parametrize(
    ("rows", "sidecar", "message"),
    [
        (
            [("ct", 0, "benign"), ("ct", 0, "malignant"), ("ct", 0, "weird")] * 2,
            {"0": "benign", "1": "malignant"},
            r"line 4 \(case nodule-2\): label 'weird' is not declared",
        ),
        ([("ct", 0, "benign"), ("ct", 500, "malignant")] * 3, None, r"case nodule-\d: lesion at .* lies outside"),
        ([("ct", 0, "benign"), ("missing_series", 0, "malignant")] * 3, None, r"case nodule-\d.*missing_series"),
    ],
    ids=["unknown-label", "outside", "missing-series"],
)
def test_bad_lesion_input_names_the_case(tmp_path, rows, sidecar, message):
    from medmap.errors import DatasetError

    manifest = lesion_manifest(tmp_path, rows, sidecar)
    with pytest.raises(DatasetError, match=message):
        train_run(manifest, tmp_path / "run", config=TrainConfig(epochs=1, workers=0))
