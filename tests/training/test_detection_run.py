"""Detection end to end on small generated chest CTs: a lesion table read per image, a short run, the
evaluation scored as LUNA16 scores (FROC, CPM, the blob baseline beside it), and `medmap predict` giving
the findings the evaluation scored."""

import csv
import json

import numpy as np
import pytest

from medmap.data.phantoms import chest_ct
from medmap.errors import DatasetError
from medmap.inference.bundle import create_bundle
from medmap.inference.predictor import predict
from medmap.io.dicom.writer import SeriesInfo, write_series
from medmap.training.run import train_run
from medmap.training.trainer import TrainConfig

pytestmark = pytest.mark.xdist_group("detection")  # its module fixture trains once, on one worker

OVERRIDES = ["patch_size=[16,32,32]", "network_width=8", "network_depth=3", "batch_size=2"]


def write_table(root, patients=6, outside=False):
    rows = []
    for p in range(patients):
        case = chest_ct((24, 96, 96), (3.0, 2.0, 2.0), seed=p, n_nodules=2)
        write_series(case.image, root / "ct" / f"P{p}", info=SeriesInfo(patient_id=f"P{p}", body_part="CHEST"))
        for n in case.nodules:
            x, y, z = n.position
            rows.append(
                {
                    "image": f"ct/P{p}",
                    "x": x + (500 if outside else 0),
                    "y": y,
                    "z": z,
                    "diameter_mm": n.diameter_mm,
                    "patient_id": f"P{p}",
                }
            )
    with open(root / "nodules.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "nodules.csv"


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection")
    table = write_table(root)
    config = TrainConfig(epochs=1, workers=0, samples_per_epoch=8)
    summary = train_run(table, root / "run", task="detection", overrides=OVERRIDES, config=config)
    return table, root / "run", summary


def test_a_detection_run_is_scored_as_luna16_scores_next_to_the_blob_baseline(detection_run):
    _, run, summary = detection_run
    m = summary["metrics"]
    assert m["rates"] == [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0] and len(m["sensitivity_at"]) == 7
    assert m["nodules"] == 2 * m["n"] and 0.0 <= m["cpm"] <= 1.0
    assert m["baseline"]["name"].startswith("blob detector") and "delta_ci" in m["comparison"]
    threshold = json.loads((run / "threshold.json").read_text())
    assert threshold["chosen_on"] == "validation" and threshold["rule"] == "at most 1 false positive per scan"
    plan = json.loads((run / "plan.json").read_text())
    assert plan["task"] == "detection" and len(set(plan["target_spacing"])) == 1  # isotropic, from the findings
    written = json.loads(next((run / f"predictions_{summary['split']}").glob("*.json")).read_text())
    assert written["coordinates"] == "LPS mm"
    assert 'alt="froc"' in (run / "report.html").read_text()  # the FROC curves, model and baseline


def test_predict_gives_the_findings_the_evaluation_scored(detection_run, tmp_path):
    table, run, summary = detection_run
    bundle = create_bundle(run, tmp_path / "bundle")
    evaluated = sorted((run / f"predictions_{summary['split']}").glob("*.json"))[0]
    scored = json.loads(evaluated.read_text())
    (result,) = predict(bundle, table.parent / "ct" / evaluated.stem, tmp_path / "out", precision="float32")
    assert result.ok, result.error
    answered = json.loads((tmp_path / "out" / result.case_id / "result.json").read_text())
    expected = [f for f in scored["findings"] if f["score"] >= scored["threshold"]]
    assert len(answered["findings"]) == len(expected)
    for mine, theirs in zip(answered["findings"], expected, strict=True):
        assert np.allclose(mine["position_lps_mm"], theirs["position_lps_mm"], atol=0.01)


def test_a_finding_outside_its_image_names_the_case(tmp_path):
    table = write_table(tmp_path, patients=4, outside=True)
    with pytest.raises(DatasetError, match=r"case P0: finding at .* lies outside its image"):
        train_run(
            table, tmp_path / "run", task="detection", overrides=OVERRIDES, config=TrainConfig(epochs=1, workers=0)
        )
