"""The node's sending side: results that are due leave by C-STORE to the destination (over TLS with
``destination_tls``), or by STOW-RS to a DICOMweb root when there is no destination; a failed send is
retried with back-off (at most a minute) until acknowledged."""

from __future__ import annotations

import logging

from medmap.deploy.jobs import JobStore
from medmap.deploy.settings import NodeSettings
from medmap.errors import ConfigError, MedmapError

log = logging.getLogger("medmap.node")

ACCEPTED = (0x0000, 0xB000, 0xB007, 0xB006)  # success and the warnings that still mean "stored"


class Outbox:
    def __init__(self, settings: NodeSettings, store: JobStore) -> None:
        self.settings, self.store = settings, store
        self.destination = settings.destination_address
        self._tls = None

    @property
    def sends(self) -> bool:
        """Whether results leave this node at all (a destination or a DICOMweb root)."""
        return self.destination is not None or bool(self.settings.dicomweb)

    def start(self) -> None:
        """Checks what sending needs now, not at the first result."""
        if self.settings.destination_tls:
            if self.destination is None:
                raise ConfigError("--destination-tls needs a --destination to send to")
            self._tls = self._client_tls()

    def send_due(self) -> bool:
        """Send what is due; True when there was something to send."""
        due = self.store.due()
        if not due:
            return False
        if self.destination is None:
            return self._stow(due) if self.settings.dicomweb else False
        return self._c_store(due)

    def _c_store(self, due) -> bool:
        import pydicom
        from pynetdicom import AE

        dest = self.destination
        datasets = {uid: pydicom.dcmread(path) for uid, _, path, _ in due}
        ae = AE(ae_title=self.settings.ae)
        # one presentation context per kind of object, not per object: an overlay series has hundreds of
        # instances of one SOP class, and an association may propose at most 128 contexts
        for sop_class, syntax in sorted({(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets.values()}):
            ae.add_requested_context(sop_class, syntax)
        tls = (self._tls, dest.host) if self.settings.destination_tls else None
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
                if code is not None and code in ACCEPTED:
                    self.store.sent(uid)
                    log.info("job %d: result %s stored at %s", job_id, uid, dest.ae)
                else:
                    self.store.send_failed(uid, f"C-STORE status {code}", min(60.0, 2.0**attempts))
        finally:
            assoc.release()
        return True

    def _stow(self, due) -> bool:
        from medmap.pacs.dicomweb import stow

        for uid, job_id, path, attempts in due:
            try:
                stow(self.settings.dicomweb, [path])
            except MedmapError as exc:
                self.store.send_failed(uid, str(exc), min(60.0, 2.0**attempts))
                log.warning("job %d: STOW of %s failed: %s", job_id, uid, exc)
                continue
            self.store.sent(uid)
            log.info("job %d: result %s stored by STOW-RS", job_id, uid)
        return True

    def _client_tls(self):
        """The TLS context for sending: the destination's certificate checked against ``tls_ca`` (else the
        system's CAs) and its host name; this node's certificate presented when it has one."""
        import ssl

        settings = self.settings
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.tls_ca)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if settings.tls_cert:
                context.load_cert_chain(settings.tls_cert, settings.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS for the destination ({settings.tls_ca or 'system CAs'}): {exc}") from None
        return context
