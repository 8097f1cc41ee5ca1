"""NIfTI (nibabel), NRRD/MHA (SimpleITK) and PNG/JPEG (Pillow), converted to and from `Image`.

NIfTI stores geometry in RAS with voxel axes (i, j, k) = (column, row, slice); medmap keeps LPS with
array axes [slice, row, column]. The conversion flips x and y and reverses the axes, exactly as ITK and
SimpleITK do, so a NIfTI written by medmap and one written by SimpleITK from the same series agree.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from medmap.errors import CorruptFileError, OutputError, UnsupportedFormatError
from medmap.io.guard import MAX_IMAGE_BYTES, check_geometry, reading
from medmap.io.image import Image, ImageMeta

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def suffix_of(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


# --- NIfTI ---------------------------------------------------------------------------------------------
def read_nifti(path: str | os.PathLike) -> Image:
    """Read a NIfTI-1/2 file; 4-D data becomes a trailing channel axis (as in MSD multi-modal images)."""
    import nibabel as nib

    path = Path(path)
    with reading(path, "not a readable NIfTI file"), warnings.catch_warnings(), _quiet_nibabel():
        warnings.simplefilter("ignore")  # nibabel's header-fixing chatter; what matters is checked below
        img = nib.load(str(path))
        _check_declared_size(path, img)
        proxy = img.dataobj
        scaled = proxy.slope not in (1.0, None) or proxy.inter not in (0.0, None)
        data = np.asanyarray(proxy) if not scaled else img.get_fdata(dtype=np.float32)
        affine = img.affine
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector images: (i, j, k, 1, c)
        data = data[:, :, :, 0, :]
    if data.ndim not in (3, 4):
        raise UnsupportedFormatError(f"{path}: {data.ndim}-D NIfTI is not supported (3-D, or 4-D channels)")
    axes = (2, 1, 0) if data.ndim == 3 else (2, 1, 0, 3)
    array = np.ascontiguousarray(data.transpose(axes))  # a view without copying for Fortran-order data
    lps = _LPS_RAS @ affine
    columns = lps[:3, [2, 1, 0]]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing == 0):
        raise CorruptFileError(f"{path}: NIfTI affine has a zero-length axis: {affine.tolist()}")
    with np.errstate(invalid="ignore"):
        direction = columns / spacing
    check_geometry(path, array, spacing, lps[:3, 3], direction)
    meta = ImageMeta(source_path=path)
    return Image(array, tuple(spacing), tuple(lps[:3, 3]), direction, meta)


@contextlib.contextmanager
def _quiet_nibabel():
    """nibabel logs what it finds wrong in a header ("data code 1234 not recognized") before raising;
    the error line medmap prints says it once."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_declared_size(path: Path, img) -> None:
    """The header's shape must fit in the file (uncompressed) and in reason, before anything is allocated."""
    header = img.header
    needed = int(np.prod(header.get_data_shape(), dtype=np.float64)) * header.get_data_dtype().itemsize
    if needed > MAX_IMAGE_BYTES:
        raise CorruptFileError(f"{path}: header declares {needed / 1024**3:.0f} GiB of voxels")
    if not str(path).endswith(".gz"):
        offset = int(header.get("vox_offset", 0) or 0)
        if offset + needed > path.stat().st_size:
            raise CorruptFileError(
                f"{path}: truncated, the header declares {needed} bytes of voxels but the file holds "
                f"{max(0, path.stat().st_size - offset)}"
            )


def write_nifti(image: Image, path: str | os.PathLike) -> Path:
    import nibabel as nib

    path = Path(path)
    arr = image.array
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if (
        arr.dtype == np.int64
        and arr.size
        and np.iinfo(np.int32).min <= arr.min()
        and arr.max() <= np.iinfo(np.int32).max
    ):
        arr = arr.astype(np.int32)
    data = arr.transpose((2, 1, 0) if arr.ndim == 3 else (2, 1, 0, 3))
    ijk = np.eye(4)
    ijk[:3, :3] = (image.direction * np.asarray(image.spacing))[:, [2, 1, 0]]
    ijk[:3, 3] = image.origin
    ras = _LPS_RAS @ ijk
    nii = nib.Nifti1Image(data, ras)
    nii.set_sform(ras, code=1)  # scanner-anatomical, for both: readers that prefer qform agree
    nii.set_qform(ras, code=1)
    nii.header.set_xyzt_units("mm", "sec")
    nib.save(nii, str(path))
    return path


# --- NRRD / MetaImage via SimpleITK ------------------------------------------------------------------------
def read_itk(path: str | os.PathLike) -> Image:
    import SimpleITK as sitk

    path = Path(path)
    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK's own stderr lines; its errors are raised below
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()  # the header alone: the declared size is checked before reading voxels
        size = reader.GetSize()
        needed = int(np.prod(size, dtype=np.float64)) * reader.GetNumberOfComponents() * 8
        if needed > MAX_IMAGE_BYTES:
            raise CorruptFileError(f"{path}: header declares {size} voxels, more than medmap reads")
        img = reader.Execute()
    except RuntimeError as exc:
        raise CorruptFileError(f"{path}: not readable by SimpleITK ({str(exc).strip().splitlines()[-1]})") from None
    with reading(path, "not a readable image"):
        image = Image.from_sitk(img, ImageMeta(source_path=path))
    check_geometry(path, image.array, image.spacing, image.origin, image.direction)
    return image


def write_itk(image: Image, path: str | os.PathLike) -> Path:
    import SimpleITK as sitk

    sitk.WriteImage(image.to_sitk(), str(path), useCompression=True)
    return Path(path)


# --- PNG / JPEG / TIFF -------------------------------------------------------------------------------------
def read_raster(path: str | os.PathLike) -> Image:
    """A 2-D picture as a one-slice image. Pictures carry no physical size: 1 mm pixels are assumed.

    Pillow refuses decompression bombs (over about 179 megapixels) itself; the boundary makes that, and
    any other damage, one line naming the file."""
    path = Path(path)
    with reading(path, "not a readable picture"):
        arr = _picture_pixels(path)
    meta = ImageMeta(
        source_path=path,
        photometric="RGB" if arr.ndim == 3 else "MONOCHROME2",
        notes=("picture without physical pixel size: 1 mm pixels assumed",),
        spacing_known=False,
    )
    return Image(arr[np.newaxis], meta=meta)


def _picture_pixels(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    with PILImage.open(path) as pic:
        pic.load()
        if pic.mode == "P":
            pic = pic.convert("RGBA" if "transparency" in pic.info else "RGB")
        if pic.mode in ("LA", "PA"):
            pic = pic.convert("L")
        if pic.mode in ("RGBA", "CMYK", "YCbCr", "HSV", "LAB"):
            pic = pic.convert("RGB")
        if pic.mode == "1":  # a bit map: its values are 0 and 1, as a mask's labels.json names them (not 0/255)
            return np.asarray(pic, dtype=np.uint8)
        return np.asarray(pic)


def write_raster(image: Image, path: str | os.PathLike) -> Path:
    from PIL import Image as PILImage

    if not image.is_2d:
        raise OutputError(f"{path}: a {image.shape[0]}-slice volume cannot be written as a 2-D picture")
    arr = image.array[0]
    if arr.dtype not in (np.uint8, np.uint16) or (arr.ndim == 3 and arr.dtype != np.uint8):
        raise OutputError(f"{path}: pictures hold uint8 (grey or RGB) or uint16 (grey) pixels, not {arr.dtype}")
    PILImage.fromarray(arr).save(path)
    return Path(path)
