"""Hostile DICOM: a seeded mutation fuzzer for medmap's loader, and the outcome table it is judged by.

    python benchmarks/fuzz.py --cases 10000 --seed 2026          # the campaign (docs/benchmarks.md)
    python benchmarks/fuzz.py --quick                            # a few hundred cases (the test suite)
    python benchmarks/fuzz.py --replay tests/io/fuzz_regressions.json   # every case it ever failed on

Each case is a *recipe*: a seed (one of pydicom's test files, or a series medmap generates: a classic CT
series, the same in Explicit VR Big Endian, an Enhanced CT, an MR series with a fractional rescale)
and a list of mutations drawn from a seeded generator (byte flips, truncations, inserted and zeroed
chunks, header attributes set to hostile values or removed, raw element lengths and VRs corrupted,
deeply nested sequences, and series-level changes: a slice of another pixel format, a duplicated SOP
Instance UID, a copied or missing slice). A recipe is replayable, so every failure is kept as a small
JSON regression case rather than a binary file.

Every case is loaded by ``medmap.io.load.load`` in a worker process with an address-space cap; the
worker is killed and replaced when a case runs past the timeout. Outcomes:

- ``loaded``: loaded, and every slice equals pydicom's decoding (rescale applied; tests/reference.py),
  with a finite, orthonormal, positive geometry that matches the slices' own positions;
- ``refused``: a one-line ``MedmapError`` (what the CLI prints as ``error: ...``);
- ``crash``: any other exception (a traceback for the user), or an error message over several lines;
- ``wrong``: loaded, but values, geometry or slices differ from pydicom's reading of the same files,
  or pydicom itself cannot decode a slice medmap returned (medmap must never be the more permissive);
- ``hang``: past the timeout; ``oom``: MemoryError under the cap, or the worker died.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests/reference.py is the pydicom oracle the loader tests use too
    sys.path.insert(0, str(ROOT))

OUTCOMES = ("loaded", "refused", "crash", "wrong", "hang", "oom")
BAD = ("crash", "wrong", "hang", "oom")

# --- seeds -------------------------------------------------------------------------------------------------
GENERATED = ("ct_series", "ct_series_big_endian", "enhanced_ct", "mr_series_fractional")


def pydicom_seeds() -> list[str]:
    """pydicom's test files that pydicom can decode (the others cannot be judged against it)."""
    from tests.reference import PYDICOM_TEST_FILES, pydicom_reference

    keep = []
    for path in PYDICOM_TEST_FILES:
        if path.stat().st_size > 2_000_000:  # large files make each case slow and add nothing new
            continue
        if pydicom_reference(path) is not None:
            keep.append(str(path.relative_to(_TEST_FILES)))
    return keep


_TEST_FILES = Path(__import__("pydicom").__file__).parent / "data" / "test_files"


def _pydicom_file(name: str) -> Path:
    return _TEST_FILES / name


def write_generated(name: str, folder: Path) -> None:
    """A small generated series (or multi-frame file) under ``folder``."""
    import numpy as np
    import pydicom
    from tests.builders import AXIAL, write_ct, write_enhanced_ct

    from medmap.io.image import Image, ImageMeta

    rng = np.random.default_rng(3)
    arr = rng.integers(-1000, 1500, size=(6, 16, 12)).astype(np.int16)
    image = Image(arr, (2.5, 0.7, 0.8), (-10.0, 20.0, 30.0), AXIAL, ImageMeta(modality="CT"))
    folder.mkdir(parents=True, exist_ok=True)
    if name == "enhanced_ct":
        write_enhanced_ct(image, folder / "enhanced.dcm", frame_order=[3, 0, 5, 1, 4, 2])
        return
    if name == "mr_series_fractional":
        mr = Image(np.abs(arr).astype(np.float32) * 0.37, image.spacing, image.origin, AXIAL, ImageMeta(modality="MR"))
        write_ct(mr, folder, rescale_slope=0.37, rescale_intercept=0.5)
        return
    write_ct(image, folder)
    if name == "ct_series_big_endian":
        for path in sorted(folder.iterdir()):
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
            ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">")).tobytes()
            pydicom.dcmwrite(path, ds, little_endian=False, implicit_vr=False, force_encoding=True)


