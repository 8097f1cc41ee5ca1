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
from medmap.training.config import TrainConfig
from medmap.training.run import train_run

pytestmark = pytest.mark.xdist_group("detection")  # its fixtures train once, on one worker

OVERRIDES = ["patch_size=[16,32,32]", "network_width=8", "network_depth=3", "batch_size=2"]


def write_table(root, patients=6, outside=False):
    """Chest CT series ``ct/P<n>`` and ``nodules.csv`` (two nodules each, one malignant, one benign)."""
    rows = []
    for p in range(patients):
        case = chest_ct((24, 96, 96), (3.0, 2.0, 2.0), seed=p, n_nodules=2)
        write_series(case.image, root / "ct" / f"P{p}", info=SeriesInfo(patient_id=f"P{p}", body_part="CHEST"))
        for i, n in enumerate(case.nodules):
            x, y, z = n.position
            rows.append(
                {
                    "image": f"ct/P{p}",
                    "x": x + (500 if outside else 0),
                    "y": y,
                    "z": z,
                    "diameter_mm": n.diameter_mm,
                    "label": ("benign", "malignant")[i % 2],
                    "patient_id": f"P{p}",
                }
            )
    with open(root / "nodules.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "nodules.csv"


@pytest.fixture(scope="session")  # session: built once even when xdist interleaves modules
def detection_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection")
    table = write_table(root)
    config = TrainConfig(epochs=6, workers=0, samples_per_epoch=64)  # 192 steps: enough to learn (below)
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
    assert 0.5 <= threshold["diameter_scale"] <= 2.0 and "validation nodules found" in threshold["diameter_scale_from"]
    assert m["diameter"]["scale_from_validation"] == threshold["diameter_scale"]
    plan = json.loads((run / "plan.json").read_text())
    assert plan["task"] == "detection" and len(set(plan["target_spacing"])) == 1  # isotropic, from the findings
    written = json.loads(next((run / f"predictions_{summary['split']}").glob("*.json")).read_text())
    assert written["coordinates"] == "LPS mm"
    report = (run / "report.html").read_text()
    assert 'alt="froc"' in report  # the FROC curves, model and baseline
    assert 0.0 <= m["ap_iou_0.1"] <= 1.0 and 0.0 <= m["baseline"]["ap_iou_0.1"] <= 1.0
    sizes = m["at_threshold"]["by_size"]
    assert sum(d["nodules"] for d in sizes.values()) == m["nodules"]
    found = round(m["at_threshold"]["sensitivity"] * m["nodules"])
    assert sum(d["found"] for d in sizes.values()) == found
    if found < m["nodules"]:  # a tiny run misses some: each shown on its slice
        assert 'alt="missed"' in report
    from medmap.evaluation.report import combine_reports

    combined = combine_reports([run / "report.html"], run.parent / "combined.html").read_text()
    assert f"CPM {m['cpm']:.3f}" in combined and "AUC nan" not in combined  # a detector's row, not a classifier's


def test_a_tiny_run_learns_its_sensitivity_rises(detection_run):
    """The trained weights find nodules on the six scans that the same network untrained does not find."""
    import torch

    from medmap.data.layouts import read_dataset
    from medmap.evaluation.detection import Nodule, Scan, froc
    from medmap.inference.models import Models
    from medmap.plan import Plan
    from medmap.tasks import task_for
    from medmap.tasks.detection.findings import findings

    table, run, _ = detection_run
    plan = Plan.load(run / "plan.json")
    torch.manual_seed(0)
    untrained = Models(plan, [task_for("detection").build_network(plan, None).eval()])
    trained = Models.load(plan, [run / "checkpoints" / "best.pt"])
    cases = read_dataset(table, "detection").cases

    def curve(models):
        return froc(
            [
                Scan(c.case_id, [Nodule(tuple(n.position), n.diameter_mm) for n in c.lesions], found)
                for c in cases
                for found in [findings(models.class_probability(c.load_image(), 1))]
            ]
        )

    before, after = curve(untrained), curve(trained)
    assert before["cpm"] < 0.05  # measured 0.0: an untrained map finds nothing where the nodules are
    assert after["cpm"] > before["cpm"] + 0.15, (before["cpm"], after["cpm"])  # measured 0.31 (192 steps)
    assert after["sensitivity_at"][-1] > before["sensitivity_at"][-1]  # at 8 false positives per scan


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
        assert mine["diameter_mm"] == pytest.approx(theirs["diameter_mm"], abs=0.01)  # both with the run's factor


def test_a_finding_outside_its_image_names_the_case(tmp_path):
    table = write_table(tmp_path, patients=4, outside=True)
    with pytest.raises(DatasetError, match=r"case P0: finding at .* lies outside its image"):
        train_run(
            table, tmp_path / "run", task="detection", overrides=OVERRIDES, config=TrainConfig(epochs=1, workers=0)
        )


@pytest.fixture(scope="session")  # session: built once even when xdist interleaves modules
def nodule_classifier(detection_run, tmp_path_factory):
    """A lesion classifier bundle for the same table (untrained weights: find-then-classify's plumbing is
    under test, not its accuracy)."""
    from tests.builders import untrained_bundle

    table, _, _ = detection_run
    overrides = ["network=smallcnn", "network_width=8"]
    return untrained_bundle(table, "classification", overrides, tmp_path_factory.mktemp("classifier"))


def truth_spheres(image, nodules, value=1.0):
    """A detector's probability map that is exactly the truth: each nodule a sphere of ``value``."""
    from medmap.io.image import Image

    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij"), -1).reshape(-1, 3)
    world = image.index_to_world(grid.astype(float))
    prob = np.zeros(len(grid), np.float32)
    for n in nodules:
        inside = np.linalg.norm(world - np.asarray(n.position), axis=1) <= n.diameter_mm / 2
        prob[inside] = value
    return Image(prob.reshape(image.shape), image.spacing, image.origin, image.direction, image.meta)


def test_find_then_classify_lists_each_nodule_with_its_class_and_one_sr_holds_them(
    detection_run, nodule_classifier, tmp_path
):
    """A detector that finds exactly the truth (its map replaced) feeds the classifier: every nodule comes
    back with its position, diameter, score and class, and the DICOM SR carries one group per nodule."""
    import subprocess

    import highdicom as hd

    from medmap.data.layouts import read_dataset
    from medmap.inference.bundle import load_bundle
    from medmap.inference.predictor import InputCase, Predictor
    from tests.helpers import dciodvfy_errors, require

    table, run, _ = detection_run
    bundle = create_bundle(run, tmp_path / "bundle")
    case = read_dataset(table, "detection").cases[0]
    predictor = Predictor(load_bundle(bundle), precision="float32", classifier=load_bundle(nodule_classifier))
    predictor.models.class_probability = lambda image, k: truth_spheres(image, case.lesions)
    result = predictor.run_case(InputCase("P0", case.images[0]), tmp_path / "out")
    found = result.result["findings"]
    assert len(found) == len(case.lesions) == 2
    truths = sorted(case.lesions, key=lambda n: n.position[0])
    for item, truth in zip(sorted(found, key=lambda f: f["position_lps_mm"][0]), truths, strict=True):
        assert np.allclose(item["position_lps_mm"], truth.position, atol=1.5)  # voxel centroid of the sphere
        assert item["diameter_mm"] == pytest.approx(truth.diameter_mm, rel=0.35)
        assert item["score"] == pytest.approx(1.0)  # at or above any operating threshold
        classified = item["classification"]
        assert sum(classified["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert classified["decision"] in ("benign", "malignant") and classified["threshold"] == 0.5
    sr_path = result.outputs["sr"]
    assert dciodvfy_errors(sr_path) == []
    dumped = subprocess.run([require("dsrdump"), sr_path], capture_output=True, text=True, timeout=60)
    assert dumped.returncode == 0 and dumped.stdout.count("Certainty of Finding") == 2, dumped.stderr
    sr = hd.sr.srread(sr_path)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    names = {m.name.meaning for g in groups for m in g.get_measurements()}
    assert names == {"Diameter", "Certainty of Finding", "Probability of cancer"}
    decided = sorted(item["classification"]["decision"].capitalize() for item in found)
    written = sorted(line.split('"')[-2] for line in dumped.stdout.splitlines() if '"Finding")=(' in line)
    assert [w for w in written if w in ("Benign", "Malignant")] == decided


def test_classifier_pairs_are_checked_in_one_line(detection_run, nodule_classifier, ball_bundle, tmp_path):
    from tests.helpers import assert_one_line_error, medmap_cli

    table, run, _ = detection_run
    detector = create_bundle(run, tmp_path / "bundle")
    series = table.parent / "ct" / "P0"
    wrong_first = medmap_cli("predict", ball_bundle, series, "-o", tmp_path / "a", "--classifier", nodule_classifier)
    assert_one_line_error(wrong_first, "--classifier goes with a detection bundle")
    not_lesions = medmap_cli("predict", detector, series, "-o", tmp_path / "b", "--classifier", ball_bundle)
    assert_one_line_error(not_lesions, "not a lesion classifier")
