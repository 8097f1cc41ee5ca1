"""The cohort rule, checked here whatever the PACS did with the keys: a server that ignores matching keys
(as many do for Body Part Examined or Series Description) must not let an excluded series in."""

import pytest

from medmap.errors import ConfigError
from medmap.pacs.pull import find_cohort
from medmap.pacs.query import CohortQuery, SeriesEntry


class LaxPacs:
    """Answers every query with everything it holds, as a PACS that does not index the keys does."""

    def __init__(self, studies):
        self._studies = studies

    def studies(self, query):
        return [s for s, _ in self._studies]

    def series(self, study):
        return next(series for s, series in self._studies if s is study)

    def retrieve(self, entry, folder):
        raise AssertionError("not called")


def _study(uid, date, *series, description="CT ABDOMEN"):
    study = {"StudyInstanceUID": uid, "PatientID": f"P-{uid}", "StudyDate": date, "StudyDescription": description}
    return study, [SeriesEntry(f"P-{uid}", uid, f"{uid}.{i}", m, d, b) for i, (m, d, b) in enumerate(series)]


PACS = LaxPacs([
    _study("1", "20240105", ("CT", "Abdomen 1.5mm", "ABDOMEN"), ("RTSTRUCT", "", "")),
    _study("2", "20231231", ("CT", "Abdomen 1.5mm", "ABDOMEN"), ("SEG", "", "")),
    _study("3", "20240210", ("CT", "Chest", "CHEST"), ("MR", "T1", "ABDOMEN"), ("RTSTRUCT", "", "")),
    _study("4", "", ("CT", "abdomen", "ABDOMEN")),
])  # fmt: skip


def _pulled(**query) -> list[str]:
    return [e.series_uid for e in find_cohort(PACS, CohortQuery(**query))]


def test_every_answer_is_checked_against_the_query():
    assert _pulled() == ["1.0", "1.1", "2.0", "2.1", "3.0", "3.1", "3.2", "4.0"]
    assert _pulled(study_date="20240101-20240131") == ["1.0", "1.1"]  # study 4 gave no date: not shown to match
    assert _pulled(study_date="20240101-") == ["1.0", "1.1", "3.0", "3.1", "3.2"]
    assert _pulled(study_date="-20231231") == ["2.0", "2.1"] == _pulled(study_date="20231231")
    assert _pulled(modalities=("CT",), body_part="abdomen") == ["1.0", "1.1", "2.0", "2.1", "4.0"]
    assert _pulled(series_description="ABDOMEN*") == ["1.0", "1.1", "2.0", "2.1", "4.0"]  # any case
    assert _pulled(modalities=("MR",)) == ["3.1", "3.2"]  # the MR study's labels come with it
    assert _pulled(require=("RTSTRUCT",)) == ["1.0", "1.1", "3.0", "3.1", "3.2"]
    assert _pulled(require=("RTSTRUCT", "SEG")) == []
    assert _pulled(patient_id="P-?", study_description="*chest*") == []  # study descriptions: all "CT ABDOMEN"
    assert _pulled(study_description="ct abd*", modalities=("CT",), require=("SEG",)) == ["2.0", "2.1"]


def test_a_query_that_cannot_mean_anything_is_refused():
    with pytest.raises(ConfigError, match="--study-date '2024': expected YYYYMMDD"):
        CohortQuery(study_date="2024")
    with pytest.raises(ConfigError, match="--with 'CT': expected one of RTSTRUCT, SEG, SR"):
        CohortQuery(require=("CT",))
    with pytest.raises(ConfigError, match="label objects come with their studies"):
        CohortQuery(modalities=("RTSTRUCT",))
