"""De-identify DICOM files: PS3.15 Annex E, Basic Application Level Confidentiality Profile.

The *table* (which attribute gets which action) is the standard's Table E.1-1 as shipped by the
``dicom-anonymizer`` package (generated from the standard's own XML); the *engine* is ours, because a
research workflow needs what that package's engine does not give:

- UIDs remapped with a keyed hash (HMAC-SHA256 -> ``2.25.<int>``): the same input UID maps to the same
  new UID for every file of a run, across studies, without keeping a table; pass the same ``secret``
  to keep the mapping stable across runs.
- PatientID and PatientName replaced by one keyed pseudonym per patient (``ANON-<hex>``), so that
  patient-level splits stay possible after de-identification (the profile allows a dummy value for Z).
- Optional date shifting by a fixed number of days (Retain Longitudinal Temporal Information with
  Modified Dates Option): dates move together, intervals and ages are kept.
- Private attributes removed by default, overlays and curves removed, the de-identification method
  recorded (PatientIdentityRemoved, DeidentificationMethod(CodeSequence)).
- Pixel data and geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) untouched;
  input files opened read-only; output never inside the input.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from medmap.errors import InputNotFoundError, MedmapWarning, OutputError
from medmap.progress import track

PROFILE_EDITION = "dicomfields_2026c"  # the edition of PS3.15 Table E.1-1 applied

_DUMMY = {
    "PN": "ANONYMIZED",
    "LO": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "CS": "ANONYMIZED",
    "AE": "ANONYMIZED",
    "DA": "19000101",
    "TM": "000000.00",
    "DT": "19000101000000.000000",
    "AS": "000D",
    "IS": "0",
    "DS": "0",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "FL": 0.0,
    "FD": 0.0,
    "UV": 0,
    "SV": 0,
}
ROI_NAME = 0x30060026
_METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
}


def _load_profile() -> tuple[dict[int, str], list[tuple[int, int, str]]]:
    """Tag -> action ('X', 'Z', 'D', 'U'), and masked entries (repeating groups such as overlays)."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    table = dicom_anonymization_database_selector(PROFILE_EDITION)
    # Where the profile allows a choice, take the one that keeps every IOD valid: D (a dummy value) is
    # always conformant, Z (empty) is conformant for Type 2/3, X only for Type 3.
    resolve = {
        "D_TAGS": "D",
        "Z_TAGS": "Z",
        "X_TAGS": "X",
        "U_TAGS": "U",
        "Z_D_TAGS": "D",
        "X_Z_TAGS": "Z",
        "X_D_TAGS": "D",
        "X_Z_D_TAGS": "D",
        "X_Z_U_STAR_TAGS": "U",
    }
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, str]] = []
    for category, action in resolve.items():
        for entry in table[category]:
            if len(entry) == 2:
                exact[(entry[0] << 16) | entry[1]] = action
            else:
                group, elem, gmask, emask = entry
                masked.append(((group << 16) | elem, (gmask << 16) | emask, action))
    return exact, masked


@dataclass
class AnonymizeReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # not DICOM: left out, never copied
    failed: list[tuple[Path, str]] = field(default_factory=list)  # DICOM that could not be processed
    burned_in: list[Path] = field(default_factory=list)  # BurnedInAnnotation YES: pixels may hold PHI


