"""Pull a cohort from a PACS into a dataset folder: query, fetch series by series, de-identify on the way
in, and keep going where a killed pull stopped.

- **Series by series**: each series is fetched into ``OUT/.incoming``, checked (complete, readable),
  de-identified into ``OUT/<study>/<series>/<instance>.dcm`` and only then recorded in ``OUT/pull.json``.
  A pull started again skips what the ledger holds and fetches the rest; a series cut off half-way is
  fetched again whole. ``.incoming`` is emptied at the start and the end, so identified files do not
  outlive a pull.
- **Consistent pseudonyms**: one keyed hash maps every UID and Patient ID (PS3.15 basic profile, the same
  engine as ``medmap anonymize``), so an RTSTRUCT or SEG still references its de-identified series. The
  key is kept *beside* the output folder (``OUT.key``, owner-only), not in it: the folder can be shared
  without it, and the same key makes a resumed pull give the same pseudonyms (the ledger names the key's
  path, never the key, so a resumed pull finds it). ROI names are kept (the
  profile empties them, and they are the labels); the files say so in Deidentification Method.
- **Labels that fit**: an RTSTRUCT or SEG whose referenced series is not part of the cohort (an MR
  contour set when only CT was asked for) is left out with its reason, not written to fail later.
- The ledger and ``cohort.csv`` hold only de-identified values.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from medmap.errors import MedmapError, OutputError
from medmap.io.anonymize import Anonymizer
from medmap.io.labels.references import referenced_series_uid
from medmap.pacs.query import CohortQuery, SeriesEntry, select
from medmap.progress import track

LEDGER = "pull.json"
INCOMING = ".incoming"
COHORT = "cohort.csv"


class Source(Protocol):
    """A PACS as a pull sees it (`DimseSource`, `DicomWebSource`)."""

    def studies(self, query: CohortQuery) -> list[dict[str, str]]: ...
    def series(self, study: dict[str, str]) -> list[SeriesEntry]: ...
    def retrieve(self, entry: SeriesEntry, folder: Path) -> list[Path]: ...


@dataclass
class PullReport:
    out: Path
    key: Path
    series: int = 0  # series the query selected
    fetched: int = 0
    instances: int = 0
    already: int = 0  # in the ledger from an earlier pull: not fetched again
    failed: list[str] = field(default_factory=list)  # one line each: what and why
    left_out: list[str] = field(default_factory=list)
    patients: int = 0


def find_cohort(source: Source, query: CohortQuery, *, progress: bool = False) -> list[SeriesEntry]:
    """Every series the query selects, study by study (answers checked again against the query)."""
    studies = [s for s in source.studies(query) if s.get("StudyInstanceUID") and query.study_matches(s)]
    entries: list[SeriesEntry] = []
    for study in track(studies, "querying studies", enabled=progress):
        entries += select(query, source.series(study))
    return entries


def pull_cohort(
    source: Source,
    query: CohortQuery,
    out: Path,
    *,
    key: Path | None = None,
    labels: Path | None = None,
    date_shift_days: int | None = None,
    progress: bool = False,
) -> PullReport:
    """Pull what ``query`` selects from ``source`` into ``out`` (see the module's docstring)."""
    out = Path(out)
    ledger = _open_ledger(out)
    key = Path(key) if key else Path(ledger.get("key") or out.parent / f"{out.name}.key")
    if ledger["series"] and not key.is_file():
        raise OutputError(
            f"{key}: the key of the pull in {out} is missing; without it the pseudonyms would not match "
            "(give --key, or pull into a new folder)"
        )
    secret = _read_or_create_key(key, resuming=bool(ledger["series"]))
    engine = Anonymizer(secret, date_shift_days=date_shift_days, keep_structure_names=True)
    ledger["key"] = str(key.resolve())  # where a resumed pull finds it (the path, never the key)
    _write_json(out / LEDGER, ledger)
    report = PullReport(out=out, key=key)
    entries = find_cohort(source, query, progress=progress)
    report.series = len(entries)
    images = {e.series_uid for e in entries if not e.is_label_object}
    incoming = out / INCOMING
    shutil.rmtree(incoming, ignore_errors=True)
    try:
        for entry in track(entries, "pulling series", enabled=progress):
            new_uid = engine.new_uid(entry.series_uid)
            if new_uid in ledger["series"]:
                report.already += 1
                continue
            try:
                record = _pull_series(source, entry, engine, out, incoming / new_uid, images)
            except MedmapError as exc:
                report.failed.append(str(exc))
                continue
            finally:
                shutil.rmtree(incoming / new_uid, ignore_errors=True)
            if isinstance(record, str):
                report.left_out.append(record)
                continue
            ledger["series"][new_uid] = record
            _write_json(out / LEDGER, ledger)
            report.fetched += 1
            report.instances += record["instances"]
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    if labels is not None:
        shutil.copyfile(labels, out / "labels.json")
    report.patients = _write_cohort(out, ledger)
    return report


def _pull_series(
    source: Source, entry: SeriesEntry, engine: Anonymizer, out: Path, staging: Path, images: set[str]
) -> dict | str:
    """Fetch, check and de-identify one series; its ledger record, or why a label object was left out."""
    import pydicom

    files = source.retrieve(entry, staging)
    datasets = []
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                datasets.append(pydicom.dcmread(path))
        except Exception as exc:
            raise MedmapError(f"{source}: series {entry.series_uid}: an instance is unreadable ({exc})") from None
    if entry.modality in ("RTSTRUCT", "SEG"):
        referenced = {referenced_series_uid(ds) for ds in datasets}
        outside = referenced - images
        if outside:
            what = "names no image series" if outside == {""} else f"annotates series {sorted(outside)[0]}"
            return f"{entry.modality} series {engine.new_uid(entry.series_uid)}: {what}, which is not in the cohort"
    written = [engine.write(ds, out, source=path) for ds, path in zip(datasets, files, strict=True)]
    first = datasets[0]  # de-identified in place by write
    return {
        "patient_id": str(first.get("PatientID", "")),
        "study_uid": str(first.get("StudyInstanceUID", "")),
        "modality": entry.modality,
        "instances": len(written),
        "folder": str(written[0].parent.relative_to(out)),
    }


def _open_ledger(out: Path) -> dict:
    ledger_path = out / LEDGER
    if ledger_path.is_file():
        try:
            ledger = json.loads(ledger_path.read_text())
        except json.JSONDecodeError:
            raise OutputError(f"{ledger_path}: damaged; move the folder aside and pull again") from None
        if not isinstance(ledger, dict) or not isinstance(ledger.get("series"), dict):
            raise OutputError(f"{ledger_path}: not a pull's ledger; move the folder aside and pull again")
        return ledger
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"{out}: exists and is not a pull's folder (no {LEDGER}); refusing to mix into it")
    out.mkdir(parents=True, exist_ok=True)
    ledger = {"series": {}}
    _write_json(ledger_path, ledger)
    return ledger


def _read_or_create_key(path: Path, *, resuming: bool) -> bytes:
    if path.is_file():
        key = path.read_bytes()
        if len(key) < 32:
            raise OutputError(f"{path}: not a pull key (expected at least 32 bytes)")
        return key
    if resuming:
        raise OutputError(f"{path}: the key of this pull is missing")
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def _write_cohort(out: Path, ledger: dict) -> int:
    """``cohort.csv``: one row per pulled series (de-identified values), for a manifest or a look."""
    rows = [{"series_uid": uid, **record} for uid, record in sorted(ledger["series"].items())]
    fields = ["patient_id", "study_uid", "series_uid", "modality", "instances", "folder"]
    with open(out / COHORT, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["patient_id"], r["study_uid"], r["folder"])))
    return len({r["patient_id"] for r in rows})
