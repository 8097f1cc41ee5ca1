"""How deeply a file's sequences nest, measured on its bytes before pydicom parses them.

Why: pydicom reads and converts nested sequences recursively, and each level wraps the exception of the
level below with a formatted traceback of the whole stack. A sequence nested a few thousand levels deep
(no real object nests more than a dozen: enhanced multi-frame functional groups 3-4, SR content trees
rarely 10) so costs minutes of traceback formatting before the RecursionError surfaces: a hang. This
walk is iterative and bounded, and runs only when the header holds enough item tags to nest that deep
(a bounded ``find`` loop in C over a memory map), so ordinary files pay nothing measurable.
"""

from __future__ import annotations

import struct
import zlib

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from medmap.io.dicom.header import LONG_VRS

MAX_SEQUENCE_DEPTH = 64  # sequences inside sequences; each level is a sequence plus an item
SCANNED_BYTES = 1 << 26  # headers beyond 64 MiB are refused by the header guards before any nesting matters
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010


def file_too_deep(fp) -> int | None:
    """`too_deep` of an open file's first `SCANNED_BYTES` (memory-mapped: nothing is copied to count)."""
    import mmap
    import os

    if os.fstat(fp.fileno()).st_size == 0:
        return None
    with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return too_deep(view)


def _at_least(buf, pattern: bytes, count: int) -> bool:
    """Whether ``pattern`` occurs ``count`` times in the scanned part of ``buf`` (stops at the count)."""
    pos, end = -1, min(len(buf), SCANNED_BYTES)
    for _ in range(count):
        pos = buf.find(pattern, pos + 1, end)
        if pos < 0:
            return False
    return True


def too_deep(buf) -> int | None:
    """The sequence depth reached when it passes `MAX_SEQUENCE_DEPTH`, else None (``buf``: the file's bytes,
    as bytes or a memory map; a walk that runs off the end stops there)."""
    if not (
        _at_least(buf, b"\xfe\xff\x00\xe0", MAX_SEQUENCE_DEPTH)
        or _at_least(buf, b"\xff\xfe\xe0\x00", MAX_SEQUENCE_DEPTH)
    ):
        return None  # every level of nesting needs an item of its own
    if len(buf) >= 132 and buf[128:132] == b"DICM":
        syntax, start = _meta(buf)
    else:  # no file meta: explicit when a VR follows the first tag, as pydicom guesses
        syntax, start = ("" if buf[4:6].isalpha() else ImplicitVRLittleEndian), 0
    if syntax == DeflatedExplicitVRLittleEndian:
        try:
            buf, start = zlib.decompressobj(-zlib.MAX_WBITS).decompress(buf[start:SCANNED_BYTES], SCANNED_BYTES), 0
        except zlib.error:
            return None  # not deflate data: pydicom refuses it
    depth = _deepest(buf, start, explicit=syntax != ImplicitVRLittleEndian, little=syntax != ExplicitVRBigEndian)
    return depth if depth > MAX_SEQUENCE_DEPTH else None


def _meta(buf: bytes) -> tuple[str, int]:
    """(transfer syntax UID, offset of the dataset) from the file meta group (explicit VR little endian)."""
    pos, syntax = 132, ""
    while pos + 8 <= len(buf):
        group, element = struct.unpack_from("<HH", buf, pos)
        if group != 0x0002:
            break
        vr = buf[pos + 4 : pos + 6]
        if vr in LONG_VRS:
            if pos + 12 > len(buf):
                break
            length, value = struct.unpack_from("<I", buf, pos + 8)[0], pos + 12
        else:
            length, value = struct.unpack_from("<H", buf, pos + 6)[0], pos + 8
        if element == 0x0010:
            syntax = buf[value : value + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = value + length
    return syntax, pos


def _deepest(buf: bytes, pos: int, *, explicit: bool, little: bool) -> int:
    """The deepest sequence nesting from ``pos`` on; stops past `MAX_SEQUENCE_DEPTH`, at the top-level pixel
    data, or where the bytes stop making sense (pydicom then refuses the file on its own)."""
    order = "<" if little else ">"
    head, length32, length16 = struct.Struct(order + "HH"), struct.Struct(order + "I"), struct.Struct(order + "H")
    ends: list[int | None] = []  # the open sequences and items: their end offset, None for undefined length
    deepest, n = 0, min(len(buf), SCANNED_BYTES)
    while pos + 8 <= n:
        while ends and ends[-1] is not None and pos >= ends[-1]:
            ends.pop()
        group, element = head.unpack_from(buf, pos)
        tag = group << 16 | element
        if group == 0xFFFE:
            length = length32.unpack_from(buf, pos + 4)[0]
            pos += 8
            if tag == _ITEM:
                ends.append(None if length == _UNDEFINED else pos + length)
            elif tag in (_ITEM_END, _SEQ_END) and ends and ends[-1] is None:
                ends.pop()
            else:
                return deepest // 2
            continue
        if tag == _PIXEL_DATA and not ends:
            break
        if explicit:
            vr = buf[pos + 4 : pos + 6]
            if vr in LONG_VRS:
                if pos + 12 > n:
                    break
                length, start = length32.unpack_from(buf, pos + 8)[0], pos + 12
            else:
                length, start = length16.unpack_from(buf, pos + 6)[0], pos + 8
            sequence = vr == b"SQ" or length == _UNDEFINED
        else:
            length, start = length32.unpack_from(buf, pos + 4)[0], pos + 8
            sequence = length == _UNDEFINED or buf[start : start + 4] == b"\xfe\xff\x00\xe0"
        if sequence:
            ends.append(None if length == _UNDEFINED else start + length)
            deepest = max(deepest, len(ends) + 1)  # the sequence and the item it opens
            if deepest // 2 > MAX_SEQUENCE_DEPTH:
                break
            pos = start
        else:
            pos = start + length
    return deepest // 2
