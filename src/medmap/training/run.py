"""A training run, start to finish, in one folder: plan, split, cache, training, evaluation, report.

``RUN/`` holds ``plan.json``, ``config.json``, ``split.json`` (case ids per split, by patient),
``history.json``, ``checkpoints/{last,best}.pt``, ``threshold.json`` (chosen on validation),
``predictions_<split>.csv``, ``metrics.json``, ``report.html``, ``intended_use.json`` (what the model
accepts, `medmap.intended_use`) and ``provenance.json`` (versions, commit, command, seed, hardware, data
digest: `medmap.provenance`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from medmap import run_folder as runs
from medmap.data.cache import CachedCase, PreprocessedCache
from medmap.data.dataset import Case, Dataset
from medmap.data.fingerprint import compute_fingerprint
from medmap.data.layouts import read_dataset
from medmap.device import check_device
from medmap.errors import ConfigError, DatasetError, MedmapError, OutputError
from medmap.inference.precision import resolve_precision
from medmap.plan import Plan
from medmap.provenance import FILE as PROVENANCE
from medmap.run_folder import RunFolder, run_lock
from medmap.tasks import task_for
from medmap.tasks.base import EvaluationJob
from medmap.training.config import TrainConfig
from medmap.training.distributed import LostRankError, Ranks
from medmap.training.planner import plan_dataset
from medmap.training.records import split_note, write_intended_use, write_provenance
from medmap.training.tracking import track_run
from medmap.training.trainer import Trainer


def prepare_plan(
    dataset: Dataset, *, overrides: list[str], device: str, progress: bool, cases: list[Case] | None = None
) -> Plan:
    """The plan from the fingerprint of ``cases`` (a run passes its training and validation cases, so
    nothing of the test cases informs spacing, normalisation or patch size)."""
    fingerprint = compute_fingerprint(dataset, progress=progress, cases=cases)
    plan = plan_dataset(dataset, fingerprint, device=device)
    return plan.with_overrides(overrides) if overrides else plan


@dataclass(frozen=True)
class RunRequest:
    """What `train_run` was asked to do, in one object (the steps below read it; none re-passes its parts)."""

    data: Path
    run_dir: Path
    task: str | None
    overrides: list[str]
    config: TrainConfig
    resume: bool
    cache_root: Path | None
    folds: int
    fold: int | None
    progress: bool
    command: list[str] | None
    processes: int = 1  # training processes (DDP ranks), recorded in provenance
    stop_after: Callable[[list[dict]], bool] | None = None  # asked after each epoch (`Trainer.fit`)
    evaluate: str | None = "test"  # the split scored when training ends; None: not evaluated (a search's trial)

    @property
    def cache(self) -> Path:
        return Path(self.cache_root) if self.cache_root else self.run_dir / "cache"


@dataclass
class PreparedRun:
    """A planned, split and cached run: what every rank trains from."""

    plan: Plan
    config: TrainConfig
    splits: dict[str, list[Case]]
    cached: dict[str, list[CachedCase]]


def train_run(
    data: str | Path,
    run_dir: str | Path,
    *,
    task: str | None = None,
    overrides: list[str] | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    cache_root: str | Path | None = None,
    folds: int = 1,
    fold: int | None = None,
    progress: bool = False,
    command: list[str] | None = None,
    track: str = "off",
    tracking_uri: str | None = None,
    ranks: Ranks | None = None,
    stop_after: Callable[[list[dict]], bool] | None = None,
    evaluate: str | None = "test",
) -> dict:
    """Plan (or reload the plan of a run being resumed), split, preprocess, train, evaluate, report.
    ``command`` is the command line recorded in ``provenance.json`` (the CLI passes ``sys.argv``);
    ``track="mlflow"`` logs the finished run to MLflow (``tracking_uri``, default a store beside it).

    ``fold=i`` (with ``folds=K``) trains fold i alone, so K processes or machines can train the folds at
    once; each joins the run the first one planned. ``folds=K`` on such a run trains what is left and
    evaluates the ensemble. ``ranks`` of several processes train one model together (DDP): rank 0 plans,
    caches and writes the run; the others wait, then train their shares; rank 0 evaluates.

    ``stop_after(history)`` may end training after any epoch; ``evaluate=None`` leaves the evaluation out
    (`medmap tune` trains candidates so, and scores them on validation cases alone)."""
    ranks = ranks or Ranks()
    request = RunRequest(
        Path(data),
        Path(run_dir),
        task,
        list(overrides or []),
        config or TrainConfig(),
        resume,
        Path(cache_root) if cache_root else None,
        folds,
        fold,
        progress,
        command,
        ranks.world_size,
        stop_after,
        evaluate,
    )
    check_device(ranks.device(request.config.device))  # before any planning or caching
    if track not in ("mlflow", "off"):
        raise ConfigError(f"--track {track}: mlflow or off")
    if fold is not None and not 0 <= fold < folds:
        raise ConfigError(f"--fold {fold}: between 0 and {folds - 1} (--folds {folds})")
    if (stop_after is not None or evaluate != "test") and folds > 1:
        raise ConfigError("stopping early and other evaluations apply to one model, not to --folds")
    if ranks.distributed and folds > 1 and fold is None:
        raise ConfigError(
            f"--folds {folds} with {ranks.world_size} processes: train each fold with --fold i (one fold per "
            "process or GPU is faster than DDP on small datasets), then --folds K gathers them"
        )
    ranks.start(ranks.device(request.config.device))
    try:
        run = _prepared(request, ranks)
        if fold is not None:
            return _train_one_fold(request, run, ranks)
        summary = _train_folds(request, run) if folds > 1 else _train_one_model(request, run, ranks)
        if not ranks.is_main:
            return summary
        return {**summary, "tracking": track_run(request.run_dir, track, tracking_uri)}
    finally:
        ranks.stop()


def _prepared(request: RunRequest, ranks: Ranks) -> PreparedRun:
    """Rank 0 prepares the run (`_prepare_run`) while the others wait; then they receive its plan, config
    and split, and the first rank of every other machine caches the training data there. A user error
    on rank 0 is its one line; the others stop without a word."""
    if ranks.is_main:
        try:
            with run_lock(request.run_dir, shared=request.fold is not None or request.folds > 1):
                run = _prepare_run(request)
            ranks.batch_share(run.plan.batch_size)
        except MedmapError:
            ranks.agree(None, "waiting for rank 0 to plan", patient=True)
            raise
        split_ids = {k: [c.case_id for c in v] for k, v in run.splits.items()}
        ranks.agree((run.plan.model_dump_json(), asdict(run.config), split_ids), patient=True)
        ranks.wait("waiting for the cache")
        return run
    prepared = ranks.agree(None, "waiting for rank 0 to plan", patient=True)
    if prepared is None:
        raise LostRankError("rank 0 stopped before training (its error says why)", quiet=True)
    plan, config = Plan.model_validate_json(prepared[0]), TrainConfig(**prepared[1])
    by_id = {c.case_id: c for c in read_dataset(request.data, plan.task).cases}
    splits = {name: [by_id[i] for i in ids] for name, ids in prepared[2].items()}
    cache = PreprocessedCache(request.cache, plan, task_for(plan))
    if ranks.is_local_main:  # another machine: its first rank caches for the ranks on it
        cache.build(splits["train"] + splits["val"], workers=config.workers)
    ranks.wait("waiting for the cache")
    cached = {name: cache.build(splits[name], workers=config.workers) for name in ("train", "val")}
    return PreparedRun(plan, config, splits, cached)


def _train_one_model(request: RunRequest, run: PreparedRun, ranks: Ranks) -> dict:
    """Train (all ranks), then evaluate (rank 0 alone, after the others are done)."""
    task = task_for(run.plan)
    trainer = Trainer(task, run.plan, run.config, request.run_dir, progress=request.progress, ranks=ranks)
    result = trainer.fit(run.cached["train"], run.cached["val"], resume=request.resume, stop_after=request.stop_after)
    if not ranks.is_main:
        return {"rank": ranks.rank, "epochs_run": result["epochs_run"]}
    ranks.stop()
    trained = {"best": result["best"], "best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"]}
    if request.evaluate is None:
        return trained
    summary = _evaluate(
        request.run_dir,
        run,
        trainer.device,
        history=result["history"],
        split=request.evaluate,
        progress=request.progress,
    )
    return {**summary, **trained}




def _prepare_run(request: RunRequest) -> PreparedRun:
    """Rank 0's part: create the run (or reload it: --resume, or joining a run planned for --folds K),
    split, plan, cache, and write intended use and provenance."""
    data, run_dir, folds, config = request.data, request.run_dir, request.folds, request.config
    folder = RunFolder(run_dir)
    joining = folds > 1 and (run_dir / runs.FOLDS).is_file()
    reloading = (request.resume or joining) and (run_dir / runs.PLAN).is_file()
    planned_task = Plan.load(run_dir / runs.PLAN).task if reloading else None
    dataset = read_dataset(data, request.task or planned_task)  # refuses a --task the layout contradicts
    task = task_for(dataset.task)
    if joining:
        planned = folder.read(runs.FOLDS)["folds"]
        if planned != folds:
            raise ConfigError(f"{run_dir}: planned for --folds {planned}, not {folds}")
    if request.resume or joining:
        if not (run_dir / runs.PLAN).is_file():
            raise OutputError(f"{run_dir}: nothing to resume (no plan.json)")
        plan = Plan.load(run_dir / runs.PLAN)
        config = TrainConfig.from_file(run_dir / runs.CONFIG)
        split_ids = folder.split_ids
        by_id = {c.case_id: c for c in dataset.cases}
        missing = [i for ids in split_ids.values() for i in ids if i not in by_id]
        if missing:
            raise DatasetError(f"{data}: case {missing[0]} of the run's split is not in this dataset")
        splits = {name: [by_id[i] for i in ids] for name, ids in split_ids.items()}
    else:
        if run_dir.exists() and any(p.name != runs.LOCK for p in run_dir.iterdir()):
            raise OutputError(f"{run_dir}: exists and is not empty; use --resume to continue it, or a new folder")
        splits = task.split(dataset.cases, config.seed)
        for name in ("train", "val"):
            if not splits[name]:
                raise DatasetError(
                    f"{data}: no {name} cases after splitting by patient ({len(dataset.patients)} patients)"
                )
        run_dir.mkdir(parents=True, exist_ok=True)
        plan = prepare_plan(
            dataset,
            overrides=request.overrides,
            device=config.device,
            progress=request.progress,
            cases=splits["train"] + splits["val"],
        )
        plan = plan.model_copy(update={"notes": [split_note(splits), *plan.notes]})
        plan.save(run_dir / runs.PLAN)
        folder.write(runs.CONFIG, asdict(config))
        folder.write(runs.SPLIT, {k: [c.case_id for c in v] for k, v in splits.items()})
        if folds > 1:
            folder.write(runs.FOLDS, {"folds": folds})
    for name, cases in splits.items():
        task.check_targets(cases, name)
    cache = PreprocessedCache(request.cache, plan, task)
    needed = {"train": splits["train"], "val": splits["val"], **task.evaluation_cache(splits)}
    cached = {
        name: cache.build(cases, workers=config.workers, progress=request.progress) for name, cases in needed.items()
    }
    records = {
        name: [task.use_record(case, c, plan) for case, c in zip(splits[name], cached[name], strict=True)]
        for name in ("train", "val")
    }
    write_intended_use(run_dir, plan, records)
    if not joining or not (run_dir / PROVENANCE).is_file():
        write_provenance(run_dir, data, splits, records, config, request.command, plan.labels, request.processes)
    return PreparedRun(plan, config, splits, cached)


def _train_one_fold(request: RunRequest, run: PreparedRun, ranks: Ranks) -> dict:
    """Fold ``request.fold`` of ``request.folds`` alone (resumed where it stopped); the ensemble waits for
    ``--folds K`` on the run."""
    from medmap.data.splits import kfold

    k = request.folds
    fold = kfold(run.splits["train"] + run.splits["val"], k, seed=run.config.seed)[request.fold]
    task = task_for(run.plan)
    result = _fit_fold(request.run_dir, run.plan, task, run.config, run.cached, fold, request.progress, ranks)
    if not ranks.is_main:
        return {"rank": ranks.rank}
    return {
        "fold": request.fold,
        "folds": k,
        "best_epoch": result["best_epoch"],
        "epochs_run": result["epochs_run"],
        "next": f"when all {k} folds are trained, `medmap train ... --folds {k}` on this run evaluates them",
    }


def _fit_fold(run_dir: Path, plan, task, config, cached, fold, progress, ranks=None) -> dict:
    """Train one fold in ``RUN/fold-<i>/`` (continuing it if interrupted; a finished one is only read).
    A lock on the fold keeps a gathering run from training a fold another process is still training."""
    fold_dir = RunFolder(run_dir).fold(fold.index).path
    ranks = ranks or Ranks()
    cached_by_id = {c.case_id: c for c in cached["train"] + cached["val"]}
    if ranks.is_main:
        fold_dir.mkdir(parents=True, exist_ok=True)
        (fold_dir / runs.SPLIT).write_text(
            json.dumps({"train": [c.case_id for c in fold.train], "val": [c.case_id for c in fold.val]}, indent=1)
        )
    trainer = Trainer(task, plan, config, fold_dir, progress=progress, ranks=ranks)
    folder = RunFolder(fold_dir)
    with run_lock(fold_dir, shared=ranks.is_main):
        if ranks.agree(folder.file(runs.FINISHED).is_file() if ranks.is_main else None):
            return {**folder.read(runs.FINISHED), "history": folder.history} if ranks.is_main else {}
        started = ranks.agree((trainer.checkpoints / runs.LAST).is_file() if ranks.is_main else None)
        result = trainer.fit(
            [cached_by_id[c.case_id] for c in fold.train],
            [cached_by_id[c.case_id] for c in fold.val],
            resume=started,
        )
        if ranks.is_main:
            folder.write(runs.FINISHED, {k: result[k] for k in ("best", "best_epoch", "epochs_run")})
    return result


def _train_folds(request: RunRequest, run: PreparedRun) -> dict:
    """K models on patient-grouped folds of train+val (each trained here unless a ``--fold`` process
    already finished it), then the run evaluated as their ensemble: its operating points are chosen on
    each fold's validation cases predicted by that fold's model (out of fold)."""
    from medmap.data.splits import kfold

    run_dir, plan, config, splits, cached = request.run_dir, run.plan, run.config, run.splits, run.cached
    k, progress, task = request.folds, request.progress, task_for(run.plan)
    histories = []
    for fold in kfold(splits["train"] + splits["val"], k, seed=config.seed):
        if progress:
            from rich.console import Console

            Console(stderr=True).print(
                f"fold {fold.index + 1}/{k}: {len(fold.train)} training, {len(fold.val)} validation cases",
                highlight=False,
            )
        histories.append(_fit_fold(run_dir, plan, task, config, cached, fold, progress)["history"])
    device = check_device(config.device)
    summary = _evaluate(run_dir, run, device, history=histories[0], progress=progress)
    return {**summary, "folds": k, "epochs_run": sum(len(h) for h in histories)}


def _evaluate(
    run_dir: Path,
    run: PreparedRun,
    device,
    *,
    history: list[dict] | None = None,
    split: str = "test",
    out_dir: Path | None = None,
    progress: bool = False,
) -> dict:
    """The run's models scored on ``split`` by the task (`Task.evaluate_run`), in the run's evaluation
    precision, through the object `medmap predict` answers with (`medmap.inference.models.Models`)."""
    task, config = task_for(run.plan), run.config
    job = EvaluationJob(
        run=RunFolder(run_dir),
        plan=run.plan,
        splits=run.splits,
        cached=run.cached,
        seed=config.seed,
        device=str(device),
        precision=resolve_precision(config.evaluation_precision, device),
        dropout=config.dropout,
        monitor=task.monitor,
        history=history,
        split=split,
        out_dir=out_dir,
        progress=progress,
    )
    return task.evaluate_run(job)


def evaluate_run(
    run_dir: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    cache_root: str | Path | None = None,
    precision: str = "float32",
    progress: bool = False,
    into_run: bool = False,
) -> dict:
    """Evaluate a trained run on ``split`` of ``data`` (the run's own split of it), into RUN/evaluation-<split>/
    (``evaluation-<split>-bfloat16/`` when evaluated in bfloat16); ``into_run``: into the run folder itself,
    as training's own evaluation writes it (a search's winner, trained without one)."""
    folder = RunFolder(run_dir)
    run_dir = folder.path
    folder.trained_weights()  # refuses a run that has none
    plan = folder.plan
    task = task_for(plan)
    config = TrainConfig.from_file(folder.file(runs.CONFIG))
    config.evaluation_precision = resolve_precision(precision, config.device)
    dataset = read_dataset(data, plan.task)
    by_id = {c.case_id: c for c in dataset.cases}
    ids = folder.split_ids
    missing = [i for name in ids for i in ids[name] if i not in by_id]
    if missing:
        raise DatasetError(f"{data}: case {missing[0]} of the run's split is not in this dataset")
    splits = {name: [by_id[i] for i in items] for name, items in ids.items()}
    if split not in splits or not splits[split]:
        raise ConfigError(
            f"--split {split}: the run has no {split} cases ({', '.join(k for k in splits if splits[k])})"
        )
    task.check_targets(splits[split], split)
    cache = PreprocessedCache(cache_root or run_dir / "cache", plan, task)
    cached = {
        name: cache.build(cases, workers=config.workers, progress=progress)
        for name, cases in task.evaluation_cache(splits).items()
    }
    suffix = "" if config.evaluation_precision == "float32" else f"-{config.evaluation_precision}"
    out_dir = run_dir if into_run else run_dir / f"evaluation-{split}{suffix}"
    out_dir.mkdir(exist_ok=True)
    run = PreparedRun(plan, config, splits, cached)
    device = check_device(config.device)
    return _evaluate(
        run_dir, run, device, history=folder.read(runs.HISTORY), split=split, out_dir=out_dir, progress=progress
    )
