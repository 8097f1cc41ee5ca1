"""A tiny segmentation run end to end: training through the shared trainer, whole-volume evaluation in the
images' own geometry, post-processing chosen on validation, the report; and bad masks named clearly."""

import json

import numpy as np
import pytest

from medmap.data.layouts import read_dataset, write_msd
from medmap.errors import DatasetError
from medmap.io.image import Image
from medmap.io.load import load
from medmap.training.config import TrainConfig
from medmap.training.run import train_run
from tests.builders import ball_case
from tests.helpers import medmap_cli


def test_segmentation_trains_evaluates_and_keeps_geometry(balls, balls_run):
    run, summary = balls_run
    history = json.loads((run / "history.json").read_text())
    assert history[-1]["loss"] < history[0]["loss"]
    ball = summary["metrics"]["classes"]["ball"]
    assert ball["dice"]["mean"] > 0.8, ball
    assert summary["metrics"]["lesions"]["core"]["lesions"] >= 1
    # the label maps lie exactly on their images' grids, the unlabelled test image included
    dataset = read_dataset(balls)
    predictions = run / f"predictions_{summary['split']}"
    written = sorted(p.name for p in predictions.iterdir())
    assert "ball_99.nii.gz" in written
    for case in dataset.cases:
        path = predictions / f"{case.case_id}.nii.gz"
        if path.exists():
            label, image = load(path), case.load_image()
            assert label.shape == image.shape
            np.testing.assert_allclose(label.spacing, image.spacing, atol=1e-6)
            np.testing.assert_allclose(label.origin, image.origin, atol=1e-4)
            np.testing.assert_allclose(label.direction, image.direction, atol=1e-6)
    postprocessing = json.loads((run / "postprocessing.json").read_text())
    assert postprocessing["log"][0].startswith("validation mean Dice")
    page = (run / "report.html").read_text()
    assert "surface Dice" in page and 'alt="overlays"' in page and "Lesion detection" in page
    rows = (run / f"cases_{summary['split']}.csv").read_text().splitlines()
    assert rows[0].startswith("case_id,class,dice") and len(rows) == 1 + 2 * summary["metrics"]["n"]


def test_evaluate_command_reproduces_the_run(balls, balls_run):
    run, summary = balls_run
    result = medmap_cli("evaluate", str(run), str(balls), "--split", summary["split"])
    assert result.returncode == 0, result.stderr
    dice = summary["metrics"]["classes"]["ball"]["dice"]["mean"]
    assert f"ball: Dice {dice:.3f}" in result.stdout
    again = json.loads((run / f"evaluation-{summary['split']}" / "metrics.json").read_text())
    assert again["metrics"]["classes"]["ball"]["dice"]["mean"] == pytest.approx(dice)


@pytest.mark.parametrize("fault", ["undeclared", "shape"])
def test_bad_masks_are_named(tmp_path, fault):
    training = [(f"ball_{i:02d}", *ball_case(i)) for i in range(4)]
    cid, image, label = training[2]
    if fault == "undeclared":
        arr = label.array.copy()
        arr[0, 0, 0] = 7
        label = label.with_array(arr)
    else:
        label = Image(label.array[:, :20], label.spacing, label.origin, label.direction)
    training[2] = (cid, image, label)
    root = write_msd(tmp_path / "bad", "Bad", {0: "background", 1: "ball", 2: "core"}, "MR", training, [])
    config = TrainConfig(epochs=1, workers=0, samples_per_epoch=2)  # the case may be a test case: found at evaluation
    small = ["patch_size=[8,16,16]", "network_width=4", "network_depth=3", "batch_size=2"]
    with pytest.raises(DatasetError, match=cid) as err:
        train_run(root, tmp_path / "run", overrides=small, config=config)
    assert ("[7]" in str(err.value)) if fault == "undeclared" else ("shape" in str(err.value))


def test_folds_and_a_patch_larger_than_the_volumes(balls, tmp_path):
    """Two folds, each model segmenting the volumes of its validation fold for the post-processing choice;
    the 16x32x32 patch exceeds the 14x28x28 volumes, which are padded, not refused."""
    overrides = ["patch_size=[16,32,32]", "batch_size=2", "network_width=4", "network_depth=3"]
    config = TrainConfig(epochs=1, samples_per_epoch=4, workers=0)
    summary = train_run(balls, tmp_path / "run", overrides=overrides, config=config, folds=2)
    assert summary["folds"] == 2
    assert sorted(p.name for p in (tmp_path / "run").glob("fold-*/checkpoints/best.pt")) == ["best.pt", "best.pt"]
    folds = [json.loads(p.read_text())["val"] for p in sorted((tmp_path / "run").glob("fold-*/split.json"))]
    assert not set(folds[0]) & set(folds[1])
    log = json.loads((tmp_path / "run" / "postprocessing.json").read_text())["log"]
    assert f"({len(folds[0]) + len(folds[1])} cases)" in log[0]  # every pool case, out of fold


def test_deep_supervision_loss_weighs_every_level():
    import torch

    from medmap.tasks.segmentation.loss import SegmentationLoss

    loss = SegmentationLoss("dice_ce")
    target = torch.randint(0, 3, (2, 8, 16, 16))
    levels = torch.randn(2, 3, 3, 8, 16, 16, requires_grad=True)  # [B, S, K, ...]
    value = loss(levels, target)
    value.backward()
    assert torch.isfinite(value) and all(levels.grad[:, s].abs().sum() > 0 for s in range(3))


@pytest.mark.parametrize("kind", ["dice_ce", "dice", "dice_focal", "tversky"])
def test_every_loss_a_plan_can_name_trains_and_is_zero_dice_where_perfect(kind):
    """Each loss the plan's ``loss`` field accepts runs on a batch (dice_focal hands its Dice a one-hot
    target: once a crash, found by medmap tune), and a perfect prediction scores better than a wrong one."""
    import torch

    from medmap.tasks.segmentation.loss import SegmentationLoss

    target = torch.randint(0, 3, (2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 4, 1, 2, 3).float() * 20 - 10
    wrong = perfect.roll(1, dims=1).requires_grad_()
    loss = SegmentationLoss(kind)
    bad = loss(wrong, target)
    bad.backward()
    assert torch.isfinite(bad) and wrong.grad.abs().sum() > 0
    assert float(loss(perfect, target)) < float(bad) - 0.5


def test_evaluate_in_bfloat16_measures_what_predict_would_do(balls, balls_run):
    run, summary = balls_run
    result = medmap_cli("evaluate", str(run), str(balls), "--split", summary["split"], "--precision", "bfloat16")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run / f"evaluation-{summary['split']}-bfloat16" / "metrics.json").read_text())
    assert metrics["precision"] == "bfloat16"
    dice = summary["metrics"]["classes"]["ball"]["dice"]["mean"]
    assert metrics["metrics"]["classes"]["ball"]["dice"]["mean"] == pytest.approx(dice, abs=0.02)


def test_the_per_case_csv_spells_its_metrics_as_metrics_json(balls_run):
    """Each metric column of ``cases_<split>.csv`` is a key of the case's classes in metrics.json, with its
    value (the surface Dice column was headed ``surface_dice`` over the key ``nsd``)."""
    import csv

    run, summary = balls_run
    cases = json.loads((run / "metrics.json").read_text())["cases"]
    with open(run / f"cases_{summary['split']}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        scored = cases[row["case_id"]]["classes"][row["class"]]
        for key in ("dice", "iou", "sensitivity", "precision", "hd95_mm", "msd_mm", "nsd"):
            assert float(row[key]) == pytest.approx(scored[key], abs=1e-4, nan_ok=True), key
