"""`medmap tune`: candidates trained as ordinary runs, trailing ones stopped early, the rest ranked on the
validation cases, the winner evaluated once on the test cases.

Optuna does the searching: its TPE sampler picks candidates (seeded: the same ``--seed`` samples the
same candidates), its successive-halving pruner stops the ones that trail at rungs of training time (a
third, a ninth of a candidate's budget: fair to networks of different speed), its storages hold the
study (a journal file on one machine by default; an RDB URL such as PostgreSQL when several machines
join). Each candidate is a run folder ``RUNS/trial-NNNN`` that `medmap.training.run.train_run` trains
without a test evaluation; a completed one is scored on its validation cases (`evaluate_run`).

A worker spends its ``--budget`` and no more: it starts a candidate only when that candidate's minimum
still fits, and gives it what is left. Workers killed mid-candidate leave it RUNNING in the study; the
next worker on the same machine (or any worker, once the candidate's heartbeat is stale) hands it to a
new trial that resumes the same run folder, so no candidate is trained twice.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from medmap.errors import ConfigError, MedmapError
from medmap.run_folder import BUDGET as BUDGET_FILE
from medmap.run_folder import HISTORY as HISTORY_FILE
from medmap.run_folder import RunFolder
from medmap.training.config import TrainConfig
from medmap.tuning.scoring import Scoring, scoring_for
from medmap.tuning.space import default_params, searchable, suggest

STUDY = "medmap"
JOURNAL = "study.journal"
BEST = "best.json"
RUNGS = 9  # a candidate's budget in rung units: successive halving at 1/9 and 1/3 of it (reduction 3)
MIN_EPOCHS = 3  # a candidate's budget is cut into at least this many epochs (validated: its curve is pruned on);
# together they must hold one epoch of the default plan's steps, or the search says what budget it needs
STALE_AFTER_S = 600  # a RUNNING trial of another machine whose heartbeat is this old (beyond its budget) is lost


@dataclass(frozen=True)
class SearchRequest:
    data: Path
    runs: Path
    budget_seconds: float
    task: str | None = None  # as `medmap train --task`: otherwise the layout says the task
    trial_seconds: float | None = None  # one candidate's training budget (default a quarter of the budget)
    overrides: tuple[str, ...] = ()  # plan values every candidate keeps (``--set``)
    config: TrainConfig = field(default_factory=TrainConfig)
    storage: str | None = None  # default: the journal file RUNS/study.journal
    study: str = STUDY
    cache_root: Path | None = None  # default RUNS/cache, shared by the candidates
    progress: bool = False
    evaluate_winner: bool = True  # the winner scored once on the test cases when the search has ended

    @property
    def candidate_seconds(self) -> float:
        return self.trial_seconds or self.budget_seconds / 4

    @property
    def cache(self) -> Path:
        return self.cache_root or self.runs / "cache"


def open_study(request: SearchRequest):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if request.storage is None or request.storage.endswith(".journal"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(request.storage) if request.storage else request.runs / JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(path)))
    else:
        storage = request.storage
    sampler = optuna.samplers.TPESampler(seed=request.config.seed, n_startup_trials=4)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.create_study(
        study_name=request.study,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction="maximize",
        load_if_exists=True,
    )


def tune(request: SearchRequest) -> dict:
    """Run this worker's share of the search; the last worker out ranks it and evaluates the winner."""
    import optuna

    from medmap.data.layouts import read_dataset
    from medmap.run_folder import run_lock
    from medmap.tasks import task_for
    from medmap.training.run import prepare_plan

    started = time.monotonic()
    deadline = started + request.budget_seconds
    if request.candidate_seconds > request.budget_seconds:
        raise ConfigError(
            f"--trial-budget {request.candidate_seconds:.0f} s is more than the --budget {request.budget_seconds:.0f} s"
        )
    if request.task is not None:
        searchable(request.task)
    dataset = read_dataset(request.data, request.task)
    searchable(dataset.task)
    task = task_for(dataset.task)
    splits = task.split(dataset.cases, request.config.seed)  # the split every candidate trains on
    plan = prepare_plan(
        dataset,
        overrides=list(request.overrides),
        device=request.config.device,
        progress=request.progress,
        cases=splits["train"] + splits["val"],
    )
    scoring = scoring_for(plan.task)
    partial = any(n.startswith("partial_annotation:") for n in plan.notes)
    request.runs.mkdir(parents=True, exist_ok=True)
    with run_lock(request.runs, shared=True):  # workers starting together: one enqueues the default
        study = open_study(request)
        if not study.trials:
            study.enqueue_trial(default_params(plan, request.config), user_attrs={"default": True})
        _hand_over_lost_trials(study)
    reserve = _evaluation_seconds(study)
    while True:
        left = deadline - time.monotonic()
        minimum = _minimum_seconds(study)
        if left - reserve < (minimum or 0.0) or left <= 0:
            break
        trial = study.ask()
        outcome = _train_candidate(trial, request, plan, task, scoring, partial, left - reserve)
        if outcome.state == "complete":
            study.tell(trial, outcome.score)
        else:
            states = optuna.trial.TrialState
            study.tell(trial, state=states.PRUNED if outcome.state == "pruned" else states.FAIL)
        if outcome.error:
            raise outcome.error
        reserve = _evaluation_seconds(study)
    from medmap.tuning.leaderboard import rank, write_leaderboard

    board = rank(study, request, scoring)
    write_leaderboard(request.runs, board)
    others = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
    if others:
        board["note"] = f"{len(others)} candidate(s) still training in other workers: the last one out ranks the search"
        return board
    if request.evaluate_winner and board.get("winner") is not None:
        board["test"] = _evaluate_winner(request, board)
        write_leaderboard(request.runs, board)
    return board


