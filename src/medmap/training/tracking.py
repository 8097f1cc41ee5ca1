"""Experiment tracking where users already look: a finished run logged to MLflow, so ``mlflow ui`` lists
every training with its settings, learning curves, test metrics and files.

The run is logged *after* it finished, from the files of its folder (plan, config, history, metrics,
provenance, report): tracking can neither change a run nor lose one (a failure is a warning), and what
MLflow shows is exactly what the folder holds. The store is a SQLite file beside the run folders
(``RUNS/mlflow.db``, artifacts in ``RUNS/mlartifacts``): MLflow 3 no longer writes its plain file store
without an opt-in, and a store next to the runs keeps the user's working directory clean.
"""

from __future__ import annotations

import time
from pathlib import Path

from medmap import run_folder as runs
from medmap.evaluation.optional import optional
from medmap.run_folder import RunFolder

ARTIFACTS = ("report.html", runs.METRICS, runs.PLAN, runs.CONFIG, runs.PROVENANCE, runs.INTENDED_USE)


def default_uri(run_dir: str | Path) -> str:
    """The SQLite store beside the run folder: ``sqlite:///<parent>/mlflow.db``."""
    return f"sqlite:///{Path(run_dir).resolve().parent / 'mlflow.db'}"


def _metric_name(key: str) -> str:
    """A metrics key as MLflow accepts it (alphanumerics, ``_ - . / :`` and spaces): a size bin such as
    "< 6 mm" becomes "lt 6 mm", ">= 10 mm" "ge 10 mm"."""
    import re

    for sign, word in ((">=", "ge "), ("<=", "le "), ("<", "lt "), (">", "gt ")):
        key = key.replace(sign, word)
    return re.sub(r"[^A-Za-z0-9_\-./: ]", "_", re.sub(r"\s+", " ", key).strip())


def _numbers(prefix: str, values: dict) -> dict[str, float]:
    """Flatten numeric entries (and two-value intervals) of a metrics dict into MLflow metric names."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{_metric_name(str(key))}"
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float) and value == value:  # not NaN
            out[name] = float(value)
        elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
            out[f"{name}_low"], out[f"{name}_high"] = float(value[0]), float(value[1])
        elif isinstance(value, dict):
            out.update(_numbers(f"{name}.", value))
    return out


def _params(plan: dict, config: dict) -> dict[str, str]:
    chosen = (
        "task", "dataset", "modality", "input_mode", "network", "network_width", "network_depth", "patch_size",
        "target_spacing", "batch_size", "iterations_per_epoch", "loss", "deep_supervision",
    )  # fmt: skip
    params = {f"plan.{k}": plan[k] for k in chosen if k in plan}
    params["plan.normalization"] = plan.get("normalization", {}).get("scheme")
    params.update({f"train.{k}": v for k, v in config.items()})
    return {k: str(v)[:500] for k, v in params.items()}


def log_run(run_dir: str | Path, uri: str | None = None) -> str:
    """Log a finished run folder to MLflow (experiment = its dataset); returns the MLflow run id."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    run = Path(run_dir)
    folder = RunFolder(run)
    plan, config = folder.read(runs.PLAN) or {}, folder.read(runs.CONFIG) or {}
    history, stored = folder.history, folder.read(runs.METRICS) or {}
    record = folder.read(runs.PROVENANCE) or {}
    uri = uri or default_uri(run)
    client = MlflowClient(uri)
    name = plan.get("dataset", "medmap")
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        root = Path(run).resolve().parent / "mlartifacts" if uri.startswith("sqlite:") else None
        experiment_id = client.create_experiment(name, artifact_location=root.as_uri() if root else None)
    else:
        experiment_id = experiment.experiment_id
    source = record.get("source") or {}
    tags = {
        "mlflow.runName": run.name,
        "medmap.run_folder": str(run.resolve()),
        "medmap.command": record.get("command", ""),
        "medmap.commit": source.get("commit", ""),
        "medmap.data_digest": record.get("data", {}).get("digest", ""),
        "medmap.synthetic_data": str(record.get("data", {}).get("synthetic", "")),
        "medmap.evaluated_split": stored.get("split", ""),
    }
    created = client.create_run(experiment_id, run_name=run.name, tags={k: v for k, v in tags.items() if v})
    run_id = created.info.run_id
    now = int(time.time() * 1000)
    metrics = []
    for entry in history:
        step = int(entry["epoch"])
        per_epoch = {"train.loss": entry.get("loss"), "train.learning_rate": entry.get("learning_rate")}
        per_epoch.update(_numbers("val.", entry.get("val", {})))
        metrics += [Metric(k, float(v), now, step) for k, v in per_epoch.items() if isinstance(v, int | float)]
    final = _numbers(f"{stored.get('split', 'test')}.", {k: v for k, v in stored.get("metrics", {}).items()})
    final.update(_numbers("baseline.", (stored.get("baseline") or {}).get("comparison") or {}))
    metrics += [Metric(k, v, now, 0) for k, v in final.items()]
    params = [Param(k, v) for k, v in _params(plan, config).items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
        client.log_batch(run_id, params=params[start : start + 100])
    for start in range(0, len(metrics), 1000):  # and at most 1000 metrics
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    for path in (run / artifact for artifact in ARTIFACTS):
        if path.is_file():
            client.log_artifact(run_id, str(path))
    client.log_batch(run_id, tags=[RunTag("medmap.logged", "complete")])
    client.set_terminated(run_id)
    return run_id


def track_run(run_dir: Path, track: str, uri: str | None) -> str | None:
    """Log the finished run to the experiment tracker (`medmap.training.tracking`); a side step: a failure
    or a missing MLflow is one warning, the run is complete without it. Returns the store's URI."""
    if track == "off":
        return None
    import importlib.util
    import warnings

    from medmap.errors import MedmapWarning

    if importlib.util.find_spec("mlflow") is None:
        warnings.warn(
            MedmapWarning("experiment tracking off: MLflow is not installed (pip install 'medmap[tracking]')"),
            stacklevel=2,
        )
        return None
    uri = uri or default_uri(run_dir)
    return uri if optional("logging the run to MLflow", log_run, run_dir, uri) else None
