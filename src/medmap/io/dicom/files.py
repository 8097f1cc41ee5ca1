"""One DICOM file's header, and the series found under a folder tree."""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medmap.errors import CorruptFileError, InputNotFoundError, MedmapWarning, NotDicomError
from medmap.progress import track

PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}  # Pixel Data, Float and Double Float Pixel Data
# SOP classes that hold no image even though they are valid DICOM (DICOMDIR, SR, RT structures, ...)
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


_BINARY = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}


def header_value(ds: Dataset | None, keyword: str):
    """An attribute's value read from its raw bytes, without pydicom's conversion and validation.

    Numbers come back as int/float (or lists of them), strings stripped (multi-valued: a list of str),
    absent attributes as None. Why: converting values through pydicom cost about a third of loading a
    300-slice series; the loader needs a few dozen plain values per file, nothing more. Sequences and
    values pydicom already converted are returned as pydicom has them.
    """
    if ds is None:
        return None
    tag = tag_for_keyword(keyword)
    elem = ds.get_item(tag) if tag is not None else None
    if elem is None:
        return None
    value = elem.value
    if not isinstance(value, bytes):
        return value
    vr = elem.VR or dictionary_VR(tag)
    if vr in _BINARY:
        fmt = _BINARY[vr]
        size = struct.calcsize(fmt)
        count = len(value) // size
        numbers = struct.unpack(("<" if elem.is_little_endian else ">") + fmt * count, value[: count * size])
        return numbers[0] if count == 1 else list(numbers)
    if vr in ("OB", "OW", "OF", "OD", "UN", "SQ"):
        return value
    text = value.decode("latin-1").strip(" \x00")
    return text.split("\\") if "\\" in text else text


def _to_int(value, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class PixelFormat:
    """The Image Pixel module of one instance: what the decoder needs, parsed once per file."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    float_bits: int  # 32 or 64 for Float / Double Float Pixel Data, 0 for integer Pixel Data
    modality_lut: bool  # a Modality LUT Sequence replaces the linear rescale

    @property
    def colour(self) -> bool:
        return self.samples > 1 or self.photometric == "PALETTE COLOR"


@dataclass
class DicomFile:
    """A DICOM file's header (no pixel data loaded) and the file offset of its pixel data element."""

    path: Path
    ds: Dataset
    has_pixels: bool
    pixel_offset: int | None  # file offset of the pixel data element's tag; None if absent or not addressable
    pixel_tag: int | None = None  # (7FE0,0010) Pixel Data, or (7FE0,0008/0009) Float / Double Float Pixel Data

    @cached_property
    def series_uid(self) -> str:
        return str(header_value(self.ds, "SeriesInstanceUID") or "")

    @cached_property
    def sop_instance_uid(self) -> str:
        return str(header_value(self.ds, "SOPInstanceUID") or "")

    @cached_property
    def transfer_syntax(self) -> str:
        meta = getattr(self.ds, "file_meta", None)
        return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""

    @cached_property
    def pixel_format(self) -> PixelFormat:
        ds = self.ds
        bits = _to_int(header_value(ds, "BitsAllocated"), 16)
        return PixelFormat(
            rows=_to_int(header_value(ds, "Rows"), 0),
            columns=_to_int(header_value(ds, "Columns"), 0),
            frames=max(1, _to_int(header_value(ds, "NumberOfFrames"), 1)),
            samples=_to_int(header_value(ds, "SamplesPerPixel"), 1),
            bits_allocated=bits,
            bits_stored=_to_int(header_value(ds, "BitsStored"), bits),
            signed=_to_int(header_value(ds, "PixelRepresentation"), 0) == 1,
            photometric=str(header_value(ds, "PhotometricInterpretation") or ""),
            float_bits={0x7FE00008: 32, 0x7FE00009: 64}.get(self.pixel_tag or 0, 0),
            modality_lut="ModalityLUTSequence" in ds,
        )

    @property
    def n_frames(self) -> int:
        return self.pixel_format.frames


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
            deflated_tag = None
            if str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
                # The whole dataset is deflated: offsets in the file mean nothing; look for pixels by reading it.
                fp.seek(0)
                found = PIXEL_DATA_TAGS & {int(elem.tag) for elem in pydicom.dcmread(fp)}
                has_pixels, tag = bool(found), None
                deflated_tag = min(found) if found else None
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
    return DicomFile(path, ds, has_pixels, offset if tag is not None else None, tag or deflated_tag)


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
        if header_value(f.ds, "SOPClassUID") == _MEDIA_STORAGE_DIRECTORY:
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