# --- mutations ---------------------------------------------------------------------------------------------
# Attributes whose values steer decoding and geometry, and the hostile values to give them (as text for
# string VRs; integers are packed for binary VRs, text is written raw into them to break their length).
ATTRIBUTES = {
    "Rows": "US", "Columns": "US", "BitsAllocated": "US", "BitsStored": "US", "HighBit": "US",
    "PixelRepresentation": "US", "SamplesPerPixel": "US", "PlanarConfiguration": "US",
    "PhotometricInterpretation": "CS", "NumberOfFrames": "IS", "RescaleSlope": "DS",
    "RescaleIntercept": "DS", "ImagePositionPatient": "DS", "ImageOrientationPatient": "DS",
    "PixelSpacing": "DS", "SliceThickness": "DS", "SpacingBetweenSlices": "DS", "WindowCenter": "DS",
    "WindowWidth": "DS", "SOPInstanceUID": "UI", "SeriesInstanceUID": "UI", "Modality": "CS",
    "RedPaletteColorLookupTableDescriptor": "US", "GreenPaletteColorLookupTableDescriptor": "US",
    "BluePaletteColorLookupTableDescriptor": "US", "RedPaletteColorLookupTableData": "OW",
    "LUTDescriptor": "US", "SOPClassUID": "UI",
}
INTEGERS = (0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 24, 31, 32, 33, 64, 255, 256, 4096, 32767, 65535)
TEXTS = (
    "", "0", "1", "-1", "-5", "2", "1e300", "-1e300", "inf", "-inf", "nan", "NaN", "abc", "999999999",
    "2147483647", "0.0001", "1e-300", "3", "65536", "-1024", "RGB", "MONOCHROME1", "PALETTE COLOR",
    "YBR_FULL", "1\\2", "0\\0\\0", "nan\\0\\0", "1\\0\\0\\0\\1\\0", "0\\0\\0\\0\\0\\0", "1\\1\\0\\0\\1\\0",
    "1e300\\0\\0", "1\\0\\0\\0\\nan\\0", "1e200\\0\\0\\0\\1\\0", "x" * 80, "1.2.3", "1.2.3" + "4" * 70,
)
PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "", "BOGUS")


def draw_mutations(rng: random.Random, series: bool) -> list[dict]:
    """1-3 mutations, as plain data (so that a recipe can be stored and replayed)."""
    kinds = ["flip", "truncate", "zero", "insert", "set", "set", "set", "delete", "raw_length", "raw_vr", "nest",
             "sparse"]
    if series:
        kinds += ["other_format", "dup_sop", "copy_slice", "drop_slice", "rgb_slice", "fifo", "sparse_file",
                  "mixed_syntax", "mixed_syntax"]
    ops = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        kind = rng.choice(kinds)
        op: dict = {"op": kind, "file": rng.random(), "at": rng.random()}
        if kind == "flip":
            op["n"] = rng.choice((1, 1, 2, 8, 32))
            op["seed"] = rng.randrange(1 << 30)
        elif kind in ("zero", "insert"):
            op["n"] = rng.choice((1, 2, 4, 16, 256, 4096))
            op["seed"] = rng.randrange(1 << 30)
        elif kind in ("set", "delete", "raw_length", "raw_vr"):
            op["attr"] = rng.choice(list(ATTRIBUTES))
            if kind == "set":
                vr = ATTRIBUTES[op["attr"]]
                if op["attr"] == "PhotometricInterpretation":
                    op["value"] = rng.choice(PHOTOMETRICS)
                elif vr == "US" and rng.random() < 0.85:
                    op["value"] = [rng.choice(INTEGERS) for _ in range(rng.choice((1, 1, 1, 3)))]
                else:
                    op["value"] = rng.choice(TEXTS)
            if kind == "raw_length":
                op["delta"] = rng.choice((-4, -2, -1, 1, 2, 1 << 20, 0x7FFFFFFF))
            if kind == "raw_vr":
                op["vr"] = rng.choice(("ZZ", "\x00\x00", "SQ", "UN", "OB", "US", "UT", "AT"))
        elif kind == "nest":
            op["depth"] = rng.choice((2, 50, 200, 600, 2000, 3000, 50_000))
            op["defined"] = rng.random() < 0.5  # defined item and sequence lengths, as most writers store them
        elif kind == "mixed_syntax":
            op["syntax"] = rng.choice(MIXED_SYNTAXES)
        ops.append(op)
    return ops


def _pick(files: list[Path], fraction: float) -> Path:
    return files[min(len(files) - 1, int(fraction * len(files)))]


def _read(path: Path):
    import pydicom

    return pydicom.dcmread(path, force=True)


