"""One DICOM file's header, read fast and guarded, without its pixels (`medmap.io.dicom.series` groups
files into series)."""

from __future__ import annotations

import functools
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medmap.errors import CorruptFileError, InputNotFoundError, NotDicomError
from medmap.io.dicom.header import LONG_VRS, PIXEL_DATA_TAGS, read_fast
from medmap.io.dicom.nesting import MAX_SEQUENCE_DEPTH, file_too_deep
from medmap.io.guard import MAX_IMAGE_BYTES, reading

# SOP classes that hold no image even though they are valid DICOM (DICOMDIR, SR, RT structures, ...)
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


_BINARY = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}

# Limits on what a header may declare, checked before anything is allocated: a hostile or damaged
# header must not make the reader build a billion frames or ask for terabytes.
MAX_FRAMES = 100_000
# A header value (any element but the pixel data) longer than this is a damaged length: reading it would
# pull gigabytes (of a sparse file's made-up zeros, seconds per gigabyte) into memory before any check.
MAX_HEADER_VALUE_BYTES = 1 << 30
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
PHOTOMETRICS = (
    *MONOCHROME,
    "PALETTE COLOR",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
    "YBR_PARTIAL_420",
)


@functools.cache
def _keyword(keyword: str) -> tuple[int, str]:
    """(tag, dictionary VR) of a keyword, looked up once."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag, dictionary_VR(tag)


def header_value(ds: Dataset | None, keyword: str):
    """An attribute's value read from its raw bytes, without pydicom's conversion and validation.

    Numbers come back as int/float (or lists of them), strings stripped (multi-valued: a list of str),
    absent attributes as None. Why: converting values through pydicom cost about a third of loading a
    300-slice series; the loader needs a few dozen plain values per file, nothing more. Sequences and
    values pydicom already converted are returned as pydicom has them.
    """
    if ds is None:
        return None
    tag, standard = _keyword(keyword)
    elem = ds.get_item(tag)
    if elem is None:
        return None
    value = elem.value
    vr = elem.VR or standard
    if vr == "UN":  # a standard attribute sent as UN: read it as its dictionary VR
        vr = standard.split(" or ")[0]
    elif vr not in standard.split(" or "):
        # A value in the wrong representation is damage: reading it anyway would guess what it means (also
        # when pydicom already converted it, as it does inside the sequences it has walked).
        raise ValueError(f"{keyword} is encoded as {vr}, the standard says {standard}")
    if not isinstance(value, bytes):
        return value
    vr = vr.split(" or ")[0]  # implicit VR: "US or SS" descriptors are read as US, as pydicom does
    if vr in _BINARY:
        fmt = _BINARY[vr]
        size = struct.calcsize(fmt)
        count = len(value) // size
        if len(value) % size:
            raise ValueError(f"{keyword} holds {len(value)} bytes, not a whole number of {vr} values")
        numbers = struct.unpack(("<" if elem.is_little_endian else ">") + fmt * count, value[: count * size])
        return numbers[0] if count == 1 else list(numbers)
    if vr in ("OB", "OW", "OF", "OD", "UN", "SQ"):
        return value
    text = value.decode("latin-1").strip(" \x00")
    return text.split("\\") if "\\" in text else text


def to_int(value, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _required_int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    """A Type 1 integer of the Image Pixel module; missing or garbled is an error, never a guess."""
    value = header_value(ds, keyword)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value in (None, "") and default is not None:
        return default
    try:
        number = float(value)
        if not number.is_integer():
            raise ValueError
        return int(number)
    except (TypeError, ValueError, OverflowError):
        shown = "missing" if value in (None, "") else f"{str(value)[:40]!r}"
        raise CorruptFileError(f"{keyword} is {shown}, not an integer") from None


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

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame as stored uncompressed (1-bit data packed)."""
        samples = 2 if self.photometric == "YBR_FULL_422" else self.samples  # chroma shared by pixel pairs
        bits = self.rows * self.columns * samples * (self.float_bits or self.bits_allocated)
        return (bits + 7) // 8

    def problem(self) -> str | None:
        """What makes this pixel description undecodable or absurd, or None."""
        if not (0 < self.rows <= 65535 and 0 < self.columns <= 65535):
            return f"image size {self.columns}x{self.rows} is impossible"
        if not 0 < self.frames <= MAX_FRAMES:
            return f"NumberOfFrames {self.frames} is out of range (1 to {MAX_FRAMES})"
        if self.float_bits:
            return None if self.samples == 1 else f"float pixel data with {self.samples} samples per pixel"
        if self.bits_allocated not in (1, 8, 16, 32, 64):
            return f"BitsAllocated {self.bits_allocated} is not 1, 8, 16, 32 or 64"
        if not 0 < self.bits_stored <= self.bits_allocated:
            return f"BitsStored {self.bits_stored} does not fit BitsAllocated {self.bits_allocated}"
        if self.photometric not in PHOTOMETRICS:
            return f"PhotometricInterpretation {self.photometric!r} is not one medmap decodes"
        expected = 1 if self.photometric in (*MONOCHROME, "PALETTE COLOR") else 3
        if self.samples != expected:
            return f"{self.photometric} needs SamplesPerPixel {expected}, the file says {self.samples}"
        if self.signed and (expected == 3 or self.photometric == "PALETTE COLOR"):
            # colour samples and palette indices are unsigned in every IOD; reading them signed or not
            # would be a guess at what the bytes mean
            return f"{self.photometric} pixel data declared signed (PixelRepresentation 1)"
        return None


