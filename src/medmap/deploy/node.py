"""medmap as a DICOM node: receive studies (C-STORE SCP), run the bundle a route picks, send SEG/SR back.

Receiving (pynetdicom): C-ECHO and C-STORE of the image storage classes medmap reads, uncompressed and
compressed transfer syntaxes. Only calling AE titles on the allow-list may associate (others are
rejected and logged). An instance is written to ``DATA/spool/<study>/<series>/<sop>.dcm``, fsync'ed
(file and folder) and recorded in the job store *before* success is returned, so an acknowledged
instance survives a crash.

Processing (one worker thread): a series is complete when its association is released or after
``idle`` seconds without a new instance; the first route whose rules match (Modality,
BodyPartExamined, SeriesDescription) names the bundle; the predictor writes NIfTI/SEG/SR under
``DATA/results/<job>/``; the SEG/SR (and overlay images with ``overlays``) enter the outbox and are sent
by C-STORE (over TLS with ``destination_tls``) to the destination, retried with back-off until
acknowledged. Logs name UIDs and AE titles, never patient identifiers.

The node is four parts with one job each, put together here: its settings (`settings.NodeSettings`,
shared by the CLI and the JSON file), the SCP and its spool (`scp.Receiver`), the worker (`worker.Worker`)
and the outbox (`outbox.Outbox`), around one job store (`jobs.JobStore`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from medmap.deploy.jobs import JobStore
from medmap.deploy.outbox import Outbox
from medmap.deploy.scp import Receiver
from medmap.deploy.settings import NodeSettings
from medmap.deploy.worker import Worker
from medmap.errors import ConfigError

log = logging.getLogger("medmap.node")


class Node:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.routes = settings.all_routes()
        if not self.routes:
            raise ConfigError("the node needs at least one --bundle")
        self.store = JobStore(settings.data / "jobs.sqlite")
        self._pseudonym_key = _pseudonym_key(settings.data)
        self.receiver = Receiver(settings, self.store, self.patient_reference)
        self.outbox = Outbox(settings, self.store)
        self.worker = Worker(settings, self.store, self.routes, self.outbox)
        self._http = None

    @property
    def spool(self) -> Path:
        return self.receiver.spool

    @property
    def results(self) -> Path:
        return self.worker.results

    def ingest(self, ds, calling_ae: str) -> str:
        """One instance into the spool, as a C-STORE would (the API's STOW-RS uses it)."""
        return self.receiver.ingest(ds, calling_ae)

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
        for predictor in self.worker.predictors.values():
            if str(predictor.bundle.root) == str(bundle):
                second = predictor.classifier
                return predictor.bundle.identity + (f" + {second.bundle.identity}" if second else "")
        return Path(bundle).name

    def start(self) -> None:
        self.outbox.start()
        self.results.mkdir(parents=True, exist_ok=True)
        recovered = self.store.recover()
        if recovered:
            log.info("recovered %d interrupted job(s)", recovered)
        self.receiver.start()
        self.worker.start()
        settings = self.settings
        if settings.http:
            from medmap.deploy.api import create_app, serve_http

            token = settings.token
            if not token:
                log.warning(
                    "the HTTP API on port %d runs without a token: anyone who can reach it can read results "
                    "(--token-file)",
                    settings.http,
                )
            self._http = serve_http(create_app(self, token), settings.host, settings.http)
        log.info("listening as %s on %s:%d", settings.ae, settings.host, settings.port)

    def stop(self) -> None:
        """Stop accepting, let the worker finish its current step; running jobs are re-queued at next start."""
        self.receiver.stop()
        if self._http is not None:
            self._http.should_exit = True
        self.worker.stop()
        self.store.close()


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
