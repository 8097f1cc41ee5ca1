"""The DICOM objects medmap exchanges with a PACS, and the transfer syntaxes it reads them in; one list
for the node's SCP and for retrieval, so a class the node accepts is one a pull can fetch."""

from __future__ import annotations

from medmap.io.labels.references import LABEL_OBJECT_CLASSES

# Image storage classes medmap can process (CT, MR, CR, DX, MG, US, NM, PT, SC, enhanced CT/MR)
IMAGE_STORAGE_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "Enhanced CT": "1.2.840.10008.5.1.4.1.1.2.1",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "Enhanced MR": "1.2.840.10008.5.1.4.1.1.4.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX presentation": "1.2.840.10008.5.1.4.1.1.1.1",
    "DX processing": "1.2.840.10008.5.1.4.1.1.1.1.1",
    "MG presentation": "1.2.840.10008.5.1.4.1.1.1.2",
    "MG processing": "1.2.840.10008.5.1.4.1.1.1.2.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "US multi-frame": "1.2.840.10008.5.1.4.1.1.3.1",
    "NM": "1.2.840.10008.5.1.4.1.1.20",
    "PET": "1.2.840.10008.5.1.4.1.1.128",
    "Secondary Capture": "1.2.840.10008.5.1.4.1.1.7",
}
# Labels as hospitals hold them: contours, segmentations, and the reports that carry marks
LABEL_STORAGE_CLASSES = {
    **{name: uid for uid, name in LABEL_OBJECT_CLASSES.items()},
    "Comprehensive SR": "1.2.840.10008.5.1.4.1.1.88.33",
    "Comprehensive 3D SR": "1.2.840.10008.5.1.4.1.1.88.34",
    "Enhanced SR": "1.2.840.10008.5.1.4.1.1.88.22",
}
LABEL_MODALITIES = ("RTSTRUCT", "SEG", "SR")
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.70",  # JPEG lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE
]
