"""A DICOM pair in, a Spatial Registration out: dciodvfy accepts it, pydicom reads back the matrix that
was applied, and Orthanc files it under the fixed study."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medmap.dicomout.registration import read_matrix
from medmap.io.image import Image, ImageMeta
from tests.builders import write_ct
from tests.helpers import dciodvfy_errors, medmap_cli
from tests.integration.test_node import Orthanc, free_port
from tests.registration.test_classical import known_affine, moved, phantom

pytestmark = pytest.mark.integration


def _rigid(fixed: sitk.Image) -> sitk.Euler3DTransform:
    truth = sitk.Euler3DTransform()
    affine = known_affine(fixed)
    truth.SetCenter(affine.GetCenter())
    truth.SetRotation(0.05, -0.08, 0.06)
    truth.SetTranslation(affine.GetTranslation())
    return truth


@pytest.fixture(scope="module")
def dicom_pair(tmp_path_factory):
    """The phantom as a baseline CT series and, moved by a known rigid transform, as a follow-up study of
    the same patient with its own frame of reference."""
    root = tmp_path_factory.mktemp("dicom-pair")
    image, _ = phantom()
    fixed = image.to_sitk()
    truth = _rigid(fixed)
    hu = lambda img: Image.from_sitk(sitk.Cast(img * 4 - 600, sitk.sitkInt16), ImageMeta(modality="CT"))  # noqa: E731
    write_ct(hu(fixed), root / "baseline", patient_id="REG-1", study_date="20240105")
    write_ct(hu(moved(fixed, truth)), root / "followup", patient_id="REG-1", study_date="20240605")
    return root, truth


def test_a_rigid_result_is_a_valid_spatial_registration_that_reads_back_to_the_applied_matrix(dicom_pair, tmp_path):
    root, truth = dicom_pair
    out = tmp_path / "out"
    run = medmap_cli("register", root / "baseline", root / "followup", "-o", out, "--method", "rigid")
    assert run.returncode == 0, run.stderr
    reg = out / "registration.dcm"
    assert dciodvfy_errors(reg) == []
    ds = pydicom.dcmread(reg)
    baseline = pydicom.dcmread(sorted((root / "baseline").glob("*.dcm"))[0])
    followup = pydicom.dcmread(sorted((root / "followup").glob("*.dcm"))[0])
    assert ds.Modality == "REG" and ds.StudyInstanceUID == baseline.StudyInstanceUID
    assert ds.FrameOfReferenceUID == baseline.FrameOfReferenceUID
    assert ds.RegistrationSequence[1].FrameOfReferenceUID == followup.FrameOfReferenceUID
    assert ds.StudiesContainingOtherReferencedInstancesSequence[0].StudyInstanceUID == followup.StudyInstanceUID
    # the matrix takes follow-up coordinates to baseline ones: the inverse of the fixed -> moving transform
    moving_to_fixed = read_matrix(reg)
    applied = sitk.ReadTransform(str(out / "transform.tfm"))
    rng = np.random.default_rng(1)
    for point in rng.uniform(-20, 20, (20, 3)) + np.asarray(truth.GetCenter()):
        on_moving = np.asarray(applied.TransformPoint(point.tolist()))
        np.testing.assert_allclose(moving_to_fixed @ np.append(on_moving, 1), np.append(point, 1), atol=1e-3)
        assert np.linalg.norm(on_moving - np.asarray(truth.TransformPoint(point.tolist()))) < 0.5
    record = json.loads((out / "registration.json").read_text())
    assert record["files"]["dicom_registration"] == "registration.dcm"
    # two sessions, two frames of reference: their world coordinates are not compared (centres of mass start)
    assert "different frames of reference" in record["notes"][0]


def test_orthanc_files_the_registration_under_the_fixed_study(dicom_pair, tmp_path):
    root, _ = dicom_pair
    out = tmp_path / "out"
    assert medmap_cli("register", root / "baseline", root / "followup", "-o", out).returncode == 0
    orthanc = Orthanc(tmp_path / "orthanc")
    orthanc.start(free_port())
    try:
        files = [*sorted((root / "baseline").glob("*.dcm")), out / "registration.dcm"]
        for path in files:
            request = urllib.request.Request(
                f"http://127.0.0.1:{orthanc.http}/instances", data=path.read_bytes(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200
        study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
        studies = orthanc.find("Study", {"StudyInstanceUID": study_uid})
        assert len(studies) == 1
        modalities = {
            orthanc._get(f"/series/{s}")["MainDicomTags"]["Modality"]
            for s in orthanc._get(f"/studies/{studies[0]}")["Series"]
        }
        assert modalities == {"CT", "REG"}
    finally:
        orthanc.stop()
