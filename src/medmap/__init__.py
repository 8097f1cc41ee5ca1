"""medmap: medical images in, trained and evaluated models out, DICOM answers back to the PACS.

Importing medmap is cheap: the deep-learning layers are imported only by the modules that need them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medmap")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from medmap.io.image import Image, ImageMeta, SliceRef
from medmap.io.load import load, save

__all__ = ["Image", "ImageMeta", "SliceRef", "__version__", "load", "save"]