def _write(ds, path: Path) -> None:
    import pydicom

    little = ds.original_encoding[1] if getattr(ds, "original_encoding", None) else True
    implicit = ds.original_encoding[0] if getattr(ds, "original_encoding", None) else False
    pydicom.dcmwrite(path, ds, little_endian=little, implicit_vr=implicit, force_encoding=True)


def _raw_element(ds, keyword: str, vr: str, value: bytes):
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    little = ds.original_encoding[1] if getattr(ds, "original_encoding", None) else True
    implicit = ds.original_encoding[0] if getattr(ds, "original_encoding", None) else False
    tag = Tag(tag_for_keyword(keyword))
    if len(value) % 2:
        value += b" " if vr not in ("OB", "OW", "US", "UL", "SS", "SL", "UI") else b"\x00"
    return tag, RawDataElement(tag, vr, len(value), value, 0, implicit, little)


def _encode(vr: str, value, little: bool) -> bytes:
    if isinstance(value, list):
        return struct.pack(("<" if little else ">") + "H" * len(value), *value)
    return str(value).encode("latin-1")


# Transfer syntaxes a PACS may store one instance of a series in (re-encoded correctly: the values stay)
MIXED_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
                  "1.2.840.10008.1.2.5")


def _reencode_slice(op: dict, target: Path) -> None:
    """One instance of a series stored in another transfer syntax, its pixel values unchanged."""
    import pydicom
    from pydicom.uid import UID

    ds = _read(target)
    pixels = ds.pixel_array
    syntax = UID(op["syntax"])
    if syntax == pydicom.uid.RLELossless:
        ds.compress(syntax, pixels, encoding_plugin="pydicom")
        pydicom.dcmwrite(target, ds, little_endian=True, implicit_vr=False, force_encoding=True)
        return
    big = syntax == pydicom.uid.ExplicitVRBigEndian
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">" if big else "<")).tobytes()
    ds["PixelData"].VR = "OW" if pixels.dtype.itemsize > 1 else "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    implicit = syntax == pydicom.uid.ImplicitVRLittleEndian
    pydicom.dcmwrite(target, ds, little_endian=not big, implicit_vr=implicit, force_encoding=True)


def _nested(depth: int, little: bool) -> bytes:
    """An undefined-length private sequence nested ``depth`` deep (explicit VR little endian)."""
    start = struct.pack("<HH", 0x0009, 0x1010) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return (start + item) * depth + (item_end + seq_end) * depth


def apply_mutation(op: dict, files: list[Path], case_dir: Path) -> None:
    """Apply one mutation in place to the case's files (some mutations add or remove a file)."""
    if not files:
        return
    target = _pick(files, op["file"])
    kind = op["op"]
    data = bytearray(target.read_bytes()) if target.exists() else bytearray()
    if kind in ("flip", "zero", "insert") and data:
        rng = random.Random(op["seed"])
        at = int(op["at"] * len(data))
        if kind == "flip":
            for _ in range(op["n"]):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == "zero":
            data[at : at + op["n"]] = bytes(len(data[at : at + op["n"]]))
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(op["n"]))
        target.write_bytes(bytes(data))
    elif kind == "truncate" and data:
        target.write_bytes(bytes(data[: int(op["at"] * len(data))]))
    elif kind in ("set", "delete", "raw_length", "raw_vr"):
        _mutate_header(op, target)
    elif kind == "nest":
        _insert_nested(op, target)
    elif kind == "drop_slice" and len(files) > 2:
        target.unlink()
    elif kind == "copy_slice":
        shutil.copyfile(target, case_dir / f"copy_{target.name}")
    elif kind == "dup_sop" and len(files) > 1:
        other = _pick(files, op["at"])
        if other != target:
            ds = _read(target)
            ds.SOPInstanceUID = _read(other).SOPInstanceUID
            _write(ds, target)
    elif kind == "mixed_syntax":
        _reencode_slice(op, target)
    elif kind in ("other_format", "rgb_slice"):
        _reformat_slice(op, target)
    elif kind == "sparse":  # a 3 GB file of which all but the original bytes are a hole (zeros)
        os.truncate(target, 3 * 1024**3)
    elif kind == "sparse_file":  # a 3 GB sparse file with a DICOM preamble next to the series
        big = case_dir / "zz_sparse.dcm"
        big.write_bytes(bytes(128) + b"DICM")
        os.truncate(big, 3 * 1024**3)
    elif kind == "fifo":
        os.mkfifo(case_dir / "zz_fifo")


