"""A fast reader for the header of an uncompressed little-endian DICOM file (most CT/MR slices on disk).

Why our own: pydicom's element generator does a lot of general work per element (it serves every
transfer syntax, deferred reads, callbacks), and parsing the headers of a 300-slice series with it is
more than half of loading the series. This reader walks the element headers of the two common
transfer syntaxes over one in-memory buffer and hands pydicom the raw elements (``RawDataElement``),
which pydicom converts lazily exactly as if it had read them itself. Anything it does not expect
(another transfer syntax, a VR it does not know, tags out of order, a length past the end, an
undefined length outside a sequence) makes it return None, and the caller reads the file with pydicom
instead, so its strictness can never refuse a file pydicom reads.
"""

from __future__ import annotations

import struct

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # Pixel Data, Float, Double Float
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset(
    {
        b"AE",
        b"AS",
        b"AT",
        b"CS",
        b"DA",
        b"DS",
        b"DT",
        b"FD",
        b"FL",
        b"IS",
        b"LO",
        b"LT",
        b"PN",
        b"SH",
        b"SL",
        b"SS",
        b"ST",
        b"TM",
        b"UI",
        b"UL",
        b"US",
    }
)
_VRS = {vr: (vr.decode("ascii"), vr in LONG_VRS) for vr in LONG_VRS | _SHORT_VRS}  # VR bytes -> (text, long)
_LENGTH = struct.Struct("<I")
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_HEAD = struct.Struct("<HHI")  # group, element, 4 more bytes (implicit length, or VR + short length)
_CHUNK = 1 << 16
_MAX_HEADER = 1 << 26


class _Unexpected(Exception):
    """Not a file this reader handles: let pydicom read it."""


def read_fast(fp, size: int) -> tuple[Dataset, int] | None:
    """(dataset without pixel data, file offset of the pixel data tag or of the end), or None."""
    buf = fp.read(min(size, _CHUNK))
    if len(buf) < 144 or buf[128:132] != b"DICM":
        return None
    try:
        while True:
            try:
                return _parse(fp, buf, complete=len(buf) >= size)
            except _NeedMore:
                if len(buf) >= min(size, _MAX_HEADER):
                    return None
                more = fp.read(len(buf))
                if not more:
                    return None
                buf += more
    except (_Unexpected, struct.error, UnicodeDecodeError):
        return None


class _NeedMore(Exception):
    """The buffer ends before the pixel data: read more of the file."""


def _parse(fp, buf: bytes, complete: bool) -> tuple[Dataset, int]:
    meta, pos = _elements(buf, 132, explicit=True, meta=True, complete=complete)
    syntax_elem = meta.get(0x00020010)
    if syntax_elem is None:
        raise _Unexpected
    syntax = syntax_elem.value.rstrip(b"\x00 ").decode("ascii")
    if syntax not in (EXPLICIT_LE, IMPLICIT_LE):
        raise _Unexpected
    explicit = syntax == EXPLICIT_LE
    elements, end = _elements(buf, pos, explicit=explicit, meta=False, complete=complete)
    charset = elements.get(0x00080005)
    if charset is not None:  # pydicom's reader checks it at once; a damaged one is for pydicom to refuse
        names = charset.value.decode("latin-1").strip(" \x00").split("\\")
        try:
            convert_encodings([n.strip() for n in names])
        except Exception as exc:
            raise _Unexpected from exc
    ds = Dataset(elements)  # not a FileDataset: its constructor's bookkeeping was a tenth of this reader
    ds.file_meta = FileMetaDataset(meta)
    ds.preamble = buf[:128]
    ds.set_original_encoding(not explicit, True, None)
    return ds, end


def _elements(buf: bytes, pos: int, *, explicit: bool, meta: bool, complete: bool) -> tuple[dict, int]:
    """Top-level elements from ``pos``: the meta group (group 0002 only), or the dataset up to pixel data."""
    out: dict = {}
    previous = -1
    n = len(buf)
    implicit = not explicit
    while True:
        if pos + 8 > n:
            if meta or pos != n or not complete:
                raise _NeedMore
            return out, pos  # the end of a file without pixel data
        group, element, rest = _HEAD.unpack_from(buf, pos)
        tag = group << 16 | element
        if meta and group != 0x0002:
            return out, pos
        if tag in PIXEL_DATA_TAGS:
            return out, pos
        if tag <= previous or group == 0 or group == 0xFFFE:
            raise _Unexpected
        previous = tag
        vr_text, length, start = _element_header(buf, pos, rest, explicit)
        if length == _UNDEFINED:
            if (explicit and vr_text != "SQ") or (implicit and group & 1 == 0 and _dictionary_vr(tag) != "SQ"):
                raise _Unexpected
            stop = _sequence_end(buf, start, explicit)
            value = buf[start:stop]
            pos = stop + 8  # past the sequence delimitation item
            length = len(value)
            if implicit:
                vr_text = "SQ"
        else:
            if start + length > n:
                raise _NeedMore
            value = buf[start : start + length]
            pos = start + length
        key = BaseTag(tag)  # pydicom's Tag() validates its argument: a third of this loop's time
        out[key] = RawDataElement(key, vr_text, length, value, start, implicit, True, True, False)


def _element_header(buf: bytes, pos: int, rest: int, explicit: bool) -> tuple[str | None, int, int]:
    """(VR, value length, value offset) of the element whose header starts at ``pos``; ``rest`` is the
    header's second 4 bytes as a little-endian number (the implicit length, or VR and short length)."""
    if not explicit:
        return None, rest, pos + 8
    known = _VRS.get(buf[pos + 4 : pos + 6])
    if known is None:
        raise _Unexpected
    vr_text, long = known
    if not long:
        return vr_text, rest >> 16, pos + 8
    if pos + 12 > len(buf):
        raise _NeedMore
    return vr_text, _LENGTH.unpack_from(buf, pos + 8)[0], pos + 12


def _dictionary_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return ""


def _tag_at(buf: bytes, pos: int) -> tuple[int, int]:
    """(tag, the header's second 4 bytes as a number) of the element or item header at ``pos``."""
    if pos + 8 > len(buf):
        raise _NeedMore
    group, element, rest = _HEAD.unpack_from(buf, pos)
    return group << 16 | element, rest


def _sequence_end(buf: bytes, pos: int, explicit: bool) -> int:
    """Offset of the delimitation item that closes the undefined-length sequence whose items start at pos."""
    while True:
        tag, length = _tag_at(buf, pos)
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise _Unexpected
        pos += 8
        if length == _UNDEFINED:
            pos = _item_end(buf, pos, explicit) + 8
        else:
            pos += length


def _item_end(buf: bytes, pos: int, explicit: bool) -> int:
    """Offset of the item delimiter closing an undefined-length item whose elements start at pos."""
    n = len(buf)
    while True:
        tag, rest = _tag_at(buf, pos)
        if tag == _ITEM_END:
            return pos
        if tag >> 16 in (0xFFFE, 0):
            raise _Unexpected
        _, length, start = _element_header(buf, pos, rest, explicit)
        if length == _UNDEFINED:
            pos = _sequence_end(buf, start, explicit) + 8
        else:
            pos = start + length
            if pos > n:
                raise _NeedMore
