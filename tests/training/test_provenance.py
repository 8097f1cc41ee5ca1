"""Every run records where it came from (versions, commit, command line, seed, hardware, a digest of its
data), and bundles carry it into their model card; the data digest follows the data, not its location."""

import json
import shutil

from medmap import provenance
from medmap.inference.bundle import create_bundle


def test_run_records_its_provenance(balls_run, balls):
    run, _ = balls_run
    record = json.loads((run / "provenance.json").read_text())
    assert record["versions"]["torch"] and record["versions"]["medmap"] and record["versions"]["monai"]
    assert record["seed"] == 0 and record["command"].startswith("Python API")
    assert record["hardware"]["cpus"] >= 1
    data = record["data"]
    assert data["path"] == str(balls.resolve()) and len(data["digest"]) == 16
    assert data["cases"]["train"] + data["cases"]["val"] == 8 and data["cases"]["unlabelled"] == 1
    assert f"digest {data['digest']}" in (run / "report.html").read_text()  # the report says it too
    if record["source"] is not None:  # a git checkout (the test suite's own), else an installed wheel
        assert len(record["source"]["commit"]) == 40


def test_bundle_card_shows_it(balls_run, tmp_path):
    run, _ = balls_run
    bundle = create_bundle(run, tmp_path / "bundle")
    card = (bundle / "MODEL_CARD.md").read_text()
    record = json.loads((run / "provenance.json").read_text())
    assert "## Provenance" in card and record["data"]["digest"] in card and "seed 0" in card
    assert (bundle / "provenance.json").read_text() == (run / "provenance.json").read_text()


def test_digest_follows_content_not_place(tmp_path):
    description = {"cases": {"train": [["a", "p1", 1, None]]}, "images": {"train": [{"features": [0.5, 0.25]}]}}
    moved = json.loads(json.dumps(description))
    assert provenance.data_digest(description) == provenance.data_digest(moved)
    moved["images"]["train"][0]["features"][0] = 0.51  # one image's content changed
    assert provenance.data_digest(description) != provenance.data_digest(moved)


def test_resume_adds_an_entry(balls_run, tmp_path):
    from medmap.training.config import TrainConfig
    from medmap.training.records import write_provenance

    run, _ = balls_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("cache", "checkpoints", "*.nii.gz"))
    before = json.loads((copy / "provenance.json").read_text())
    write_provenance(copy, "unused", {}, {}, TrainConfig(), ["medmap", "train", "x", "--resume"])
    after = json.loads((copy / "provenance.json").read_text())
    assert after["data"] == before["data"] and after["started"] == before["started"]
    assert after["resumed"][0]["command"] == "medmap train x --resume"
