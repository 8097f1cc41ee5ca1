"""Helpers the tests share: the CLI in a subprocess, its one-line errors, and the independent DICOM
validator (dciodvfy) and toolkit programs the integration tests call."""

import shutil
import subprocess
import sys


def medmap_cli(*args, cwd=None):
    """The real console entry point in a subprocess (as a user runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "medmap.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def assert_one_line_error(result, *fragments):
    """A user-caused failure: exit 1, exactly one ``error:`` line holding every fragment, no traceback."""
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def require(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is not installed: `make test` installs it (scripts/install-system-deps.sh)"
    return path


def dciodvfy_errors(path) -> list[str]:
    """dciodvfy's exit status is unreliable; its lines starting 'Error' are what counts."""
    out = subprocess.run([require("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
