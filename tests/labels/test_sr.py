"""TID 1500 reports as detection targets: medmap's own SR reads back as the findings it wrote (positions to
0.01 mm), a reader's marks drawn as they are drawn elsewhere (an ellipse on one image, an ellipsoid, a
line across the lesion) land where they were drawn, and a folder of CTs with their reports is a detection
dataset equal to the lesion table it came from, that trains."""

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

import medmap
from medmap.data.layouts import read_dataset
from medmap.dicomout.codes import Code
from medmap.dicomout.sr import LesionFinding, write_lesion_report
from medmap.errors import DatasetError
from medmap.io.labels.sr import read_lesion_report
from tests.builders import volume, write_ct
from tests.training.test_detection_run import OVERRIDES, write_table

NODULE = Code("27925004", "SCT", "Nodule")
MALIGNANT = Code("21594007", "SCT", "Malignant")


def test_medmaps_own_report_reads_back_as_the_findings_it_wrote(tmp_path):
    paths = write_ct(volume(shape=(9, 24, 20)), tmp_path / "ct")
    ct = medmap.load(tmp_path / "ct")
    findings = [
        LesionFinding((-3.1234, 27.5, 40.25), NODULE, diameter_mm=6.5, detection_score=0.9, predicted_class=MALIGNANT),
        LesionFinding((-1.0, 25.0, 35.0), NODULE, diameter_mm=11.0, detection_score=0.4),
    ]
    sr = write_lesion_report(ct, findings, tmp_path / "sr.dcm", algorithm="det", algorithm_version="1")
    report = read_lesion_report(sr)
    assert report.series_uid == pydicom.dcmread(paths[0]).SeriesInstanceUID and not report.negative
    assert [m.identifier for m in report.marks] == ["lesion 1", "lesion 2"]
    for mark, finding in zip(report.marks, findings, strict=True):
        np.testing.assert_allclose(mark.position, finding.position_lps, atol=0.01)
        assert mark.diameter_mm == pytest.approx(finding.diameter_mm, abs=0.01) and mark.finding == "Nodule"
    assert report.marks[0].evaluations == ("Malignant",) and report.marks[1].evaluations == ()
    empty = write_lesion_report(ct, [], tmp_path / "none.dcm", algorithm="det", algorithm_version="1",
                                searched_for=LesionFinding((0, 0, 0), NODULE, name="nodule"))  # fmt: skip
    nothing = read_lesion_report(empty)
    assert nothing.negative and nothing.marks == ()


def _reader_report(tmp_path, ct_paths, ct, *, point_only=False):
    """A reader's report as viewers write them: an ellipse on one slice (pixel coordinates), an ellipsoid
    in patient coordinates, a line drawn across a lesion with its Long Axis in cm."""
    datasets = [pydicom.dcmread(p) for p in ct_paths]
    on = datasets[4]
    frame = on.FrameOfReferenceUID
    groups = []
    # ellipse centred on pixel (column 10, row 12), axes 8 and 4 pixels along columns and rows
    ellipse = np.array([[6.5, 12.5], [14.5, 12.5], [10.5, 10.5], [10.5, 14.5]])
    region = hd.sr.ImageRegion("ELLIPSE", ellipse, hd.sr.SourceImageForRegion(on.SOPClassUID, on.SOPInstanceUID))
    groups.append(
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            hd.sr.TrackingIdentifier(identifier="ellipse"), referenced_region=region, finding_type=codes.SCT.Nodule
        )
    )
    centre = np.array([5.0, 30.0, 35.0])
    axes = np.array([[0, -3, 0], [0, 3, 0], [-2, 0, 0], [2, 0, 0], [0, 0, -1], [0, 0, 1]], float) + centre
    groups.append(
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            hd.sr.TrackingIdentifier(identifier="ellipsoid"),
            finding_type=codes.SCT.Nodule,
            referenced_volume_surface=hd.sr.VolumeSurface(
                graphic_type="ELLIPSOID",
                graphic_data=axes,
                frame_of_reference_uid=frame,
                source_series=hd.sr.SourceSeriesForSegmentation(on.SeriesInstanceUID),
            ),
        )
    )
    line = hd.sr.ImageRegion3D("POLYLINE", np.array([[0, 30, 40], [0, 34, 43]], float), frame)
    if point_only:
        line = hd.sr.ImageRegion3D("POINT", np.array([[0, 30, 40]], float), frame)
    measurements = [] if point_only else [hd.sr.Measurement(codes.SCT.LongAxis, 0.62, codes.UCUM.Centimeter)]
    groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        hd.sr.TrackingIdentifier(identifier="line"), referenced_region=line, finding_type=codes.SCT.Nodule,
        measurements=measurements))  # fmt: skip
    observer = hd.sr.ObserverContext(codes.DCM.Person, hd.sr.PersonObserverIdentifyingAttributes("READER^ONE"))
    content = hd.sr.MeasurementReport(hd.sr.ObservationContext(observer_person_context=observer),
                                      codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)  # fmt: skip
    sr = hd.sr.Comprehensive3DSR(datasets, content, hd.UID(), 1, hd.UID(), 1, "reader")
    (tmp_path / "sr").mkdir(exist_ok=True)
    sr.save_as(tmp_path / "sr" / "reader.dcm")
    return tmp_path / "sr" / "reader.dcm"


