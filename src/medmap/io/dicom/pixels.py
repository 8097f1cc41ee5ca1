"""Decode frames into a preallocated volume, with rescale (modality LUT) and photometric handling.

Why not just ``pydicom``'s ``pixel_array`` per file: for the common case (uncompressed little-endian
monochrome, i.e. most CT/MR series on disk), reading the raw frame bytes straight into the output
volume avoids building a Dataset with the pixel data and one or two temporary copies per slice. That is
what makes a 300-slice CT load several times faster than a pydicom loop, with peak memory close to the
output array (see benchmarks/dicom_load.py). Everything else (compressed transfer syntaxes, big endian,
colour, palette, 1-bit, float pixel data) goes through pydicom and its pylibjpeg plugins, so what pydicom
can decode, medmap can load, with the same values.

Output conventions: rescaled values (CT in HU); MONOCHROME1 inverted so that a higher value is always
brighter; YBR converted to RGB and palette colour expanded to RGB, as a trailing channel axis.
"""

from __future__ import annotations

import os
import struct
import warnings
from collections import defaultdict

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medmap.errors import CorruptFileError, UnsupportedFormatError
from medmap.io.dicom.files import DicomFile
from medmap.io.dicom.frames import Frame
from medmap.progress import track

_RAW_SYNTAXES = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_UNDEFINED_LENGTH = 0xFFFFFFFF


def _int(ds: Dataset, keyword: str, default: int) -> int:
    try:
        return int(ds.get(keyword, default))
    except (TypeError, ValueError):
        return default