@dataclass
class DicomFile:
    """A DICOM file's header (no pixel data loaded) and the file offset of its pixel data element."""

    path: Path
    ds: Dataset
    has_pixels: bool
    pixel_offset: int | None  # file offset of the pixel data element's tag; None if absent or not addressable
    pixel_tag: int | None = None  # (7FE0,0010) Pixel Data, or (7FE0,0008/0009) Float / Double Float Pixel Data
    pixel_length: int | None = None  # the pixel data element's declared value length; None: encapsulated
    file_size: int = 0
    clean_end: bool = True  # what follows the pixel data element parses as an element (or nothing does)

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
        """The Image Pixel module, strictly: a missing or garbled Type 1 value raises `CorruptFileError`."""
        ds = self.ds
        float_bits = {0x7FE00008: 32, 0x7FE00009: 64}.get(self.pixel_tag or 0, 0)
        try:
            # Type 1 in the Image Pixel module: pydicom refuses to decode without them, and so do we
            # (a default would be a guess at what the bytes mean). Float pixel data needs fewer.
            default = 1 if float_bits else None
            bits = _required_int(ds, "BitsAllocated", float_bits or None)
            signed = _required_int(ds, "PixelRepresentation", 0 if float_bits else None)
            if signed not in (0, 1):
                raise CorruptFileError(f"PixelRepresentation is {signed}, not 0 or 1")
            photometric = header_value(ds, "PhotometricInterpretation")
            if not isinstance(photometric, str) or not photometric.strip():
                if not float_bits:
                    raise CorruptFileError(f"PhotometricInterpretation is {photometric or 'missing'!r}")
                photometric = "MONOCHROME2"
            fmt = PixelFormat(
                rows=_required_int(ds, "Rows"),
                columns=_required_int(ds, "Columns"),
                frames=_required_int(ds, "NumberOfFrames", 1),
                samples=_required_int(ds, "SamplesPerPixel", default),
                bits_allocated=bits,
                bits_stored=_required_int(ds, "BitsStored", bits if float_bits else None),
                signed=signed == 1,
                photometric=photometric.strip(),
                float_bits=float_bits,
                modality_lut="ModalityLUTSequence" in ds,
            )
        except CorruptFileError as exc:
            raise CorruptFileError(f"{self.path}: {exc}") from None
        problem = fmt.problem() or self._size_problem(fmt)
        if problem:
            raise CorruptFileError(f"{self.path}: {problem}")
        return fmt

    def _size_problem(self, fmt: PixelFormat) -> str | None:
        """Does the file hold the bytes its header promises? Checked before anything is allocated."""
        needed = fmt.frame_bytes * fmt.frames
        if needed > MAX_IMAGE_BYTES:
            size = f"{fmt.frames} frames of {fmt.columns}x{fmt.rows}"
            return f"declares {needed / 1024**3:.0f} GiB of pixel data ({size})"
        if self.pixel_offset is None:
            return None  # deflated: pydicom inflates it and the decoder checks the size
        present = max(0, self.file_size - self.pixel_offset)
        native = self.pixel_length is not None and self.transfer_syntax in _NATIVE_SYNTAXES
        if native:  # the element holds every frame
            if min(self.pixel_length, present) < needed:
                return (
                    f"pixel data truncated, {needed} bytes needed for {fmt.frames} frame(s) of "
                    f"{fmt.columns}x{fmt.rows} but {min(self.pixel_length, present)} present"
                )
            if not self.clean_end:
                return "bytes after the pixel data are not DICOM elements (data inserted or lengths damaged)"
            if self.pixel_length >= needed + fmt.frame_bytes:  # loading would silently drop frames
                return (
                    f"pixel data holds {self.pixel_length // fmt.frame_bytes} frames but NumberOfFrames says "
                    f"{fmt.frames}"
                )
        elif fmt.frames * 8 > present:  # encapsulated: each frame needs at least one 8-byte item header
            return f"declares {fmt.frames} compressed frames but holds only {present} bytes of pixel data"
        elif present > 2 * needed + 65536 * fmt.frames + 2**20:
            # Compressed frames are never much larger than raw ones; a file that is (a zero-filled or
            # sparse tail) would make the decoder scan gigabytes for the end of the pixel data.
            return f"holds {present} bytes of compressed pixel data for {needed} bytes of frames"
        return None

    @property
    def n_frames(self) -> int:
        return self.pixel_format.frames


