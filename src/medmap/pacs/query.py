"""Which series make a cohort: the query a user states, and the rule that decides each series.

The query goes to the PACS as matching keys (so it does the narrowing), and every answer is checked
again here against the same rule: a PACS may ignore a key it does not index (Body Part Examined, Series
Description), and a series the user excluded must not enter a training set because a server was lax.
Descriptions match case-insensitively with DICOM's wildcards ``*`` and ``?``; dates as DICOM ranges
(``20200101-20201231``, ``20200101-``, ``-20201231``, or one day).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medmap.errors import ConfigError
from medmap.pacs.storage_classes import LABEL_MODALITIES

_DATE = re.compile(r"(\d{8})?(-)?(\d{8})?")


@dataclass(frozen=True)
class CohortQuery:
    """What to pull; an empty field does not narrow. ``modalities`` are the image series wanted; label
    objects (RTSTRUCT, SEG, SR) of the chosen studies come with them; ``require`` keeps only studies that
    hold at least one object of each named label modality ("has an RTSTRUCT")."""

    patient_id: str = ""
    modalities: tuple[str, ...] = ()
    study_date: str = ""
    study_description: str = ""
    series_description: str = ""
    body_part: str = ""
    require: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        match = _DATE.fullmatch(self.study_date)
        if self.study_date and (not match or not (match.group(1) or match.group(3))):
            raise ConfigError(f"--study-date {self.study_date!r}: expected YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
        wrong = [m for m in self.require if m not in LABEL_MODALITIES]
        if wrong:
            raise ConfigError(f"--with {wrong[0]!r}: expected one of {', '.join(LABEL_MODALITIES)}")
        if any(m in LABEL_MODALITIES for m in self.modalities):
            raise ConfigError("--modality names image series; label objects come with their studies (use --with)")

    def study_keys(self) -> dict[str, str]:
        """Matching keys for a study-level query (empty values: return keys)."""
        return {
            "PatientID": self.patient_id,
            "StudyDate": self.study_date,
            "StudyDescription": self.study_description,
            "StudyInstanceUID": "",
            "ModalitiesInStudy": "",
        }

    def study_matches(self, study: dict[str, str]) -> bool:
        return (
            _wildcard(self.patient_id, study.get("PatientID", ""), fold=False)
            and _in_range(self.study_date, study.get("StudyDate", ""))
            and _wildcard(self.study_description, study.get("StudyDescription", ""))
        )

    def image_series_matches(self, series: SeriesEntry) -> bool:
        return (
            series.modality not in LABEL_MODALITIES
            and (not self.modalities or series.modality in self.modalities)
            and _wildcard(self.series_description, series.description)
            and _wildcard(self.body_part, series.body_part)
        )


@dataclass(frozen=True)
class SeriesEntry:
    """One series as the PACS describes it (identifiers as the PACS holds them: never written to the
    cohort, which is built from the de-identified files)."""

    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    description: str = ""
    body_part: str = ""
    instances: int | None = None  # NumberOfSeriesRelatedInstances, when the PACS says

    @property
    def is_label_object(self) -> bool:
        return self.modality in LABEL_MODALITIES


SERIES_KEYS = {
    "SeriesInstanceUID": "",
    "Modality": "",
    "SeriesDescription": "",
    "BodyPartExamined": "",
    "NumberOfSeriesRelatedInstances": "",
}


def series_entry(patient_id: str, study_uid: str, answer: dict[str, str]) -> SeriesEntry | None:
    """A series from a series-level answer (None when it carries no Series Instance UID)."""
    uid = answer.get("SeriesInstanceUID", "")
    if not uid:
        return None
    count = answer.get("NumberOfSeriesRelatedInstances", "")
    return SeriesEntry(
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=uid,
        modality=answer.get("Modality", "").upper(),
        description=answer.get("SeriesDescription", ""),
        body_part=answer.get("BodyPartExamined", ""),
        instances=int(count) if count.isdigit() else None,
    )


def answer_values(answer: Dataset) -> dict[str, str]:
    """A C-FIND or QIDO-RS answer's values as text (multi-valued ones joined by a backslash, as DICOM
    writes them; person names as their DICOM string)."""
    values = {}
    for element in answer:
        if element.keyword and element.VR != "SQ":
            value = element.value
            many = isinstance(value, list | tuple | MultiValue)
            values[element.keyword] = "\\".join(map(str, value)) if many else str(value if value is not None else "")
    return values


def select(query: CohortQuery, study_series: list[SeriesEntry]) -> list[SeriesEntry]:
    """The series of one study to pull: its matching image series, then its label objects; nothing when
    no image series matches or a required label modality is absent."""
    images = [s for s in study_series if query.image_series_matches(s)]
    labels = [s for s in study_series if s.is_label_object]
    present = {s.modality for s in labels}
    if not images or any(m not in present for m in query.require):
        return []
    return images + labels


def _wildcard(pattern: str, value: str, *, fold: bool = True) -> bool:
    if not pattern or pattern == "*":
        return True
    if fold:
        pattern, value = pattern.casefold(), value.casefold()
    return fnmatch.fnmatchcase(value.strip(), pattern.replace("[", "[[]"))


def _in_range(dates: str, value: str) -> bool:
    if not dates:
        return True
    value = value.strip()[:8]
    if not value.isdigit() or len(value) != 8:
        return False  # a date was asked for and the PACS did not give one: not shown to match
    start, dash, end = _DATE.fullmatch(dates).groups()
    if not dash:
        return value == start
    return (not start or value >= start) and (not end or value <= end)
