"""Secondary Capture overlay images: the predicted segments drawn on the source slices, for viewers and
PACS workstations that do not display DICOM SEG.

One RGB Secondary Capture instance per source slice that holds any segment (a new series in the source's
study): the slice in its own display window (the source's Window Center/Width, else a soft-tissue window
for CT, else the volume's 0.5-99.5 percentiles), each segment filled at 30 % opacity with its outline in
full colour. The pixels are the source's own rows and columns, so a viewer's measurements stay in mm
(Pixel Spacing carried over), and each image names the slice it was drawn on (Source Image Sequence).
Nothing is burned in besides the colours; the series description names the colour of each segment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from medmap import __version__
from medmap.colours import Colour, colour_word, label_colour
from medmap.dicomout.seg import MANUFACTURER, source_datasets
from medmap.io.image import Image

FILL_OPACITY = 0.3
CT_SOFT_TISSUE = (40.0, 400.0)  # window centre, width (HU)


def display_window(source: Image) -> tuple[float, float]:
    """(low, high) intensities mapped to black and white."""
    meta = source.meta
    if meta.window_center is not None and meta.window_width:
        centre, width = meta.window_center, meta.window_width
    elif meta.modality.upper() == "CT":
        centre, width = CT_SOFT_TISSUE
    else:
        low, high = np.percentile(source.array, [0.5, 99.5])
        return float(low), float(max(high, low + 1e-6))
    return centre - width / 2, centre + width / 2


def draw_overlay(
    grey: np.ndarray, labels: np.ndarray, window: tuple[float, float], colours: dict[int, Colour]
) -> np.ndarray:
    """An RGB uint8 picture of one slice with each label of ``colours`` (value -> RGB) filled and outlined."""
    low, high = window
    scaled = np.clip((grey.astype(np.float32) - low) / (high - low), 0, 1) * 255
    rgb = np.repeat(scaled[..., None], 3, axis=-1)
    for value, colour_rgb in colours.items():
        mask = labels == value
        if not mask.any():
            continue
        colour = np.asarray(colour_rgb, np.float32)
        rgb[mask] = (1 - FILL_OPACITY) * rgb[mask] + FILL_OPACITY * colour
        outline = mask & ~ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool))
        rgb[outline] = colour
    return np.rint(rgb).astype(np.uint8)


def _orientation_letter(cosines: np.ndarray) -> str:
    """DICOM Patient Orientation of a direction in LPS: the letter of its main component (highdicom takes
    one letter; for an oblique slice this is the nearest axis)."""
    axis = int(np.argmax(np.abs(cosines)))
    return ("L", "P", "H")[axis] if cosines[axis] > 0 else ("R", "A", "F")[axis]


def write_overlays(
    labels: Image,
    source: Image,
    folder: str | Path,
    segments: list[tuple[int, str]],
    *,
    algorithm: str,
    series_number: int = 902,
) -> list[Path]:
    """Write the overlay series of ``labels`` (on ``source``'s grid) into ``folder``; returns the files.

    ``segments``: (label value, name), each drawn in its label colour (`medmap.colours`)."""
    import highdicom as hd
    from pydicom.dataset import Dataset

    datasets = source_datasets(source, pixels=False)  # the pixels drawn come from ``source`` itself
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    window = display_window(source)
    colours = {value: label_colour(name, value) for value, name in segments}
    legend = ", ".join(f"{name}={colour_word(name, value)}" for value, name in segments)
    series_uid = hd.UID()
    grey_volume, label_volume = np.asarray(source.array), np.asarray(labels.array)
    if grey_volume.ndim == 4:  # multi-channel: draw on the first channel
        grey_volume = grey_volume[..., 0]
    direction = np.asarray(source.direction)  # columns: slice normal, column (row-to-row) and row directions
    orientation = (_orientation_letter(direction[:, 2]), _orientation_letter(direction[:, 1]))
    pixel_spacing = (float(source.spacing[1]), float(source.spacing[2]))
    paths = []
    for z, ref in enumerate(source.meta.slices):
        if not np.isin(label_volume[z], list(colours)).any():
            continue
        ds = datasets[0] if ref.frame is not None else datasets[z]  # multi-frame: one instance, frame ref.frame
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=ds,
            pixel_array=draw_overlay(grey_volume[z], label_volume[z], window, colours),
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=len(paths) + 1,
            manufacturer=MANUFACTURER,
            pixel_spacing=pixel_spacing,
            patient_orientation=orientation,
        )
        sc.SeriesDescription = f"{algorithm} overlay: {legend}"[:64]
        sc.ImageComments = f"{algorithm} (medmap {__version__}) overlay: {legend}. Not for primary diagnosis."[:10240]
        sc.SoftwareVersions = f"medmap {__version__}"
        sc.BurnedInAnnotation = "NO"
        reference = Dataset()
        reference.ReferencedSOPClassUID = ds.SOPClassUID
        reference.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        if ref.frame is not None:
            reference.ReferencedFrameNumber = ref.frame + 1
        sc.SourceImageSequence = [reference]
        sc.DerivationDescription = "segmentation outlines drawn on the source image"
        # General Series Laterality is type 2C; dciodvfy cannot evaluate its condition (a paired body part
        # without Image Laterality) and asks for it: carry the source's, present-but-empty when unknown
        sc.Laterality = ds.get("Laterality", "")
        path = folder / f"overlay-{z + 1:04d}.dcm"
        sc.save_as(path)
        paths.append(path)
    return paths
