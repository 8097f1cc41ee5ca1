"""`medmap dataset pull` against a real Orthanc on 127.0.0.1 holding CT studies with their RTSTRUCTs: by
C-GET, C-MOVE and DICOMweb the cohort arrives de-identified, each RTSTRUCT still on its series, the same
key giving the same files whichever way they came; a pull cut off goes on where it stopped; training
runs on the result. Every process started is stopped."""

import csv
import json
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medmap.errors import InputNotFoundError
from medmap.pacs.dimse_source import DimseSource
from medmap.pacs.peer import Peer
from medmap.pacs.pull import pull_cohort
from medmap.pacs.query import CohortQuery
from tests.builders import kidneys_export
from tests.helpers import assert_one_line_error, medmap_cli
from tests.integration.test_node import DICOMWEB_PLUGIN, Orthanc, free_port

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("pull")]
LABELLED = 6  # patients with a CT and its RTSTRUCT


def _upload(orthanc: Orthanc, files) -> None:
    for path in files:
        request = urllib.request.Request(
            f"http://127.0.0.1:{orthanc.http}/instances", data=Path(path).read_bytes(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200


def _seg_study(folder: Path) -> np.ndarray:
    """A CT with its kidneys as a DICOM SEG (no RTSTRUCT); the label map the SEG holds."""
    from medmap.dicomout.codes import meaning_of
    from medmap.dicomout.seg import write_segmentation
    from medmap.io.labels.objects import load_label_object
    from medmap.io.load import load

    rt = kidneys_export(folder, 7, patient_id="PATIENT-7", study_date="20240110")
    labels, _, _ = load_label_object(rt)
    rt.unlink()
    source = load(folder / "image")
    segments = [(v, n, meaning_of(n)) for v, n in ((1, "Kidney_L"), (2, "Kidney_R"))]
    write_segmentation(labels, source, segments, folder / "rt" / "seg.dcm", algorithm="t", algorithm_version="1")
    return labels.array


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc holding six labelled CT studies (one with an MR and its own RTSTRUCT too) and one CT study
    without contours; medmap's AE title known to it, C-MOVE destination on ``move_port``."""
    root = tmp_path_factory.mktemp("pacs")
    exports = root / "exports"
    originals = {"ids": set(), "uids": set()}
    for i in range(LABELLED + 1):
        info = {"patient_id": f"PATIENT-{i}", "patient_name": f"DOE^JANE{i}", "study_date": "20240105"}
        rt = kidneys_export(exports / f"P{i}", i, **info)
        if i == 1:  # the same study also holds an MR with contours drawn on it
            study = pydicom.dcmread(rt).StudyInstanceUID
            kidneys_export(exports / "P1-mr", 11, modality="MR", study_uid=study, **info)
        if i == LABELLED:
            rt.unlink()  # a CT study without contours: not part of a labelled cohort
        originals["ids"] |= {info["patient_id"], info["patient_name"]}
    originals["seg"] = _seg_study(exports / "P7")
    originals["ids"] |= {"PATIENT-7"}
    files = sorted(p for p in exports.rglob("*.dcm"))
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        originals["uids"] |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
    move_port = free_port()
    orthanc = Orthanc(root / "orthanc")
    orthanc.start(move_port)
    try:
        _upload(orthanc, files)
        yield orthanc, move_port, originals
    finally:
        orthanc.stop()


@pytest.fixture(scope="module")
def labels_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "labels.json"
    path.write_text(json.dumps({"1": "Kidney_L", "2": "Kidney_R"}))
    return path


@pytest.fixture(scope="module")
def pulled(pacs, labels_json, tmp_path_factory):
    """The labelled CT cohort pulled by C-GET through the command line, as a user runs it."""
    orthanc, _, _ = pacs
    out = tmp_path_factory.mktemp("pulls") / "kidneys"
    result = medmap_cli(
        "dataset", "pull", "--from", f"ORTHANC@127.0.0.1:{orthanc.dicom}", "-o", out,
        "--modality", "CT", "--with", "RTSTRUCT", "--study-date", "20240101-20240131", "--labels", labels_json,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.dcm"))}


def test_the_cohort_arrives_de_identified_with_each_rtstruct_on_its_series(pacs, pulled):
    from medmap.data.check import check_dataset
    from medmap.data.layouts import read_dataset
    from medmap.tasks import task_for

    _, _, originals = pacs
    out, stdout = pulled
    assert f"pulled {2 * LABELLED} (" in stdout  # the CT and the RTSTRUCT of each labelled study
    assert "left out: RTSTRUCT series" in stdout and "not in the cohort" in stdout  # the MR's contours
    rows = list(csv.DictReader((out / "cohort.csv").read_text().splitlines()))
    assert sorted(r["modality"] for r in rows) == ["CT"] * LABELLED + ["RTSTRUCT"] * LABELLED
    assert len({r["patient_id"] for r in rows}) == LABELLED
    for path in out.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientID).startswith("ANON-")
        assert {str(ds.PatientID), str(ds.PatientName)}.isdisjoint(originals["ids"])
        assert {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}.isdisjoint(originals["uids"])
        assert "StudyDate" not in ds or not ds.StudyDate
    assert not (out / ".incoming").exists()
    assert not any(text in (out / "pull.json").read_text() for text in originals["ids"] | originals["uids"])
    dataset = read_dataset(out)
    assert dataset.layout == "dicom" and len(dataset.cases) == LABELLED and len(dataset.patients) == LABELLED
    assert check_dataset(dataset, task_for("segmentation")) == []
    for case in dataset.cases:  # labels still land on their images, on the right side
        mask = case.load_mask().array
        assert (mask == 1).sum() > 0 and np.argwhere(mask == 1)[:, 2].mean() > np.argwhere(mask == 2)[:, 2].mean()


def test_training_runs_on_the_pulled_cohort(pulled, tmp_path):
    from medmap.training.config import TrainConfig
    from medmap.training.run import train_run

    out, _ = pulled
    config = TrainConfig(epochs=1, samples_per_epoch=8, workers=0)
    overrides = ["patch_size=[8,32,32]", "batch_size=4", "network_width=4", "network_depth=3"]
    summary = train_run(out, tmp_path / "run", overrides=overrides, config=config)
    assert set(summary["metrics"]["classes"]) == {"Kidney_L", "Kidney_R"}


def test_c_move_and_dicomweb_bring_the_same_files_under_the_same_key(pacs, pulled, tmp_path):
    orthanc, move_port, _ = pacs
    out, _ = pulled
    key = out.parent / "kidneys.key"
    query = ["--modality", "CT", "--with", "RTSTRUCT", "--key", key]
    moved = medmap_cli("dataset", "pull", "--from", f"ORTHANC@127.0.0.1:{orthanc.dicom}", "-o", tmp_path / "move",
                       "--method", "move", "--listen", f"127.0.0.1:{move_port}", *query)  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert _files(tmp_path / "move") == _files(out)
    if not Path(DICOMWEB_PLUGIN).is_file():
        pytest.skip("Orthanc's DICOMweb plugin is not installed")
    web = medmap_cli("dataset", "pull", "--from", f"http://127.0.0.1:{orthanc.http}/dicom-web",
                     "-o", tmp_path / "web", *query)  # fmt: skip
    assert web.returncode == 0, web.stderr
    assert _files(tmp_path / "web") == _files(out)


class FailsOnce(DimseSource):
    """The network giving way during the first CT series."""

    failed = False

    def retrieve(self, entry, folder):
        if entry.modality == "CT" and not self.failed:
            self.failed = True
            folder.mkdir(parents=True)
            (folder / "partial.dcm").write_bytes(b"cut off")
            raise InputNotFoundError(f"{self.peer}: association aborted")
        return super().retrieve(entry, folder)


def test_a_pull_cut_off_goes_on_where_it_stopped(pacs, pulled, tmp_path):
    orthanc, _, _ = pacs
    out, _ = pulled
    query = CohortQuery(modalities=("CT",), require=("RTSTRUCT",))
    peer = Peer("ORTHANC", "127.0.0.1", orthanc.dicom)
    first = pull_cohort(FailsOnce(peer), query, tmp_path / "cut", key=out.parent / "kidneys.key")
    assert first.fetched == 2 * LABELLED - 1 and len(first.failed) == 1 and "aborted" in first.failed[0]
    assert not (tmp_path / "cut" / ".incoming").exists()
    arrived = {p: p.stat().st_mtime_ns for p in (tmp_path / "cut").rglob("*.dcm")}
    again = pull_cohort(DimseSource(peer), query, tmp_path / "cut")  # the key found beside the folder
    assert again.fetched == 1 and again.already == 2 * LABELLED - 1 and not again.failed
    assert all(p.stat().st_mtime_ns == t for p, t in arrived.items())  # what had arrived is not fetched again
    assert _files(tmp_path / "cut") == _files(out)


def test_pull_failures_are_one_line_and_leave_the_folder_as_it_was(pacs, pulled, tmp_path):
    orthanc, _, _ = pacs
    out, _ = pulled
    closed = free_port()
    result = medmap_cli("dataset", "pull", "--from", f"ORTHANC@127.0.0.1:{closed}", "-o", tmp_path / "x")
    assert_one_line_error(result, f"ORTHANC@127.0.0.1:{closed}", "no association")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    result = medmap_cli("dataset", "pull", "--from", f"ORTHANC@127.0.0.1:{orthanc.dicom}", "-o", tmp_path / "mine")
    assert_one_line_error(result, "mine", "not a pull's folder")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    before = _files(out)
    result = medmap_cli("dataset", "pull", "--from", f"ORTHANC@127.0.0.1:{orthanc.dicom}", "-o", out,
                        "--key", tmp_path / "lost.key")  # fmt: skip
    assert_one_line_error(result, "lost.key", "pseudonyms would not match")
    assert _files(out) == before
    result = medmap_cli("dataset", "pull", "--from", "ORTHANC@127.0.0.1:1", "-o", tmp_path / "y", "--study-date", "May")
    assert_one_line_error(result, "--study-date 'May'")


def test_a_seg_study_arrives_with_its_segments_on_the_de_identified_series(pacs, labels_json, tmp_path):
    from medmap.data.layouts import read_dataset

    orthanc, _, originals = pacs
    result = medmap_cli("dataset", "pull", "--from", f"ORTHANC@127.0.0.1:{orthanc.dicom}", "-o", tmp_path / "seg",
                        "--with", "SEG", "--labels", labels_json)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "pulled 2 (" in result.stdout  # the one study with a SEG: its CT and the SEG
    dataset = read_dataset(tmp_path / "seg")
    (case,) = dataset.cases
    np.testing.assert_array_equal(case.load_mask().array, originals["seg"])