def test_a_readers_marks_land_where_they_were_drawn(tmp_path):
    paths = write_ct(volume(shape=(9, 24, 20)), tmp_path / "ct")
    ct = medmap.load(tmp_path / "ct")
    sr = _reader_report(tmp_path, paths, ct)
    headers = {d.SOPInstanceUID: d for d in (pydicom.dcmread(p, stop_before_pixels=True) for p in paths)}
    with pytest.raises(DatasetError, match=r"reader.dcm: mark 'ellipse' is drawn on image .* not in the marked series"):
        read_lesion_report(sr)
    ellipse, ellipsoid, line = read_lesion_report(sr, headers).marks
    corner = np.asarray(headers[pydicom.dcmread(paths[4]).SOPInstanceUID].ImagePositionPatient, float)
    k = int(np.argmin([np.linalg.norm(ct.index_to_world(np.array([[k, 0, 0]]))[0] - corner) for k in range(9)]))
    np.testing.assert_allclose(ellipse.position, ct.index_to_world(np.array([[k, 12, 10]]))[0], atol=0.01)
    assert ellipse.diameter_mm == pytest.approx((8 * ct.spacing[2] + 4 * ct.spacing[1]) / 2, abs=0.01)
    np.testing.assert_allclose(ellipsoid.position, (5, 30, 35), atol=0.01)
    assert ellipsoid.diameter_mm == pytest.approx(4.0)  # axes 6, 4 and 2 mm
    np.testing.assert_allclose(line.position, (0, 32, 41.5), atol=0.01)
    assert line.diameter_mm == pytest.approx(6.2)  # the Long Axis measured (0.62 cm) wins over the drawn 5 mm


def test_a_mark_without_a_size_is_refused_for_detection(tmp_path):
    paths = write_ct(volume(shape=(9, 24, 20)), tmp_path / "ct")
    _reader_report(tmp_path, paths, medmap.load(tmp_path / "ct"), point_only=True)
    with pytest.raises(DatasetError, match=r"reader.dcm: mark 'line' has no size"):
        read_dataset(tmp_path, task="detection")


def test_a_folder_of_cts_with_their_reports_is_the_lesion_tables_dataset_and_trains(tmp_path):
    from medmap.training.config import TrainConfig
    from medmap.training.run import train_run

    table = write_table(tmp_path)
    from_table = read_dataset(table, task="detection")
    (tmp_path / "sr").mkdir()
    for case in from_table.cases:
        image = case.load_image()
        findings = [LesionFinding(lesion.position, NODULE, diameter_mm=lesion.diameter_mm) for lesion in case.lesions]
        write_lesion_report(image, findings, tmp_path / "sr" / f"{case.case_id}.dcm", algorithm="r",
                            algorithm_version="1")  # fmt: skip
    table.unlink()
    from_reports = read_dataset(tmp_path, task="detection")
    assert from_reports.layout == "dicom" and from_reports.labels == {0: "background", 1: "nodule"}
    by_image = {str(c.images[0]): c for c in from_reports.cases}
    assert len(by_image) == len(from_table.cases)
    for case in from_table.cases:
        other = by_image[str(tmp_path / case.images[0].relative_to(tmp_path))]
        assert other.patient_id == case.patient_id
        for a, b in zip(other.lesions, case.lesions, strict=True):
            np.testing.assert_allclose(a.position, b.position, atol=0.01)
            assert a.diameter_mm == pytest.approx(b.diameter_mm, abs=0.01)
    config = TrainConfig(epochs=1, workers=0, samples_per_epoch=8)
    summary = train_run(tmp_path, tmp_path / "run", task="detection", overrides=OVERRIDES, config=config)
    assert summary["metrics"]["nodules"] > 0


def test_convert_writes_a_reports_marks_as_the_lesion_table_detection_reads(tmp_path):
    from tests.helpers import medmap_cli

    paths = write_ct(volume(shape=(9, 24, 20)), tmp_path / "ct")
    sr = _reader_report(tmp_path, paths, medmap.load(tmp_path / "ct"))
    result = medmap_cli("convert", sr, tmp_path / "marks.csv")
    assert result.returncode == 0, result.stderr
    table = read_dataset(tmp_path / "marks.csv", task="detection")
    headers = {d.SOPInstanceUID: d for d in (pydicom.dcmread(p, stop_before_pixels=True) for p in paths)}
    expected = read_lesion_report(sr, headers).marks
    (case,) = table.cases
    assert [lesion.diameter_mm for lesion in case.lesions] == [pytest.approx(m.diameter_mm, abs=1e-3) for m in expected]
    for lesion, mark in zip(case.lesions, expected, strict=True):
        np.testing.assert_allclose(lesion.position, mark.position, atol=1e-3)
    checked = medmap_cli("dataset", "check", tmp_path, "--task", "detection")
    assert checked.returncode == 0 and "dicom layout, detection, 1 cases" in checked.stdout, checked.stdout
