"""The boundary every reader puts around a file: damage in, one line naming the file out.

Readers call parsers (pydicom, nibabel, SimpleITK, Pillow, numpy) that raise dozens of exception types
on damaged input, some of them not even `Exception`s (a Rust decoder's panic). `reading` turns all of
them into a `CorruptFileError` naming the file, and `check_geometry` refuses what a parser accepted but
no scanner produces (non-finite or absurd geometry, non-finite voxels), so that nothing downstream ever
computes with them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from medmap.errors import CorruptFileError, MedmapError

MAX_POSITION_MM = 1e6  # beyond a kilometre from the origin a position is damage, not anatomy
MAX_SPACING_MM = 1e4
MAX_IMAGE_BYTES = 64 * 1024**3  # more voxel data than any image a reader should allocate for
ORTHONORMAL_TOL = 1e-2


def reason(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextmanager
def reading(
    path: str | os.PathLike, what: str = "unreadable", passthrough: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Map every failure inside the block, BaseExceptions such as pyo3's PanicException and
    RecursionError on deep nesting included, to a `CorruptFileError` naming ``path``."""
    try:
        yield
    except (MedmapError, KeyboardInterrupt, SystemExit, GeneratorExit, *passthrough):
        raise
    except RecursionError:
        raise CorruptFileError(f"{path}: {what} (nested too deeply)") from None
    except MemoryError:
        raise CorruptFileError(f"{path}: {what} (it declares more data than memory can hold)") from None
    except BaseException as exc:
        raise CorruptFileError(f"{path}: {what} ({reason(exc)})") from None


def check_geometry(path: str | os.PathLike, array: np.ndarray, spacing, origin, direction) -> None:
    """Refuse geometry or voxels no real image has: a model would read them as anatomy."""
    spacing, origin, direction = (np.asarray(v, dtype=np.float64) for v in (spacing, origin, direction))
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0) and np.all(spacing <= MAX_SPACING_MM)):
        raise CorruptFileError(f"{path}: voxel spacing {spacing.tolist()} mm is not a set of positive lengths")
    if not (np.all(np.isfinite(origin)) and np.all(np.abs(origin) <= MAX_POSITION_MM)):
        raise CorruptFileError(f"{path}: origin {origin.tolist()} is not a position in a patient")
    if not np.all(np.isfinite(direction)) or np.abs(direction.T @ direction - np.eye(3)).max() > ORTHONORMAL_TOL:
        raise CorruptFileError(f"{path}: axis directions {direction.round(4).tolist()} are not orthonormal")
    if array.dtype.kind in "fc":
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise CorruptFileError(f"{path}: {bad} voxel value(s) are NaN or infinite")
