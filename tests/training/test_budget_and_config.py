"""Training settings: nonsense refused before any work, a time budget turned into epochs by timing real
steps, nnU-Net's SGD + poly schedule, per-step learning rates, and the data's own test set respected."""

import json

import numpy as np
import pytest

from medmap.cli import parse_duration
from medmap.data.layouts import read_dataset, write_msd
from medmap.errors import ConfigError
from medmap.tasks import task_for
from medmap.training.config import TrainConfig
from medmap.training.optimisation import learning_rate_schedule
from medmap.training.trainer import Trainer
from tests.builders import ball_case, blobs_plan, cached, split_of
from tests.helpers import medmap_cli


@pytest.mark.parametrize(
    "settings",
    [{"epochs": 0}, {"epochs": -1}, {"learning_rate": -5}, {"learning_rate": float("nan")}, {"optimizer": "lion"}],
)
def test_nonsense_settings_are_refused(settings):
    with pytest.raises(ConfigError):
        TrainConfig(**settings)


def test_cli_refuses_zero_epochs_in_one_line(tmp_path):
    result = medmap_cli("train", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "run"), "--epochs", "0")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: epochs 0: at least 1"]
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["train", "predict", "serve"])
def test_unavailable_device_is_one_line_everywhere(command, tmp_path, tiny_demo):
    """``--device cuda`` on a CPU-only install: one line and exit 1 before any work (was a 65-line traceback
    from predict, and a node that started and then failed every job)."""
    args = {
        "train": ["train", tiny_demo / "liver", "-o", tmp_path / "run"],
        "predict": ["predict", tmp_path / "no-bundle", tiny_demo / "liver_dicom", "-o", tmp_path / "out"],
        "serve": ["serve", "--data", tmp_path / "node", "--port", "0"],
    }[command]
    result = medmap_cli(*args, "--device", "cuda")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --device cuda: no CUDA GPU is available here")
    assert not any(tmp_path.iterdir())


def test_durations():
    assert parse_duration("15m") == 900 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    assert parse_duration("600") == 600
    for bad in ("", "0m", "-3m", "fast", "3 days"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


@pytest.mark.parametrize("schedule", ["cosine", "poly"])
def test_schedule_warms_up_then_decays_to_zero_per_step(schedule):
    config = TrainConfig(epochs=10, warmup_epochs=2, schedule=schedule)
    factor = learning_rate_schedule(config, steps_per_epoch=20, epochs=10)
    values = [factor(step) for step in range(200)]
    warmup = int(0.05 * 200)  # capped at 5 % of the steps although 2 epochs were asked for
    assert values[0] < values[warmup - 1] < 1.0 and values[warmup] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[warmup:], values[warmup + 1 :], strict=False))
    assert values[-1] < 0.02


def test_budget_is_planned_from_timed_steps_and_recorded(blobs, tmp_path):
    plan = blobs_plan()
    config = TrainConfig(epochs=1000, workers=0, budget_seconds=6, optimizer="sgd", schedule="poly", learning_rate=0.01)
    result = Trainer(task_for(plan), plan, config, tmp_path / "run").fit(
        cached(blobs, plan, tmp_path, "train"), cached(blobs, plan, tmp_path, "val")
    )
    budget = json.loads((tmp_path / "run" / "budget.json").read_text())
    # what the budget bought is recorded and consistent with what was run (the figures themselves are timings)
    assert budget["corrected_after_epoch_1"] and budget["budget_seconds"] == 6
    assert budget["samples"] == budget["epochs"] * budget["steps_per_epoch"] * plan.batch_size
    assert result["epochs_run"] <= budget["epochs"] != config.epochs  # the budget, not --epochs, set the count
    history = result["history"]
    assert np.isfinite([h["loss"] for h in history]).all()


def test_a_dataset_with_its_own_test_set_keeps_every_other_labelled_case_for_training(tmp_path):
    labels = {0: "background", 1: "ball", 2: "core"}
    training = [(f"ball_{i:02d}", *ball_case(i)) for i in range(10)]
    unlabelled = write_msd(tmp_path / "a", "A", labels, "MR", training, [("ball_90", ball_case(90)[0])])
    splits = split_of(read_dataset(unlabelled))
    assert not splits["test"] and [c.case_id for c in splits["unlabelled"]] == ["ball_90"]
    assert len(splits["train"]) + len(splits["val"]) == 10
    labelled = write_msd(tmp_path / "b", "B", labels, "MR", training, [("ball_90", *ball_case(90))])
    dataset = read_dataset(labelled)
    assert dataset.cases[-1].mask is not None  # labelsTs/ read
    splits = split_of(dataset)
    assert [c.case_id for c in splits["test"]] == ["ball_90"] and not splits["unlabelled"]
    assert len(splits["train"]) + len(splits["val"]) == 10
    without = write_msd(tmp_path / "c", "C", labels, "MR", training, [])
    splits = split_of(read_dataset(without))
    assert splits["test"] and len(splits["train"]) + len(splits["val"]) + len(splits["test"]) == 10