@dataclass
class Outcome:
    state: str  # complete, pruned, stopped (the budget ran out), failed
    score: float | None = None
    error: Exception | None = None


def _train_candidate(trial, request: SearchRequest, plan, task, scoring: Scoring, partial, seconds_left) -> Outcome:
    """Train one candidate into its run folder (resuming a lost trial's folder), with pruning checks after
    each epoch, then score it on the validation cases."""
    from medmap.tuning.space import Candidate

    folder_name = trial.user_attrs.get("run") or f"trial-{trial.number:04d}"
    folder = request.runs / folder_name
    trial.set_user_attr("run", folder_name)
    trial.set_user_attr("worker", _worker())
    trial.set_user_attr("alive", time.time())
    candidate: Candidate = suggest(trial, plan, task, request.config, partial)
    trial.set_user_attr("settings", candidate.settings)
    budget = min(request.candidate_seconds, seconds_left)
    trial.set_user_attr("budget_seconds", round(budget, 1))
    config = replace(candidate.config(request.config), budget_seconds=budget, min_epochs=MIN_EPOCHS)
    unit = request.candidate_seconds / RUNGS
    why: dict = {}

    def stop_after(history: list[dict]) -> bool:
        trial.set_user_attr("alive", time.time())
        elapsed = sum(h["seconds"] for h in history)
        if trial.user_attrs.get("default") and len(history) == 1:
            timed = RunFolder(folder).read(BUDGET_FILE) or {}
            steps, step = timed.get("planned_steps_per_epoch", 0), timed.get("seconds_per_step", 0.0)
            validation, timing = timed.get("seconds_per_validation", 0.0), timed.get("measured_in_seconds", 0.0)
            need = steps * step + MIN_EPOCHS * validation + timing  # one plan epoch of steps, never fewer
            trial.set_user_attr("minimum_seconds", round(need, 1))
            if need > request.candidate_seconds:
                why["error"] = ConfigError(
                    f"a candidate needs at least {MIN_EPOCHS} epochs holding one epoch of the default plan's "
                    f"steps ({steps} of {step:.2f} s) and their validations ({validation:.1f} s each), after "
                    f"{timing:.0f} s of timing: --trial-budget of {need:.0f} s or more, and a --budget of at "
                    f"least {3 * need:.0f} s for three candidates (given {request.budget_seconds:.0f} s)"
                )
                return True
        value = history[-1]["val"].get(scoring.monitor)
        step = int(elapsed // unit)
        if value is not None and value == value and step not in trial.user_attrs.get("_steps", []):
            trial.report(float(value), step)
            trial.set_user_attr("_steps", [*trial.user_attrs.get("_steps", []), step])
            if trial.should_prune():
                why["pruned"] = f"pruned: trailing after {elapsed:.0f} s of training ({step}/{RUNGS} of its budget)"
                return True
        return False

    resume = (folder / "plan.json").is_file() and (folder / "checkpoints" / "last.pt").is_file()
    if folder.exists() and not resume:
        shutil.rmtree(folder)  # a lost trial that had not yet started training: begin it again
    try:
        from medmap.training.run import evaluate_run, train_run

        t0 = time.monotonic()
        train_run(
            request.data,
            folder,
            task=plan.task,
            overrides=[*request.overrides, *candidate.overrides],
            config=config,
            resume=resume,
            cache_root=request.cache,
            progress=request.progress,
            command=["medmap", "tune", str(request.data), "-o", str(request.runs)],
            stop_after=stop_after,
            evaluate=None,
        )
        history = RunFolder(folder).read(HISTORY_FILE)
        trial.set_user_attr("history", [[round(h["seconds"], 2), h["val"].get(scoring.monitor)] for h in history])
        trained = sum(h["seconds"] for h in history)
        trial.set_user_attr("trained_seconds", round(trained, 1))
        trial.set_user_attr("overhead_seconds", round(max(time.monotonic() - t0 - trained, 0.0), 1))
        if "error" in why:
            trial.set_user_attr("stopped", str(why["error"]))
            return Outcome("failed", error=why["error"])
        if "pruned" in why:
            trial.set_user_attr("stopped", why["pruned"])
            return Outcome("pruned")
        t0 = time.monotonic()
        evaluate_run(folder, request.data, split="val", cache_root=request.cache, progress=request.progress)
        trial.set_user_attr("evaluation_seconds", round(time.monotonic() - t0, 1))
        scores = scoring.read(folder / "evaluation-val")
        trial.set_user_attr("val_cases", scores)
        trial.set_user_attr("stopped", "trained to its budget or early stopping")
        return Outcome("complete", score=scoring.statistic(list(scores.values())))
    except MedmapError as exc:
        trial.set_user_attr("stopped", f"failed: {exc}")
        return Outcome("failed")


def _minimum_seconds(study) -> float | None:
    """A candidate's minimum (see MIN_EPOCHS), once the default plan has trained its first epoch."""
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("default") and "minimum_seconds" in t.user_attrs:
            return t.user_attrs["minimum_seconds"]
    return None


def _evaluation_seconds(study) -> float:
    """Time kept back beside a candidate's training: its planning and caching, its scoring on the
    validation cases, and the winner's test evaluation at the end (the longest of each so far)."""
    trials = study.get_trials(deepcopy=False)
    evaluation = max((t.user_attrs.get("evaluation_seconds", 0.0) for t in trials), default=0.0)
    overhead = max((t.user_attrs.get("overhead_seconds", 0.0) for t in trials), default=0.0)
    return overhead + 2 * evaluation


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str) -> bool | None:
    """Whether the worker process is alive: known on this machine only (None elsewhere)."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _hand_over_lost_trials(study) -> None:
    """RUNNING trials whose worker is gone: failed in the study, and their candidate enqueued again with
    the same run folder, which the next trial resumes."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        alive = _alive(worker)
        if alive is None:
            heartbeat = t.user_attrs.get("alive", 0.0)
            alive = time.time() - heartbeat < t.user_attrs.get("budget_seconds", 0.0) + STALE_AFTER_S
        if alive:
            continue
        study._storage.set_trial_user_attr(t._trial_id, "stopped", f"worker {worker} lost; resumed by a later trial")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        attrs = {"run": t.user_attrs["run"], "resumes": t.number}
        if t.user_attrs.get("default"):
            attrs["default"] = True
        study.enqueue_trial(t.params, user_attrs=attrs)


def _evaluate_winner(request: SearchRequest, board: dict) -> dict:
    """The winner scored once on the test cases, into its own folder as `medmap train` would; its
    provenance names the search."""
    from medmap import run_folder as runs
    from medmap.training.run import evaluate_run

    folder = request.runs / board["winner"]["run"]
    summary = evaluate_run(folder, request.data, split="test", cache_root=request.cache, into_run=True)
    record = runs.RunFolder(folder)
    provenance = record.read(runs.PROVENANCE) or {}
    provenance["search"] = {
        "study": request.study,
        "storage": request.storage or str(request.runs / JOURNAL),
        "trial": board["winner"]["number"],
        "leaderboard": str(request.runs / "leaderboard.html"),
        "candidates": len(board["candidates"]),
    }
    record.write(runs.PROVENANCE, provenance)
    (request.runs / BEST).write_text(json.dumps({**board["winner"], "folder": str(folder)}, indent=1))
    return {"split": summary.get("split"), "report": summary.get("report")}
