"""medmap as a DICOM node: receive studies (C-STORE SCP), run the bundle a route picks, send SEG/SR back.

Receiving (pynetdicom): C-ECHO and C-STORE of the image storage classes medmap reads, uncompressed and
compressed transfer syntaxes. Only calling AE titles on the allow-list may associate (others are
rejected and logged). An instance is written to ``DATA/spool/<study>/<series>/<sop>.dcm``, fsync'ed
(file and folder) and recorded in the job store *before* success is returned, so an acknowledged
instance survives a crash.

Processing (one worker thread): a series is complete when its association is released or after
``idle_seconds`` without a new instance; the first route whose rules match (Modality,
BodyPartExamined, SeriesDescription) names the bundle; the predictor writes NIfTI/SEG/SR under
``DATA/results/<job>/``; the SEG/SR (and overlay images with ``overlays``) enter the outbox and are sent
by C-STORE (over TLS with ``destination_tls``) to the destination, retried with back-off until
acknowledged. Logs name UIDs and AE titles, never patient identifiers.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medmap.deploy.jobs import JobStore
from medmap.errors import ConfigError, MedmapError
from medmap.io.guard import reason

log = logging.getLogger("medmap.node")

# Image storage classes medmap can process (CT, MR, CR, DX, MG, US, NM, PT, SC, enhanced CT/MR)
STORAGE_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "Enhanced CT": "1.2.840.10008.5.1.4.1.1.2.1",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "Enhanced MR": "1.2.840.10008.5.1.4.1.1.4.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX presentation": "1.2.840.10008.5.1.4.1.1.1.1",
    "DX processing": "1.2.840.10008.5.1.4.1.1.1.1.1",
    "MG presentation": "1.2.840.10008.5.1.4.1.1.1.2",
    "MG processing": "1.2.840.10008.5.1.4.1.1.1.2.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "US multi-frame": "1.2.840.10008.5.1.4.1.1.3.1",
    "NM": "1.2.840.10008.5.1.4.1.1.20",
    "PET": "1.2.840.10008.5.1.4.1.1.128",
    "Secondary Capture": "1.2.840.10008.5.1.4.1.1.7",
}
MAX_ASSOCIATIONS = 64
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.70",  # JPEG lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE
]


@dataclass
class Route:
    """Which bundle processes a series: every given rule must match (regular expressions, case-insensitive)."""

    bundle: Path
    modality: str = ""
    body_part: str = ""
    description: str = ""

    def accepts(self, modality: str, body_part: str, description: str) -> bool:
        rules = ((self.modality, modality), (self.body_part, body_part), (self.description, description))
        return all(not rule or re.fullmatch(rule, value or "", re.I) for rule, value in rules)


@dataclass
class Destination:
    ae: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        match = re.fullmatch(r"([^@]{1,16})@([^:]+):(\d+)", text)
        if not match:
            raise ConfigError(f"--destination {text!r}: expected AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242")
        return cls(match.group(1), match.group(2), int(match.group(3)))


@dataclass
class NodeConfig:
    data: Path
    routes: list[Route]
    ae_title: str = "MEDMAP"
    port: int = 11112
    host: str = "127.0.0.1"
    destination: Destination | None = None
    allowed_ae: list[str] = field(default_factory=list)  # empty: any calling AE
    idle_seconds: float = 10.0
    device: str = "cpu"
    precision: str = "auto"  # medmap.inference.precision
    overlays: bool = False  # also send Secondary Capture overlay images (viewers without SEG support)
    dicomweb: str | None = None  # results by STOW-RS to this DICOMweb root when no C-STORE destination
    http_port: int | None = None  # the REST API and web page (medmap.deploy.api)
    token: str | None = None  # bearer token for the HTTP API
    tls_cert: Path | None = None  # DICOM over TLS: this node's certificate (PEM) ...
    tls_key: Path | None = None  # ... and its private key
    tls_ca: Path | None = None  # when given, callers must present a certificate signed by it
    destination_tls: bool = False  # send results over TLS (the destination's certificate checked by tls_ca)


def _fsync_write(ds, path: Path) -> None:
    tmp = path.with_name(path.name + ".part")
    ds.save_as(tmp, enforce_file_format=True)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class InvalidInstanceError(MedmapError):
    """An instance the node refuses to store (and answers with a failure status)."""


class Node:
    def __init__(self, config: NodeConfig) -> None:
        if not config.routes:
            raise ConfigError("the node needs at least one --bundle")
        self.config = config
        self.store = JobStore(config.data / "jobs.sqlite")
        self.spool = config.data / "spool"
        self.results = config.data / "results"
        self._stop = threading.Event()
        self._server = None
        self._worker: threading.Thread | None = None
        self._predictors: dict[str, object] = {}
        self._sending_tls = None  # ssl.SSLContext for --destination-tls, made at start
        self._series_by_assoc: dict[int, set[str]] = {}
        self._pseudonym_key = _pseudonym_key(config.data)

    def patient_reference(self, patient_id: str) -> str:
        """A stable pseudonym of a Patient ID for the page and the API: keyed with this node's secret, so the
        same patient's series can be told together without the ID leaving the spool."""
        import hashlib
        import hmac

        if not patient_id:
            return ""
        return "P-" + hmac.new(self._pseudonym_key, patient_id.encode(), hashlib.sha256).hexdigest()[:10]

    def model_of(self, bundle: str | None) -> str:
        """The identity (name + weights hash) of a routed bundle, for the page; its folder name if not loaded."""
        if not bundle:
            return ""
        predictor = self._predictors.get(bundle)
        return predictor.bundle.identity if predictor is not None else Path(bundle).name

    # --- receiving ---------------------------------------------------------------------------------
    def ingest(self, ds, calling_ae: str) -> str:
        """Write one instance durably into the spool and record it; returns its series UID.
        Raises OSError when the spool cannot be written (C-STORE answers "out of resources")."""
        sop, series, study = str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)
        for name, uid in (("SOP Instance UID", sop), ("Series Instance UID", series), ("Study Instance UID", study)):
            if not valid_uid(uid):  # the spool is named by UIDs: an invalid one could collide with another's file
                raise InvalidInstanceError(f"{name} {uid[:80]!r} is not a valid DICOM UID")
        folder = self.spool / _safe(study) / _safe(series)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{_safe(sop)}.dcm"
        _fsync_write(ds, path)
        self.store.record_instance(
            sop,
            series,
            str(path),
            {
                "study_uid": study,
                "modality": str(ds.get("Modality", "")),
                "body_part": str(ds.get("BodyPartExamined", "")),
                "description": str(ds.get("SeriesDescription", "")),
                "accession": str(ds.get("AccessionNumber", ""))[:64],
                "patient_ref": self.patient_reference(str(ds.get("PatientID", ""))),
                "calling_ae": calling_ae,
                "folder": str(folder),
            },
        )
        return series

    def _on_store(self, event) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)
        except Exception as exc:  # an undecodable dataset: refuse it, keep serving
            log.warning("C-STORE refused: cannot decode the dataset (%s)", type(exc).__name__)
            return 0xC210
        try:
            series = self.ingest(ds, event.assoc.requestor.ae_title)
        except InvalidInstanceError as exc:
            log.warning("C-STORE from %s refused: %s", event.assoc.requestor.ae_title, exc)
            self.store.event("instance refused", f"from {event.assoc.requestor.ae_title}: {exc}")
            return 0xC211  # "cannot understand": the SCU learns it was not stored
        except OSError as exc:
            log.error("C-STORE of %s failed: cannot write the spool (%s)", ds.SOPInstanceUID, exc)
            return 0xA700  # out of resources
        self._series_by_assoc.setdefault(id(event.assoc), set()).add(series)
        return 0x0000

    def _on_released(self, event) -> None:
        series = self._series_by_assoc.pop(id(event.assoc), set())
        if series:
            self.store.complete(sorted(series))

    def _on_rejected(self, event) -> None:
        requestor = event.assoc.requestor
        log.warning("association rejected: calling AE %r from %s", requestor.ae_title, requestor.address)
        self.store.event("association rejected", f"calling AE {requestor.ae_title!r} from {requestor.address}")

    def start(self) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification

        if self.config.destination_tls:  # checked now, not at the first result
            if self.config.destination is None:
                raise ConfigError("--destination-tls needs a --destination to send to")
            self._sending_tls = self._client_tls()
        self.spool.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(parents=True, exist_ok=True)
        recovered = self.store.recover()
        if recovered:
            log.info("recovered %d interrupted job(s)", recovered)
        ae = AE(ae_title=self.config.ae_title)
        ae.maximum_associations = MAX_ASSOCIATIONS  # pynetdicom's default, 10, refuses a busy PACS's 11th
        ae.add_supported_context(Verification)
        for uid in STORAGE_CLASSES.values():
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        if self.config.allowed_ae:
            ae.require_calling_aet = list(self.config.allowed_ae)
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        self._server = ae.start_server(
            (self.config.host, self.config.port), block=False, evt_handlers=handlers, ssl_context=self._tls()
        )
        self._worker = threading.Thread(target=self._work, name="medmap-node-worker", daemon=True)
        self._worker.start()
        if self.config.http_port:
            from medmap.deploy.api import create_app, serve_http

            if not self.config.token:
                log.warning(
                    "the HTTP API on port %d runs without a token: anyone who can reach it can read results "
                    "(--token-file)",
                    self.config.http_port,
                )
            self._http = serve_http(create_app(self, self.config.token), self.config.host, self.config.http_port)
        log.info("listening as %s on %s:%d", self.config.ae_title, self.config.host, self.config.port)

    def _tls(self):
        """The server's TLS context (BCP 195: TLS 1.2 or newer), or None for plain TCP."""
        if not self.config.tls_cert:
            return None
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
            if self.config.tls_ca:
                context.load_verify_locations(self.config.tls_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS certificate or key {self.config.tls_cert}: {exc}") from None
        return context

    def _client_tls(self):
        """The TLS context for sending to the destination: its certificate checked against --tls-ca (else the
        system's CAs) and its host name; this node's certificate presented when it has one."""
        import ssl

        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.config.tls_ca)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.config.tls_cert:
                context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS for the destination ({self.config.tls_ca or 'system CAs'}): {exc}") from None
        return context

    def stop(self) -> None:
        """Stop accepting, let the worker finish its current step; running jobs are re-queued at next start."""
        if self._server is not None:
            self._server.shutdown()
        if getattr(self, "_http", None) is not None:
            self._http.should_exit = True
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=600)
        self.store.close()

    # --- processing --------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                self.store.complete_idle(self.config.idle_seconds)
                job = self.store.next_queued()
                if job is not None:
                    busy = True
                    self._process(job)
                busy = self._send_due() or busy
            except Exception:  # the worker never dies; the error is in the log and the job's record
                log.exception("worker step failed")
            if not busy:
                self._stop.wait(0.5)

    def _route(self, job) -> Route | None:
        return next((r for r in self.config.routes if r.accepts(job.modality, job.body_part, job.description)), None)

    def _predictor(self, bundle: Path):
        key = str(bundle)
        if key not in self._predictors:
            from medmap.inference.bundle import load_bundle
            from medmap.inference.predictor import Predictor

            self._predictors[key] = Predictor(
                load_bundle(bundle),
                device=self.config.device,
                precision=self.config.precision,
                overlays=self.config.overlays,
            )
        return self._predictors[key]

    def _process(self, job) -> None:
        import json

        from medmap.inference.predictor import InputCase
        from medmap.intended_use import OutOfUseError

        route = self._route(job)
        if route is None:
            self.store.set_state(job.id, "ignored", error="no bundle's route accepts this series")
            log.info("job %d (series %s): ignored, no route for modality %s", job.id, job.series_uid, job.modality)
            return
        log.info("job %d (series %s): running %s", job.id, job.series_uid, route.bundle.name)
        out = self.results / f"job-{job.id}"
        try:
            predictor = self._predictor(route.bundle)
            case = InputCase(f"series-{job.id}", Path(job.folder), job.series_uid)
            result = predictor.run_case(case, out)
        except OutOfUseError as exc:  # not a failure: the model declines, and the PACS gets nothing for it
            self.store.set_state(job.id, "refused", error=str(exc), bundle=str(route.bundle))
            log.warning("job %d (series %s) refused by %s: %s", job.id, job.series_uid, route.bundle.name, exc)
            return
        except MedmapError as exc:
            self.store.set_state(job.id, "failed", error=str(exc), bundle=str(route.bundle))
            log.warning("job %d (series %s) failed: %s", job.id, job.series_uid, exc)
            return
        except Exception as exc:  # a fault of ours, not of the input: recorded, and the node goes on
            self.store.set_state(job.id, "failed", error=f"internal error: {reason(exc)}")  # one line
            log.exception("job %d (series %s) failed with an internal error", job.id, job.series_uid)
            return
        import pydicom

        self._thumbnail(case, result, out, predictor)
        sendable = []
        for path in result.dicom_results():
            sendable.append((str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID), path))
        if self.config.destination is None and not self.config.dicomweb:
            sendable = []
        self.store.set_state(job.id, "running", bundle=str(route.bundle))
        self.store.results_ready(job.id, sendable, json.dumps({"outputs": result.outputs, **result.result}))
        log.info("job %d (series %s): %d result(s) to send", job.id, job.series_uid, len(sendable))

    def _stow_due(self, due) -> bool:
        from medmap.deploy.dicomweb import stow

        for uid, job_id, path, attempts in due:
            try:
                stow(self.config.dicomweb, [path])
            except MedmapError as exc:
                self.store.send_failed(uid, str(exc), min(60.0, 2.0**attempts))
                log.warning("job %d: STOW of %s failed: %s", job_id, uid, exc)
                continue
            self.store.sent(uid)
            log.info("job %d: result %s stored by STOW-RS", job_id, uid)
        return True

    @staticmethod
    def _thumbnail(case, result, out: Path, predictor) -> None:
        """A small picture of the result for the web page (never fatal to the job)."""
        try:
            from medmap.evaluation.plots import thumbnail
            from medmap.io.load import load

            image = case.load()
            labels = load(result.outputs["labels"]).array if "labels" in result.outputs else None
            grey = image.array if image.channels == 1 else image.array[..., 0]
            window = (image.meta.window_center or 60.0, image.meta.window_width or 400.0)
            if image.meta.modality != "CT":
                low, high = (float(v) for v in np.percentile(grey, [1, 99]))
                window = ((low + high) / 2, max(high - low, 1.0))
            names = {label.value: label.name for label in predictor.bundle.labels}
            (out / case.case_id / "thumbnail.png").write_bytes(thumbnail(grey, labels, window, names))
        except Exception:
            log.exception("thumbnail of %s failed", case.case_id)

    def _send_due(self) -> bool:
        due = self.store.due()
        if not due:
            return False
        if self.config.destination is None:
            return self._stow_due(due) if self.config.dicomweb else False
        import pydicom
        from pynetdicom import AE

        dest = self.config.destination
        datasets = {uid: pydicom.dcmread(path) for uid, _, path, _ in due}
        ae = AE(ae_title=self.config.ae_title)
        # one presentation context per kind of object, not per object: an overlay series has hundreds of
        # instances of one SOP class, and an association may propose at most 128 contexts
        for sop_class, syntax in sorted({(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets.values()}):
            ae.add_requested_context(sop_class, syntax)
        tls = (self._sending_tls, dest.host) if self.config.destination_tls else None
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae, tls_args=tls)
        if not assoc.is_established:
            for uid, _, _, attempts in due:
                self.store.send_failed(uid, "association to the destination failed", min(60.0, 2.0**attempts))
            log.warning("cannot reach %s@%s:%d; %d result(s) wait", dest.ae, dest.host, dest.port, len(due))
            return False
        try:
            for uid, job_id, _, attempts in due:
                status = assoc.send_c_store(datasets[uid])
                code = getattr(status, "Status", None)
                if code is not None and code in (0x0000, 0xB000, 0xB007, 0xB006):
                    self.store.sent(uid)
                    log.info("job %d: result %s stored at %s", job_id, uid, dest.ae)
                else:
                    self.store.send_failed(uid, f"C-STORE status {code}", min(60.0, 2.0**attempts))
        finally:
            assoc.release()
        return True


