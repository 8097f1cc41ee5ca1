"""De-identification: nothing identifying survives, pixels and geometry do, UIDs map consistently."""

import datetime as dt
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import medmap
from medmap.errors import OutputError
from medmap.io.anonymize import Anonymizer, anonymize_tree
from tests.builders import rotation, volume, write_ct

SECRETS = [
    "DOE^JANE",
    "PID-778899",
    "19610412",
    "St Elsewhere Hospital",
    "HOUSE^GREGORY",
    "ACC123456",
    "12 Main Street",
    "OTHER-ID-55",
    "Dr. Who^Operator",
    "REQ-PROC-9",
    "cardiac cath lab",
]


def identify(folder: Path, study_date: str, *, second_series_refers_to: Path | None = None) -> None:
    """Decorate generated files with identifying attributes, a private block, an overlay, a reference."""
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DOE^JANE", "PID-778899", "19610412"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.InstitutionName, ds.ReferringPhysicianName = "St Elsewhere Hospital", "HOUSE^GREGORY"
        ds.AccessionNumber, ds.PatientAddress, ds.OperatorsName = "ACC123456", "12 Main Street", "Dr. Who^Operator"
        ds.OtherPatientIDsSequence = Sequence([Dataset()])
        ds.OtherPatientIDsSequence[0].PatientID = "OTHER-ID-55"
        req = Dataset()
        req.RequestedProcedureID = "REQ-PROC-9"
        req.RequestedProcedureDescription = "cardiac cath lab"
        ds.RequestAttributesSequence = Sequence([req])
        block = ds.private_block(0x0009, "ACME 1.0", create=True)
        block.add_new(0x01, "LO", "DOE^JANE private copy")
        ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)  # overlay data (may hold burned-in text)
        if second_series_refers_to is not None:
            ref = Dataset()
            ref.ReferencedSOPClassUID = ds.SOPClassUID
            ref.ReferencedSOPInstanceUID = pydicom.dcmread(second_series_refers_to).SOPInstanceUID
            ds.ReferencedImageSequence = Sequence([ref])
        ds.save_as(path)


@pytest.fixture
def tree(tmp_path):
    """One patient, two studies; study 2 has two series, the second referencing an image of the first."""
    src = tmp_path / "in"
    img = volume(direction=rotation(0.2, 0.1, 0.0))
    a = write_ct(img, src / "DOE_JANE" / "study1" / "ct")
    identify(src / "DOE_JANE" / "study1" / "ct", "20240105")
    b = write_ct(img, src / "DOE_JANE" / "study2" / "ct", study_uid=(s2 := pydicom.uid.generate_uid()))
    identify(src / "DOE_JANE" / "study2" / "ct", "20240305")
    write_ct(volume(seed=5), src / "DOE_JANE" / "study2" / "ct2", study_uid=s2)
    identify(src / "DOE_JANE" / "study2" / "ct2", "20240305", second_series_refers_to=b[3])
    (src / "DOE_JANE" / "notes.txt").write_text("DOE^JANE clinical notes")
    return src, img, a, b


