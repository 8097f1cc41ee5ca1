"""The node's receiving side: a C-ECHO / C-STORE SCP (pynetdicom) and its spool.

Only calling AE titles on the allow-list may associate (others are rejected and logged). An instance is
written to ``DATA/spool/<study>/<series>/<sop>.dcm``, fsync'ed (file and folder) and recorded in the job
store *before* success is returned, so an acknowledged instance survives a crash. A series is complete
when its association is released (or, in the worker, after ``idle`` seconds without a new instance).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from medmap.deploy.jobs import JobStore
from medmap.deploy.settings import NodeSettings
from medmap.errors import ConfigError, MedmapError
from medmap.pacs.storage_classes import IMAGE_STORAGE_CLASSES, TRANSFER_SYNTAXES

log = logging.getLogger("medmap.node")

MAX_ASSOCIATIONS = 64


class InvalidInstanceError(MedmapError):
    """An instance the node refuses to store (and answers with a failure status)."""


class Receiver:
    """The SCP's handlers and the spool they write; ``pseudonym`` turns a Patient ID into the reference the
    job store keeps (the ID itself stays in the spooled file)."""

    def __init__(self, settings: NodeSettings, store: JobStore, pseudonym: Callable[[str], str]) -> None:
        self.settings, self.store, self.pseudonym = settings, store, pseudonym
        self.spool = settings.data / "spool"
        self._series_by_assoc: dict[int, set[str]] = {}
        self._server = None

    def ingest(self, ds, calling_ae: str) -> str:
        """Write one instance durably into the spool and record it; returns its series UID.
        Raises OSError when the spool cannot be written (C-STORE answers "out of resources")."""
        sop, series, study = str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)
        for name, uid in (("SOP Instance UID", sop), ("Series Instance UID", series), ("Study Instance UID", study)):
            if not valid_uid(uid):  # the spool is named by UIDs: an invalid one could collide with another's file
                raise InvalidInstanceError(f"{name} {uid[:80]!r} is not a valid DICOM UID")
        folder = self.spool / safe_name(study) / safe_name(series)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{safe_name(sop)}.dcm"
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
                "patient_ref": self.pseudonym(str(ds.get("PatientID", ""))),
                "calling_ae": calling_ae,
                "folder": str(folder),
            },
        )
        return series

    def on_store(self, event) -> int:
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

    def on_released(self, event) -> None:
        series = self._series_by_assoc.pop(id(event.assoc), set())
        if series:
            self.store.complete(sorted(series))

    def on_rejected(self, event) -> None:
        requestor = event.assoc.requestor
        log.warning("association rejected: calling AE %r from %s", requestor.ae_title, requestor.address)
        self.store.event("association rejected", f"calling AE {requestor.ae_title!r} from {requestor.address}")

    def start(self) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification

        self.spool.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.settings.ae)
        ae.maximum_associations = MAX_ASSOCIATIONS  # pynetdicom's default, 10, refuses a busy PACS's 11th
        ae.add_supported_context(Verification)
        for uid in IMAGE_STORAGE_CLASSES.values():
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        if self.settings.allow:
            ae.require_calling_aet = list(self.settings.allow)
        handlers = [
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_RELEASED, self.on_released),
            (evt.EVT_REJECTED, self.on_rejected),
        ]
        address = (self.settings.host, self.settings.port)
        self._server = ae.start_server(address, block=False, evt_handlers=handlers, ssl_context=self._tls())

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _tls(self):
        """The server's TLS context (BCP 195: TLS 1.2 or newer), or None for plain TCP."""
        if not self.settings.tls_cert:
            return None
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
            if self.settings.tls_ca:
                context.load_verify_locations(self.settings.tls_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS certificate or key {self.settings.tls_cert}: {exc}") from None
        return context


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


def safe_name(uid: str) -> str:
    """A UID as a file name. Only valid UIDs reach the spool (`valid_uid`), so this is the UID itself and
    two instances never share a file; anything else is made safe and cut, for display only."""
    return uid if valid_uid(uid) else re.sub(r"[^0-9A-Za-z.\-]", "_", uid)[:64] or "unknown"


_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def valid_uid(uid: object) -> bool:
    """A DICOM UID (PS3.5 9.1): digits and dots, no leading zeros in a component, at most 64 characters."""
    text = str(uid)
    return 0 < len(text) <= 64 and _UID.fullmatch(text) is not None
