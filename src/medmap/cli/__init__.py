"""The ``medmap`` command line, one module per family of commands. Thin: parses arguments, calls the
library, prints results.

Errors the user can cause (`MedmapError`) are printed as one line, ``error: ...``, with exit status 1;
problems that do not stop the work (`MedmapWarning`) as ``warning: ...``. No tracebacks for those.
"""

# each module registers its commands on the app, and --help lists them in this order
from medmap.cli import data, training, registration, deploy  # noqa: F401, I001
from medmap.cli.app import app, main
from medmap.cli.deploy import serve
from medmap.cli.training import parse_duration

__all__ = ["app", "main", "parse_duration", "serve"]
