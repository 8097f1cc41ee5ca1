"""The ``medmap`` command line's app, its console and its entry point.

Errors the user can cause (`MedmapError`) are printed as one line, ``error: ...``, with exit status 1;
problems that do not stop the work (`MedmapWarning`) as ``warning: ...``. No tracebacks for those.
"""

from __future__ import annotations

import sys
import warnings
from typing import Annotated

import typer
from rich.console import Console

from medmap import __version__
from medmap.errors import MedmapError, MedmapWarning

app = typer.Typer(
    name="medmap",
    help="Medical images in, trained and evaluated models out, DICOM answers back to the PACS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes: do not squeeze tables to 80


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, MedmapWarning):
        sys.stderr.write(f"warning: {_one_line(message)}\n")


def _version(value: bool) -> None:
    if value:
        out.print(f"medmap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """medmap: deep learning that maps medical images to answers."""


def _fmt(values, digits: int = 3) -> str:
    return "x".join(f"{v:.{digits}g}" for v in values)


def _short_uid(uid: str) -> str:
    """Enough of a UID to tell series apart in a table (``--json`` prints it whole)."""
    return uid if len(uid) <= 20 else f"...{uid[-17:]}"


def main() -> None:
    """Console entry point: run the app, turning user errors into one line and a non-zero exit."""
    warnings.showwarning = _show_warning
    warnings.simplefilter("default", MedmapWarning)
    try:
        app()
    except MedmapError as exc:
        if not getattr(exc, "quiet", False):  # a training rank echoing another's failure stays silent
            sys.stderr.write(f"error: {_one_line(str(exc))}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)

