"""2-D data in MSD / nnU-Net layout ((X, Y, 1) NIfTI) trains and evaluates with its report; a failing figure
after training is one warning, never the loss of the metrics and label maps."""

import json

import nibabel as nib
import numpy as np
import pytest

from medmap.data.layouts import write_msd
from medmap.errors import MedmapWarning
from medmap.io.image import Image
from medmap.training.config import TrainConfig
from medmap.training.run import train_run
from tests.builders import ball_case


def disc_case(seed: int):
    image, label = ball_case(seed, shape=(1, 40, 36), spacing=(1.0, 1.0, 1.0))
    flat = Image(image.array, image.spacing, image.origin, np.eye(3))  # a plain 2-D picture's geometry
    return flat, flat.with_array(label.array)


@pytest.fixture(scope="session")  # session: built once even when xdist interleaves modules
def discs(tmp_path_factory):
    root = tmp_path_factory.mktemp("discs")
    training = [(f"disc_{i:02d}", *disc_case(i)) for i in range(10)]
    return write_msd(root / "discs", "Discs", {0: "background", 1: "disc", 2: "core"}, "MR", training)


def train(discs, out, **kwargs):
    config = TrainConfig(epochs=2, samples_per_epoch=16, workers=0, learning_rate=3e-3, warmup_epochs=1)
    overrides = ["batch_size=4", "network_width=8", "network_depth=3"]
    return train_run(discs, out, task="segmentation", overrides=overrides, config=config, **kwargs)


def test_msd_2d_images_are_stored_as_x_y_1(discs):
    shape = nib.load(next((discs / "imagesTr").iterdir())).shape
    assert shape == (36, 40, 1)


def test_two_d_msd_trains_and_evaluates_with_its_report(discs, tmp_path):
    train(discs, tmp_path / "run")
    evaluation = next(p for p in tmp_path.joinpath("run").rglob("metrics.json"))
    metrics = json.loads(evaluation.read_text())
    assert "disc" in json.dumps(metrics["metrics"])
    report = (evaluation.parent / "report.html").read_text()
    assert report.count("<img") >= 3  # Dice, HD95 and the overlays (one plane for a 2-D image)
    assert list(evaluation.parent.rglob("*.nii.gz"))  # the label maps


def test_a_failing_figure_is_a_warning_and_the_metrics_are_written(discs, tmp_path, monkeypatch):
    import medmap.tasks.segmentation.evaluate as evaluation

    def broken(*args, **kwargs):
        raise TypeError("Input z must be at least a (2, 2) shaped array")

    monkeypatch.setattr(evaluation, "overlay_panel", broken)
    with pytest.warns(MedmapWarning, match="the overlay figure failed"):
        train(discs, tmp_path / "run")
    metrics = json.loads(next(tmp_path.joinpath("run").rglob("metrics.json")).read_text())
    assert metrics["cases"] and all(np.isfinite(m["classes"]["disc"]["dice"]) for m in metrics["cases"].values())
    assert list(tmp_path.joinpath("run").rglob("*.nii.gz"))  # and the label maps
