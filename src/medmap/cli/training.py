"""Commands that plan, train, search and evaluate: plan, preprocess, train, tune, pretrain, evaluate, report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from medmap.cli.app import app, out
from medmap.errors import ConfigError, MedmapError, OutputError


@app.command()
def plan(
    data: Annotated[Path, typer.Argument(help="Dataset folder (dataset.json), .npz or .csv manifest.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to save the plan (JSON).")] = Path("plan.json"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: key=value (repeatable).")] = None,
    device: Annotated[str, typer.Option(help="Plan for 'cpu' or 'cuda'.")] = "cpu",
    budget_mb: Annotated[int | None, typer.Option(help="Memory budget for a training step, MB.")] = None,
    task: Annotated[
        str | None, typer.Option(help="detection: read a lesion table per image (otherwise the layout says the task).")
    ] = None,
) -> None:
    """Fingerprint a dataset and derive its training plan (every decision explained); print and save it."""
    from medmap.data.fingerprint import compute_fingerprint
    from medmap.data.layouts import read_dataset
    from medmap.training.planner import plan_dataset

    if device not in ("cpu", "cuda"):
        raise MedmapError(f"--device {device}: choose cpu or cuda")
    dataset = read_dataset(data, task)
    fingerprint = compute_fingerprint(dataset, progress=True)
    result = plan_dataset(dataset, fingerprint, device=device, budget_mb=budget_mb)
    if set_:
        result = result.with_overrides(set_)
    out.print_json(result.model_dump_json(exclude={"notes"}))
    for note in result.notes:
        out.print(f"  - {note}", markup=False, highlight=False)
    result.save(output)
    out.print(f"saved {output}")


@app.command()
def preprocess(
    data: Annotated[Path, typer.Argument(help="Dataset folder (dataset.json), .npz or .csv manifest.")],
    plan_file: Annotated[Path, typer.Option("--plan", help="Plan JSON from `medmap plan`.")],
    cache: Annotated[Path, typer.Option(help="Cache root; a sub-folder per dataset and plan.")] = Path(".medmap-cache"),
    workers: Annotated[int, typer.Option(help="Processes preprocessing in parallel.")] = 2,
) -> None:
    """Resample, normalise and crop every training case once into the on-disk cache the loader reads."""
    from medmap.data.cache import PreprocessedCache
    from medmap.data.layouts import read_dataset
    from medmap.plan import Plan
    from medmap.tasks import task_for

    the_plan = Plan.load(plan_file)
    dataset = read_dataset(data, the_plan.task)  # a detection plan reads its lesion table per image
    if the_plan.dataset != dataset.name:
        raise MedmapError(f"{plan_file}: plan is for dataset {the_plan.dataset!r}, not {dataset.name!r}")
    store = PreprocessedCache(cache, the_plan, task_for(the_plan))
    cases = [c for c in dataset.cases if c.split != "test"]
    todo = sum(not store.is_cached(c) for c in cases)
    store.build(cases, workers=workers, progress=True)
    size = sum(p.stat().st_size for p in store.folder.glob("*.npy")) / 2**20
    out.print(
        f"{len(cases)} cases in {store.folder} ({todo} preprocessed now, {len(cases) - todo} reused; {size:.0f} MB)"
    )


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Dataset folder (dataset.json), .npz or .csv manifest.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Run folder (new, or the one to --resume).")],
    task: Annotated[
        str | None,
        typer.Option(help="classification, segmentation, or detection (a lesion table's findings per image)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Network. Classification: smallcnn, resnet18/34/50, densenet121. "
            "Segmentation: unet, resunet18/34/50, deeplabv3plus."
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping may end sooner).")] = 30,
    budget: Annotated[
        str | None,
        typer.Option(help="Training time budget, e.g. 15m, 90s, 1h: the epochs are planned to end within it."),
    ] = None,
    learning_rate: Annotated[
        float | None,
        typer.Option(
            "--lr", help="Peak learning rate (default: AdamW 3e-3 segmentation, 1e-3 classification; SGD 1e-2)."
        ),
    ] = None,
    weight_decay: Annotated[float, typer.Option(help="Weight decay (decoupled for AdamW).")] = 1e-4,
    optimizer: Annotated[str, typer.Option(help="adamw, or sgd (nnU-Net's: Nesterov, momentum 0.99).")] = "adamw",
    schedule: Annotated[str, typer.Option(help="cosine, or poly (nnU-Net's) decay after the warm-up.")] = "cosine",
    patience: Annotated[int, typer.Option(help="Epochs without a better validation metric before stopping.")] = 10,
    samples_per_epoch: Annotated[
        int | None, typer.Option(help="Patches per epoch (default: the plan's iterations_per_epoch x batch).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed: a CPU run with the same seed gives the same weights.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run exactly where it stopped.")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a plan field: key=value (repeatable).")
    ] = None,
    cache: Annotated[Path | None, typer.Option(help="Preprocessing cache root (default RUN/cache).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    workers: Annotated[int, typer.Option(help="Data loading / preprocessing processes.")] = 2,
    pretrained: Annotated[
        Path | None, typer.Option(help="Local weights (torchvision/timm/MONAI/medmap names) to start from.")
    ] = None,
    freeze_encoder_epochs: Annotated[int, typer.Option(help="Train only the classifier head this many epochs.")] = 0,
    folds: Annotated[int, typer.Option(help="K-fold cross-validation; evaluation ensembles the K models.")] = 1,
    fold: Annotated[
        int | None,
        typer.Option(help="Train only fold i of --folds K (run K of these at once); then --folds K gathers them."),
    ] = None,
    nproc_per_node: Annotated[
        int,
        typer.Option(
            "--nproc-per-node",
            help="Training processes on this machine (DDP through torchrun: one per GPU, or CPU processes).",
        ),
    ] = 1,
    dist_timeout: Annotated[
        str, typer.Option(help="Distributed training: a rank silent this long (e.g. 30m) is taken as hung.")
    ] = "30m",
    track: Annotated[
        str, typer.Option(help="mlflow: log the finished run to MLflow (`mlflow ui` shows it); off: don't.")
    ] = "mlflow",
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI [sqlite:///<folder of the run>/mlflow.db].")
    ] = None,
) -> None:
    """Train a model on a dataset with its automatic plan, then evaluate it on the held-out patients."""
    from datetime import timedelta

    from medmap.training.config import TrainConfig
    from medmap.training.distributed import Ranks, launch
    from medmap.training.run import train_run

    ranks = Ranks.from_launcher(timeout=timedelta(seconds=parse_duration(dist_timeout, "--dist-timeout")))
    if nproc_per_node > 1 and not ranks.distributed:  # start the ranks; each runs this command without it
        raise typer.Exit(launch(without_option(sys.argv[1:], "--nproc-per-node"), nproc_per_node))

    overrides = list(set_ or []) + ([f"network={model}"] if model else [])
    config = TrainConfig(
        epochs=epochs,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        optimizer=optimizer,
        schedule=schedule,
        budget_seconds=parse_duration(budget) if budget else None,
        patience=patience,
        samples_per_epoch=samples_per_epoch,
        seed=seed,
        device=device,
        workers=workers,
        pretrained=str(pretrained) if pretrained else None,
        freeze_encoder_epochs=freeze_encoder_epochs,
    )
    summary = train_run(
        data,
        output,
        task=task,
        overrides=overrides,
        config=config,
        resume=resume,
        cache_root=cache,
        folds=folds,
        fold=fold,
        progress=True,
        command=sys.argv,
        ranks=ranks,
        track=quiet_tracker(track),
        tracking_uri=tracking_uri,
    )
    if "metrics" not in summary:  # a rank other than 0, or one fold of several: nothing evaluated here
        if "next" in summary:
            out.print(f"fold {summary['fold']} trained ({summary['epochs_run']} epochs); {summary['next']}")
        return
    _print_summary(output, summary)
    if summary.get("tracking"):
        out.print(f"tracked in MLflow: mlflow ui --backend-store-uri {summary['tracking']}", highlight=False)


@app.command()
def tune(
    data: Annotated[
        Path, typer.Argument(help="Segmentation or classification dataset (folder, DICOM studies with labels, CSV).")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Search folder: RUNS/trial-NNNN, leaderboard.")],
    budget: Annotated[str, typer.Option(help="This worker's time, e.g. 2h, 45m: spent, not exceeded.")],
    task: Annotated[
        str | None, typer.Option(help="classification or segmentation (otherwise the layout says the task).")
    ] = None,
    trial_budget: Annotated[
        str | None, typer.Option(help="One candidate's training time at most [a quarter of --budget].")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage shared by the workers: a .journal file, or an RDB URL (postgresql://..., "
            "sqlite:///...) [RUNS/study.journal]."
        ),
    ] = None,
    study: Annotated[str, typer.Option(help="Study name inside the storage.")] = "medmap",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="A plan field every candidate keeps: key=value (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, of training and of the sampled candidates.")] = 0,
    cache: Annotated[Path | None, typer.Option(help="Preprocessing cache root [RUNS/cache].")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    workers: Annotated[int, typer.Option(help="Data loading / preprocessing processes.")] = 2,
) -> None:
    """Search the plans medmap can make for a dataset (network, width, optimiser, learning rate,
    augmentation; the loss for segmenters, label smoothing for classifiers),
    stop trailing candidates early, rank the rest on the validation cases, evaluate the winner once on
    the test cases. Start it on several machines with one --storage to share the search; run the same
    command again to resume it."""
    from medmap.training.config import TrainConfig
    from medmap.tuning.search import SearchRequest
    from medmap.tuning.search import tune as run_search

    request = SearchRequest(
        data=data,
        runs=output,
        budget_seconds=parse_duration(budget),
        task=task,
        trial_seconds=parse_duration(trial_budget, "--trial-budget") if trial_budget else None,
        overrides=tuple(set_ or []),
        config=TrainConfig(seed=seed, device=device, workers=workers),
        storage=storage,
        study=study,
        cache_root=cache,
        progress=True,
    )
    board = run_search(request)
    done = [c for c in board["candidates"] if c["state"] == "complete"]
    pruned = [c for c in board["candidates"] if c["state"] == "pruned"]
    out.print(f"{len(board['candidates'])} candidates: {len(done)} completed, {len(pruned)} stopped early")
    winner = board.get("winner")
    if winner:
        score = f"validation {board['metric']} {winner['score']:.3f}"
        out.print(f"winner: {output / winner['run']} ({score}; {winner['why']})")
    if board.get("undertrained"):
        out.print(f"warning: {board['undertrained']}", highlight=False)
    if board.get("note"):
        out.print(board["note"])
    out.print(f"leaderboard: {output / 'leaderboard.html'}", highlight=False)


def without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE`` (what the launcher hands to each rank)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def quiet_tracker(track: str) -> str:
    """MLflow's own INFO lines (database migrations) are not the user's business on the command line."""
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return track


def parse_duration(text: str, option: str = "--budget") -> float:
    """'15m' / '90s' / '1.5h' / '600' (seconds) -> seconds."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{option} {text!r}: expected a duration such as 15m, 90s or 1h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def _print_summary(run: Path, summary: dict) -> None:
    """The evaluated split's figures, in the words of the run's task (`Task.summary_lines`)."""
    from medmap.run_folder import RunFolder
    from medmap.tasks import task_for

    for line in task_for(RunFolder(run).plan).summary_lines(summary):
        out.print(line)


