"""Bundles (verified, refused when altered or too new), prediction on new studies in their own geometry,
engines that agree with torch, and DICOM SEG / SR that an independent validator accepts and other
libraries read back (the SEG decoded onto the source grid equals the predicted mask)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medmap.data.layouts import read_dataset
from medmap.errors import ConfigError
from medmap.inference.bundle import create_bundle, load_bundle
from medmap.inference.engines import example_input, load_engines
from medmap.inference.predictor import predict
from medmap.io.dicom.writer import SeriesInfo, write_series
from medmap.io.load import load
from medmap.tasks import task_for
from medmap.training.run import prepare_plan
from tests.builders import ball_case
from tests.helpers import dciodvfy_errors, medmap_cli


@pytest.fixture(scope="session")  # session: built once even when xdist interleaves modules
def ball_dicom(tmp_path_factory):
    """A new study: ball case 99 as a DICOM MR series (int16, rotated, anisotropic)."""
    image, truth = ball_case(99)
    image = image.with_array(np.rint(image.array).astype(np.int16), modality="MR")
    folder = tmp_path_factory.mktemp("dicom") / "ball_99"
    write_series(image, folder, modality="MR", info=SeriesInfo(patient_name="TEST^BALL", patient_id="BALL-99"))
    return folder, truth


def copy_bundle(bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_bundle_holds_a_verified_model_card(ball_bundle):
    bundle = load_bundle(ball_bundle)
    card = (ball_bundle / "MODEL_CARD.md").read_text()
    assert "## Intended use" in card and "## Limits" in card and "SHA-256" in card
    assert bundle.manifest["files"]["weights/model-0.pt"] in card
    assert [label.name for label in bundle.labels] == ["background", "ball", "core"]
    assert bundle.postprocessing.log  # chosen on validation, carried along


def test_altered_weights_are_refused(ball_bundle, tmp_path):
    copy = copy_bundle(ball_bundle, tmp_path)
    weights = copy / "weights" / "model-0.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"model-0\.pt: altered"):
        load_bundle(copy)


def test_corrupt_weights_with_matching_hash_give_a_clear_error(ball_bundle, tmp_path):
    from medmap.inference.bundle import sha256

    copy = copy_bundle(ball_bundle, tmp_path)
    weights = copy / "weights" / "model-0.pt"
    weights.write_bytes(b"not a weights file")
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["files"]["weights/model-0.pt"] = sha256(weights)
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"model-0\.pt: cannot be loaded"):
        load_bundle(copy).networks()


def test_newer_bundle_format_is_refused(ball_bundle, tmp_path):
    copy = copy_bundle(ball_bundle, tmp_path)
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["format_version"] = 99
    (copy / "bundle.json").write_text(json.dumps(manifest))
    result = medmap_cli("bundle", "info", str(copy))
    assert result.returncode == 1 and "newer medmap" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("engine", ["onnx", "torchscript"])
def test_engines_agree_with_torch(ball_bundle, tmp_path, engine):
    copy = copy_bundle(ball_bundle, tmp_path)
    bundle = load_bundle(copy)
    torch.manual_seed(0)
    x = torch.randn_like(example_input(bundle, batch=3))
    (reference,) = load_engines(bundle, "torch")
    (other,) = load_engines(bundle, engine)
    with torch.no_grad():
        expected, actual = reference(x), other(x)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_predict_dicom_writes_nifti_on_the_source_grid_and_a_valid_seg(ball_bundle, ball_dicom, tmp_path):
    import highdicom as hd
    import pydicom

    folder, truth = ball_dicom
    results = predict(ball_bundle, folder, tmp_path / "out")
    assert [r.ok for r in results] == [True]
    outputs = results[0].outputs
    source = load(folder)
    labels = load(outputs["labels"])
    assert labels.shape == source.shape
    np.testing.assert_allclose(labels.spacing, source.spacing, atol=1e-6)
    np.testing.assert_allclose(labels.origin, source.origin, atol=1e-4)
    np.testing.assert_allclose(labels.direction, source.direction, atol=1e-6)
    dice = 2 * ((labels.array == 1) & (truth.array == 1)).sum() / ((labels.array == 1).sum() + (truth.array == 1).sum())
    assert dice > 0.7
    # the SEG: valid, readable by highdicom and pydicom, every source slice has its frame, and decoded onto
    # the source grid it equals the predicted label map
    assert dciodvfy_errors(outputs["seg"]) == []
    seg = hd.seg.segread(outputs["seg"])
    assert pydicom.dcmread(outputs["seg"]).Modality == "SEG"
    assert seg.number_of_segments == 2
    assert int(seg.NumberOfFrames) == 2 * source.shape[0]  # no frame dropped, empty ones included
    uids = [ref.sop_instance_uid for ref in source.meta.slices]
    decoded = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    np.testing.assert_array_equal(decoded, labels.array)
    assert seg.StudyInstanceUID == pydicom.dcmread(source.meta.slices[0].path).StudyInstanceUID
    # each segment carries its label colour, the one overlays, thumbnails and reports draw it in
    from medmap.colours import label_colour

    for item, name, value in zip(seg.SegmentSequence, ("ball", "core"), (1, 2), strict=True):
        expected = hd.color.CIELabColor.from_rgb(*label_colour(name, value)).value
        assert [int(v) for v in item.RecommendedDisplayCIELabValue] == list(expected)
    # the model is named by its own identity (weights hash), not by medmap's version
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    identity = load_bundle(ball_bundle).identity
    assert algorithm.AlgorithmVersion == identity and identity.startswith("Balls-segmentation-")
    assert identity == json.loads((ball_bundle / "bundle.json").read_text())["identity"]
    summary = json.loads((tmp_path / "out" / results[0].case_id / "result.json").read_text())
    assert summary["segments"]["ball"]["volume_ml"] == pytest.approx(
        (labels.array == 1).sum() * np.prod(labels.spacing) / 1000, rel=1e-3
    )


def test_bad_cases_are_skipped_and_reported(ball_bundle, ball_dicom, tmp_path):
    from PIL import Image as PILImage

    folder, _ = ball_dicom
    studies = tmp_path / "studies"
    shutil.copytree(folder, studies / "good")
    ct = ball_case(5)[0]
    ct = ct.with_array(np.rint(ct.array).astype(np.int16), modality="CT")
    write_series(ct, studies / "wrong_modality", modality="CT")
    result = medmap_cli("predict", str(ball_bundle), str(studies), "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "a CT image, the model was trained on MR" in result.stderr
    assert "1 of 2 case(s) done" in result.stdout
    PILImage.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "flat.png")
    result = medmap_cli("predict", str(ball_bundle), str(tmp_path / "flat.png"), "-o", str(tmp_path / "out2"))
    assert result.returncode == 1 and "2-D image" in result.stderr


def test_lesion_classifier_writes_a_valid_sr(tiny_demo, tmp_path):
    """A lesion-level bundle (weights untrained: the SR's validity does not depend on them) on a chest series."""
    import highdicom as hd

    dataset = read_dataset(tiny_demo / "nodules.csv")
    plan = prepare_plan(dataset, overrides=["network=smallcnn", "network_width=8"], device="cpu", progress=False)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    plan.save(run / "plan.json")
    torch.manual_seed(0)
    torch.save(task_for(plan).build_network(plan, None).state_dict(), run / "checkpoints" / "best.pt")
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.5}))
    bundle = create_bundle(run, tmp_path / "bundle")
    case = next(c for c in dataset.cases if c.lesion is not None)
    x, y, z = case.lesion.position
    result = medmap_cli(
        "predict", str(bundle), str(case.images[0]), "-o", str(tmp_path / "out"), "--lesion", f"{x},{y},{z}"
    )
    assert result.returncode == 0, result.stderr
    (case_dir,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    finding = json.loads((case_dir / "result.json").read_text())["findings"][0]
    assert set(finding["probabilities"]) == {"benign", "malignant"}
    assert finding["decision"] == ("malignant" if finding["probabilities"]["malignant"] >= 0.5 else "benign")
    sr_path = case_dir / "sr.dcm"
    assert dciodvfy_errors(sr_path) == []
    import pydicom

    assert pydicom.dcmread(sr_path).Modality == "SR"
    sr = hd.sr.srread(sr_path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    text = str(sr)
    assert "Nodule" in text and finding["decision"].capitalize() in text
    assert f"{finding['probabilities']['malignant']:.6f}".rstrip("0")[:6] in text


def test_bfloat16_prediction_agrees_with_float32(ball_bundle, ball_dicom, tmp_path):
    folder, truth = ball_dicom
    labels, dice = {}, {}
    for precision in ("float32", "bfloat16"):
        (result,) = predict(ball_bundle, folder, tmp_path / precision, precision=precision)
        assert json.loads((tmp_path / precision / result.case_id / "result.json").read_text())["precision"] == precision
        labels[precision] = load(result.outputs["labels"]).array
        hit = ((labels[precision] == 1) & (truth.array == 1)).sum()
        dice[precision] = 2 * hit / ((labels[precision] == 1).sum() + (truth.array == 1).sum())
    assert (labels["bfloat16"] == labels["float32"]).mean() > 0.995
    assert dice["bfloat16"] == pytest.approx(dice["float32"], abs=0.02)


def test_overlay_images_are_valid_secondary_captures_of_the_labelled_slices(ball_bundle, ball_dicom, tmp_path):
    import pydicom

    from medmap.colours import label_colour

    folder, _ = ball_dicom
    (result,) = predict(ball_bundle, folder, tmp_path / "out", overlays=True, precision="float32")
    labels = load(result.outputs["labels"]).array
    source = load(folder)
    labelled = [z for z in range(labels.shape[0]) if labels[z].any()]
    files = result.dicom_results()[1:]  # the SEG first, then the overlays
    assert len(files) == len(labelled) == result.result["overlay_images"] > 0
    assert dciodvfy_errors(files[0]) == [] and dciodvfy_errors(files[-1]) == []
    series = {pydicom.dcmread(f).SeriesInstanceUID for f in files}
    assert len(series) == 1
    for z, path in zip(labelled, files, strict=True):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.meta.slices[z].sop_instance_uid
        assert ds.StudyInstanceUID == source.meta.study_uid
        rgb = ds.pixel_array
        assert rgb.shape == (*labels.shape[1:], 3)
        background = labels[z] == 0
        assert (rgb[background][:, 0] == rgb[background][:, 1]).all()  # no colour where nothing was found
        ball = labels[z] == 1
        if ball.any():  # the outline (at least one pixel) is drawn in the ball's full colour
            assert (rgb[ball] == label_colour("ball", 1)).all(axis=1).any()
    # another toolkit (ITK's GDCM reader) decodes the same pixels
    import SimpleITK as sitk

    decoded = sitk.GetArrayFromImage(sitk.ReadImage(files[0]))
    np.testing.assert_array_equal(decoded.reshape(-1, 3), pydicom.dcmread(files[0]).pixel_array.reshape(-1, 3))


def test_predict_on_an_enhanced_mr_writes_seg_and_overlays_in_its_frame_order(ball_bundle, tmp_path):
    """One multi-frame instance with its frames stored out of order, as a modern scanner may send it."""
    import highdicom as hd
    import pydicom

    from tests.builders import write_enhanced_ct

    image, _ = ball_case(99)
    order = list(range(image.shape[0]))[::-1]  # stored last slice first
    path = write_enhanced_ct(image, tmp_path / "mr.dcm", frame_order=order, modality="MR")
    (result,) = predict(ball_bundle, path, tmp_path / "out", overlays=True)
    assert result.ok, result.error
    labels = load(result.outputs["labels"]).array
    assert dciodvfy_errors(result.outputs["seg"]) == []
    source = load(path)
    sop = pydicom.dcmread(path).SOPInstanceUID
    frames = [ref.frame + 1 for ref in source.meta.slices]
    decoded = hd.seg.segread(result.outputs["seg"]).get_pixels_by_source_frame(sop, frames, combine_segments=True)
    np.testing.assert_array_equal(decoded, labels)
    overlays = result.dicom_results()[1:]
    assert len(overlays) == sum(labels[z].any() for z in range(labels.shape[0])) > 0
    assert dciodvfy_errors(overlays[0]) == []


def test_a_folder_of_series_is_scanned_once(ball_bundle, ball_dicom, tmp_path, monkeypatch):
    """Discovery keeps each series' parsed headers, so loading reads pixels only: every file's header is
    parsed once for two series (it was the whole tree again for each series)."""
    import medmap.io.dicom.series as series  # the scanner, where discovery reads each header

    folder, _ = ball_dicom
    studies = tmp_path / "studies"
    shutil.copytree(folder, studies / "first")
    second = ball_case(5)[0]
    write_series(
        second.with_array(np.rint(second.array).astype(np.int16), modality="MR"), studies / "second", modality="MR"
    )
    parsed = []
    real = series.read_header
    monkeypatch.setattr(series, "read_header", lambda path: parsed.append(Path(path)) or real(path))
    results = predict(ball_bundle, studies, tmp_path / "out", precision="float32")
    assert [r.ok for r in results] == [True, True], [r.error for r in results]
    instances = sorted(p for p in studies.rglob("*") if p.is_file())
    assert sorted(parsed) == instances


@pytest.mark.parametrize("engine", ["onnx", "torchscript"])
def test_engines_leave_the_bundle_as_it_was(ball_bundle, tmp_path, engine):
    """Without a current export the networks are exported outside the bundle: its files and their SHA-256s
    do not change by predicting (and a read-only bundle can be predicted from)."""
    copy = copy_bundle(ball_bundle, tmp_path)
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    bundle = load_bundle(copy)
    (run,) = load_engines(bundle, engine)
    with torch.no_grad():
        assert run(example_input(bundle, batch=2)).shape[0] == 2
    assert {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before
