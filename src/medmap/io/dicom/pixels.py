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
from medmap.io.dicom.files import DicomFile, PixelFormat, header_value, read_dataset, reading
from medmap.io.dicom.frames import Frame
from medmap.progress import track

_RAW_SYNTAXES = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_UNDEFINED_LENGTH = 0xFFFFFFFF


def stored_range(fmt: PixelFormat) -> tuple[int, int]:
    """Smallest and largest stored value the header allows (BitsStored, PixelRepresentation)."""
    bits = fmt.bits_stored
    if fmt.signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


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
    fmt = frames[0].file.pixel_format
    if fmt.float_bits:
        return np.dtype(np.float32 if fmt.float_bits == 32 else np.float64)
    if fmt.photometric == "PALETTE COLOR":
        return np.dtype(np.uint8 if _palette_bits(frames[0].file) <= 8 else np.uint16)
    if fmt.colour:
        return np.dtype({8: np.uint8, 16: np.uint16}.get(fmt.bits_allocated, np.uint32))
    if any(fr.file.pixel_format.modality_lut for fr in frames):
        return np.dtype(np.float32)
    lo, hi = stored_range(fmt)
    rescales = {(fr.slope, fr.intercept) for fr in frames}
    if all(float(s).is_integer() and float(i).is_integer() for s, i in rescales):
        values = [v for s, i in rescales for v in (lo * s + i, hi * s + i)]
        for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= min(values) and max(values) <= info.max:
                return np.dtype(dtype)
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _palette_bits(f: DicomFile) -> int:
    """Bits per palette entry, after checking the three descriptors a palette image must carry."""
    bits = set()
    for colour in ("Red", "Green", "Blue"):
        descriptor = header_value(f.ds, f"{colour}PaletteColorLookupTableDescriptor")
        if not isinstance(descriptor, list) or len(descriptor) != 3 or descriptor[2] not in (8, 16):
            raise CorruptFileError(f"{f.path}: {colour}PaletteColorLookupTableDescriptor {descriptor!r} is not usable")
        bits.add(int(descriptor[2]))
    return max(bits)


def _raw_layout(f: DicomFile, fp) -> tuple[int, np.dtype, int] | None:
    """(value offset, stored dtype, bytes per frame) when the frame bytes can be read directly, else None.

    ``fp`` is the open file; it is left positioned anywhere.
    """
    fmt = f.pixel_format
    if f.transfer_syntax not in _RAW_SYNTAXES or f.pixel_offset is None or f.pixel_tag != 0x7FE00010:
        return None
    if fmt.colour or fmt.samples != 1 or fmt.bits_allocated not in (8, 16, 32):
        return None
    fp.seek(f.pixel_offset)
    head = fp.read(12)
    if len(head) < 8 or struct.unpack("<HH", head[:4]) != (0x7FE0, 0x0010):
        return None
    if f.transfer_syntax == ExplicitVRLittleEndian:
        length, start = struct.unpack("<I", head[8:12])[0], f.pixel_offset + 12
    else:
        length, start = struct.unpack("<I", head[4:8])[0], f.pixel_offset + 8
    dtype = np.dtype(f"<{'i' if fmt.signed else 'u'}{fmt.bits_allocated // 8}")
    frame_bytes = fmt.rows * fmt.columns * dtype.itemsize
    if length == _UNDEFINED_LENGTH or frame_bytes == 0:
        return None
    needed = frame_bytes * fmt.frames
    available = os.fstat(fp.fileno()).st_size - start
    if min(length, available) < needed:
        raise CorruptFileError(
            f"{f.path}: pixel data truncated, {needed} bytes needed for {fmt.frames} frame(s) of "
            f"{fmt.columns}x{fmt.rows} but only {min(length, available)} present"
        )
    return start, dtype, frame_bytes


def _unused_bits(buf: np.ndarray, fmt: PixelFormat) -> None:
    """Clear (unsigned) or sign-extend (signed) the bits above BitsStored, as pydicom does."""
    shift = buf.dtype.itemsize * 8 - fmt.bits_stored
    if 0 < shift < buf.dtype.itemsize * 8:
        np.left_shift(buf, shift, out=buf)
        np.right_shift(buf, shift, out=buf)


_JPEG2000 = {
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
}
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  "


def _check_jp2_boxes(f: DicomFile, ds: Dataset) -> None:
    """Refuse a JPEG 2000 frame wrapped in JP2 boxes whose lengths cannot be walked.

    Why: pydicom 3.0 walks the boxes to find the codestream and loops forever on a box of length 0
    (found by the fuzzer); a box is at least 8 bytes (length 1, a 64-bit length, is not walked either).
    """
    if f.transfer_syntax not in _JPEG2000 or "PixelData" not in ds:
        return
    for frame in pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=f.pixel_format.frames):
        if not frame.startswith(_JP2_SIGNATURE):
            continue
        offset = 12
        while offset < len(frame):
            length = int.from_bytes(frame[offset : offset + 4], "big")
            if frame[offset + 4 : offset + 8] == b"jp2c":
                break
            if length < 8:
                raise CorruptFileError(f"{f.path}: a JPEG 2000 frame holds a box of length {length}")
            offset += length