@app.command()
def pretrain(
    data: Annotated[Path, typer.Argument(help="Dataset (labels are ignored): folder, .npz or .csv manifest.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Weights file to write (.pt).")],
    epochs: Annotated[int, typer.Option(help="Pretraining epochs.")] = 20,
    views: Annotated[
        str, typer.Option(help="strong (the plan's augmentation, 1.5x) or geometric (flips and rotations only).")
    ] = "strong",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    model: Annotated[str | None, typer.Option(help="Network, as for train (must match the later training).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a plan field: key=value.")] = None,
    cache: Annotated[Path | None, typer.Option(help="Preprocessing cache root.")] = None,
    workers: Annotated[int, typer.Option(help="Data loading / preprocessing processes.")] = 2,
) -> None:
    """Self-supervised (SimCLR) pretraining on unlabelled images; `train --pretrained` accepts the result."""
    from medmap.data.cache import PreprocessedCache
    from medmap.data.layouts import read_dataset
    from medmap.tasks import task_for
    from medmap.training.pretrain import VIEWS
    from medmap.training.pretrain import pretrain as run_pretrain
    from medmap.training.run import prepare_plan

    if output.exists():
        raise MedmapError(f"{output}: exists; refusing to overwrite")
    if views not in VIEWS:
        raise ConfigError(f"--views {views}: choose one of {', '.join(VIEWS)}")
    dataset = read_dataset(data)
    overrides = list(set_ or []) + ([f"network={model}"] if model else [])
    the_plan = prepare_plan(dataset, overrides=overrides, device="cpu", progress=True)
    cases = [c for c in dataset.cases if c.split != "test"]
    cached = PreprocessedCache(cache or output.parent / ".medmap-cache", the_plan, task_for(the_plan)).build(
        cases, workers=workers, progress=True
    )
    result = run_pretrain(
        cached, the_plan, output, views=views, epochs=epochs, seed=seed, workers=workers, progress=True
    )
    out.print(
        f"wrote {result['weights']} (contrastive loss {result['history'][0]['loss']:.3f} -> "
        f"{result['history'][-1]['loss']:.3f}); use it with: medmap train ... --pretrained {output}"
    )


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A trained run folder.")],
    data: Annotated[Path, typer.Argument(help="The dataset it was trained on.")],
    split: Annotated[str, typer.Option(help="Which of the run's splits to evaluate: test, val or train.")] = "test",
    cache: Annotated[Path | None, typer.Option(help="Preprocessing cache root (default RUN/cache).")] = None,
    precision: Annotated[
        str, typer.Option(help="float32, or bfloat16 to measure what `medmap predict` does in bfloat16.")
    ] = "float32",
) -> None:
    """Evaluate a trained run: metrics with confidence intervals, per-case CSV, HTML report."""
    from medmap.training.run import evaluate_run

    _print_summary(run, evaluate_run(run, data, split=split, cache_root=cache, precision=precision, progress=True))


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (or report.html files) to put on one page.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML file to write.")],
) -> None:
    """One HTML page with the evaluation reports of several runs (e.g. the classifier and the segmenter)."""
    from medmap.evaluation.report import combine_reports

    pages = [r / "report.html" if r.is_dir() else r for r in runs]
    missing = [p for p in pages if not p.is_file()]
    if missing:
        raise OutputError(f"{missing[0]}: no such report (train or evaluate the run first)")
    out.print(f"report: {combine_reports(pages, output)}")
