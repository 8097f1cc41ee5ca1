"""medmap tune: candidates as ordinary runs, trailing ones pruned, ranking on validation cases only, the
winner an ordinary run folder; two workers share one study; a killed search resumes its candidate."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from medmap.data.dataset import Case
from medmap.training.config import TrainConfig
from medmap.tuning import scoring, search
from medmap.tuning.leaderboard import paired_difference, still_rising
from medmap.tuning.search import SearchRequest, tune
from tests.builders import kidneys_export, lesion_manifest, write_blobs
from tests.helpers import assert_one_line_error, medmap_cli

pytestmark = pytest.mark.xdist_group("tune")  # the module's searches share one export, on one worker
SMALL = ("patch_size=[8,32,32]", "batch_size=4", "network_width=4", "network_depth=3", "iterations_per_epoch=8")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune") / "export"
    for i in range(8):
        kidneys_export(root / f"P{i}", i)
    (root / "labels.json").write_text(json.dumps({"1": "Kidney_L", "2": "Kidney_R"}))
    return root


def _cli(export, runs, budget, trial="8s"):
    sets = [a for s in SMALL for a in ("--set", s)]
    return [sys.executable, "-m", "medmap.cli", "tune", str(export), "-o", str(runs), "--budget", budget,
            "--trial-budget", trial, "--workers", "0", *sets]  # fmt: skip


def test_paired_difference_is_over_common_cases():
    result = paired_difference({"a": 0.9, "b": 0.8, "c": 0.7}, {"a": 0.8, "b": 0.8, "d": 0.1})
    assert result["n"] == 2 and result["mean"] == pytest.approx(0.05) and result["ci"][0] <= 0.05 <= result["ci"][1]


def test_a_search_never_reads_a_test_case_and_its_winner_is_an_ordinary_run(export, tmp_path, monkeypatch):
    loaded: list[tuple[str, str]] = []
    phase = {"now": "search"}
    original_image, original_target = Case.load_image, Case.load_target

    def load_image(self):
        loaded.append((phase["now"], self.case_id))
        return original_image(self)

    def load_target(self, image=None):
        loaded.append((phase["now"], self.case_id))
        return original_target(self, image)

    evaluate_winner = search._evaluate_winner

    def final(request, board):
        phase["now"] = "final"
        return evaluate_winner(request, board)

    monkeypatch.setattr(Case, "load_image", load_image)
    monkeypatch.setattr(Case, "load_target", load_target)
    monkeypatch.setattr(search, "_evaluate_winner", final)
    runs = tmp_path / "runs"
    request = SearchRequest(export, runs, budget_seconds=36, trial_seconds=8, overrides=SMALL,
                            config=TrainConfig(workers=0))  # fmt: skip
    started = time.monotonic()
    board = tune(request)
    assert time.monotonic() - started < 36 * 1.25 + 10  # the budget is spent, not exceeded (with planning)
    test_ids = set(json.loads((runs / "trial-0000" / "split.json").read_text())["test"])
    assert test_ids and not any(case in test_ids for when, case in loaded if when == "search")
    assert {case for when, case in loaded if when == "final"} >= test_ids  # the winner alone, once, at the end
    candidates = board["candidates"]
    assert candidates[0]["default"] and candidates[0]["state"] == "complete" and len(candidates) >= 2
    assert all(c["run"] == f"trial-{c['number']:04d}" for c in candidates)
    for c in candidates:  # every split the same: the candidates are compared on the same validation cases
        assert json.loads((runs / c["run"] / "split.json").read_text()) == json.loads(
            (runs / "trial-0000" / "split.json").read_text()
        )
    winner = runs / board["winner"]["run"]
    provenance = json.loads((winner / "provenance.json").read_text())
    assert provenance["search"]["trial"] == board["winner"]["number"]
    assert (winner / "metrics.json").is_file() and (winner / "report.html").is_file()
    assert json.loads((runs / "best.json").read_text())["folder"] == str(winner)
    page = (runs / "leaderboard.html").read_text()
    assert "default plan" in page and "validation cases only" in page and "data:image/png" in page
    assert board["over_default"]["n"] == len(candidates[0]["val_cases"]) >= 1
    scores = json.loads((winner / "evaluation-val" / "metrics.json").read_text())["cases"]
    assert set(board["winner"]["params"]) and set(scores) == set(candidates[0]["val_cases"])
    result = medmap_cli("bundle", "create", winner, "-o", tmp_path / "bundle")
    assert result.returncode == 0, result.stderr


def test_two_workers_share_one_study_and_train_no_candidate_twice(export, tmp_path):
    runs = tmp_path / "runs"
    command = _cli(export, runs, "40s", "15s")
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=240) for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    board = json.loads((runs / "leaderboard.json").read_text())
    numbers = [c["number"] for c in board["candidates"]]
    folders = [c["run"] for c in board["candidates"]]
    assert len(numbers) == len(set(numbers)) and len(folders) == len(set(folders))
    assert sorted(p.name for p in runs.glob("trial-*")) == sorted(folders)
    assert sum(c["default"] for c in board["candidates"]) == 1  # one default plan, whoever came first
    assert board["winner"] is not None
    assert any("winner:" in out for out, _ in outputs)  # the last worker out ranked the search


def test_a_search_killed_mid_candidate_resumes_it(export, tmp_path):
    runs = tmp_path / "runs"
    worker = subprocess.Popen(_cli(export, runs, "60s"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = runs / "trial-0000" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert checkpoint.is_file()
    before = len(json.loads((runs / "trial-0000" / "history.json").read_text()))
    result = subprocess.run(_cli(export, runs, "40s"), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    board = json.loads((runs / "leaderboard.json").read_text())
    resumed = [c for c in board["candidates"] if c["resumes"] == 0]
    assert len(resumed) == 1 and resumed[0]["run"] == "trial-0000" and resumed[0]["default"]
    assert len(resumed[0]["history"]) > before, result.stdout  # the same run folder went on from its checkpoint
    assert not any(c["number"] == 0 for c in board["candidates"])  # the lost trial is not a second candidate


def test_a_budget_too_small_for_a_candidate_says_what_it_needs(export, tmp_path):
    result = subprocess.run(_cli(export, tmp_path / "runs", "20s", "0.5s"), capture_output=True, text=True, timeout=240)
    assert_one_line_error(result, "a candidate needs at least 3 epochs", "--trial-budget of")


def test_case_scores_leave_unannotated_classes_out(tmp_path):
    metrics = {"cases": {"a": {"classes": {"x": {"dice": 0.8}, "y": {"dice": float("nan")}}},
                         "b": {"classes": {"x": {"dice": 0.4}, "y": {"dice": 0.6}}}}}  # fmt: skip
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    scores = scoring.dice_cases(tmp_path)
    assert scores["a"] == pytest.approx(0.8) and scores["b"] == pytest.approx(np.mean([0.4, 0.6]))


def test_a_classifier_is_ranked_by_auc_with_a_paired_interval_over_resampled_cases():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    good = {f"c{i}": [float(y), 1 - (p := 0.2 + 0.6 * y), p] for i, y in enumerate(labels)}
    noise = rng.random(60)
    poor = {f"c{i}": [float(y), 1 - noise[i], noise[i]] for i, y in enumerate(labels)}
    assert scoring.auc(list(good.values())) == 1.0
    result = paired_difference(good, poor, statistic=scoring.auc)
    assert result["mean"] == pytest.approx(1.0 - scoring.auc(list(poor.values())))
    assert result["ci"][0] > 0  # a perfect ranking is ahead of noise on 60 cases, and the interval says so
    tie = paired_difference(poor, poor, statistic=scoring.auc)
    assert tie["mean"] == 0 and tie["ci"] == [0.0, 0.0]
    assert np.isnan(scoring.auc([[0.0, 0.9, 0.1], [0.0, 0.2, 0.8]]))  # one class only: no AUC, not 0.5


def test_a_classification_search_ranks_candidates_by_validation_auc(tmp_path):
    write_blobs(tmp_path)
    runs = tmp_path / "runs"
    small = ("network_width=8", "batch_size=16", "iterations_per_epoch=4")  # minimum: ~4 s on a loaded CI machine
    request = SearchRequest(tmp_path / "blobs.npz", runs, budget_seconds=36, trial_seconds=10, overrides=small,
                            config=TrainConfig(workers=0))  # fmt: skip
    board = tune(request)
    assert board["metric"] == "AUC" and board["candidates"][0]["default"]
    default = board["candidates"][0]
    assert default["params"]["network"] and "label_smoothing" in default["params"]
    assert len(default["val_cases"]) == 15 and all(len(v) == 3 for v in default["val_cases"].values())
    assert default["score"] == pytest.approx(scoring.auc(list(default["val_cases"].values())))
    winner = runs / board["winner"]["run"]
    assert json.loads((winner / "metrics.json").read_text())["split"] == "test"
    assert "validation AUC" in (runs / "leaderboard.html").read_text()


def test_detection_is_refused_with_the_reason(tmp_path):
    table = lesion_manifest(tmp_path, [("ct", 0.0, "benign"), ("ct", 5.0, "malignant")])
    result = medmap_cli("tune", table, "--task", "detection", "-o", tmp_path / "runs", "--budget", "30s")
    assert_one_line_error(result, "detection is not searched yet")


def test_a_default_plan_still_rising_at_the_end_of_its_budget_is_called_undertrained():
    rising = [[10.0, 0.2], [10.0, 0.4], [10.0, 0.55], [10.0, 0.7]]
    assert still_rising(rising) == (0.4, 0.7)  # the best of the first 26.7 s, and the best after
    levelled = [[10.0, 0.2], [10.0, 0.69], [10.0, 0.695], [10.0, 0.698]]
    assert still_rising(levelled) is None
    assert still_rising([[10.0, 0.1], [10.0, 0.9]]) is None  # two epochs: no curve to judge