class Anonymizer:
    """Applies the profile to datasets; one instance per run keeps UIDs and pseudonyms consistent."""

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        date_shift_days: int | None = None,
        keep_private: bool = False,
        keep_structure_names: bool = False,
    ) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.date_shift_days = date_shift_days
        self.keep_private = keep_private
        # ROI Name is emptied by the basic profile; contours pulled to train on are useless without it
        # (the names *are* the labels). Kept verbatim, and the method says so: review them before sharing.
        self.keep_structure_names = keep_structure_names
        self._exact, self._masked = _load_profile()

    # --- replacements --------------------------------------------------------------------------------
    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._secret, f"{kind}:{value}".encode(), hashlib.sha256).digest()

    def new_uid(self, uid: str) -> str:
        """The run-consistent replacement of a UID (2.25 form: a UUID-derived integer, <= 64 chars)."""
        return f"2.25.{int.from_bytes(self._digest('uid', uid.strip())[:16], 'big')}"

    def pseudonym(self, patient_id: str) -> str:
        return f"ANON-{self._digest('patient', patient_id.strip()).hex()[:12].upper()}"

    def _shift_date(self, value: str, vr: str) -> str:
        value = str(value).strip()
        if len(value) < 8 or not value[:8].isdigit():
            return value
        try:
            day = dt.datetime.strptime(value[:8], "%Y%m%d") + dt.timedelta(days=self.date_shift_days or 0)
        except ValueError:
            return _DUMMY[vr]
        return day.strftime("%Y%m%d") + (value[8:] if vr == "DT" else "")

    def action_for(self, tag: BaseTag) -> str | None:
        action = self._exact.get(int(tag))
        if action is None:
            for value, mask, masked_action in self._masked:
                if int(tag) & mask == value:
                    return masked_action
        return action

    # --- the walk ------------------------------------------------------------------------------------
    def _apply(self, ds: Dataset, patient_id: str) -> None:
        for elem in list(ds):
            tag = elem.tag
            if tag.is_private:
                if not self.keep_private:
                    del ds[tag]
                continue
            if tag in (0x00100020, 0x00100010):  # PatientID, PatientName: one pseudonym per patient
                elem.value = self.pseudonym(patient_id)
                continue
            if tag == ROI_NAME and self.keep_structure_names:
                continue
            action = self.action_for(tag)
            if self.date_shift_days is not None and elem.VR in ("DA", "DT") and action is not None:
                self._set_shifted(elem)
                continue
            if elem.VR == "SQ":
                if action == "X":
                    del ds[tag]
                elif action in ("Z", "D"):
                    elem.value = Sequence()
                else:
                    for item in elem.value:
                        self._apply(item, patient_id)
                continue
            if action == "X":
                del ds[tag]
            elif action == "Z":
                elem.value = None if elem.VR not in ("OB", "OW", "UN") else b""
            elif action == "D":
                elem.value = _DUMMY.get(elem.VR, b"" if elem.VR in ("OB", "OW", "UN") else None)
            elif action == "U":
                self._set_uid(elem)

    def _set_uid(self, elem: DataElement) -> None:
        if elem.VR != "UI" or elem.value in (None, ""):
            elem.value = None if elem.VR != "UI" else elem.value
            return
        values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
        new = [self.new_uid(str(v)) for v in values]
        elem.value = new if len(new) > 1 else new[0]

    def _set_shifted(self, elem: DataElement) -> None:
        if elem.value in (None, ""):
            return
        if isinstance(elem.value, pydicom.multival.MultiValue):
            elem.value = [self._shift_date(v, elem.VR) for v in elem.value]
        else:
            elem.value = self._shift_date(elem.value, elem.VR)

    def anonymize(self, ds: Dataset) -> Dataset:
        """De-identify ``ds`` in place (a dataset read from a file, never the user's file itself)."""
        patient_id = str(ds.get("PatientID", "")) or str(ds.get("PatientName", "")) or "UNKNOWN"
        self._apply(ds, patient_id)
        if hasattr(ds, "file_meta"):
            meta = ds.file_meta
            if "MediaStorageSOPInstanceUID" in meta and "SOPInstanceUID" in ds:
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            for keyword in (
                "SourceApplicationEntityTitle",
                "SendingApplicationEntityTitle",
                "ReceivingApplicationEntityTitle",
                "PrivateInformation",
                "ImplementationVersionName",
            ):
                if keyword in meta:
                    del meta[keyword]
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID  # who writes the new file, not who sent it
        ds.PatientIdentityRemoved = "YES"
        options = ["basic"] + (["dates"] if self.date_shift_days is not None else [])
        ds.DeidentificationMethod = (
            "medmap: PS3.15 E.1 Basic Profile"
            + (", dates shifted" if self.date_shift_days is not None else "")
            + (", ROI names kept" if self.keep_structure_names else "")
        )
        codes = []
        for option in options:
            code = Dataset()
            code.CodeValue, code.CodeMeaning = _METHOD_CODES[option]
            code.CodingSchemeDesignator = "DCM"
            codes.append(code)
        ds.DeidentificationMethodCodeSequence = Sequence(codes)
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if self.date_shift_days is not None else "REMOVED"
        return ds

    def write(self, ds: Dataset, root: Path, *, source: Path) -> Path:
        """De-identify ``ds`` (read from ``source``) and save it as ``root/<study>/<series>/<instance>.dcm``,
        named by the new UIDs, never by input paths (folder names often hold names)."""
        self.anonymize(ds)
        study = str(ds.get("StudyInstanceUID", "") or "no-study")
        series = str(ds.get("SeriesInstanceUID", "") or "no-series")
        instance = str(ds.get("SOPInstanceUID", "") or self.new_uid(str(source)))
        out = root / study / series / f"{instance}.dcm"
        out.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(out, enforce_file_format="MediaStorageSOPClassUID" in getattr(ds, "file_meta", {}))
        return out


def _check_paths(src: Path, dst: Path) -> None:
    if not src.exists():
        raise InputNotFoundError(f"{src}: no such file or folder")
    src_r, dst_r = src.resolve(), dst.resolve()
    if dst_r == src_r or src_r in dst_r.parents or (src.is_dir() and dst_r in src_r.parents):
        raise OutputError(f"{dst}: output must be outside the input {src} (and not contain it)")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise OutputError(f"{dst}: output folder exists and is not empty; refusing to mix or overwrite")


def anonymize_tree(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    secret: bytes | None = None,
    date_shift_days: int | None = None,
    keep_private: bool = False,
    keep_structure_names: bool = False,
    progress: bool = False,
) -> AnonymizeReport:
    """De-identify every DICOM file under ``src`` into ``dst/<study>/<series>/<instance>.dcm``.

    Non-DICOM files are left out with a warning. Files that fail are listed in the report; the rest
    of the run goes on.
    """
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst)
    engine = Anonymizer(
        secret, date_shift_days=date_shift_days, keep_private=keep_private, keep_structure_names=keep_structure_names
    )
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    report = AnonymizeReport()
    for path in track(files, "de-identifying", enabled=progress):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
        except InvalidDicomError:
            report.skipped.append((path, "not a DICOM file"))
            continue
        except Exception as exc:  # damaged file: report it, keep going
            report.failed.append((path, f"unreadable ({type(exc).__name__}: {exc})"))
            continue
        try:
            if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
                report.burned_in.append(path)
            report.written.append(engine.write(ds, dst, source=path))
        except Exception as exc:
            report.failed.append((path, f"could not be de-identified ({type(exc).__name__}: {exc})"))
    if report.skipped:
        warnings.warn(
            MedmapWarning(f"{src}: left out {len(report.skipped)} non-DICOM file(s), e.g. {report.skipped[0][0]}"),
            stacklevel=2,
        )
    if report.burned_in:
        warnings.warn(
            MedmapWarning(
                f"{len(report.burned_in)} file(s) declare BurnedInAnnotation YES, e.g. {report.burned_in[0]}: "
                "their pixels may show identifying text, which this profile does not remove"
            ),
            stacklevel=2,
        )
    return report


__all__ = ["AnonymizeReport", "Anonymizer", "anonymize_tree"]
