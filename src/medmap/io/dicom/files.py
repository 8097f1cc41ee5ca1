"""One DICOM file's header, and the series found under a folder tree."""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medmap.errors import CorruptFileError, InputNotFoundError, MedmapWarning, NotDicomError
from medmap.progress import track

PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}  # Pixel Data, Float and Double Float Pixel Data
# SOP classes that hold no image even though they are valid DICOM (DICOMDIR, SR, RT structures, ...)
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


@dataclass
class DicomFile:
    """A DICOM file's header (no pixel data loaded) and the file offset of its pixel data element."""

    path: Path
    ds: Dataset
    has_pixels: bool
    pixel_offset: int | None  # file offset of the pixel data element's tag; None if absent or not addressable

    @property
    def series_uid(self) -> str:
        return str(self.ds.get("SeriesInstanceUID", ""))

    @property
    def sop_instance_uid(self) -> str:
        return str(self.ds.get("SOPInstanceUID", ""))

    @property
    def transfer_syntax(self) -> str:
        meta = getattr(self.ds, "file_meta", None)
        return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""

    @property
    def n_frames(self) -> int:
        try:
            return max(1, int(self.ds.get("NumberOfFrames", 1) or 1))
        except (TypeError, ValueError):
            return 1


def _pixel_tag_at(fp, little_endian: bool) -> int | None:
    """The pixel-data tag the file is positioned at, or None (end of file / something else)."""
    raw = fp.read(4)
    if len(raw) < 4:
        return None
    group, elem = struct.unpack("<HH" if little_endian else ">HH", raw)
    tag = (group << 16) | elem
    return tag if tag in PIXEL_DATA_TAGS else None


def read_header(path: str | os.PathLike) -> DicomFile:
    """Read a file's header up to its pixel data; raise `NotDicomError` / `CorruptFileError`."""
    path = Path(path)
    try:
        with open(path, "rb") as fp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's value-validation chatter is not the user's problem
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            offset = fp.tell()
            little = getattr(ds, "is_little_endian", None)
            if little is None:  # pydicom 3 keeps the encoding on the dataset's original_encoding
                little = ds.original_encoding[1] if ds.original_encoding else True
            tag = _pixel_tag_at(fp, bool(little))
            has_pixels = tag is not None
            if str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
                # The whole dataset is deflated: offsets in the file mean nothing; look for pixels by reading it.
                fp.seek(0)
                has_pixels, tag = bool(PIXEL_DATA_TAGS & set(pydicom.dcmread(fp).keys())), None
    except InvalidDicomError as exc:
        raise NotDicomError(f"{path}: not a DICOM file ({exc})") from None
    except FileNotFoundError:
        raise InputNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise NotDicomError(f"{path}: is a folder, not a DICOM file") from None
    except (OSError, EOFError, ValueError, struct.error, KeyError, TypeError, AttributeError) as exc:
        raise CorruptFileError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc})") from None
    sop_class = getattr(ds.get("SOPClassUID"), "name", "")
    if not has_pixels and (("Rows" in ds and "Columns" in ds) or "Image Storage" in str(sop_class)):
        raise CorruptFileError(f"{path}: truncated or damaged, the header describes an image but pixel data is missing")
    return DicomFile(path, ds, has_pixels, offset if tag is not None else None)


@dataclass
class Series:
    """The instances of one SeriesInstanceUID found under a folder."""

    uid: str
    files: list[DicomFile] = field(default_factory=list)

    @property
    def first(self) -> Dataset:
        return self.files[0].ds

    @property
    def modality(self) -> str:
        return str(self.first.get("Modality", ""))

    @property
    def study_uid(self) -> str:
        return str(self.first.get("StudyInstanceUID", ""))

    @property
    def label(self) -> str:
        """How messages name the series: its UID and where its files are (never a patient name)."""
        folders = sorted({str(f.path.parent) for f in self.files})
        where = folders[0] if len(folders) == 1 else f"{folders[0]} (+{len(folders) - 1} folders)"
        return f"{self.uid} in {where}"

    @property
    def n_frames(self) -> int:
        return sum(f.n_frames for f in self.files)


@dataclass
class ScanResult:
    series: list[Series]
    skipped: list[tuple[Path, str]]  # files that are not usable DICOM images, and why


def _iter_files(root: Path) -> Iterable[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def scan(root: str | os.PathLike, *, progress: bool = False) -> ScanResult:
    """Find every image series under ``root`` (a file or a folder tree), grouped by SeriesInstanceUID.

    Files that are not DICOM, and DICOM objects without pixel data (SR, RT structure sets, DICOMDIR),
    are skipped with one warning that counts them and names an example.
    """
    root = Path(root)
    if not root.exists():
        raise InputNotFoundError(f"{root}: no such file or folder")
    paths = list(_iter_files(root))
    if not paths:
        raise InputNotFoundError(f"{root}: folder is empty")
    by_uid: dict[str, Series] = {}
    skipped: list[tuple[Path, str]] = []
    for path in track(paths, "reading DICOM headers", enabled=progress):
        try:
            f = read_header(path)
        except (NotDicomError, CorruptFileError) as exc:
            skipped.append((path, str(exc).removeprefix(f"{path}: ")))
            continue
        if f.ds.get("SOPClassUID", "") == _MEDIA_STORAGE_DIRECTORY:
            skipped.append((path, "DICOMDIR (a media index, not an image)"))
        elif not f.has_pixels:
            skipped.append((path, f"no pixel data ({f.ds.get('Modality', 'unknown modality')} object)"))
        elif not f.series_uid:
            skipped.append((path, "no SeriesInstanceUID"))
        else:
            by_uid.setdefault(f.series_uid, Series(f.series_uid)).files.append(f)
    if skipped and by_uid:
        example, why = skipped[0]
        warnings.warn(
            MedmapWarning(f"{root}: ignored {len(skipped)} file(s) that are not DICOM images, e.g. {example}: {why}"),
            stacklevel=2,
        )
    series = sorted(by_uid.values(), key=lambda s: (s.study_uid, _series_number(s), s.uid))
    return ScanResult(series, skipped)


def _series_number(s: Series) -> int:
    try:
        return int(s.first.get("SeriesNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0
