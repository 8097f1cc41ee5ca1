"""Intended use: a model answers on input like its training data and refuses other input with the reason.

Profiles are fitted on phantom CTs the way a run fits them (training cases, threshold calibrated on
validation cases); predict and the CLI refuse a foreign series, write nothing for it, and answer anyway
only when told to, recording why the answer is outside the intended use."""

import json
import subprocess
import sys

import numpy as np
import pytest

from medmap.data.phantoms import abdomen_ct, chest_ct
from medmap.inference.bundle import create_bundle, load_bundle
from medmap.inference.predictor import predict
from medmap.intended_use import IntendedUse, case_record, fit_intended_use, lesion_record
from medmap.io.dicom.writer import SeriesInfo, write_series
from medmap.io.load import save
from tests.builders import ball_case, small_plan

ABDOMEN = dict(shape=(20, 64, 64), spacing=(5.0, 4.0, 4.0))
CHEST = dict(shape=(24, 64, 64), spacing=(4.0, 3.0, 3.0))


def abdomen(seed, **meta):
    image = abdomen_ct(ABDOMEN["shape"], ABDOMEN["spacing"], seed=seed).image
    return image.with_array(image.array, **meta) if meta else image


@pytest.fixture(scope="session")  # session: built once even when xdist interleaves modules
def liver_use():
    train = [case_record(abdomen(s, body_part="ABDOMEN"), "CT") for s in range(5)]
    val = [case_record(abdomen(s), "CT") for s in range(10, 12)]
    return fit_intended_use("CT", train, val)


def test_same_kind_of_image_is_accepted(liver_use):
    assert liver_use.dims == 3 and liver_use.body_parts == ["ABDOMEN"]
    for seed in range(20, 24):
        assert liver_use.check_image(abdomen(seed)) == []


def test_chest_ct_is_refused_by_its_lung(liver_use):
    chest = chest_ct(ABDOMEN["shape"], ABDOMEN["spacing"], seed=1).image  # same grid: only the content differs
    chest = chest.with_array(chest.array, body_part="")  # and no header to give it away
    reasons = liver_use.check_image(chest)
    assert len(reasons) == 1 and "lung density (-900 to -500 HU)" in reasons[0] and "training 0.0 %" in reasons[0]


def test_header_facts_are_refused_with_their_value(liver_use):
    assert liver_use.check_image(abdomen(30, body_part="CHEST")) == ["BodyPartExamined CHEST, the model is for ABDOMEN"]
    coarse = abdomen_ct((20, 24, 24), (5.0, 10.0, 10.0), seed=31).image  # 10 mm pixels, training had 4 mm
    assert any("row spacing 10 mm" in r and "accepted from 1 to 8 mm" in r for r in liver_use.check_image(coarse))
    mr = abdomen(32, modality="MR")
    assert "modality MR, the model is for CT" in liver_use.check_image(mr)


def test_mr_intensities_without_a_modality_are_refused(liver_use):
    """A NIfTI carries no modality; an MR volume's arbitrary scale is not a CT's Hounsfield bands."""
    image = abdomen(33)
    mr_like = image.with_array(np.clip(image.array + 1024, 0, None) * 0.8)
    assert liver_use.check_image(mr_like)


def test_a_larger_field_of_view_is_fine_a_smaller_one_is_not():
    from medmap.intended_use import Profile

    profile = Profile.fit([[8.0], [8.2]], [[8.1]], "ct", ["field of view along the row axis"], ["log2_mm"])
    assert profile.distance([9.5])[0] == 0  # 2.8x wider than training: the window slides over it
    assert profile.distance([7.0])[0] > profile.threshold  # half as wide: the anatomy may be cut off


def test_record_survives_its_file_and_body_parts_merge(liver_use, tmp_path):
    liver_use.save(tmp_path / "use.json")
    again = IntendedUse.load(tmp_path / "use.json")
    assert again == liver_use
    assert again.with_body_parts([" abd ", ""]).body_parts == ["ABD", "ABDOMEN"]
    assert IntendedUse.load(tmp_path / "none.json") is None


