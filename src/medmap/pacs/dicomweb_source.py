"""A PACS reached by DICOMweb: QIDO-RS to search, WADO-RS to fetch one series (same rules as DIMSE)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medmap.errors import InputNotFoundError
from medmap.pacs.dicomweb import qido, wado
from medmap.pacs.query import SERIES_KEYS, CohortQuery, SeriesEntry, answer_values, series_entry


@dataclass
class DicomWebSource:
    base: str  # the DICOMweb root, e.g. http://pacs:8042/dicom-web
    token: str | None = None
    timeout: float = 600

    def __str__(self) -> str:
        return self.base

    def studies(self, query: CohortQuery) -> list[dict[str, str]]:
        keys = query.study_keys()
        params = [(k, v) for k, v in keys.items() if v] + [("includefield", k) for k, v in keys.items() if not v]
        return [answer_values(d) for d in qido(self.base, "studies", params, token=self.token)]

    def series(self, study: dict[str, str]) -> list[SeriesEntry]:
        uid = study["StudyInstanceUID"]
        params = [("includefield", k) for k in SERIES_KEYS]
        answers = [answer_values(d) for d in qido(self.base, f"studies/{uid}/series", params, token=self.token)]
        found = (series_entry(study.get("PatientID", ""), uid, a) for a in answers)
        return [entry for entry in found if entry is not None]

    def retrieve(self, entry: SeriesEntry, folder: Path) -> list[Path]:
        resource = f"studies/{entry.study_uid}/series/{entry.series_uid}"
        received = wado(self.base, resource, folder, token=self.token, timeout=self.timeout)
        if entry.instances is not None and len(received) != entry.instances:
            raise InputNotFoundError(
                f"{self.base}: series {entry.series_uid} ({entry.modality}): "
                f"received {len(received)} of {entry.instances} instances"
            )
        return received