class _HeaderGuard:
    """pydicom's ``stop_when``: stop before the pixel data, and refuse elements out of ascending order.

    Why the order check: a file padded with zeros (a sparse or pre-allocated file, a damaged copy)
    parses as millions of (0000,0000) elements, so pydicom would read for minutes; DICOM requires
    ascending tags, so the first repeated or backward tag ends the read with a clear error.
    """

    def __init__(self, stop_at_pixels: bool = True) -> None:
        self.stop_at_pixels = stop_at_pixels
        self.previous = -1
        self.first: int | None = None
        self.restarts = 0

    def __call__(self, tag, vr, length) -> bool:
        if tag == self.first and self.restarts < 2:  # pydicom rereads when the VR encoding was misdeclared
            self.restarts += 1
            self.previous = -1
        if self.first is None:
            self.first = tag
        if tag <= self.previous:
            raise ValueError(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) out of order: damaged or zero-filled")
        if tag not in PIXEL_DATA_TAGS and length != 0xFFFFFFFF and length > MAX_HEADER_VALUE_BYTES:
            raise ValueError(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares {length} bytes: a damaged length")
        self.previous = tag
        return self.stop_at_pixels and tag in PIXEL_DATA_TAGS


def read_dataset(fp, *, pixels: bool = True) -> Dataset:
    """``pydicom.dcmread`` with the guards against zero-filled files (`_HeaderGuard`, `_check_start`,
    `_ZeroRunGuard`)."""
    _check_start(fp)
    return read_partial(_ZeroRunGuard(fp), _HeaderGuard(stop_at_pixels=not pixels))


class _ZeroRunGuard:
    """A file wrapper that stops pydicom in a run of zero-filled element headers.

    Inside a sequence item pydicom reads elements without any ``stop_when``, so a damaged length that
    lands in a zero-filled region (a sparse or pre-allocated file) means gigabytes of (0000,0000)
    elements. Real headers never hold hundreds of all-zero element headers in a row.
    """

    LIMIT = 256

    def __init__(self, fp) -> None:
        self._fp = fp
        self._zeros = 0

    def read(self, size: int = -1) -> bytes:
        data = self._fp.read(size)
        if 0 < len(data) <= 12 and not any(data):
            self._zeros += 1
            if self._zeros > self.LIMIT:
                raise ValueError(f"zero-filled region at byte {self._fp.tell()}: damaged lengths or a sparse file")
        elif data:
            self._zeros = 0
        return data

    def __getattr__(self, name: str):
        return getattr(self._fp, name)


def _check_start(fp) -> None:
    """Refuse a Part 10 file whose dataset starts with command elements (group 0000), e.g. zeros.

    pydicom reads group 0000 before the ``stop_when`` guard sees anything, and a zero-filled (sparse,
    pre-allocated) file is an endless run of (0000,0000) elements to it. Leaves ``fp`` at the start.
    """
    head = fp.read(144)
    fp.seek(0)
    if len(head) < 132 or head[128:132] != b"DICM":
        return  # not Part 10: pydicom decides (it refuses files without the prefix)
    if head[132:134] != b"\x02\x00":
        raise ValueError("no file meta information after the DICM prefix")
    if head[132:136] != b"\x02\x00\x00\x00" or head[136:138] != b"UL" or len(head) < 144:
        return  # no group length: pydicom finds the end of the meta itself
    (group_length,) = struct.unpack("<I", head[140:144])
    fp.seek(144 + group_length)
    first = fp.read(2)
    fp.seek(0)
    if first == b"\x00\x00":
        raise ValueError("the dataset starts with command elements or zeros, not an image header")


def _pixel_tag_at(fp, little_endian: bool) -> int | None:
    """The pixel-data tag the file is positioned at, or None (end of file / something else)."""
    raw = fp.read(4)
    if len(raw) < 4:
        return None
    group, elem = struct.unpack("<HH" if little_endian else ">HH", raw)
    tag = (group << 16) | elem
    return tag if tag in PIXEL_DATA_TAGS else None


def _pixel_length_at(fp, offset: int, little_endian: bool, implicit: bool, file_size: int) -> tuple[int | None, bool]:
    """The declared length of the pixel data element at ``offset`` (None when undefined: encapsulated),
    and whether what follows the element is another element (False: inserted or shifted bytes)."""
    fp.seek(offset + 4)
    head = fp.read(8)
    order = "<" if little_endian else ">"
    if implicit:
        length, header = struct.unpack(order + "I", head[:4])[0], 8
    elif head[:2] in LONG_VRS:
        length, header = struct.unpack(order + "I", head[4:8])[0], 12
    else:
        length, header = struct.unpack(order + "H", head[2:4])[0], 8
    if length == 0xFFFFFFFF:
        return None, True
    return length, _clean_tail(fp, offset + header + length, order, implicit, file_size)


def _clean_tail(fp, pos: int, order: str, implicit: bool, end: int) -> bool:
    """Whatever follows the pixel data must be whole elements with higher tags (e.g. Data Set Trailing
    Padding) ending exactly at the end of the file; anything else means bytes were inserted or a length
    is wrong, and the pixel values read by length would be shifted."""
    previous = 0x7FE00010
    if pos > end:
        return True  # truncated: the size check says so
    for _ in range(64):
        if pos == end:
            return True
        fp.seek(pos)
        head = fp.read(12)
        if len(head) < 8:
            return False
        group, elem = struct.unpack(order + "HH", head[:4])
        tag = (group << 16) | elem
        if tag <= previous:
            return False
        previous = tag
        if implicit:
            length, size = struct.unpack(order + "I", head[4:8])[0], 8
        elif not head[4:6].isalpha() or not head[4:6].isupper():
            return False
        elif head[4:6] in LONG_VRS:
            if len(head) < 12:
                return False
            length, size = struct.unpack(order + "I", head[8:12])[0], 12
        else:
            length, size = struct.unpack(order + "H", head[6:8])[0], 8
        if length == 0xFFFFFFFF:
            return True  # a sequence of undefined length: pydicom parses it; nothing to measure here
        pos += size + length
    return pos == end


def read_header(path: str | os.PathLike) -> DicomFile:
    """Read a file's header up to its pixel data and check what it declares about its pixels.

    Raises `NotDicomError` (not DICOM at all), `CorruptFileError` (damaged: the message names the file
    and what is wrong) or `DamagedInstanceError` (damaged, but its series is known: the series must not
    load without it). Everything the loader later needs from the header is parsed here, inside the one
    boundary that turns any parser failure into a one-line error.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputNotFoundError(f"{path}: no such file") from None
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise NotDicomError(f"{path}: is a folder, not a DICOM file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block open() or never end
        raise NotDicomError(f"{path}: not a regular file (FIFO, socket or device)")
    try:
        with (
            reading(path, "unreadable DICOM header", passthrough=(InvalidDicomError,)),
            open(path, "rb") as fp,
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")  # pydicom's value-validation chatter is not the user's problem
            depth = file_too_deep(fp)  # before pydicom walks them (see nesting.py)
            if depth is not None:
                raise CorruptFileError(
                    f"{path}: sequences nested {depth} deep (at most {MAX_SEQUENCE_DEPTH} are read): damaged or hostile"
                )
            fast = read_fast(fp, info.st_size)  # the common case, without pydicom's reader (see header.py)
            if fast is not None:
                ds, offset = fast
            else:
                fp.seek(0)
                ds = read_dataset(fp, pixels=False)
                offset = fp.tell()
            fp.seek(offset)
            implicit, little = ds.original_encoding if ds.original_encoding else (False, True)
            tag = _pixel_tag_at(fp, bool(little))
            has_pixels = tag is not None
            deflated_tag = None
            length, clean_end = (
                _pixel_length_at(fp, offset, bool(little), bool(implicit), info.st_size)
                if tag is not None
                else (None, True)
            )
            if str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
                # The whole dataset is deflated: offsets in the file mean nothing; look for pixels by reading it.
                fp.seek(0)
                found = PIXEL_DATA_TAGS & {int(elem.tag) for elem in read_dataset(fp)}
                has_pixels, tag = bool(found), None
                deflated_tag = min(found) if found else None
            f = DicomFile(
                path,
                ds,
                has_pixels,
                offset if tag is not None else None,
                tag or deflated_tag,
                length,
                info.st_size,
                clean_end,
            )
            sop_class = str(header_value(ds, "SOPClassUID") or "")
            for keyword in ("SeriesInstanceUID", "SOPInstanceUID", "Modality", "StudyInstanceUID"):
                header_value(ds, keyword)  # raises here, inside the boundary, if the value is damaged
            f.series_uid, f.sop_instance_uid, f.transfer_syntax  # noqa: B018 - parsed once, here
    except InvalidDicomError as exc:
        raise NotDicomError(f"{path}: not a DICOM file ({exc})") from None
    describes_image = "Rows" in ds and "Columns" in ds
    try:
        name = pydicom.uid.UID(sop_class).name if sop_class else ""
    except Exception:
        name = ""
    if not has_pixels and (describes_image or "Image Storage" in name):
        raise DamagedInstanceError(
            f"{path}: truncated or damaged, the header describes an image but pixel data is missing", f.series_uid
        )
    if has_pixels:
        try:
            with reading(path, "damaged image header"):
                f.pixel_format  # noqa: B018 - validated once, here
        except CorruptFileError as exc:
            raise DamagedInstanceError(str(exc), f.series_uid) from None
    return f


class DamagedInstanceError(CorruptFileError):
    """A damaged file whose SeriesInstanceUID could still be read: its series cannot be loaded whole."""

    def __init__(self, message: str, series_uid: str):
        super().__init__(message)
        self.series_uid = series_uid