def digest(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(src, dst, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return anonymize_tree(src, dst, **kw)


def test_no_identifying_value_survives_anywhere_in_the_files(tree, tmp_path):
    src, *_ = tree
    report = run(src, tmp_path / "out")
    assert len(report.written) == 27 and not report.failed
    assert [p.name for p, _ in report.skipped] == ["notes.txt"]
    for path in report.written:
        raw = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in raw, f"{secret} left in {path}"
        assert b"DOE_JANE" not in str(path).encode()


def test_profile_actions_are_applied(tree, tmp_path):
    src, *_ = tree
    report = run(src, tmp_path / "out")
    engine = Anonymizer()
    for path in report.written[:3]:
        ds = pydicom.dcmread(path)
        for elem in ds.iterall():
            action = engine.action_for(elem.tag)
            assert not elem.tag.is_private
            if action == "X":
                pytest.fail(f"{elem.keyword or elem.tag} should have been removed")
            if action == "U":
                assert str(elem.value).startswith("2.25."), elem.keyword
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert ds.PatientID.startswith("ANON-") and str(ds.PatientName) == ds.PatientID
        assert ds.StudyDate == "" and ds.AccessionNumber == ""
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert 0x60003000 not in ds


def test_pixels_and_geometry_unchanged(tree, tmp_path):
    src, img, *_ = tree
    report = run(src, tmp_path / "out")
    folders = {p.parent for p in report.written}
    assert len(folders) == 3
    loaded = [medmap.load(f) for f in folders]
    matching = [x for x in loaded if np.array_equal(x.array, img.array)]
    assert len(matching) == 2
    for x in matching:
        assert x.same_geometry(img, tol=1e-4)


def test_uids_map_consistently_within_a_run(tree, tmp_path):
    src, _, a, _ = tree
    report = run(src, tmp_path / "out")
    out = {p: pydicom.dcmread(p) for p in report.written}
    studies = {ds.StudyInstanceUID for ds in out.values()}
    assert len(studies) == 2
    originals = {pydicom.dcmread(p).SOPInstanceUID for p in src.rglob("*.dcm")}
    assert not originals & {ds.SOPInstanceUID for ds in out.values()}
    # the reference from series ct2 points at the new UID of the referenced instance of series ct
    by_sop = {ds.SOPInstanceUID for ds in out.values()}
    refs = [
        ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID for ds in out.values() if "ReferencedImageSequence" in ds
    ]
    assert len(refs) == 9 and all(r in by_sop for r in refs)
    # one patient, one pseudonym, across both studies
    assert len({ds.PatientID for ds in out.values()}) == 1
    # and the engine maps the same input the same way
    engine = Anonymizer(b"k" * 32)
    uid = pydicom.dcmread(a[0]).StudyInstanceUID
    assert engine.new_uid(uid) == engine.new_uid(uid) != Anonymizer(b"j" * 32).new_uid(uid)
    assert len(engine.new_uid(uid)) <= 64


def test_same_key_same_mapping_across_runs(tree, tmp_path):
    src, *_ = tree
    r1 = run(src, tmp_path / "o1", secret=b"s" * 32)
    r2 = run(src, tmp_path / "o2", secret=b"s" * 32)
    assert sorted(p.relative_to(tmp_path / "o1") for p in r1.written) == sorted(
        p.relative_to(tmp_path / "o2") for p in r2.written
    )


def test_date_shift_keeps_intervals(tree, tmp_path):
    src, *_ = tree
    report = run(src, tmp_path / "out", date_shift_days=-100)
    dates = sorted({pydicom.dcmread(p).StudyDate for p in report.written})
    shift = dt.timedelta(days=-100)
    expected = [(dt.date(2024, 1, 5) + shift).strftime("%Y%m%d"), (dt.date(2024, 3, 5) + shift).strftime("%Y%m%d")]
    assert dates == expected
    ds = pydicom.dcmread(report.written[0])
    assert ds.PatientBirthDate == (dt.date(1961, 4, 12) + shift).strftime("%Y%m%d")
    assert {c.CodeValue for c in ds.DeidentificationMethodCodeSequence} == {"113100", "113107"}


def test_keep_private_option(tree, tmp_path):
    src, *_ = tree
    report = run(src, tmp_path / "out", keep_private=True)
    assert any(e.tag.is_private for e in pydicom.dcmread(report.written[0]))


def test_originals_untouched_and_unsafe_outputs_refused(tree, tmp_path):
    src, *_ = tree
    before = digest(src)
    run(src, tmp_path / "out")
    assert digest(src) == before
    with pytest.raises(OutputError, match="outside the input"):
        run(src, src / "inside")
    with pytest.raises(OutputError, match="not empty"):
        run(src, tmp_path / "out")
    assert digest(src) == before


def test_roi_names_are_emptied_by_the_profile_and_kept_when_asked(tmp_path):
    from tests.builders import kidneys_export

    rt = kidneys_export(tmp_path / "in", 0)
    names = {}
    for keep in (False, True):
        report = anonymize_tree(tmp_path / "in", tmp_path / f"out-{keep}", keep_structure_names=keep)
        (out,) = [p for p in report.written if pydicom.dcmread(p).Modality == "RTSTRUCT"]
        ds = pydicom.dcmread(out)
        names[keep] = [str(r.ROIName or "") for r in ds.StructureSetROISequence]
        assert ("ROI names kept" in ds.DeidentificationMethod) == keep
    assert names == {False: ["", ""], True: ["Kidney_L", "Kidney_R"]}
    assert pydicom.dcmread(rt).PatientID == "PATIENT-0"  # the input is untouched
