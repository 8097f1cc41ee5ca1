"""Where a result came from: versions, source commit, command line, seed, hardware and the data it saw.

A reviewer asks "which code, which data, which settings?" of every number in a report; a PACS engineer
asks it of every model. `collect` answers once per run (``RUN/provenance.json``, copied into bundles and
shown in model cards and reports). Nothing here identifies a patient: the data is named by a digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

FILE = "provenance.json"
PACKAGES = ("medmap", "torch", "monai", "numpy", "SimpleITK", "pydicom", "highdicom", "nibabel")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def source_commit() -> dict | None:
    """The git commit medmap's own source was at, and whether it had uncommitted changes (None when medmap
    is installed from a wheel, or git is missing)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "uncommitted_changes": bool(dirty)}


def hardware() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda"] = torch.version.cuda
    return info


def data_digest(description: object) -> str:
    """SHA-256 (first 16 hex digits) of a JSON-able description of the data (case ids per split, labels,
    lesion positions, per-image intensity/geometry features): equal data, equal digest, wherever it lies."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def collect(*, seed: int | None, command: list[str] | None, data: dict | None = None) -> dict:
    """The provenance record of a run starting now. ``command`` is the command line (the CLI passes
    ``sys.argv``; None when called from Python)."""
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["medmap", *command[1:]]) if command else f"Python API ({Path(sys.argv[0]).name})",
        "seed": seed,
        "versions": package_versions(),
        "source": source_commit(),
        "hardware": hardware(),
        "data": data or {},
    }


def report_notes(run_dir: Path) -> list[str]:
    """The run's provenance as lines for its report's "how this was produced" list."""
    path = Path(run_dir) / FILE
    return [f"provenance: {line}" for line in summary_lines(json.loads(path.read_text()))] if path.is_file() else []


def summary_lines(record: dict) -> list[str]:
    """The record in a few lines, for model cards and reports."""
    if not record:
        return ["No provenance was recorded with this run (trained before medmap recorded it)."]
    v = record.get("versions", {})
    source = record.get("source") or {}
    commit = source.get("commit", "")[:12] + (" with uncommitted changes" if source.get("uncommitted_changes") else "")
    hw = record.get("hardware", {})
    data = record.get("data", {})
    return [
        f"trained {record.get('started', '?')} by `{record.get('command', '?')}`, seed {record.get('seed')}",
        "versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"medmap source commit {commit}" if commit else "medmap source: installed package (no git commit)",
        f"hardware: {hw.get('cpus')} CPUs ({hw.get('machine')}), " + (", ".join(hw.get("gpus", [])) or "no GPU"),
        f"data: {data.get('path', '?')}, digest {data.get('digest', '?')}, "
        + ", ".join(f"{n} {k}" for k, n in data.get("cases", {}).items())
        + " cases",
    ]
