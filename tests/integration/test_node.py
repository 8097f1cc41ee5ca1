"""The DICOM node against real peers on 127.0.0.1: dcmtk's storescu/echoscu send to it, a real Orthanc
(started here with its own storage) receives the SEG it sends back. Every process started is stopped."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medmap.io.dicom.writer import SeriesInfo, write_series
from tests.builders import ball_case
from tests.helpers import require

pytestmark = pytest.mark.integration
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"  # Debian orthanc-dicomweb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_process(process, log, timeout: float) -> None:
    """Terminate (then kill) a process this module started, and close its log."""
    if process is None:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if log is not None and not log.closed:
        log.close()


class Orthanc:
    def __init__(self, root: Path, extra: dict | None = None) -> None:
        self.root = root
        self.http, self.dicom = free_port(), free_port()
        self.process, self.log = None, None
        self.extra = extra or {}  # configuration on top of the defaults (TLS, modalities)

    def start(self, medmap_port: int) -> None:
        config = {
            "Name": "medmap-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "HttpPort": self.http,
            "DicomPort": self.dicom,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {"MEDMAP": ["MEDMAP", "127.0.0.1", medmap_port]},
            "Plugins": [DICOMWEB_PLUGIN] if Path(DICOMWEB_PLUGIN).is_file() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            **self.extra,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "orthanc.json").write_text(json.dumps(config))
        self.log = open(self.root / "orthanc.log", "w")  # noqa: SIM115 (open while Orthanc runs)
        self.process = subprocess.Popen(
            [require("Orthanc"), str(self.root / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_for(lambda: self._get("/system"), 60, "Orthanc's REST API")

    def _get(self, path: str):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def find(self, level: str, query: dict) -> list:
        body = json.dumps({"Level": level, "Query": query}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.http}/tools/find", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        stop_process(self.process, self.log, timeout=30)


class NodeProcess:
    def __init__(self, bundle: Path, data: Path, port: int, destination: str) -> None:
        self.args = [
            sys.executable,
            "-m",
            "medmap.cli",
            "serve",
            "--bundle",
            str(bundle),
            "--data",
            str(data),
            "--port",
            str(port),
            "--destination",
            destination,
            "--allow",
            "STORESCU",
            "--allow",
            "ORTHANC",
            "--idle",
            "3",
        ]
        self.port, self.data, self.process, self.log = port, data, None, None

    def start(self) -> None:
        data = self.data
        data.mkdir(parents=True, exist_ok=True)
        self.log = open(data / f"node-{len(list(data.glob('node-*.log')))}.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self.echo, 60, "the node to answer C-ECHO")

    echo_options: tuple[str, ...] = ()  # extra echoscu options for every echo (TLS, for instance)

    def echo(self, aet: str = "STORESCU", options: tuple[str, ...] = ()) -> bool:
        result = subprocess.run(
            [
                require("echoscu"),
                *self.echo_options,
                *options,
                "-aet",
                aet,
                "-aec",
                "MEDMAP",
                "127.0.0.1",
                str(self.port),
            ],
            capture_output=True,
            timeout=60,
        )
        return result.returncode == 0

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def stop(self) -> None:
        stop_process(self.process, self.log, timeout=60)

    def logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.data.glob("node-*.log")))


def ball_series(folder: Path, seed: int = 99, inverted: bool = False) -> tuple[Path, str]:
    """A ball case as an MR series; ``inverted`` reverses its contrast (outside the ball model's use)."""
    image, _ = ball_case(seed)
    array = 110.0 - image.array if inverted else image.array
    image = image.with_array(np.rint(array).astype(np.int16), modality="MR")
    info = SeriesInfo(patient_name="TEST^NODE", patient_id=f"NODE-{seed}")
    write_series(image, folder, modality="MR", info=info)
    return folder, info.study_uid


def storescu(port: int, files: list[Path], aet: str = "STORESCU") -> subprocess.CompletedProcess:
    return subprocess.run(
        [require("storescu"), "-aet", aet, "-aec", "MEDMAP", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def peers(ball_bundle, tmp_path):
    orthanc = Orthanc(tmp_path / "orthanc")
    port = free_port()
    node = NodeProcess(ball_bundle, tmp_path / "node", port, f"ORTHANC@127.0.0.1:{orthanc.dicom}")
    yield orthanc, node
    node.stop()
    orthanc.stop()


def node_status_with(node: NodeProcess, fragment: str) -> str | bool:
    """``medmap node status`` output when it contains ``fragment`` (else False), for `wait_for`."""
    status = subprocess.run(
        [sys.executable, "-m", "medmap.cli", "node", "status", "--data", str(node.data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return fragment in status.stdout and status.stdout


def seg_series_in(orthanc: Orthanc, study_uid: str) -> list:
    return orthanc.find("Series", {"StudyInstanceUID": study_uid, "Modality": "SEG"})


def test_series_in_seg_out_in_the_same_study(peers, tmp_path):
    orthanc, node = peers
    orthanc.start(node.port)
    node.start()
    folder, study = ball_series(tmp_path / "series")
    sent = storescu(node.port, sorted(folder.iterdir()))
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: seg_series_in(orthanc, study), 120, "the SEG to arrive in Orthanc")
    instances = orthanc.find("Instance", {"StudyInstanceUID": study, "Modality": "SEG"})
    assert len(instances) == 1
    status = subprocess.run(
        [sys.executable, "-m", "medmap.cli", "node", "status", "--data", str(node.data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "done 1" in status.stdout and "outbox: 0" in status.stdout
    assert "TEST^NODE" not in node.logs()  # UIDs in the logs, never patient names


def test_unknown_calling_ae_is_rejected(peers):
    orthanc, node = peers
    orthanc.start(node.port)
    node.start()
    assert not node.echo("INTRUDER")
    assert node.echo("STORESCU")
    assert "association rejected: calling AE 'INTRUDER'" in node.logs()


def test_kill_minus_nine_loses_nothing_and_sends_once(peers, tmp_path):
    """Results wait in the outbox while the PACS is down; the node is killed; after a restart with the PACS
    up, the SEG arrives exactly once."""
    orthanc, node = peers
    node.start()  # Orthanc not started yet: the destination refuses
    folder, study = ball_series(tmp_path / "series")
    assert storescu(node.port, sorted(folder.iterdir())).returncode == 0
    db = node.data / "jobs.sqlite"

    def waiting():
        import sqlite3

        with sqlite3.connect(db) as con:
            return con.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0] > 0

    wait_for(waiting, 120, "a result waiting in the outbox")
    node.kill()
    orthanc.start(node.port)
    node.start()
    wait_for(lambda: seg_series_in(orthanc, study), 120, "the SEG after the restart")
    time.sleep(3)  # a duplicate would arrive within the next send cycles
    assert len(orthanc.find("Instance", {"StudyInstanceUID": study, "Modality": "SEG"})) == 1


def test_corrupt_series_fails_with_a_reason_and_the_node_keeps_serving(peers, tmp_path):
    orthanc, node = peers
    orthanc.start(node.port)
    node.start()
    folder, _ = ball_series(tmp_path / "bad")
    victim = sorted(folder.iterdir())[3]
    ds = pydicom.dcmread(victim)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # truncated pixel data
    ds.save_as(victim)
    assert storescu(node.port, sorted(folder.iterdir())).returncode == 0

    text = wait_for(lambda: node_status_with(node, "failed 1"), 120, "the job to fail")
    assert "failed" in text and node.echo()  # the reason is recorded; the node still answers
    good, study = ball_series(tmp_path / "good", seed=98)
    assert storescu(node.port, sorted(good.iterdir())).returncode == 0
    wait_for(lambda: seg_series_in(orthanc, study), 120, "the next series' SEG")


def test_series_outside_intended_use_is_refused_and_nothing_is_sent(peers, tmp_path):
    orthanc, node = peers
    orthanc.start(node.port)
    node.start()
    folder, study = ball_series(tmp_path / "foreign", seed=97, inverted=True)
    assert storescu(node.port, sorted(folder.iterdir())).returncode == 0

    text = wait_for(lambda: node_status_with(node, "refused 1"), 120, "the job to be refused")
    assert "not assessed, outside the model's intended use" in text and "unlike the training images" in text
    assert "refused by balls" in node.logs()
    good, good_study = ball_series(tmp_path / "good", seed=98)
    assert storescu(node.port, sorted(good.iterdir())).returncode == 0
    wait_for(lambda: seg_series_in(orthanc, good_study), 120, "the next series' SEG")
    assert not orthanc.find("Series", {"StudyInstanceUID": study, "Modality": "SEG"})  # nothing for the foreign one


def test_orthanc_pushes_to_the_node(peers, tmp_path):
    """Orthanc sends a study to the node and gets the SEG and the overlay images (Secondary Capture) back."""
    orthanc, node = peers
    orthanc.start(node.port)
    node.args.append("--overlays")
    node.start()
    folder, study = ball_series(tmp_path / "series")
    push_from_orthanc(orthanc, folder, study)
    wait_for(lambda: seg_series_in(orthanc, study), 120, "the SEG of the pushed study")
    written = sorted(node.data.rglob("overlays/*.dcm"))
    assert written
    uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in written}

    def overlays_stored():
        found = orthanc.find("Instance", {"StudyInstanceUID": study, "Modality": "OT"})
        return len(found) == len(uids) and found

    wait_for(overlays_stored, 120, "every overlay image in Orthanc")


def test_web_page_in_headless_chromium(ball_bundle, tmp_path):
    """The page served next to the node, in a real browser: it loads, lists the job with the facts a PACS
    engineer needs (patient pseudonym, calling AE, model identity), its thumbnail, the series refused as
    outside the model's use and the association rejected at the door; a screenshot is taken."""
    from playwright.sync_api import sync_playwright

    http = free_port()
    node = NodeProcess(ball_bundle, tmp_path / "node", free_port(), "NOWHERE@127.0.0.1:9")
    (tmp_path / "token").write_text("page-token\n")
    node.args += ["--http", str(http), "--token-file", str(tmp_path / "token")]
    try:
        node.start()
        folder, _ = ball_series(tmp_path / "series")
        assert storescu(node.port, sorted(folder.iterdir())).returncode == 0
        series_uid = pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID

        def job_has_result():
            request = urllib.request.Request(
                f"http://127.0.0.1:{http}/v1/jobs", headers={"Authorization": "Bearer page-token"}
            )
            with urllib.request.urlopen(request, timeout=10) as r:
                jobs = json.loads(r.read())
            return any(j["series_uid"] == series_uid and j["state"] in ("sending", "done") for j in jobs)

        wait_for(job_has_result, 120, "the job's result")
        foreign, _ = ball_series(tmp_path / "foreign", seed=97, inverted=True)  # outside the model's use
        assert storescu(node.port, sorted(foreign.iterdir())).returncode == 0
        assert not node.echo("INTRUDER")  # an unknown calling AE: rejected, and listed on the page
        foreign_uid = pydicom.dcmread(next(foreign.iterdir())).SeriesInstanceUID

        def refused():
            request = urllib.request.Request(
                f"http://127.0.0.1:{http}/v1/jobs", headers={"Authorization": "Bearer page-token"}
            )
            with urllib.request.urlopen(request, timeout=10) as r:
                return any(j["series_uid"] == foreign_uid and j["state"] == "refused" for j in json.loads(r.read()))

        wait_for(refused, 120, "the foreign series to be refused")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=require("chromium"), args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{http}/?token=page-token")
                row = page.locator(f"tr:has(.uid:text-is('{series_uid}'))")
                assert row.count() == 1
                assert row.locator("td.state").inner_text().split()[0] in ("sending", "done")
                text = row.inner_text()
                assert "ml" in text and "STORESCU" in text and "Balls-segmentation-" in text and "P-" in text
                thumb = row.locator("img.thumb")
                thumb.wait_for()
                width = page.evaluate("img => img.complete && img.naturalWidth", thumb.element_handle())
                assert width and width > 50
                refused = page.locator("tr[data-state=refused]")
                assert refused.count() == 1 and "not assessed" in refused.inner_text()
                assert "INTRUDER" in page.locator("#events").inner_text()
                page.screenshot(path=str(tmp_path / "node-page.png"), full_page=True)
                assert (tmp_path / "node-page.png").stat().st_size > 10_000
                denied = browser.new_page()
                response = denied.goto(f"http://127.0.0.1:{http}/")
                assert response.status == 401
            finally:
                browser.close()
    finally:
        node.stop()


def upload_to_orthanc(orthanc: Orthanc, folder: Path) -> None:
    for path in sorted(folder.iterdir()):
        request = urllib.request.Request(
            f"http://127.0.0.1:{orthanc.http}/instances", data=path.read_bytes(), method="POST"
        )
        urllib.request.urlopen(request, timeout=10).close()


def push_from_orthanc(orthanc: Orthanc, folder: Path, study: str) -> None:
    """Upload a series to Orthanc, then have Orthanc C-STORE the study to the node (its modality MEDMAP)."""
    upload_to_orthanc(orthanc, folder)
    (study_id,) = orthanc.find("Study", {"StudyInstanceUID": study})
    body = json.dumps({"Resources": [study_id], "Synchronous": True}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{orthanc.http}/modalities/MEDMAP/store", data=body, method="POST"
    )
    urllib.request.urlopen(request, timeout=120).close()


def test_predict_pulls_by_wado_and_stores_by_stow(ball_bundle, tmp_path):
    assert Path(DICOMWEB_PLUGIN).is_file(), "orthanc-dicomweb is not installed (make test installs it)"
    orthanc = Orthanc(tmp_path / "orthanc")
    try:
        orthanc.start(free_port())
        folder, study = ball_series(tmp_path / "series")
        upload_to_orthanc(orthanc, folder)
        root = f"http://127.0.0.1:{orthanc.http}/dicom-web"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "medmap.cli",
                "predict",
                str(ball_bundle),
                "--dicomweb",
                root,
                "--study",
                study,
                "-o",
                str(tmp_path / "out"),
                "--stow",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert len(list((tmp_path / "out" / "input" / study).iterdir())) == len(list(folder.iterdir()))
        assert len(orthanc.find("Instance", {"StudyInstanceUID": study, "Modality": "SEG"})) == 1
    finally:
        orthanc.stop()


def test_node_stores_results_by_stow_when_asked(ball_bundle, tmp_path):
    orthanc = Orthanc(tmp_path / "orthanc")
    port = free_port()
    node = NodeProcess(ball_bundle, tmp_path / "node", port, "unused@127.0.0.1:9")
    i = node.args.index("--destination")
    del node.args[i : i + 2]
    try:
        orthanc.start(port)
        node.args += ["--dicomweb", f"http://127.0.0.1:{orthanc.http}/dicom-web"]
        node.start()
        folder, study = ball_series(tmp_path / "series")
        assert storescu(node.port, sorted(folder.iterdir())).returncode == 0
        wait_for(lambda: seg_series_in(orthanc, study), 120, "the SEG stored by STOW-RS")
    finally:
        node.stop()
        orthanc.stop()


def openssl(*args: str) -> None:
    subprocess.run([require("openssl"), *args], check=True, capture_output=True, timeout=60)


def signed_by(ca: tuple[Path, Path], folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by ``ca``, usable as TLS server and client."""
    cert, key, request, ext = (folder / f"{name}{s}" for s in (".pem", ".key", ".csr", ".ext"))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request), "-subj", f"/CN={name}")
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-out", str(cert), "-days", "1", "-extfile", str(ext),
    )  # fmt: skip
    return cert, key


def test_dicom_over_tls(ball_bundle, tmp_path):
    """With a certificate the node speaks DICOM over TLS only: echoscu with TLS trusting the certificate
    is answered; plain TCP is not."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
        "-subj", "/CN=127.0.0.1", "-days", "1", "-addext", "subjectAltName=IP:127.0.0.1",
    )  # fmt: skip
    node = NodeProcess(ball_bundle, tmp_path / "node", free_port(), "NOWHERE@127.0.0.1:9")
    node.args += ["--tls-cert", str(cert), "--tls-key", str(key)]

    node.echo_options = ("+tla", "+cf", str(cert))  # the readiness check must speak TLS too
    try:
        node.start()
        assert node.echo()
        node.echo_options = ()
        assert not node.echo(options=("-to", "5", "-ta", "5"))  # plain TCP is not answered
    finally:
        node.stop()


def test_tls_both_ways_with_orthanc(ball_bundle, tmp_path):
    """Mutual TLS end to end: Orthanc (TLS-only DICOM port) pushes a study to the node over TLS, and the node
    sends the SEG back over TLS, each side checking the other's certificate against one CA."""
    ca = tmp_path / "ca.pem", tmp_path / "ca.key"
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca[1]), "-out", str(ca[0]),
        "-subj", "/CN=medmap test CA", "-days", "1",
    )  # fmt: skip
    node_cert, node_key = signed_by(ca, tmp_path, "node")
    pacs_cert, pacs_key = signed_by(ca, tmp_path, "orthanc")
    port = free_port()
    orthanc = Orthanc(
        tmp_path / "orthanc",
        {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(pacs_cert),
            "DicomTlsPrivateKey": str(pacs_key),
            "DicomTlsTrustedCertificates": str(ca[0]),
            "DicomTlsRemoteCertificateRequired": True,
            "DicomModalities": {"MEDMAP": {"AET": "MEDMAP", "Host": "127.0.0.1", "Port": port, "UseDicomTls": True}},
        },
    )
    node = NodeProcess(ball_bundle, tmp_path / "node", port, f"ORTHANC@127.0.0.1:{orthanc.dicom}")
    node.args += ["--tls-cert", str(node_cert), "--tls-key", str(node_key), "--tls-ca", str(ca[0])]
    node.args += ["--destination-tls"]
    node.echo_options = ("+tls", str(node_key), str(node_cert), "+cf", str(ca[0]))
    try:
        orthanc.start(port)
        node.start()
        plain = subprocess.run(
            [require("echoscu"), "-to", "5", "-ta", "5", "-aec", "ORTHANC", "127.0.0.1", str(orthanc.dicom)],
            capture_output=True,
            timeout=60,
        )
        assert plain.returncode != 0  # Orthanc's DICOM port speaks TLS only
        folder, study = ball_series(tmp_path / "series")
        push_from_orthanc(orthanc, folder, study)
        wait_for(lambda: seg_series_in(orthanc, study), 120, "the SEG sent back over TLS")
    finally:
        node.stop()
        orthanc.stop()


def test_a_chest_ct_from_orthanc_comes_back_with_its_nodules_in_one_sr(tmp_path):
    """The chest route (detector + classifier, CT and CHEST|LUNG): Orthanc pushes a chest CT, the node
    finds the nodules, classifies each, and stores one TID 1500 SR in the same study in Orthanc whose
    groups are the findings of the job's result (or the negative read's single group). Untrained bundles:
    the route and the round trip are under test, not the models."""
    import csv

    import highdicom as hd

    from medmap.data.phantoms import chest_ct
    from tests.builders import untrained_bundle

    rows = []
    for p in range(2):
        case = chest_ct((24, 96, 96), (3.0, 2.0, 2.0), seed=p, n_nodules=2)
        write_series(case.image, tmp_path / "ct" / f"P{p}", info=SeriesInfo(patient_id=f"P{p}", body_part="CHEST"))
        for i, n in enumerate(case.nodules):
            x, y, z = n.position
            row = {"image": f"ct/P{p}", "x": x, "y": y, "z": z, "diameter_mm": n.diameter_mm}
            rows.append({**row, "label": ("benign", "malignant")[i % 2], "patient_id": f"P{p}"})
    with open(tmp_path / "nodules.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    detector = untrained_bundle(
        tmp_path / "nodules.csv", "detection", ["network_width=4", "network_depth=3", "patch_size=[16,32,32]"], tmp_path
    )
    classifier = untrained_bundle(tmp_path / "nodules.csv", "classification", ["network=smallcnn"], tmp_path)
    route = {"bundle": str(detector), "classifier": str(classifier), "modality": "CT", "body_part": "CHEST|LUNG"}
    (tmp_path / "node.json").write_text(json.dumps({"routes": [route]}))
    orthanc = Orthanc(tmp_path / "orthanc")
    node = NodeProcess(detector, tmp_path / "node", free_port(), f"ORTHANC@127.0.0.1:{orthanc.dicom}")
    node.args[node.args.index("--bundle") : node.args.index("--bundle") + 2] = ["--config", str(tmp_path / "node.json")]
    try:
        orthanc.start(node.port)
        node.start()
        image = chest_ct((24, 96, 96), (3.0, 2.0, 2.0), seed=7, n_nodules=2).image
        info = SeriesInfo(patient_name="TEST^CHEST", patient_id="CHEST-7", body_part="CHEST")
        write_series(image, tmp_path / "series", info=info)
        push_from_orthanc(orthanc, tmp_path / "series", info.study_uid)
        stored = wait_for(
            lambda: orthanc.find("Series", {"StudyInstanceUID": info.study_uid, "Modality": "SR"}), 180, "the SR"
        )
        assert len(stored) == 1
        (result_json,) = (node.data / "results").rglob("result.json")
        found = json.loads(result_json.read_text())["findings"]
        assert all("classification" in f for f in found)  # every finding went through the classifier
        sr = hd.sr.srread(next(result_json.parent.glob("sr.dcm")))
        groups = sr.content.get_volumetric_roi_measurement_groups()
        assert len(groups) == len(found)
        if not found:  # the negative read: one group saying no nodule was found
            assert "Absent" in str(sr)
        assert "TEST^CHEST" not in node.logs()
    finally:
        node.stop()
        orthanc.stop()
