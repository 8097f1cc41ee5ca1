"""The command line as a user runs it: a real process, one-line errors, non-zero exits, no tracebacks."""

from pathlib import Path

import nibabel as nib
import pydicom
import pytest
from pydicom.data import get_testdata_file

import medmap
from tests.builders import volume, write_ct
from tests.helpers import assert_one_line_error, medmap_cli


def test_version_matches_the_installed_distribution():
    from importlib.metadata import version

    assert medmap.__version__ == version("medmap")


def test_version_and_help():
    r = medmap_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"medmap {medmap.__version__}"
    r = medmap_cli("--help")
    assert r.returncode == 0
    for command in ("info", "convert", "anonymize", "demo-data"):
        assert command in r.stdout


def test_info_lists_series_without_patient_identity(tmp_path):
    write_ct(volume(), tmp_path / "s", patient_name="SECRET^NAME", patient_id="SECRET-ID", body_part="CHEST")
    r = medmap_cli("info", tmp_path, "--json")
    assert r.returncode == 0, r.stderr
    assert "SECRET" not in r.stdout
    assert '"modality": "CT"' in r.stdout and '"size": [\n      20,\n      24,\n      9\n    ]' in r.stdout
    table = medmap_cli("info", tmp_path)
    assert table.returncode == 0 and "axial" in table.stdout and "SECRET" not in table.stdout


def test_info_reports_a_broken_series_as_a_problem_and_an_error(tmp_path):
    paths = write_ct(volume(), tmp_path / "s")
    write_ct(volume(seed=1), tmp_path / "good")
    paths[4].unlink()
    r = medmap_cli("info", tmp_path, "--json")
    assert r.returncode == 1  # what the loader would refuse, info refuses too
    assert "missing slice" in r.stdout and r.stdout.count('"series"') == 2  # the table lists both
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: series ") and "missing slice" in line and "0004.dcm" in line


def test_convert_writes_nifti_with_the_series_geometry(tmp_path):
    img = volume()
    write_ct(img, tmp_path / "s")
    r = medmap_cli("convert", tmp_path / "s", tmp_path / "v.nii.gz")
    assert r.returncode == 0, r.stderr
    assert medmap.load(tmp_path / "v.nii.gz").same_geometry(img, tol=1e-4)
    assert nib.load(tmp_path / "v.nii.gz").shape == (20, 24, 9)


def test_anonymize_then_info(tmp_path):
    write_ct(volume(), tmp_path / "s", patient_name="SECRET^NAME")
    r = medmap_cli("anonymize", tmp_path / "s", tmp_path / "anon")
    assert r.returncode == 0, r.stderr
    files = list((tmp_path / "anon").rglob("*.dcm"))
    assert len(files) == 9 and str(pydicom.dcmread(files[0]).PatientName).startswith("ANON-")


@pytest.mark.parametrize(
    ("make", "command", "fragments"),
    [
        ("empty", "info", ["empty"]),
        ("missing", "convert", ["missing slice", "0005.dcm"]),
        ("mixed", "convert", ["mixed image sizes", "0002.dcm"]),
        ("truncated", "convert", ["0003.dcm", "truncated"]),
        ("sr", "convert", ["test-SR.dcm", "without pixel data"]),
        ("nothing", "info", ["no such file"]),
        ("inside", "anonymize", ["outside the input"]),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, make, command, fragments):
    src = tmp_path / "src"
    if make == "empty":
        src.mkdir()
    elif make == "sr":
        src = Path(get_testdata_file("test-SR.dcm"))
    elif make != "nothing":
        paths = write_ct(volume(), src)
        if make == "missing":
            paths[5].unlink()
        elif make == "mixed":
            ds = pydicom.dcmread(paths[1])
            ds.Rows = ds.Columns = 4
            ds.PixelData = b"\x00\x00" * 16
            ds.save_as(paths[1])
        elif make == "truncated":
            paths[2].write_bytes(paths[2].read_bytes()[:-100])
    target = {"info": [], "convert": [tmp_path / "out.nii.gz"], "anonymize": [src / "x"]}[command]
    before = sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file())
    result = medmap_cli(command, src, *target)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out.nii.gz").exists()
    assert sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()) == before


def test_non_dicom_files_give_a_one_line_warning(tmp_path):
    write_ct(volume(), tmp_path / "s")
    (tmp_path / "s" / "notes.txt").write_text("x")
    r = medmap_cli("convert", tmp_path / "s", tmp_path / "v.nii.gz")
    assert r.returncode == 0
    warning_lines = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning_lines) == 1 and "notes.txt" in warning_lines[0]
