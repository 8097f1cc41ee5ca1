"""`Image`: a voxel array and its place in the patient, the one currency between medmap's layers.

Axis order (the one convention, used everywhere in medmap)
-----------------------------------------------------------
``Image.array`` is indexed ``[slice, row, column]`` - numpy order, the order of pydicom's multi-frame
``pixel_array`` and of SimpleITK's ``GetArrayFromImage``. A 2-D image (a radiograph, one ultrasound
frame, a PNG) is a volume of one slice. Colour and multi-channel images add a trailing channel axis:
``[slice, row, column, channel]``.

``spacing`` is given per array axis in that same order: ``(slice spacing, row spacing, column spacing)``
in mm. ``direction`` is a 3x3 matrix whose column ``a`` is the unit vector, in patient LPS coordinates
(DICOM's: x to the patient's Left, y to Posterior, z to Superior), along which array axis ``a``
increases. ``origin`` is the LPS position in mm of the centre of voxel ``[0, 0, 0]``. Hence::

    world_lps = origin + direction @ (spacing * [slice, row, column])

For a DICOM series, column 2 of ``direction`` is the first triplet of ImageOrientationPatient (along a
row), column 1 the second triplet (down a column) and column 0 the slice normal, slices sorted so that
their position along it increases. SimpleITK stores the same geometry with reversed axes (x, y, z);
:func:`Image.to_sitk` / :func:`Image.from_sitk` convert exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import SimpleITK as sitk


@dataclass(frozen=True)
class SliceRef:
    """Where one slice of the array came from: needed to reference sources in DICOM SEG/SR."""

    path: Path
    sop_instance_uid: str
    frame: int | None = None  # 0-based frame within a multi-frame instance; None for single-frame


@dataclass(frozen=True)
class ImageMeta:
    """What later steps need to know about an image besides its voxels and geometry.

    Deliberately holds no patient identifiers (names, IDs, birth dates): only UIDs and acquisition facts.
    """

    modality: str = ""
    study_uid: str = ""
    series_uid: str = ""
    frame_of_reference_uid: str = ""
    sop_class_uid: str = ""
    slices: tuple[SliceRef, ...] = ()
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    window_center: float | None = None
    window_width: float | None = None
    photometric: str = ""  # as stored in the source; arrays are always "higher value = brighter"
    body_part: str = ""
    series_description: str = ""
    source_path: Path | None = None
    notes: tuple[str, ...] = ()  # problems found while loading that did not stop it (tilt, ...)
    spacing_known: bool = True  # False where the source gives no physical pixel size (pictures, npz, some DICOM)


def orientation_label(direction: np.ndarray) -> str:
    """'axial', 'coronal', 'sagittal' or 'oblique', from the slice normal (direction column 0)."""
    normal = np.abs(np.asarray(direction)[:, 0])
    axis = int(np.argmax(normal))
    if normal[axis] < 0.999:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _as_direction(direction: np.ndarray | None) -> np.ndarray:
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64).reshape(3, 3)
    if abs(np.linalg.det(d)) < 1e-6:
        raise ValueError(f"direction matrix is singular: {d.tolist()}")
    return d


@dataclass(eq=False)
class Image:
    """Voxels plus geometry plus metadata. See the module docstring for the axis convention."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    meta: ImageMeta = field(default_factory=ImageMeta)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        if arr.ndim not in (3, 4):
            raise ValueError(f"Image array must be [slice, row, column(, channel)], got shape {arr.shape}")
        self.array = arr
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        if len(self.spacing) != 3 or len(self.origin) != 3:
            raise ValueError("spacing and origin must have three values (slice, row, column)")
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {self.spacing}")
        self.direction = _as_direction(self.direction)

    # --- shape -------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(slices, rows, columns)``."""
        return tuple(self.array.shape[:3])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return 1 if self.array.ndim == 3 else self.array.shape[3]

    @property
    def is_2d(self) -> bool:
        return self.array.shape[0] == 1

    # --- geometry ----------------------------------------------------------------------------------
    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix from ``[slice, row, column, 1]`` to LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing)[np.newaxis, :]
        a[:3, 3] = self.origin
        return a

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """LPS mm of (fractional) indices ``[..., 3]`` in array order."""
        idx = np.asarray(index, dtype=np.float64)
        return idx @ (self.direction * np.asarray(self.spacing)).T + np.asarray(self.origin)

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """Fractional array indices ``[..., 3]`` of LPS points in mm."""
        pts = np.asarray(points, dtype=np.float64) - np.asarray(self.origin)
        return pts @ np.linalg.inv(self.direction * np.asarray(self.spacing)).T

    def same_geometry(self, other: Image, tol: float = 1e-4) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    def with_array(self, array: np.ndarray, **meta_changes: object) -> Image:
        """A new image on the same grid (e.g. a mask predicted for this image)."""
        arr = np.asarray(array)
        if arr.shape[:3] != self.shape and not (arr.ndim == 2 and (1, *arr.shape) == self.shape):
            raise ValueError(f"array shape {arr.shape} does not match image shape {self.shape}")
        meta = replace(self.meta, **meta_changes) if meta_changes else self.meta
        return Image(arr, self.spacing, self.origin, self.direction.copy(), meta)

    def orientation_label(self) -> str:
        return orientation_label(self.direction)

    # --- SimpleITK bridge --------------------------------------------------------------------------
    def to_sitk(self) -> sitk.Image:
        """The same image as a SimpleITK image (which orders spacing/direction x, y, z)."""
        import SimpleITK as sitk

        is_vector = self.array.ndim == 4
        img = sitk.GetImageFromArray(self.array, isVector=is_vector)
        img.SetSpacing(self.spacing[::-1])
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction[:, ::-1].flatten().tolist())
        return img

    @classmethod
    def from_sitk(cls, img: sitk.Image, meta: ImageMeta | None = None) -> Image:
        import SimpleITK as sitk

        if img.GetDimension() == 2:
            img = sitk.JoinSeries(img)
        if img.GetDimension() != 3:
            raise ValueError(f"only 2-D and 3-D images are supported, got {img.GetDimension()}-D")
        arr = sitk.GetArrayFromImage(img)
        direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)[:, ::-1]
        return cls(arr, tuple(img.GetSpacing())[::-1], tuple(img.GetOrigin()), direction, meta or ImageMeta())

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.4g}" for s in self.spacing)
        org = ", ".join(f"{o:.4g}" for o in self.origin)
        mod = f" {self.meta.modality}" if self.meta.modality else ""
        return (
            f"Image({mod.strip() or 'image'} shape={self.array.shape} dtype={self.array.dtype} "
            f"spacing=({sp}) origin=({org}) {self.orientation_label()})"
        )
