"""The image series found under a folder tree: every file's header read once, grouped by SeriesInstanceUID,
with the files that are not images or are damaged kept apart and counted."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from medmap.errors import CorruptFileError, InputNotFoundError, MedmapWarning, NotDicomError
from medmap.io.dicom.files import (
    MEDIA_STORAGE_DIRECTORY,
    DamagedInstanceError,
    DicomFile,
    header_value,
    read_header,
    to_int,
)
from medmap.progress import track


@dataclass
class Series:
    """The instances of one SeriesInstanceUID found under a folder."""

    uid: str
    files: list[DicomFile] = field(default_factory=list)
    damaged: list[tuple[Path, str]] = field(default_factory=list)  # its files that cannot be read, and why

    @property
    def first(self) -> Dataset:
        return self.files[0].ds

    @property
    def modality(self) -> str:
        return str(header_value(self.first, "Modality") or "") if self.files else ""

    @property
    def study_uid(self) -> str:
        return str(header_value(self.first, "StudyInstanceUID") or "") if self.files else ""

    @property
    def label(self) -> str:
        """How messages name the series: its UID and where its files are (never a patient name)."""
        folders = sorted({str(p.parent) for p in [*(f.path for f in self.files), *(p for p, _ in self.damaged)]})
        where = folders[0] if len(folders) == 1 else f"{folders[0]} (+{len(folders) - 1} folders)"
        return f"{self.uid} in {where}"

    @property
    def n_frames(self) -> int:
        return sum(f.n_frames for f in self.files)

    @property
    def paths(self) -> list[Path]:
        """Every file of the series, readable or damaged."""
        return [f.path for f in self.files] + [p for p, _ in self.damaged]


@dataclass
class ScanResult:
    series: list[Series]
    skipped: list[tuple[Path, str]]  # files that are not usable DICOM images, and why
    damaged: list[tuple[Path, str]] = field(default_factory=list)  # damaged DICOM of unknown series


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
    damaged: list[tuple[Path, str]] = []
    for path in track(paths, "reading DICOM headers", enabled=progress):
        try:
            f = read_header(path)
        except DamagedInstanceError as exc:
            why = str(exc).removeprefix(f"{path}: ")
            if exc.series_uid:
                by_uid.setdefault(exc.series_uid, Series(exc.series_uid)).damaged.append((path, why))
            else:
                damaged.append((path, why))
            continue
        except CorruptFileError as exc:
            damaged.append((path, str(exc).removeprefix(f"{path}: ")))
            continue
        except NotDicomError as exc:
            skipped.append((path, str(exc).removeprefix(f"{path}: ")))
            continue
        if header_value(f.ds, "SOPClassUID") == MEDIA_STORAGE_DIRECTORY:
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
    if damaged and by_uid:
        example, why = damaged[0]
        warnings.warn(
            MedmapWarning(f"{root}: {len(damaged)} damaged DICOM file(s) of unknown series, e.g. {example}: {why}"),
            stacklevel=2,
        )
    series = sorted(by_uid.values(), key=lambda s: (s.study_uid, _series_number(s), s.uid))
    return ScanResult(series, skipped, damaged)


def _series_number(s: Series) -> int:
    try:
        return to_int(header_value(s.first, "SeriesNumber"), 0) if s.files else 0
    except (ValueError, KeyError):  # only used to order series: damage here changes nothing else
        return 0
