"""The node under load, with broken input and three SIGKILLs: nothing acknowledged is lost, every good series
is answered exactly once (the short form of scripts/soak_node.py; the long form is documented there)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import require

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_soak_with_kills(ball_bundle, tmp_path):
    require("Orthanc")
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "soak_node.py"),
            "--bundle",
            str(ball_bundle),
            "--instances",
            "280",
            "--associations",
            "6",
            "--kills",
            "3",
            "--idle",
            "5",
            "--broken",
            "0.1",
            "--timeout",
            "600",
            "--seed",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["kills"] == 3 and result["instances acknowledged"] >= 250
    assert result["series"]["broken"] >= 1 and result["instances refused"] >= 1