def _mutate_header(op: dict, target: Path) -> None:
    from pydicom.datadict import tag_for_keyword

    try:
        ds = _read(target)
    except Exception:
        return
    keyword, vr = op["attr"], ATTRIBUTES[op["attr"]]
    little = ds.original_encoding[1] if getattr(ds, "original_encoding", None) else True
    tag = tag_for_keyword(keyword)
    holders = [ds]
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in ds.get(groups, [])[:1]:
            holders.extend(inner for elem in item for inner in (elem.value if elem.VR == "SQ" else []))
    holder = next((h for h in holders if tag in h), ds)
    if op["op"] == "delete":
        if tag in holder:
            del holder[tag]
    elif op["op"] == "set":
        t, raw = _raw_element(ds, keyword, vr, _encode(vr, op["value"], little))
        holder[t] = raw
    else:
        elem = holder.get(tag)
        if elem is None:
            return
        try:
            value = _element_bytes(ds, elem)
        except Exception:
            return
        if op["op"] == "raw_length":
            delta = op["delta"]  # shorten the value, or pad it (by at most 64 bytes)
            value = value[: max(0, len(value) + delta)] if delta < 0 else value + b"\x00" * min(delta, 64)
            t, raw = _raw_element(ds, keyword, elem.VR, value)
        else:
            t, raw = _raw_element(ds, keyword, op["vr"], value)
        holder[t] = raw
    try:
        _write(ds, target)
    except Exception:
        return


def _element_bytes(ds, elem) -> bytes:
    from io import BytesIO

    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_data_element

    buf = BytesIO()
    fp = DicomFileLike(buf)
    little = ds.original_encoding[1] if getattr(ds, "original_encoding", None) else True
    fp.is_little_endian, fp.is_implicit_VR = little, True
    write_data_element(fp, elem)
    return buf.getvalue()[8:]  # implicit VR: 4 bytes tag, 4 bytes length, then the value