def _decode_with_pydicom(f: DicomFile) -> tuple[np.ndarray, Dataset]:
    """All frames of an instance as pydicom decodes them: ``(frames, rows, cols[, samples])``."""
    fmt = f.pixel_format
    try:
        with reading(f.path, "pixel data cannot be decoded"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(f.path, "rb") as fp:
                ds = read_dataset(fp)
            _check_jp2_boxes(f, ds)
            arr = ds.pixel_array
            if fmt.photometric == "PALETTE COLOR":
                _palette_bits(f)
                arr = pydicom.pixels.apply_color_lut(arr, ds)
    except CorruptFileError as exc:
        reason = str(exc).lower()
        if "no available" in reason or "plugin" in reason or "unable to decompress" in reason:
            raise UnsupportedFormatError(
                f"{f.path}: cannot decode transfer syntax {f.transfer_syntax} ({str(exc).split('(', 1)[-1]}"
            ) from None
        raise
    frame_shape = (fmt.rows, fmt.columns, 3) if fmt.colour else (fmt.rows, fmt.columns)
    if arr.ndim == len(frame_shape):
        arr = arr[np.newaxis]
    if arr.shape[1:] != frame_shape:
        raise CorruptFileError(f"{f.path}: decoded frames are {arr.shape[1:]}, the header describes {frame_shape}")
    return arr, ds


def _rescale_into(out: np.ndarray, stored: np.ndarray, fr: Frame, ds: Dataset) -> None:
    """out = stored * slope + intercept (or the modality LUT), in out's dtype without overflow."""
    if not stored.dtype.isnative:  # big-endian data: reinterpreting its bytes below would swap them
        stored = stored.astype(stored.dtype.newbyteorder("="))
    if fr.file.pixel_format.modality_lut:
        out[...] = pydicom.pixels.apply_modality_lut(stored, ds)
    elif fr.slope == 1 and fr.intercept == 0:
        if np.issubdtype(out.dtype, np.integer) and stored.dtype.itemsize > out.dtype.itemsize:
            _require_fits(stored.min(), stored.max(), out.dtype)  # the optimistic int16 for wider stored values
        out[...] = stored
    elif np.issubdtype(out.dtype, np.integer):
        # Check the range first (two cheap passes). Once the result is known to fit ``out``, integer
        # arithmetic modulo 2**bits on a same-width view is exact, so rescale in place without any
        # widening cast or temporary: about 4x faster than computing in int32 and casting back.
        slope, intercept = int(fr.slope), int(fr.intercept)
        ends = (int(stored.min()) * slope + intercept, int(stored.max()) * slope + intercept)
        _require_fits(min(ends), max(ends), out.dtype)
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


def _require_fits(low, high, dtype: np.dtype) -> None:
    """Raise `DoesNotFit` when [low, high] leaves an integer output dtype: never wrap silently."""
    info = np.iinfo(dtype)
    if int(low) < info.min or int(high) > info.max:
        raise DoesNotFit


def _invert_monochrome1(out: np.ndarray, fr: Frame) -> None:
    """MONOCHROME1 stores 'higher = darker'; flip within the rescaled value range."""
    lo, hi = stored_range(fr.file.pixel_format)
    edge = (lo + hi) * fr.slope + 2 * fr.intercept
    if np.issubdtype(out.dtype, np.integer):
        flipped = int(edge) - out.astype(np.int64)
        _require_fits(flipped.min(), flipped.max(), out.dtype)
        out[...] = flipped
    else:
        np.subtract(edge, out, out=out)


def _decode_file(f: DicomFile, targets: list[tuple[int, Frame]], out: np.ndarray) -> None:
    """Decode one instance's frames into their slots of ``out`` (any failure: one line naming the file)."""
    with reading(f.path, "pixel data cannot be decoded", passthrough=(DoesNotFit,)):
        _decode_into(f, targets, out)


def _decode_into(f: DicomFile, targets: list[tuple[int, Frame]], out: np.ndarray) -> None:
    fmt = f.pixel_format
    monochrome1 = fmt.photometric == "MONOCHROME1"
    with open(f.path, "rb", buffering=0) as fp:
        raw = _raw_layout(f, fp)
        if raw is not None:
            start, dtype, frame_bytes = raw
            # Same item size as the output (uint16/int16 stored, int16 out: most CT): read each frame straight
            # into its slot and rescale it in place there, saving a copy of the volume.
            direct = dtype.itemsize == out.dtype.itemsize and out.dtype.kind in "iu"
            buf = None if direct else np.empty((fmt.rows, fmt.columns), dtype=dtype)
            for k, fr in targets:
                if direct:
                    buf = out[k].view(dtype)
                fp.seek(start + (fr.index or 0) * frame_bytes)
                if fp.readinto(memoryview(buf).cast("B")) != frame_bytes:
                    raise CorruptFileError(f"{f.path}: pixel data ends early in frame {(fr.index or 0) + 1}")
                _unused_bits(buf, fmt)
                _rescale_into(out[k], buf, fr, f.ds)
                if monochrome1:
                    _invert_monochrome1(out[k], fr)
            return
    decoded, full = _decode_with_pydicom(f)
    for k, fr in targets:
        idx = fr.index or 0
        if idx >= decoded.shape[0]:
            raise CorruptFileError(f"{f.path}: header declares more frames than the pixel data holds")
        if fmt.colour or fmt.float_bits:
            out[k] = decoded[idx]
            continue
        _rescale_into(out[k], decoded[idx], fr, full)
        if monochrome1:
            _invert_monochrome1(out[k], fr)


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
