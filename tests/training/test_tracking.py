"""A finished run logged to MLflow and read back by MLflow's own client: parameters, the per-epoch curves
(training and validation loss, the validation metric), the evaluated split's metrics with their interval
bounds, provenance tags and the run's files."""

import shutil

import pytest

from medmap.training.tracking import default_uri, log_run, track_run


def test_run_is_in_mlflow_as_its_folder_says(balls_run, tmp_path):
    from mlflow.tracking import MlflowClient

    run = tmp_path / "runs" / "balls"
    shutil.copytree(balls_run[0], run, ignore=shutil.ignore_patterns("cache", "checkpoints", "predictions*"))
    run_id = log_run(run)
    uri = default_uri(run)
    assert uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    client = MlflowClient(uri)
    logged = client.get_run(run_id)
    assert logged.info.run_name == "balls" and logged.data.tags["medmap.logged"] == "complete"
    assert logged.data.params["plan.network"] == "unet" and logged.data.params["train.seed"] == "0"
    assert len(logged.data.tags["medmap.data_digest"]) == 16
    history = client.get_metric_history(run_id, "train.loss")
    assert len(history) >= 2 and [m.step for m in history] == sorted(m.step for m in history)
    assert client.get_metric_history(run_id, "val.loss") and client.get_metric_history(run_id, "val.dice")
    metrics = logged.data.metrics
    assert 0 <= metrics["val.classes.ball.dice.mean"] <= 1
    assert metrics["val.classes.ball.dice.ci_low"] <= metrics["val.classes.ball.dice.mean"]
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.html", "metrics.json", "plan.json", "provenance.json"} <= names
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()  # all beside the runs


def test_tracking_failure_is_a_warning_not_a_lost_run(balls_run, tmp_path):
    from medmap.errors import MedmapWarning

    with pytest.warns(MedmapWarning, match="logging the run to MLflow failed"):
        assert track_run(balls_run[0], "mlflow", "unknownscheme://nowhere") is None
    assert track_run(balls_run[0], "off", None) is None


def test_metric_names_mlflow_refuses_are_rewritten():
    """A detector's metrics hold size bins ("< 6 mm"): MLflow refuses "<" in a name, so it is spelled out."""
    from medmap.training.tracking import _numbers

    flat = _numbers("test.", {"by_size": {"< 6 mm": {"found": 15}, ">= 10 mm": {"found": 11}}, "cpm": 0.8})
    assert flat == {"test.by_size.lt 6 mm.found": 15.0, "test.by_size.ge 10 mm.found": 11.0, "test.cpm": 0.8}