def _insert_nested(op: dict, target: Path) -> None:
    """Put a deeply nested private sequence right after the file meta (explicit VR little endian only)."""
    import pydicom

    try:
        ds = _read(target)
    except Exception:
        return
    if str(ds.file_meta.get("TransferSyntaxUID", "")) != pydicom.uid.ExplicitVRLittleEndian:
        return
    data = target.read_bytes()
    # The dataset's first element follows the file meta group; find the first tag above group 0002.
    pos = 132
    while pos + 8 <= len(data):
        group, _ = struct.unpack("<HH", data[pos : pos + 4])
        if group != 0x0002:
            break
        vr = data[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
            length = struct.unpack("<I", data[pos + 8 : pos + 12])[0]
            pos += 12 + length
        else:
            pos += 8 + struct.unpack("<H", data[pos + 6 : pos + 8])[0]
    # Insert at the first element past group 0008 so that tags stay roughly in order.
    from tests.builders import defined_length_nesting

    block = defined_length_nesting(op["depth"]) if op.get("defined") else _nested(op["depth"], True)
    target.write_bytes(data[:pos] + block + data[pos:])


def _reformat_slice(op: dict, target: Path) -> None:
    """Rewrite one slice as 8-bit (another pixel format) or RGB, keeping its position and UIDs."""
    import numpy as np
    import pydicom

    try:
        ds = _read(target)
        pixels = ds.pixel_array
    except Exception:
        return
    if pixels.ndim != 2:
        return
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    small = (pixels.astype(np.int64) % 256).astype(np.uint8)
    if op["op"] == "rgb_slice":
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        small = np.repeat(small[..., None], 3, axis=-1)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = small.tobytes()
    pydicom.dcmwrite(target, ds, little_endian=True, implicit_vr=False, force_encoding=True)


# --- building and judging one case -------------------------------------------------------------------------
def build_case(recipe: dict, seed_cache: Path, case_dir: Path) -> Path:
    """Write the recipe's files under ``case_dir``; returns what to load (a file or a folder)."""
    seed = recipe["seed"]
    if seed in GENERATED:
        source = seed_cache / seed
        if not source.exists():
            write_generated(seed, source)
        shutil.copytree(source, case_dir)
        target: Path = case_dir
    else:
        case_dir.mkdir(parents=True)
        target = case_dir / "case.dcm"
        shutil.copyfile(_pydicom_file(seed), target)
    for op in recipe["ops"]:
        files = sorted(p for p in case_dir.iterdir() if p.is_file() and p.stat().st_size < 1024**3)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                apply_mutation(op, files, case_dir)
        except Exception:  # a mutation the seed cannot take is skipped; the case stays valid
            continue
    if target.is_file() or (seed not in GENERATED and not target.exists()):
        return target
    return case_dir


def make_recipes(seed: int, n: int, seeds: list[str]) -> list[dict]:
    rng = random.Random(seed)
    recipes = []
    for i in range(n):
        name = rng.choice(seeds)
        recipes.append({"id": f"{seed}-{i}", "seed": name, "ops": draw_mutations(rng, name in GENERATED)})
    return recipes


def judge(path: Path) -> dict:
    """Load ``path`` with medmap and judge the outcome against pydicom (runs inside the worker)."""
    from medmap.errors import MedmapError
    from medmap.io.load import load

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = load(path)
    except MedmapError as exc:
        message = str(exc)
        if "\n" in message or not message:
            return {"outcome": "crash", "detail": f"error message not one line: {message[:200]!r}"}
        return {"outcome": "refused", "detail": message[:300]}
    except MemoryError:
        return {"outcome": "oom", "detail": "MemoryError"}
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"
        return {"outcome": "crash", "detail": f"{type(exc).__name__} at {where}: {str(exc)[:200]}"}
    problem = verify(image)
    return {"outcome": "wrong", "detail": problem} if problem else {"outcome": "loaded", "detail": ""}


def verify(image) -> str | None:
    """Why a loaded image is wrong, or None: values against pydicom, geometry against the slices' headers."""
    import numpy as np
    import pydicom
    from tests.reference import pydicom_reference

    arr = image.array
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        return "non-finite voxel values"
    spacing, origin, direction = np.asarray(image.spacing), np.asarray(image.origin), np.asarray(image.direction)
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0) and np.all(spacing < 1e5)):
        return f"bad spacing {spacing.tolist()}"
    if not (np.all(np.isfinite(origin)) and np.all(np.abs(origin) < 1e7)):
        return f"bad origin {origin.tolist()}"
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        return "direction not orthonormal"
    slices = image.meta.slices
    if len(slices) != arr.shape[0]:
        return f"{arr.shape[0]} slices but {len(slices)} slice references"
    if len({(str(s.path), s.frame) for s in slices}) != len(slices):
        return "one source frame used for two slices"
    if len({s.sop_instance_uid for s in slices if s.frame is None}) != sum(s.frame is None for s in slices):
        return "two slices share a SOP Instance UID"
    references: dict[str, np.ndarray | None] = {}
    for k, s in enumerate(slices):
        key = str(s.path)
        if key not in references:
            try:
                references[key] = pydicom_reference(Path(s.path))
            except Exception:
                references[key] = None
        ref = references[key]
        if ref is None:
            return f"pydicom cannot decode {Path(s.path).name}, medmap loaded it"
        frame = s.frame or 0
        if frame >= ref.shape[0]:
            return f"frame {frame} beyond pydicom's {ref.shape[0]}"
        got = arr[k].astype(np.float64)
        if got.shape != ref[frame].shape:
            return f"slice {k} shape {got.shape} but pydicom {ref[frame].shape}"
        if not np.allclose(got, ref[frame], rtol=1e-5, atol=1e-4):
            bad = np.argmax(np.abs(got - ref[frame]))
            return f"slice {k} value {got.flat[bad]} where pydicom gives {ref[frame].flat[bad]}"
    if len(slices) > 1 and all(s.frame is None for s in slices):
        positions = []
        for s in slices:
            ds = pydicom.dcmread(s.path, stop_before_pixels=True, force=True)
            positions.append([float(v) for v in ds.ImagePositionPatient])
        positions = np.asarray(positions)
        if not np.allclose(positions[0], origin, atol=1e-3 * max(1.0, np.abs(origin).max())):
            return f"origin {origin.tolist()} is not the first slice's position {positions[0].tolist()}"
        depth = (positions - positions[0]) @ direction[:, 0]
        if np.any(np.diff(depth) <= 0):
            return "slices not in increasing order along the normal"
        if not np.isclose(np.median(np.diff(depth)), spacing[0], rtol=1e-3):
            return f"slice spacing {spacing[0]} but positions are {np.median(np.diff(depth))} apart"
    return None


