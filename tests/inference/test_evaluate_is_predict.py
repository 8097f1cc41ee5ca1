"""What a run's evaluation scores is what `medmap predict` answers: both go through
`medmap.inference.models.Models`, so on the same case the run's evaluation output and the bundle's
prediction are the same (label maps voxel for voxel; class probabilities to the printed digit)."""

import csv
import json

import numpy as np
import pytest

from medmap.data.layouts import read_dataset
from medmap.inference.bundle import create_bundle
from medmap.inference.predictor import predict
from medmap.io.load import load
from medmap.training.config import TrainConfig
from medmap.training.run import train_run
from tests.builders import lesion_manifest

pytestmark = pytest.mark.xdist_group("evaluate_is_predict")  # its fixtures train once, on one worker


def test_segmentation_evaluation_writes_the_label_maps_predict_writes(balls_run, balls, tmp_path):
    run, summary = balls_run
    bundle = create_bundle(run, tmp_path / "bundle")
    evaluated = sorted((run / f"predictions_{summary['split']}").glob("*.nii.gz"))
    by_id = {c.case_id: c for c in read_dataset(balls).cases}
    compared = 0
    for written in evaluated[:2]:  # a scored validation case and the unlabelled test image
        case = by_id[written.name.removesuffix(".nii.gz")]
        results = predict(bundle, case.images[0], tmp_path / "out" / case.case_id, precision="float32")
        assert results[0].ok, results[0].error
        predicted = load(results[0].outputs["labels"])
        expected = load(written)
        assert predicted.array.any()
        assert np.array_equal(predicted.array, expected.array)
        assert np.allclose(predicted.origin, expected.origin) and np.allclose(predicted.spacing, expected.spacing)
        compared += 1
    assert compared == 2


@pytest.fixture(scope="session")  # session: built once even when xdist interleaves modules
def lesion_run(tmp_path_factory):
    """A lesion classifier trained for one short epoch on 12 lesions of one CT series (12 patients)."""
    root = tmp_path_factory.mktemp("lesions")
    rows = [("ct", float(offset), ("benign", "malignant")[i % 2]) for i, offset in enumerate(np.linspace(-6, 6, 12))]
    manifest = lesion_manifest(root / "data", rows)
    run = root / "run"
    config = TrainConfig(epochs=1, workers=0, samples_per_epoch=16)
    train_run(manifest, run, overrides=["network=smallcnn", "network_width=8"], config=config)
    return manifest, run


def test_classification_evaluation_gives_the_probabilities_predict_gives(lesion_run, tmp_path):
    manifest, run = lesion_run
    with open(run / "predictions_test.csv", newline="") as fh:
        evaluated = list(csv.DictReader(fh))
    assert evaluated
    cases = {c.case_id: c for c in read_dataset(manifest).cases}
    request = tmp_path / "lesions.csv"
    with open(request, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "x", "y", "z"])
        for row in evaluated:
            case = cases[row["case_id"]]
            writer.writerow([str(case.images[0]), *case.lesion.position])
    bundle = create_bundle(run, tmp_path / "bundle")
    # the decision threshold is the run's; intended use is not what this test is about
    (result,) = predict(bundle, request, tmp_path / "out", precision="float32", ignore_intended_use=True)
    assert result.ok, result.error
    findings = json.loads((tmp_path / "out" / result.case_id / "result.json").read_text())["findings"]
    assert len(findings) == len(evaluated)
    for row, finding in zip(evaluated, findings, strict=True):
        for name, p in finding["probabilities"].items():
            assert abs(p - float(row[f"p_{name}"])) <= 2e-6, (row["case_id"], name)
        assert finding["decision"] in ("benign", "malignant")
