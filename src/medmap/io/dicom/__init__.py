"""DICOM input and output: series discovery, volume assembly, pixel decoding, writing.

- ``files``: read one file's header (and where its pixel data starts) and discover series in a tree.
- ``frames``: turn instances into frames with their own position, orientation and rescale, and lay
  them out as a regular grid (sorting, consistency, gaps, tilt).
- ``pixels``: decode frames into the output volume (a fast raw path for uncompressed data, pydicom
  for everything else), with rescale and photometric handling.
- ``reader``: ``load_series`` / ``load_dicom``: the above, put together.
- ``writer``: write an `Image` as a DICOM series (the demo data and the tests use it).
"""

from medmap.io.dicom.files import DicomFile, read_header
from medmap.io.dicom.reader import load_dicom, load_series
from medmap.io.dicom.series import Series, scan

__all__ = ["DicomFile", "Series", "load_dicom", "load_series", "read_header", "scan"]
