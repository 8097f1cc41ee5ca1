"""The node's REST API in process (FastAPI's TestClient): upload, jobs, results, files, token."""

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from medmap.deploy.api import create_app
from medmap.deploy.node import Node, NodeConfig, Route
from medmap.inference.bundle import create_bundle
from medmap.io.dicom.writer import SeriesInfo, write_series
from tests.builders import ball_case


@pytest.fixture(scope="module")
def api_bundle(balls_run, tmp_path_factory):
    return create_bundle(balls_run[0], tmp_path_factory.mktemp("api-bundle") / "balls")


@pytest.fixture
def node(api_bundle, tmp_path):
    node = Node(NodeConfig(data=tmp_path / "node", routes=[Route(api_bundle, modality="MR")]))
    yield node
    node.store.close()


def series_files(folder: Path) -> list[Path]:
    image, _ = ball_case(99)
    image = image.with_array(np.rint(image.array).astype(np.int16), modality="MR")
    return write_series(image, folder, modality="MR", info=SeriesInfo(patient_name="API^TEST"))


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
    node._process(node.store.next_queued())  # what the worker thread does
    result = client.get(f"/v1/jobs/{job['id']}/result", headers=auth).json()
    assert result["state"] == "done" and result["segments"]["ball"]["volume_ml"] > 0
    assert {"labels.nii.gz", "seg.dcm", "result.json", "thumbnail.png"} <= set(result["files"])
    seg = client.get(result["files"]["seg.dcm"], headers=auth)
    assert seg.status_code == 200 and seg.content[128:132] == b"DICM"
    png = client.get(f"/v1/jobs/{job['id']}/thumbnail.png?token=s3cret")
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    page = client.get("/?token=s3cret").text
    assert job["series_uid"] in page and 'data-state="done"' in page
    assert "API^TEST" not in page  # the page shows UIDs, never patient names


def test_bad_upload_is_refused_with_the_file_named(node):
    client = TestClient(create_app(node))
    response = client.post("/v1/studies", files=[("files", ("notes.txt", b"hello", "text/plain"))])
    assert response.status_code == 400 and "notes.txt" in response.json()["detail"]
    assert client.get("/v1/jobs/42").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "medmap node"