# --- the worker and the campaign ---------------------------------------------------------------------------
def worker_main(memory_gb: float) -> None:
    """Judge the paths read from stdin, one JSON line each on stdout, under an address-space cap."""
    import resource

    limit = int(memory_gb * 1024**3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = sys.stdout
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the protocol
    for line in sys.stdin:
        result = judge(Path(line.strip()))
        out.write(json.dumps(result) + "\n")
        out.flush()


class Worker:
    def __init__(self, memory_gb: float, log: Path):
        self.memory_gb = memory_gb
        self.log = log  # the worker's stderr: why it died, when it does
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--worker", "--memory-gb", str(self.memory_gb)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
            )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def run(self, path: Path, timeout: float) -> dict:
        if self.proc is None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.stop()
            return {"outcome": "hang", "detail": f"no answer within {timeout:g} s"}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            last = (self.log.read_text(errors="replace").strip().splitlines() or [""])[-1]
            return {"outcome": "oom", "detail": f"worker died (exit status {code}): {last[:200]}"}
        return json.loads(line)


def run_campaign(recipes: list[dict], *, timeout: float, memory_gb: float, progress: bool = True) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="medmap-fuzz-") as tmp:
        tmp_path = Path(tmp)
        worker = Worker(memory_gb, tmp_path / "worker.log")
        seed_cache = tmp_path / "seeds"
        # The first answer includes the worker's imports: allow for them once.
        first = True
        started = time.monotonic()
        for i, recipe in enumerate(recipes):
            case_dir = tmp_path / f"case-{i}"
            try:
                target = build_case(recipe, seed_cache, case_dir)
            except Exception as exc:
                results.append({**recipe, "outcome": "skipped", "detail": f"{type(exc).__name__}: {exc}"})
                continue
            result = worker.run(target, timeout + (60 if first else 0))
            first = False
            results.append({**recipe, **result})
            shutil.rmtree(case_dir, ignore_errors=True)
            if progress and (i + 1) % 100 == 0:
                rate = (i + 1) / (time.monotonic() - started)
                print(f"  {i + 1}/{len(recipes)} cases ({rate:.1f}/s)", file=sys.stderr, flush=True)
        worker.stop()
    return results


def table(results: list[dict]) -> str:
    counts = Counter(r["outcome"] for r in results)
    total = sum(counts[o] for o in OUTCOMES) or 1
    lines = ["| outcome | cases | share |", "|---|---:|---:|"]
    for outcome in OUTCOMES:
        lines.append(f"| {outcome} | {counts[outcome]} | {100 * counts[outcome] / total:.1f} % |")
    if counts["skipped"]:
        lines.append(f"| (recipe not applicable) | {counts['skipped']} | |")
    return "\n".join(lines)


def signatures(results: list[dict]) -> Counter:
    return Counter(f"{r['outcome']}: {r['detail'][:120]}" for r in results if r["outcome"] in BAD)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--quick", action="store_true", help="300 cases: what the test suite runs")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case")
    parser.add_argument("--memory-gb", type=float, default=3.0, help="address-space cap of the worker")
    parser.add_argument("--replay", type=Path, help="a JSON list of recipes (the regression cases)")
    parser.add_argument("--keep-failures", type=Path, help="append every failing recipe to this JSON file")
    parser.add_argument("--json", type=Path, help="write every case's outcome here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.memory_gb)
        return 0
    if args.replay:
        recipes = json.loads(args.replay.read_text())
    else:
        n = 300 if args.quick else args.cases
        recipes = make_recipes(args.seed, n, pydicom_seeds() + list(GENERATED) * 6)
    print(f"fuzzing medmap's DICOM loader: {len(recipes)} cases, seed {args.seed}", file=sys.stderr)
    results = run_campaign(recipes, timeout=args.timeout, memory_gb=args.memory_gb)
    print(table(results))
    bad = [r for r in results if r["outcome"] in BAD]
    for signature, count in signatures(results).most_common(40):
        print(f"  {count:5d}  {signature}")
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "results": results}, indent=1))
    if args.keep_failures and bad:
        kept = json.loads(args.keep_failures.read_text()) if args.keep_failures.exists() else []
        known = {hashlib.sha256(json.dumps([r["seed"], r["ops"]]).encode()).hexdigest() for r in kept}
        for r in bad:
            key = hashlib.sha256(json.dumps([r["seed"], r["ops"]]).encode()).hexdigest()
            if key not in known:
                found = f"{r['outcome']}: {r['detail']}"
                kept.append({"id": r["id"], "seed": r["seed"], "ops": r["ops"], "found": found})
                known.add(key)
        args.keep_failures.write_text(json.dumps(kept, indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