def stored_range(ds: Dataset) -> tuple[int, int]:
    """Smallest and largest stored value the header allows (BitsStored, PixelRepresentation)."""
    bits = _int(ds, "BitsStored", _int(ds, "BitsAllocated", 16))
    if _int(ds, "PixelRepresentation", 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def is_colour(ds: Dataset) -> bool:
    return _int(ds, "SamplesPerPixel", 1) > 1 or str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR"


def _has_modality_lut(ds: Dataset) -> bool:
    return "ModalityLUTSequence" in ds


class DoesNotFit(Exception):
    """A rescaled slice overflowed the optimistic output dtype; the caller retries with the safe one."""


def output_dtypes(frames: list[Frame]) -> list[np.dtype]:
    """Output dtypes to try in order: int16 first where the header merely allows wider values.

    A CT stored as 16-bit with intercept -1024 could in theory reach -33792 HU, so the safe dtype is
    int32; real data never does, and int16 halves memory and time. `fill` checks every slice and
    raises `DoesNotFit` when the optimistic guess is wrong.
    """
    safe = _safe_dtype(frames)
    if safe.kind == "i" and safe.itemsize > 2:
        return [np.dtype(np.int16), safe]
    return [safe]


def _safe_dtype(frames: list[Frame]) -> np.dtype:
    """The narrowest dtype that holds every value the header allows, after rescale."""
    ds = frames[0].file.ds
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return np.dtype(np.float32 if "FloatPixelData" in ds else np.float64)
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        descriptor = ds.get("RedPaletteColorLookupTableDescriptor", [0, 0, 16])
        return np.dtype(np.uint8 if int(descriptor[2]) <= 8 else np.uint16)
    if is_colour(ds):
        return np.dtype({8: np.uint8, 16: np.uint16}.get(_int(ds, "BitsAllocated", 8), np.uint32))
    if any(_has_modality_lut(fr.file.ds) for fr in frames):
        return np.dtype(np.float32)
    lo, hi = stored_range(ds)
    rescales = {(fr.slope, fr.intercept) for fr in frames}
    if all(float(s).is_integer() and float(i).is_integer() for s, i in rescales):
        values = [v for s, i in rescales for v in (lo * s + i, hi * s + i)]
        for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= min(values) and max(values) <= info.max:
                return np.dtype(dtype)
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _raw_layout(f: DicomFile) -> tuple[int, np.dtype, int] | None:
    """(value offset, stored dtype, bytes per frame) when the frame bytes can be read directly, else None."""
    ds = f.ds
    if f.transfer_syntax not in _RAW_SYNTAXES or f.pixel_offset is None or is_colour(ds):
        return None
    bits = _int(ds, "BitsAllocated", 0)
    if bits not in (8, 16, 32) or _int(ds, "SamplesPerPixel", 1) != 1:
        return None
    with open(f.path, "rb") as fp:
        fp.seek(f.pixel_offset)
        head = fp.read(12)
    if len(head) < 8 or struct.unpack("<HH", head[:4]) != (0x7FE0, 0x0010):
        return None
    if f.transfer_syntax == ExplicitVRLittleEndian:
        length, start = struct.unpack("<I", head[8:12])[0], f.pixel_offset + 12
    else:
        length, start = struct.unpack("<I", head[4:8])[0], f.pixel_offset + 8
    kind = "i" if _int(ds, "PixelRepresentation", 0) == 1 else "u"
    dtype = np.dtype(f"<{kind}{bits // 8}")
    frame_bytes = _int(ds, "Rows", 0) * _int(ds, "Columns", 0) * dtype.itemsize
    if length == _UNDEFINED_LENGTH or frame_bytes == 0:
        return None
    needed = frame_bytes * f.n_frames
    available = os.path.getsize(f.path) - start
    if min(length, available) < needed:
        raise CorruptFileError(
            f"{f.path}: pixel data truncated, {needed} bytes needed for {f.n_frames} frame(s) of "
            f"{ds.Columns}x{ds.Rows} but only {min(length, available)} present"
        )
    return start, dtype, frame_bytes


def _unused_bits(buf: np.ndarray, ds: Dataset) -> None:
    """Clear (unsigned) or sign-extend (signed) the bits above BitsStored, as pydicom does."""
    shift = buf.dtype.itemsize * 8 - _int(ds, "BitsStored", buf.dtype.itemsize * 8)
    if shift > 0:
        np.left_shift(buf, shift, out=buf)
        np.right_shift(buf, shift, out=buf)


def _decode_with_pydicom(f: DicomFile) -> tuple[np.ndarray, Dataset]:
    """All frames of an instance as pydicom decodes them: ``(frames, rows, cols[, samples])``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(f.path)
            arr = ds.pixel_array
    except Exception as exc:  # pydicom and its plugins raise many types for damaged data
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if "no available" in reason.lower() or "plugin" in reason.lower() or "unable to decompress" in reason.lower():
            raise UnsupportedFormatError(
                f"{f.path}: cannot decode transfer syntax {f.transfer_syntax} ({reason})"
            ) from None
        raise CorruptFileError(f"{f.path}: pixel data cannot be decoded ({reason})") from None
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        arr = pydicom.pixels.apply_color_lut(arr, ds)
    frame_dims = 3 if is_colour(ds) else 2
    if arr.ndim == frame_dims:
        arr = arr[np.newaxis]
    return arr, ds


def _rescale_into(out: np.ndarray, stored: np.ndarray, fr: Frame, ds: Dataset) -> None:
    """out = stored * slope + intercept (or the modality LUT), in out's dtype without overflow."""
    if _has_modality_lut(ds):
        out[...] = pydicom.pixels.apply_modality_lut(stored, ds)
    elif fr.slope == 1 and fr.intercept == 0:
        out[...] = stored
    elif np.issubdtype(out.dtype, np.integer):
        # Check the range first (two cheap passes). Once the result is known to fit ``out``, integer
        # arithmetic modulo 2**bits on a same-width view is exact, so rescale in place without any
        # widening cast or temporary: about 4x faster than computing in int32 and casting back.
        slope, intercept = int(fr.slope), int(fr.intercept)
        ends = (int(stored.min()) * slope + intercept, int(stored.max()) * slope + intercept)
        info = np.iinfo(out.dtype)
        if min(ends) < info.min or max(ends) > info.max:
            raise DoesNotFit
        if stored.dtype.itemsize == out.dtype.itemsize:
            src = stored.view(out.dtype)
        else:
            out[...] = stored  # widening: exact
            src = out
        if slope != 1:
            np.multiply(src, np.array(slope, dtype=np.int64).astype(out.dtype), out=out)
            src = out
        np.add(src, np.array(intercept, dtype=np.int64).astype(out.dtype), out=out)
    else:
        out[...] = stored * np.float64(fr.slope) + np.float64(fr.intercept)


def _invert_monochrome1(out: np.ndarray, fr: Frame, ds: Dataset) -> None:
    """MONOCHROME1 stores 'higher = darker'; flip within the rescaled value range."""
    lo, hi = stored_range(ds)
    edge = (lo + hi) * fr.slope + 2 * fr.intercept
    if np.issubdtype(out.dtype, np.integer):
        out[...] = (int(edge) - out.astype(np.int64)).astype(out.dtype)
    else:
        np.subtract(edge, out, out=out)


def _decode_file(f: DicomFile, targets: list[tuple[int, Frame]], out: np.ndarray) -> None:
    """Decode one instance's frames into their slots of ``out``."""
    ds = f.ds
    monochrome1 = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    raw = _raw_layout(f)
    if raw is not None:
        start, dtype, frame_bytes = raw
        buf = np.empty((int(ds.Rows), int(ds.Columns)), dtype=dtype)
        with open(f.path, "rb", buffering=0) as fp:
            for k, fr in targets:
                fp.seek(start + (fr.index or 0) * frame_bytes)
                if fp.readinto(memoryview(buf).cast("B")) != frame_bytes:
                    raise CorruptFileError(f"{f.path}: pixel data ends early in frame {(fr.index or 0) + 1}")
                _unused_bits(buf, ds)
                _rescale_into(out[k], buf, fr, ds)
                if monochrome1:
                    _invert_monochrome1(out[k], fr, ds)
        return
    decoded, full = _decode_with_pydicom(f)
    for k, fr in targets:
        idx = fr.index or 0
        if idx >= decoded.shape[0]:
            raise CorruptFileError(f"{f.path}: header declares more frames than the pixel data holds")
        if is_colour(full) or "FloatPixelData" in full or "DoubleFloatPixelData" in full:
            out[k] = decoded[idx]
            continue
        _rescale_into(out[k], decoded[idx], fr, full)
        if monochrome1:
            _invert_monochrome1(out[k], fr, full)


def fill(out: np.ndarray, frames: list[Frame], *, progress: bool = False) -> None:
    """Decode every frame into ``out[k]`` (``out`` is ``[slice, row, column(, channel)]``).

    Single-threaded on purpose: a thread pool was measured slower here (GIL contention with the
    header conversions pydicom does lazily), see benchmarks/dicom_load.py.
    """
    by_file: dict[int, list[tuple[int, Frame]]] = defaultdict(list)
    files: dict[int, DicomFile] = {}
    for k, fr in enumerate(frames):
        by_file[id(fr.file)].append((k, fr))
        files[id(fr.file)] = fr.file
    for key in track(list(by_file), "decoding pixels", enabled=progress):
        _decode_file(files[key], by_file[key], out)
