"""A PACS reached by DIMSE (pynetdicom): C-FIND to search, C-GET or C-MOVE to fetch one series.

C-GET brings the instances back on the association medmap opened (no port to open, no entry in the
PACS's list of destinations beyond medmap's AE title); C-MOVE has the PACS open a second association to
a storage SCP that medmap runs for the duration of one series, on ``listen``, accepting only the PACS's
AE title. Either way a series counts as fetched only when the PACS reports success and the number of
instances received is the number the PACS said the series holds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from medmap.errors import InputNotFoundError
from medmap.pacs.peer import Peer
from medmap.pacs.query import SERIES_KEYS, CohortQuery, SeriesEntry, answer_values, series_entry
from medmap.pacs.storage_classes import IMAGE_STORAGE_CLASSES, LABEL_STORAGE_CLASSES, TRANSFER_SYNTAXES

PENDING = (0xFF00, 0xFF01)
STORED = 0x0000
RETRIEVABLE = [*IMAGE_STORAGE_CLASSES.values(), *LABEL_STORAGE_CLASSES.values()]


def _identifier(level: str, keys: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


@dataclass
class DimseSource:
    """``method`` "get" or "move"; ``ae`` is medmap's AE title (the PACS must know it), ``listen`` the
    HOST:PORT of the C-MOVE destination medmap runs."""

    peer: Peer
    ae: str = "MEDMAP"
    method: str = "get"
    listen: tuple[str, int] = ("0.0.0.0", 11112)
    timeout: float = 600

    def __str__(self) -> str:
        return f"{self.peer} (C-{self.method.upper()})"

    # --- search --------------------------------------------------------------------------------------
    def studies(self, query: CohortQuery) -> list[dict[str, str]]:
        return self._find(_identifier("STUDY", query.study_keys()))

    def series(self, study: dict[str, str]) -> list[SeriesEntry]:
        keys = {"StudyInstanceUID": study["StudyInstanceUID"], **SERIES_KEYS}
        answers = self._find(_identifier("SERIES", keys))
        found = (series_entry(study.get("PatientID", ""), study["StudyInstanceUID"], a) for a in answers)
        return [entry for entry in found if entry is not None]

    def _find(self, identifier: Dataset) -> list[dict[str, str]]:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as Find

        with self._association([Find]) as assoc:
            answers = []
            for status, answer in assoc.send_c_find(identifier, Find):
                code = getattr(status, "Status", None)
                if code in PENDING and answer is not None:
                    answers.append(answer_values(answer))
                elif code != STORED:
                    level = identifier.QueryRetrieveLevel.lower()
                    raise InputNotFoundError(f"{self.peer}: C-FIND at {level} level failed (status {_hex(code)})")
            return answers

    # --- retrieval -----------------------------------------------------------------------------------
    def retrieve(self, entry: SeriesEntry, folder: Path) -> list[Path]:
        """Every instance of ``entry`` as files in ``folder`` (which this call creates)."""
        from pynetdicom import build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as Get
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as Move

        folder.mkdir(parents=True)
        identifier = _identifier("SERIES", {"StudyInstanceUID": entry.study_uid, "SeriesInstanceUID": entry.series_uid})
        received: list[Path] = []
        store = _writer(folder, received)
        if self.method == "get":
            roles = [build_role(uid, scp_role=True) for uid in RETRIEVABLE]
            with self._association([Get], storage=True, roles=roles, handlers=[(evt.EVT_C_STORE, store)]) as assoc:
                final = _final(assoc.send_c_get(identifier, Get))
        else:
            with self._move_destination(store), self._association([Move]) as assoc:
                final = _final(assoc.send_c_move(identifier, self.ae, Move))
        what = f"{self.peer}: series {entry.series_uid} ({entry.modality})"
        if final is None or final.Status not in (STORED,):
            code = None if final is None else final.Status
            failed = getattr(final, "NumberOfFailedSuboperations", "?")
            raise InputNotFoundError(f"{what}: C-{self.method.upper()} ended with status {_hex(code)}, {failed} failed")
        if entry.instances is not None and len(received) != entry.instances:
            raise InputNotFoundError(f"{what}: received {len(received)} of {entry.instances} instances")
        if not received:
            raise InputNotFoundError(f"{what}: the PACS sent no instance")
        return received

    @contextmanager
    def _association(self, models, *, storage: bool = False, roles=(), handlers=()) -> Iterator:
        from pynetdicom import AE

        ae = AE(ae_title=self.ae)
        ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 30, self.timeout, self.timeout
        for model in models:
            ae.add_requested_context(model)
        if storage:  # the PACS sends each instance back on this association (C-GET): we are its SCP
            for uid in RETRIEVABLE:
                ae.add_requested_context(uid, TRANSFER_SYNTAXES)
        assoc = ae.associate(
            self.peer.host, self.peer.port, ae_title=self.peer.ae, ext_neg=list(roles), evt_handlers=list(handlers)
        )
        if not assoc.is_established:
            raise InputNotFoundError(
                f"{self.peer}: no association (is it running there, and does it know the AE title {self.ae}?)"
            )
        try:
            yield assoc
        finally:
            assoc.release()

    @contextmanager
    def _move_destination(self, store) -> Iterator:
        """A storage SCP on ``listen`` while one C-MOVE runs, accepting only the PACS's AE title."""
        from pynetdicom import AE, evt

        ae = AE(ae_title=self.ae)
        ae.network_timeout = self.timeout
        for uid in RETRIEVABLE:
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        ae.require_calling_aet = [self.peer.ae]
        try:
            server = ae.start_server(self.listen, block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
        except OSError as exc:
            raise InputNotFoundError(
                f"--listen {self.listen[0]}:{self.listen[1]}: cannot listen there ({exc})"
            ) from None
        try:
            yield
        finally:
            server.shutdown()


def _writer(folder: Path, received: list[Path]):
    """The C-STORE handler: each instance written as the bytes the PACS sent (nothing decoded here)."""
    numbers = itertools.count()

    def store(event) -> int:
        path = folder / f"{next(numbers):06d}.dcm"
        path.write_bytes(event.encoded_dataset())
        received.append(path)
        return STORED

    return store


def _final(responses) -> Dataset | None:
    final = None
    for status, _ in responses:
        if getattr(status, "Status", None) not in PENDING:
            final = status
    return final


def _hex(code: int | None) -> str:
    return "none (no answer)" if code is None else f"0x{code:04X}"
