"""A tiny segmentation run end to end: training through the shared trainer, whole-volume evaluation in the
images' own geometry, post-processing chosen on validation, the report; and bad masks named clearly."""

import json

import numpy as np
import pytest

from medmap.data.layouts import read_dataset, write_msd
from medmap.errors import DatasetError
from medmap.io.image import Image
from medmap.io.load import load
from medmap.training.run import train_run
from medmap.training.trainer import TrainConfig
from tests.builders import rotation
from tests.test_cli import medmap_cli


def ball_case(seed: int, shape=(14, 28, 28), spacing=(3.0, 1.5, 1.5)):
    """An MR-like volume: a bright ball (label 1) holding a darker core (label 2), with noise."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    centre = [n * s / 2 + rng.uniform(-4, 4) for n, s in zip(shape, spacing, strict=True)]
    r = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
    label = np.zeros(shape, np.uint8)
    label[r < rng.uniform(9, 13)] = 1
    label[r < 4.5] = 2
    intensity = np.choose(label, [10.0, 100.0, 55.0]) + rng.normal(0, 5, shape)
    direction = rotation(0.1 * seed, 0.0, 0.05)
    origin = (seed * 3.0, -20.0, 5.0)
    image = Image(intensity.astype(np.float32), spacing, origin, direction)
    return image, image.with_array(label)


@pytest.fixture(scope="module")
def balls(tmp_path_factory):
    root = tmp_path_factory.mktemp("balls")
    training = [(f"ball_{i:02d}", *ball_case(i)) for i in range(8)]
    test = [("ball_99", ball_case(99)[0])]
    return write_msd(root / "balls", "Balls", {0: "background", 1: "ball", 2: "core"}, "MR", training, test)


@pytest.fixture(scope="module")
def trained(balls, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    overrides = ["patch_size=[8,16,16]", "batch_size=4", "network_width=8", "network_depth=3"]
    config = TrainConfig(epochs=12, samples_per_epoch=48, workers=0, learning_rate=3e-3, warmup_epochs=1)
    summary = train_run(balls, run, task="segmentation", overrides=overrides, config=config)
    return run, summary


def test_segmentation_trains_evaluates_and_keeps_geometry(balls, trained):
    run, summary = trained
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


def test_evaluate_command_reproduces_the_run(balls, trained):
    run, summary = trained
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
    config = TrainConfig(epochs=1, workers=0)
    with pytest.raises(DatasetError, match=cid) as err:
        train_run(root, tmp_path / "run", overrides=["patch_size=[8,16,16]"], config=config)
    assert ("[7]" in str(err.value)) if fault == "undeclared" else ("shape" in str(err.value))
