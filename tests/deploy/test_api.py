"""The node's REST API in process (FastAPI's TestClient): upload, jobs, results, files, token."""

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from medmap.deploy.api import create_app
from medmap.deploy.node import Node
from medmap.deploy.settings import NodeSettings, Route
from medmap.inference.bundle import create_bundle
from medmap.io.dicom.writer import SeriesInfo, write_series
from tests.builders import ball_case


@pytest.fixture(scope="session")  # session: built once even when xdist interleaves modules
def api_bundle(balls_run, tmp_path_factory):
    return create_bundle(balls_run[0], tmp_path_factory.mktemp("api-bundle") / "balls")


@pytest.fixture
def node(api_bundle, tmp_path):
    node = Node(NodeSettings(data=tmp_path / "node", routes=[Route(api_bundle, modality="MR")]))
    yield node
    node.store.close()


def series_files(folder: Path, inverted: bool = False) -> list[Path]:
    image, _ = ball_case(99)
    array = 110.0 - image.array if inverted else image.array
    image = image.with_array(np.rint(array).astype(np.int16), modality="MR")
    info = SeriesInfo(patient_name="API^TEST", patient_id="API-0001", accession_number="ACC42")
    return write_series(image, folder, modality="MR", info=info)


def test_upload_process_and_fetch_results(node, tmp_path):
    client = TestClient(create_app(node, token="s3cret"))
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/v1/jobs").status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in series_files(tmp_path / "s")]
    response = client.post("/v1/studies", files=files, headers=auth)
    assert response.status_code == 200, response.text
    (job,) = response.json()["jobs"]
    assert job["state"] == "queued" and job["calling_ae"] == "HTTP"
    assert client.get(f"/v1/jobs/{job['id']}/result", headers=auth).status_code == 409
    node.worker.process(node.store.next_queued())  # what the worker thread does
    result = client.get(f"/v1/jobs/{job['id']}/result", headers=auth).json()
    assert result["state"] == "done" and result["segments"]["ball"]["volume_ml"] > 0
    assert {"labels.nii.gz", "seg.dcm", "result.json", "thumbnail.png"} <= set(result["files"])
    seg = client.get(result["files"]["seg.dcm"], headers=auth)
    assert seg.status_code == 200 and seg.content[128:132] == b"DICM"
    png = client.get(f"/v1/jobs/{job['id']}/thumbnail.png?token=s3cret")
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    page = client.get("/?token=s3cret").text
    assert job["series_uid"] in page and 'data-state="done"' in page
    assert "API^TEST" not in page and "API-0001" not in page  # no patient names or IDs: a pseudonym
    assert result["patient_ref"].startswith("P-") and result["patient_ref"] in page and "ACC42" in page
    assert result["model"].startswith("Balls-segmentation-") and result["model"] in page
    assert result["delivery"] == {"results": 0, "sent": 0, "pending": 0, "attempts": 0, "last_error": ""}
    assert 'id="no-token"' not in page


def test_page_shows_refusals_without_paths_and_warns_without_token(node, tmp_path):
    client = TestClient(create_app(node))  # no token
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in series_files(tmp_path / "s", True)]
    (job,) = client.post("/v1/studies", files=files).json()["jobs"]
    node.worker.process(node.store.next_queued())
    described = client.get(f"/v1/jobs/{job['id']}").json()
    assert described["state"] == "refused" and "outside the model's intended use" in described["error"]
    node.store.event("association rejected", "calling AE 'INTRUDER' from ('127.0.0.1', 5000)")
    node.store.set_state(job["id"], "refused", error=f"case x: {tmp_path}/node/spool/1.2/3.4/5.dcm: damaged")
    page = client.get("/").text
    assert 'id="no-token"' in page and "INTRUDER" in page and "not assessed" in page
    assert str(tmp_path) not in page and "5.dcm: damaged" in page  # the file named, not where it lies


def test_bad_upload_is_refused_with_the_file_named(node):
    client = TestClient(create_app(node))
    response = client.post("/v1/studies", files=[("files", ("notes.txt", b"hello", "text/plain"))])
    assert response.status_code == 400 and "notes.txt" in response.json()["detail"]
    assert client.get("/v1/jobs/42").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "medmap node"


def test_a_detectors_findings_are_listed_and_pictured_one_by_one():
    """The page's line per finding (position, size, score, class) and the thumbnail's crop per finding:
    the slice through its centre with the finding in the middle."""
    from medmap.deploy.api import _found
    from medmap.evaluation.plots import finding_gallery
    from medmap.tasks.detection.gallery import finding_crops
    from tests.builders import volume

    image = volume(shape=(20, 60, 60), spacing=(2.0, 1.0, 1.0))
    centre = [float(v) for v in image.index_to_world([10, 30, 20])]
    listed = [
        {"finding": "nodule", "position_lps_mm": centre, "diameter_mm": 8.0, "score": 0.91},
        {
            "finding": "nodule",
            "position_lps_mm": centre,
            "diameter_mm": 5.0,
            "score": 0.7,
            "classification": {"probabilities": {"benign": 0.2, "malignant": 0.8}, "decision": "malignant"},
        },
    ]
    text = _found(listed)
    assert text.count("<br>") == 1 and "score 0.91" in text and "malignant (0.80)" in text
    assert _found([]) == "no finding above the operating threshold"
    crops = finding_crops(image, listed)
    assert len(crops) == 2 and crops[1].caption.startswith("nodule 2: 5.0 mm, score 0.70, malignant 0.80")
    assert crops[0].centre == (24.0, 24.0)  # in the middle, also where the crop reaches past the image's edge
    assert crops[0].picture[24, 24] == image.array[10, 30, 20]
    assert finding_gallery(crops, "2 findings").startswith(b"\x89PNG")


def test_an_old_job_is_found_however_many_came_after(node):
    """A job is looked up by its id, not among the latest ones (it answered 404 behind 10,000 newer jobs)."""
    import sqlite3

    receive = "INSERT INTO jobs (series_uid, folder, state, first_received, last_received) VALUES (?, '', 'done', 0, 0)"
    with sqlite3.connect(node.store.path) as db:  # 10,001 finished series, as a busy node's database holds
        db.executemany(receive, [(f"1.2.{i}",) for i in range(10_001)])
    client = TestClient(create_app(node))
    first = client.get("/v1/jobs/1")
    assert first.status_code == 200 and first.json()["series_uid"] == "1.2.0"
    assert client.get("/v1/jobs/10002").status_code == 404