def test_lesion_region_outside_the_lung_is_refused():
    from medmap.plan import Normalization
    from medmap.tasks.classification.inputs import centre_of, raw_lesion_cube

    plan = small_plan(
        "classification",
        dataset="n",
        lesion_level=True,
        patch_size=(16, 16, 16),
        normalization=Normalization(scheme="zscore"),
        batch_size=8,
        network="resnet18",
        network_depth=2,
    )
    train, val, chests = [], [], []
    for seed in range(6):
        case = chest_ct(CHEST["shape"], CHEST["spacing"], seed=seed, n_nodules=3)
        chests.append(case)
        record = case_record(case.image, "CT")
        for nodule in case.nodules:
            raw = centre_of(raw_lesion_cube(case.image, nodule.position, plan), plan)
            (train if seed < 4 else val).append({**record, "lesion": lesion_record(raw, "CT")})
    use = fit_intended_use("CT", train, val)
    image = chests[0].image
    for nodule in chests[0].nodules:  # the training nodules themselves
        raw = centre_of(raw_lesion_cube(image, nodule.position, plan), plan)
        assert use.check_lesion(raw, nodule.position) == []
    corner = image.index_to_world(np.array([12.0, 2.0, 2.0]))  # air outside the body
    reasons = use.check_lesion(centre_of(raw_lesion_cube(image, corner, plan), plan), corner)
    assert reasons and "air (< -900 HU)" in reasons[0] and "mm (LPS)" in reasons[0]


# --- through predict and the CLI, with the session's ball model (MR, trained on NIfTI) -----------------


@pytest.fixture(scope="session")  # session: built once even when xdist interleaves modules
def head_bundle(balls_run, tmp_path_factory):
    """`balls_run` as a bundle for heads (BodyPartExamined HEAD, besides what the training images said)."""
    run, _ = balls_run
    return create_bundle(run, tmp_path_factory.mktemp("use-bundle") / "balls", body_parts=["head"])


def test_bundle_carries_and_states_its_intended_use(head_bundle):
    bundle = load_bundle(head_bundle)
    assert bundle.intended_use is not None and bundle.intended_use.body_parts == ["HEAD"]
    assert "intended_use.json" in bundle.manifest["files"]
    card = (head_bundle / "MODEL_CARD.md").read_text()
    assert "BodyPartExamined HEAD (other values are refused)" in card and "calibrated on" in card


def inverted_ball(tmp_path):
    """A ball image with its contrast reversed (dark ball on bright background): same grid, foreign content."""
    image, _ = ball_case(97)
    return save(image.with_array(110.0 - image.array), tmp_path / "inverted.nii.gz")


def test_predict_refuses_writes_nothing_and_names_the_case(head_bundle, tmp_path):
    (tmp_path / "in").mkdir()
    good = save(ball_case(98)[0], tmp_path / "in" / "good.nii.gz")
    inverted_ball(tmp_path / "in")
    results = {r.case_id: r for r in predict(head_bundle, tmp_path / "in", tmp_path / "out")}
    assert results["good"].ok
    assert json.loads((tmp_path / "out/good/result.json").read_text())["intended_use"] == "within"
    refused = results["inverted"]
    assert not refused.ok and refused.refused and "case inverted: not assessed" in refused.error
    assert not (tmp_path / "out" / "inverted").exists()
    summary = {s["case_id"]: s for s in json.loads((tmp_path / "out/summary.json").read_text())}
    assert summary["inverted"]["refused"] and not summary["good"]["refused"]
    assert good.is_file()


def test_cli_refuses_with_one_line_or_answers_when_told(head_bundle, tmp_path):
    series = tmp_path / "series"
    image = ball_case(98)[0]
    image = image.with_array(np.rint(image.array).astype(np.int16), modality="MR")
    write_series(image, series, modality="MR", info=SeriesInfo(body_part="CHEST", patient_id="USE-1"))
    command = [sys.executable, "-m", "medmap", "predict", str(head_bundle), str(series), "-o"]
    done = subprocess.run([*command, str(tmp_path / "a")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "BodyPartExamined CHEST, the model is for HEAD" in errors[0]
    assert not list((tmp_path / "a").glob("*/seg.dcm"))
    forced = subprocess.run(
        [*command, str(tmp_path / "b"), "--ignore-intended-use"], capture_output=True, text=True, timeout=300
    )
    assert forced.returncode == 0, forced.stderr
    result = json.loads(next((tmp_path / "b").glob("*/result.json")).read_text())
    assert "BodyPartExamined CHEST" in result["intended_use"]["outside"][0]


def test_bundle_without_a_record_still_predicts(head_bundle, tmp_path):
    """Bundles made before the record existed keep working, and say that nothing beyond modality was checked."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(head_bundle, old)
    manifest = json.loads((old / "bundle.json").read_text())
    del manifest["files"]["intended_use.json"]
    (old / "bundle.json").write_text(json.dumps(manifest))
    (old / "intended_use.json").unlink()
    assert load_bundle(old).intended_use is None
    source = inverted_ball(tmp_path)
    [result] = predict(old, source, tmp_path / "out")
    assert result.ok and result.result["intended_use"] == "not recorded in this bundle"


def test_record_keeps_no_identifiers():
    """What the cache and the run keep of a training image: features, body part and geometry only."""
    record = case_record(abdomen(1, body_part="ABDOMEN"), "CT")
    assert set(record) == {"features", "body_part", "spacing", "shape"}
