"""The errors a user can cause, and the warning class for problems that loading can survive.

Every message names the file, series or case and says what is wrong, in one line, so that the CLI can
print it as it is (``error: <message>``) and exit non-zero without a traceback.
"""

from __future__ import annotations


class MedmapError(Exception):
    """Base class of every error caused by the user's input or configuration.

    The message is made printable on one line here, once for all: messages quote values from damaged
    files, and a NUL, a line break or an escape sequence from a file must not reach a terminal or a log.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(printable(str(message)), *args)


def printable(text: str) -> str:
    """``text`` with line breaks as spaces and other unprintable characters escaped (``\\x00``)."""
    if text.isprintable():
        return text
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class InputNotFoundError(MedmapError):
    """A path the user named does not exist or holds nothing usable."""


class NotDicomError(MedmapError):
    """A file expected to be DICOM is not (no DICM preamble, unreadable header)."""


class CorruptFileError(MedmapError):
    """A file is readable as far as its header but its content is damaged (truncated, undecodable)."""


class NotAnImageError(MedmapError):
    """A DICOM object without pixel data (SR, RT structure set, ...) was given where an image is needed."""


class SeriesError(MedmapError):
    """The instances of a series cannot be assembled into one volume (mixed sizes, gaps, duplicates)."""


class UnsupportedFormatError(MedmapError):
    """A file format, transfer syntax or pixel layout medmap does not read or write."""


class OutputError(MedmapError):
    """An output location is unsafe (inside the input, would overwrite the input) or cannot be written."""


class DatasetError(MedmapError):
    """A dataset's layout or content is wrong (missing files, bad dataset.json, bad manifest)."""


class ConfigError(MedmapError):
    """A configuration value is invalid."""


class MedmapWarning(UserWarning):
    """A problem the user should know about that does not stop the work (e.g. gantry tilt)."""
