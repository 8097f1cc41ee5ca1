"""DICOM that medmap writes passes an independent validator (dciodvfy, Debian dicom3tools) and is read
back by another toolkit (dcmtk's dcmdump)."""

import subprocess
import warnings

import pytest

from medmap.io.anonymize import anonymize_tree
from tests.builders import rotation, volume, write_ct
from tests.helpers import dciodvfy_errors, require

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("body_part", ["CHEST", ""])
def test_written_ct_series_is_valid(tmp_path, body_part):
    paths = write_ct(volume(direction=rotation(0.1, 0.2, 0.3)), tmp_path / "s", body_part=body_part)
    for path in (paths[0], paths[-1]):
        assert dciodvfy_errors(path) == []
    dump = subprocess.run([require("dcmdump"), str(paths[0])], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0 and "(0020,0037)" in dump.stdout


def test_deidentified_files_stay_valid(tmp_path):
    write_ct(volume(), tmp_path / "s", patient_name="DOE^JOHN", accession_number="A1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = anonymize_tree(tmp_path / "s", tmp_path / "anon", date_shift_days=-7)
    for path in report.written[:2]:
        assert dciodvfy_errors(path) == []
        dump = subprocess.run([require("dcmdump"), str(path)], capture_output=True, text=True, timeout=60)
        assert dump.returncode == 0 and "DOE^JOHN" not in dump.stdout and "PatientIdentityRemoved" in dump.stdout


def test_demo_radiographs_are_valid_dx(tmp_path):
    from medmap.data.phantoms import chest_radiograph
    from medmap.io.dicom.writer import write_radiograph

    for monochrome1 in (False, True):
        path = write_radiograph(
            chest_radiograph(seed=3, consolidation=True), tmp_path / f"dx{monochrome1}.dcm", monochrome1=monochrome1
        )
        assert dciodvfy_errors(path) == []