def _pseudonym_key(data: Path) -> bytes:
    """This node's secret for patient pseudonyms (``DATA/pseudonym.key``, made once, readable by its owner only)."""
    import os
    import secrets

    path = Path(data) / "pseudonym.key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another node on the same folder made it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()


def _safe(uid: str) -> str:
    """A UID as a file name. Only valid UIDs reach the spool (`valid_uid`), so this is the UID itself and
    two instances never share a file; anything else is made safe and cut, for display only."""
    return uid if valid_uid(uid) else re.sub(r"[^0-9A-Za-z.\-]", "_", uid)[:64] or "unknown"


_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def valid_uid(uid: object) -> bool:
    """A DICOM UID (PS3.5 9.1): digits and dots, no leading zeros in a component, at most 64 characters."""
    text = str(uid)
    return 0 < len(text) <= 64 and _UID.fullmatch(text) is not None


SETTINGS = {
    "bundles",
    "routes",
    "data",
    "ae",
    "port",
    "host",
    "destination",
    "allow",
    "idle",
    "device",
    "precision",
    "overlays",
    "dicomweb",
    "http",
    "token_file",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "destination_tls",
}


def node_config(path: str | Path | None, overrides: dict) -> NodeConfig:
    """Settings from a JSON file (same names as ``medmap serve``'s options, plus ``routes``: a list of
    ``{"bundle", "modality", "body_part", "description"}``), then the command line's values on top.
    Bundles given without a route take series of their own modality."""
    import json

    settings: dict = {}
    if path is not None:
        path = Path(path)
        try:
            settings = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        unknown = sorted(set(settings) - SETTINGS)
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(SETTINGS))}")
    settings.update(overrides)
    if not settings.get("data"):
        raise ConfigError("the node needs --data (a folder for its spool, results and job database)")
    routes = []
    for i, item in enumerate(settings.get("routes", [])):
        if "bundle" not in item:
            raise ConfigError(f"route {i + 1}: needs a bundle")
        extra = set(item) - {"bundle", "modality", "body_part", "description"}
        if extra:
            raise ConfigError(f"route {i + 1}: unknown rule(s) {', '.join(sorted(extra))}")
        routes.append(
            Route(
                Path(item["bundle"]), item.get("modality", ""), item.get("body_part", ""), item.get("description", "")
            )
        )
    from medmap.inference.bundle import load_bundle

    for bundle in settings.get("bundles", []):
        routes.append(Route(Path(bundle), modality=load_bundle(bundle).plan.modality or ""))
    token_file = settings.get("token_file")
    from medmap.device import check_device
    from medmap.inference.precision import PRECISIONS

    check_device(settings.get("device", "cpu"))  # a node that cannot run its models does not start
    if settings.get("precision", "auto") not in PRECISIONS:
        raise ConfigError(f"--precision {settings['precision']}: choose one of {', '.join(PRECISIONS)}")
    return NodeConfig(
        data=Path(settings["data"]),
        routes=routes,
        ae_title=settings.get("ae", "MEDMAP"),
        port=int(settings.get("port", 11112)),
        host=settings.get("host", "127.0.0.1"),
        destination=Destination.parse(settings["destination"]) if settings.get("destination") else None,
        allowed_ae=list(settings.get("allow", [])),
        idle_seconds=float(settings.get("idle", 10.0)),
        device=settings.get("device", "cpu"),
        precision=settings.get("precision", "auto"),
        overlays=bool(settings.get("overlays", False)),
        dicomweb=settings.get("dicomweb"),
        http_port=settings.get("http"),
        token=Path(token_file).read_text().strip() if token_file else None,
        tls_cert=Path(settings["tls_cert"]) if settings.get("tls_cert") else None,
        tls_key=Path(settings["tls_key"]) if settings.get("tls_key") else None,
        tls_ca=Path(settings["tls_ca"]) if settings.get("tls_ca") else None,
        destination_tls=bool(settings.get("destination_tls", False)),
    )
