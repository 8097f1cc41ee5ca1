"""The ``medmap`` command line. Thin: parses arguments, calls the library, prints results.

Errors the user can cause (`MedmapError`) are printed as one line, ``error: ...``, with exit status 1;
problems that do not stop the work (`MedmapWarning`) as ``warning: ...``. No tracebacks for those.
"""

from __future__ import annotations

import json
import sys
import threading
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medmap import __version__
from medmap.errors import ConfigError, MedmapError, MedmapWarning, OutputError

app = typer.Typer(
    name="medmap",
    help="Medical images in, trained and evaluated models out, DICOM answers back to the PACS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes: do not squeeze tables to 80


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, MedmapWarning):
        sys.stderr.write(f"warning: {_one_line(message)}\n")


def _version(value: bool) -> None:
    if value:
        out.print(f"medmap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """medmap: deep learning that maps medical images to answers."""


def _fmt(values, digits: int = 3) -> str:
    return "x".join(f"{v:.{digits}g}" for v in values)


def _short_uid(uid: str) -> str:
    """Enough of a UID to tell series apart in a table (``--json`` prints it whole)."""
    return uid if len(uid) <= 20 else f"...{uid[-17:]}"


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="A DICOM folder or file, or a NIfTI/NRRD/MHA/PNG file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the image series found (no patient identifiers): modality, size, spacing, orientation, problems.

    Sizes and spacings are shown x (columns) by y (rows) by z (slices).
    """
    from medmap.io.inventory import describe

    rows, refused = describe(path, progress=not as_json)
    if as_json:
        out.print_json(json.dumps(rows))
        _refuse(refused)
        return
    table = Table(title=str(path), show_lines=False)
    for col in ("#", "series", "modality", "body part", "size x*y*z", "spacing mm", "orientation", "files", "problems"):
        table.add_column(col, overflow="fold", no_wrap=col != "problems")
    for i, r in enumerate(rows, 1):
        table.add_row(
            str(i),
            _short_uid(r["series"]),
            r["modality"],
            r["body_part"] or "-",
            _fmt(r["size"], 6) if r["size"] else "-",
            _fmt(r["spacing_mm"]) if r["spacing_mm"] else "-",
            r["orientation"],
            str(r["instances"]),
            "; ".join(r["problems"]) or "-",
        )
    out.print(table)
    _refuse(refused)


def _refuse(refused: list[str]) -> None:
    """Each series `medmap info` found unloadable as an ``error:`` line; exit status 1 if any."""
    for message in refused:
        sys.stderr.write(f"error: {_one_line(message)}\n")
    if refused:
        raise typer.Exit(1)


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="DICOM folder/file, NIfTI, NRRD, MHA or PNG.")],
    target: Annotated[Path, typer.Argument(help="Output file; the suffix picks the format (.nii.gz, .nrrd, .mha).")],
    series: Annotated[
        str | None, typer.Option("--series", help="SeriesInstanceUID, when SOURCE holds several.")
    ] = None,
    image: Annotated[
        Path | None, typer.Option("--image", help="RTSTRUCT: the series it outlines (default: found beside it).")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help='RTSTRUCT: labels.json, {"1": "Lung_L", ...} (default: file order).'),
    ] = None,
) -> None:
    """Convert an image (a DICOM series included) to NIfTI/NRRD/MHA with its geometry, an RTSTRUCT or SEG
    to the label map on its series' grid (with a JSON beside it naming each value), or a TID 1500 report
    to a lesion table (.csv)."""
    from medmap.io.labels.objects import is_label_object
    from medmap.io.load import load, save

    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise OutputError(f"{target}: output would overwrite the input")
    if is_label_object(source):
        _convert_label_object(source, target, image, labels)
        return
    if _is_report(source):
        _convert_report(source, target, image)
        return
    img = load(source, series, progress=True)
    save(img, target)
    out.print(f"wrote {target}: {img!r}")


def _is_report(path: Path) -> bool:
    import pydicom

    from medmap.io.labels.sr import is_sr

    try:
        return path.is_file() and is_sr(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]))
    except Exception:  # not DICOM: the image readers decide
        return False


def _convert_report(source: Path, target: Path, image: Path | None) -> None:
    """A TID 1500 report's marks as a lesion table (the columns ``medmap train --task detection`` reads)."""
    import csv

    import pydicom

    from medmap.io.labels.objects import referenced_series
    from medmap.io.labels.sr import marked_series_uid, read_lesion_report

    if target.suffix != ".csv":
        raise OutputError(
            f"{source}: a Structured Report is marks without pixel data; "
            f"it converts to a lesion table (.csv), not {target.name}"
        )
    folder = image if image is not None else referenced_series(source, marked_series_uid(source))
    files = [folder] if folder.is_file() else sorted(p for p in folder.iterdir() if p.is_file())
    headers = {}
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM: not one of the marked images
            continue
        headers[str(ds.get("SOPInstanceUID", ""))] = ds
    report = read_lesion_report(source, headers)
    with open(target, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "x", "y", "z", "diameter_mm", "finding", "evaluation", "identifier"])
        for m in report.marks:
            size = "" if m.diameter_mm is None else round(m.diameter_mm, 3)
            row = [folder, *(round(v, 3) for v in m.position), size, m.finding, "; ".join(m.evaluations), m.identifier]
            writer.writerow(row)
        if report.negative and not report.marks:
            writer.writerow([folder, "", "", "", "", "", "no finding", ""])
    out.print(f"wrote {target}: {len(report.marks)} mark(s) on {folder}")
    for why in report.skipped:
        out.print(f"  not converted: {why}", markup=False, highlight=False)


def _convert_label_object(source: Path, target: Path, image: Path | None, labels: Path | None) -> None:
    import json

    from medmap.io.labels.names import read_label_names
    from medmap.io.labels.objects import load_label_object
    from medmap.io.load import load, save

    grid = load(image, progress=True) if image is not None else None
    mask, names, match = load_label_object(source, grid, read_label_names(labels) if labels else None)
    save(mask, target)
    sidecar = target.with_name(target.name.split(".")[0] + ".labels.json")
    sidecar.write_text(json.dumps({str(k): v for k, v in names.items()}, indent=1))
    out.print(f"wrote {target}: {mask!r}")
    for name, value in sorted(match.values.items(), key=lambda kv: kv[1]):
        out.print(f"  {value}: {names[value]} <- {name} ({int((mask.array == value).sum())} voxels)")
    for name in match.unmatched:
        out.print(f"  not converted (no label takes it): {name}")
    for value in match.missing:
        out.print(f"  label {value} ({names[value]}): no structure in this object")
    out.print(f"names: {sidecar}")


@app.command()
def anonymize(
    source: Annotated[Path, typer.Argument(help="A DICOM file or folder tree (never modified).")],
    target: Annotated[Path, typer.Argument(help="New or empty output folder, outside SOURCE.")],
    date_shift_days: Annotated[
        int | None, typer.Option(help="Shift every date by this many days instead of removing dates.")
    ] = None,
    keep_private: Annotated[bool, typer.Option(help="Keep private attributes (removed by default).")] = False,
    keep_structure_names: Annotated[
        bool, typer.Option(help="Keep RTSTRUCT ROI names (the profile empties them; they are the labels).")
    ] = False,
    key_file: Annotated[
        Path | None,
        typer.Option(help="File with a secret key: the same key gives the same new UIDs and pseudonyms across runs."),
    ] = None,
) -> None:
    """De-identify DICOM files (PS3.15 Basic Application Level Confidentiality Profile)."""
    from medmap.io.anonymize import anonymize_tree

    secret = None
    if key_file is not None:
        if not key_file.is_file():
            raise MedmapError(f"{key_file}: key file not found")
        secret = key_file.read_bytes()
        if len(secret) < 16:
            raise MedmapError(f"{key_file}: key must hold at least 16 bytes")
    report = anonymize_tree(
        source,
        target,
        secret=secret,
        date_shift_days=date_shift_days,
        keep_private=keep_private,
        keep_structure_names=keep_structure_names,
        progress=True,
    )
    out.print(
        f"de-identified {len(report.written)} file(s) into {target}"
        + (f"; left out {len(report.skipped)} non-DICOM file(s)" if report.skipped else "")
    )
    if report.failed:
        path, why = report.failed[0]
        raise MedmapError(f"{len(report.failed)} file(s) could not be de-identified, e.g. {path}: {why}")


@app.command("demo-data")
def demo_data(
    target: Annotated[Path, typer.Argument(help="New or empty folder for the generated data.")],
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")] = 0,
    small: Annotated[bool, typer.Option(help="A few cases of each kind, for a quick look or a test.")] = False,
) -> None:
    """Generate the built-in demo data: chest CT with nodules, abdominal CT with liver tumours, radiographs."""
    from medmap.data.demo import SMALL, DemoSize, write_demo_data
    from medmap.evaluation.baseline import size_baseline

    summary = write_demo_data(target, seed=seed, size=SMALL if small else DemoSize(), progress=True)
    out.print(f"wrote demo data to {target}:")
    out.print(f"  chest_ct/ + nodules.csv   {summary.nodules} lung nodules ({summary.malignant} malignant)")
    out.print(f"  liver/ (MSD) + liver_dicom/   {summary.liver_cases} abdominal CT volumes")
    out.print(f"  radiographs/ + radiographs.csv   {summary.radiographs} chest radiographs")
    out.print(f"  {size_baseline(target / 'nodules.csv')}")


dataset_app = typer.Typer(
    help="Inspect and validate datasets (MSD, nnU-Net raw, MedMNIST npz, CSV manifest, DICOM studies with their "
    "RTSTRUCT / SEG / SR), or pull one from a PACS.",
    no_args_is_help=True,
)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("check")
def dataset_check(
    path: Annotated[Path, typer.Argument(help="Dataset folder (dataset.json), .npz or .csv manifest.")],
    task: Annotated[
        str | None, typer.Option(help="detection: read a lesion table per image (otherwise the layout says the task).")
    ] = None,
) -> None:
    """List every problem in a dataset with the case named; exit status 1 if there is any."""
    from medmap.data.check import check_dataset
    from medmap.data.layouts import read_dataset
    from medmap.tasks import task_for

    dataset = read_dataset(path, task)
    task = task_for(dataset.task)
    problems = check_dataset(dataset, task, progress=True)
    out.print(
        f"{dataset.name}: {dataset.layout} layout, {dataset.task}, {len(dataset.cases)} cases, "
        f"{len(dataset.patients)} patients, {task.targets}: {dataset.labels}"
    )
    _print_structures(dataset)
    if not problems:
        out.print("no problems found")
        return
    for problem in problems:
        out.print(f"  {problem}", markup=False, highlight=False)
    raise MedmapError(f"{path}: {len(problems)} problem(s) found")


@dataset_app.command("pull")
def dataset_pull(
    source: Annotated[str, typer.Option("--from", help="The PACS: AET@HOST:PORT (DIMSE) or a DICOMweb root URL.")],
    target: Annotated[Path, typer.Option("-o", "--out", help="Dataset folder: new, or an earlier pull's to resume.")],
    method: Annotated[str, typer.Option(help="DIMSE retrieval: get (C-GET) or move (C-MOVE to --listen).")] = "get",
    ae: Annotated[str, typer.Option(help="medmap's AE title (the PACS must know it).")] = "MEDMAP",
    listen: Annotated[str, typer.Option(help="HOST:PORT of medmap's storage SCP during C-MOVE.")] = "0.0.0.0:11112",
    patient_id: Annotated[str, typer.Option(help="Patient ID (wildcards * and ?).")] = "",
    modality: Annotated[list[str] | None, typer.Option(help="Image series modality (repeat: CT, MR, PT ...).")] = None,
    study_date: Annotated[str, typer.Option(help="Study date or range: 20200101-20201231, 20200101-.")] = "",
    study_description: Annotated[str, typer.Option(help="Study description (wildcards, any case).")] = "",
    series_description: Annotated[str, typer.Option(help="Series description (wildcards, any case).")] = "",
    body_part: Annotated[str, typer.Option(help="Body Part Examined (wildcards, any case).")] = "",
    with_: Annotated[
        list[str] | None, typer.Option("--with", help="Only studies holding this label object: RTSTRUCT, SEG, SR.")
    ] = None,
    labels: Annotated[Path | None, typer.Option(help="labels.json to place in the dataset (label objects).")] = None,
    key: Annotated[Path | None, typer.Option(help="De-identification key file (default: OUT.key beside OUT).")] = None,
    date_shift_days: Annotated[int | None, typer.Option(help="Shift dates by this many days (else removed).")] = None,
    token_file: Annotated[Path | None, typer.Option(help="File with a bearer token for DICOMweb.")] = None,
) -> None:
    """Pull a de-identified cohort from a PACS (C-FIND + C-GET / C-MOVE, or QIDO-RS + WADO-RS); resumable."""
    from medmap.pacs.dicomweb_source import DicomWebSource
    from medmap.pacs.dimse_source import DimseSource
    from medmap.pacs.peer import Peer
    from medmap.pacs.pull import pull_cohort
    from medmap.pacs.query import CohortQuery

    query = CohortQuery(
        patient_id=patient_id,
        modalities=tuple(m.upper() for m in modality or ()),
        study_date=study_date,
        study_description=study_description,
        series_description=series_description,
        body_part=body_part,
        require=tuple(m.upper() for m in with_ or ()),
    )
    if labels is not None and not labels.is_file():
        raise MedmapError(f"{labels}: labels file not found")
    if source.startswith(("http://", "https://")):
        token = token_file.read_text().strip() if token_file else None
        pacs = DicomWebSource(source, token=token)
    else:
        if method not in ("get", "move"):
            raise ConfigError(f"--method {method!r}: expected get or move")
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--listen {listen!r}: expected HOST:PORT, e.g. 0.0.0.0:11112")
        pacs = DimseSource(Peer.parse(source, "--from"), ae=ae, method=method, listen=(host, int(port)))
    report = pull_cohort(pacs, query, target, key=key, labels=labels, date_shift_days=date_shift_days, progress=True)
    out.print(
        f"{report.series} series match; pulled {report.fetched} ({report.instances} instances), "
        f"{report.already} already in {target}; {report.patients} patient(s) in {target / 'cohort.csv'}"
    )
    out.print(f"de-identification key: {report.key} (keep it apart from the data; a resumed pull needs it)")
    for line in report.left_out:
        out.print(f"  left out: {line}", markup=False, highlight=False)
    if report.failed:
        for line in report.failed:
            out.print(f"  failed: {line}", markup=False, highlight=False)
        raise MedmapError(f"{len(report.failed)} series not fetched; run the same pull again to fetch them")


def _print_structures(dataset) -> None:
    """For RTSTRUCT / SEG cases: per case, which structure carries which label, what matched nothing, and
    which label the case does not annotate; then how many cases annotate each label."""
    from medmap.data.dataset import LabelObject
    from medmap.io.labels.objects import name_match

    cases = [c for c in dataset.cases if isinstance(c.mask, LabelObject)]
    if not cases:
        return
    annotated = dict.fromkeys((v for v in dataset.labels if v), 0)
    for case in cases:
        try:
            match = name_match(case.mask.file, {v: list(n) for v, n in case.mask.labels})
        except MedmapError as exc:
            out.print(f"  {case.case_id}: {exc}", markup=False, highlight=False)
            continue
        pairs = sorted(match.values.items(), key=lambda kv: kv[1])
        found = ", ".join(f"{dataset.labels[v]} <- {n}" for n, v in pairs)
        line = f"  {case.case_id}: {found or 'no structure matches a label'}"
        if match.unmatched:
            line += f"; not used: {', '.join(match.unmatched)}"
        if match.missing:
            line += f"; not annotated: {', '.join(dataset.labels[v] for v in match.missing)}"
        out.print(line, markup=False, highlight=False)
        for value in match.values.values():
            annotated[value] += 1
    counts = ", ".join(f"{dataset.labels[v]} {k}/{len(cases)}" for v, k in annotated.items())
    out.print(f"cases annotating each label: {counts}")


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

    from medmap.training.distributed import Ranks, launch
    from medmap.training.run import train_run
    from medmap.training.trainer import TrainConfig

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
    from medmap.training.trainer import TrainConfig
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
    from medmap.training.pretrain import pretrain as run_pretrain
    from medmap.training.run import prepare_plan

    if output.exists():
        raise MedmapError(f"{output}: exists; refusing to overwrite")
    dataset = read_dataset(data)
    overrides = list(set_ or []) + ([f"network={model}"] if model else [])
    the_plan = prepare_plan(dataset, overrides=overrides, device="cpu", progress=True)
    cases = [c for c in dataset.cases if c.split != "test"]
    cached = PreprocessedCache(cache or output.parent / ".medmap-cache", the_plan, task_for(the_plan)).build(
        cases, workers=workers, progress=True
    )
    result = run_pretrain(cached, the_plan, output, epochs=epochs, seed=seed, workers=workers, progress=True)
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


bundle_app = typer.Typer(
    help="Trained models as verified folders: make one from a run, show one.", no_args_is_help=True
)
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("create")
def bundle_create(
    run: Annotated[Path, typer.Argument(help="A finished training run folder (medmap train -o RUN).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle folder to write (new).")],
    intended_use: Annotated[str | None, typer.Option(help="Intended use statement for the model card.")] = None,
    body_part: Annotated[
        list[str] | None,
        typer.Option(help="BodyPartExamined value the model is for (repeatable); series naming another are refused."),
    ] = None,
) -> None:
    """Package a run: weights, plan, labels with SNOMED CT codes, post-processing, metrics, model card."""
    from medmap.inference.bundle import create_bundle, load_bundle

    path = create_bundle(run, output, intended_use=intended_use, body_parts=body_part)
    bundle = load_bundle(path)
    out.print(f"bundle {path}: {bundle.task}, {len(bundle.weights)} model(s); model card {path / 'MODEL_CARD.md'}")


@bundle_app.command("info")
def bundle_info(bundle: Annotated[Path, typer.Argument(help="Bundle folder.")]) -> None:
    """Verify a bundle (every file's SHA-256) and print its model card."""
    from medmap.inference.bundle import load_bundle

    loaded = load_bundle(bundle)
    print((loaded.root / "MODEL_CARD.md").read_text())
    out.print(f"verified: {len(loaded.manifest['files'])} files match bundle.json")


@app.command()
def export(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    format_: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
) -> None:
    """Export the bundle's networks (ONNX for ONNX Runtime, or TorchScript) into BUNDLE/export/."""
    from medmap.inference.bundle import load_bundle
    from medmap.inference.engines import export as export_networks

    for path in export_networks(load_bundle(bundle), format_, progress=True):
        out.print(str(path))


def _lesion(text: str) -> tuple[float, float, float]:
    try:
        x, y, z = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--lesion {text!r}: expected x,y,z in mm (LPS), e.g. --lesion -60.5,12,-140") from None
    return x, y, z


@app.command()
def predict(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder (medmap bundle create).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")],
    source: Annotated[
        Path | None,
        typer.Argument(help="DICOM series or folder of studies, image file or folder, or CSV manifest."),
    ] = None,
    engine: Annotated[str, typer.Option(help="torch, torchscript or onnx (ONNX Runtime).")] = "torch",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    precision: Annotated[
        str, typer.Option(help="auto (bfloat16 where the CPU/GPU has it natively), float32 or bfloat16.")
    ] = "auto",
    overlays: Annotated[
        bool, typer.Option(help="Also write Secondary Capture overlay images (viewers without SEG support).")
    ] = False,
    lesion: Annotated[
        list[str] | None, typer.Option(help="Lesion position x,y,z in mm (LPS) for lesion classifiers; repeatable.")
    ] = None,
    dicomweb: Annotated[str | None, typer.Option(help="DICOMweb root to fetch --study from (WADO-RS).")] = None,
    study: Annotated[str | None, typer.Option(help="Study Instance UID to fetch with --dicomweb.")] = None,
    stow: Annotated[bool, typer.Option(help="Store the SEG/SR results back with STOW-RS (with --dicomweb).")] = False,
    ignore_intended_use: Annotated[
        bool,
        typer.Option(help="Answer even on series outside the bundle's intended use (the reasons go in result.json)."),
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(help="i/n: only the i-th of n deterministic shares of the cases (Slurm arrays, indexed jobs)."),
    ] = None,
    classifier: Annotated[
        Path | None,
        typer.Option(help="With a detection bundle: a lesion classifier bundle that classifies every finding."),
    ] = None,
) -> None:
    """Run a bundle on new studies: label maps + DICOM SEG, or probabilities + DICOM SR, or findings + DICOM
    SR (detection; with --classifier each finding classified), per case. Series outside the bundle's
    intended use (modality, body part, spacing, image profile) are refused."""
    from medmap.inference.predictor import predict as run_predict
    from medmap.inference.shards import parse_shard

    share = parse_shard(shard) if shard else None  # a bad value fails before anything is fetched or read

    if dicomweb:  # pull mode: WADO-RS the study into OUT/input/<study>, predict, optionally STOW the results
        from medmap.pacs.dicomweb import wado_study

        if not study:
            raise ConfigError("--dicomweb needs --study UID (the study to fetch)")
        source = output / "input" / study
        wado_study(dicomweb, study, source)
    elif source is None:
        raise ConfigError("give a SOURCE to predict on, or --dicomweb URL --study UID")

    results = run_predict(
        bundle,
        source,
        output,
        engine=engine,
        device=device,
        precision=precision,
        overlays=overlays,
        lesions=[_lesion(t) for t in lesion or []] or None,
        ignore_intended_use=ignore_intended_use,
        shard=share,
        progress=True,
        classifier=classifier,
    )
    for r in results:
        if r.ok:
            out.print(f"{r.case_id}: " + ", ".join(f"{k} {v}" for k, v in r.outputs.items()), highlight=False)
    if stow and dicomweb:
        from medmap.pacs.dicomweb import stow as stow_rs

        stored = [path for r in results if r.ok for path in r.dicom_results()]
        if stored:
            stow_rs(dicomweb, stored)
            out.print(f"stored {len(stored)} result(s) at {dicomweb} (STOW-RS)")
    failed = [r for r in results if not r.ok]
    for r in failed:
        sys.stderr.write(f"error: {_one_line(r.error)}\n")
    summary = output / "summary.json"
    if share:
        from medmap.inference.shards import shard_file

        merged = f"; all {share[1]} shards done: {summary}" if summary.is_file() else ""
        summary = f"{shard_file(output, share)}{merged}"
    out.print(f"{len(results) - len(failed)} of {len(results)} case(s) done; summary {summary}")
    if failed:
        raise typer.Exit(1)


def _node_default(name: str):
    """A node setting's one default (`medmap.deploy.settings.NodeSettings`), for the option's help."""
    from medmap.deploy.settings import NodeSettings

    return NodeSettings.model_fields[name].default


@app.command()
def serve(
    config_file: Annotated[
        Path | None, typer.Option("--config", help="JSON settings (keys as the options, plus routes); options win.")
    ] = None,
    bundle: Annotated[
        list[Path] | None, typer.Option(help="Bundle(s) to run; each takes series of its own modality.")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Folder for the spool, results and the job database.")] = None,
    ae: Annotated[str | None, typer.Option(help=f"This node's AE title [{_node_default('ae')}].")] = None,
    port: Annotated[int | None, typer.Option(help=f"DICOM port to listen on [{_node_default('port')}].")] = None,
    host: Annotated[str | None, typer.Option(help=f"Address to listen on [{_node_default('host')}].")] = None,
    destination: Annotated[
        str | None, typer.Option(help="Where results go by C-STORE: AET@HOST:PORT (e.g. the PACS).")
    ] = None,
    allow: Annotated[
        list[str] | None, typer.Option(help="Calling AE titles allowed (repeatable); default any.")
    ] = None,
    idle: Annotated[
        float | None,
        typer.Option(
            help=f"Seconds without a new instance after which a series is complete [{_node_default('idle')}]."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help=f"cpu or cuda [{_node_default('device')}].")] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="auto (bfloat16 where the hardware has it natively), float32, bfloat16 "
            f"[{_node_default('precision')}]."
        ),
    ] = None,
    overlays: Annotated[
        bool | None, typer.Option(help="Also send Secondary Capture overlay images of segmentations.")
    ] = None,
    dicomweb: Annotated[
        str | None, typer.Option(help="DICOMweb root to STOW results to when there is no --destination.")
    ] = None,
    http: Annotated[int | None, typer.Option(help="Port of the REST API and web page (off when not given).")] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the bearer token the HTTP API requires.")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="DICOM over TLS: the node's certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="DICOM over TLS: the node's private key (PEM).")] = None,
    tls_ca: Annotated[
        Path | None, typer.Option(help="Require callers' (and the TLS destination's) certificates signed by this CA.")
    ] = None,
    destination_tls: Annotated[
        bool | None, typer.Option(help="Send results to --destination over TLS (checked against --tls-ca).")
    ] = None,
) -> None:
    """Run as a DICOM node: receive series (C-STORE), run the matching bundle, send SEG/SR to --destination."""
    import logging
    import signal

    from medmap.deploy.node import Node
    from medmap.deploy.settings import load_settings

    given = {
        "bundle": bundle,
        "data": data,
        "ae": ae,
        "port": port,
        "host": host,
        "destination": destination,
        "allow": allow,
        "idle": idle,
        "device": device,
        "precision": precision,
        "overlays": overlays,
        "dicomweb": dicomweb,
        "http": http,
        "token_file": token_file,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "tls_ca": tls_ca,
        "destination_tls": destination_tls,
    }
    settings = load_settings(config_file, given)  # the options given, over the file's values
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    node = Node(settings)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    node.start()
    web = f"; web page and API on http://{settings.host}:{settings.http}/" if settings.http else ""
    out.print(
        f"medmap node {settings.ae} listening on {settings.host}:{settings.port}{web}; data in {settings.data}",
        highlight=False,
    )
    stopping.wait()
    node.stop()
    out.print("stopped")


node_app = typer.Typer(help="The DICOM node's state.", no_args_is_help=True)
app.add_typer(node_app, name="node")


@node_app.command("status")
def node_status(data: Annotated[Path, typer.Option(help="The node's data folder.")]) -> None:
    """Jobs by state, the latest jobs, and results waiting to be sent."""
    from medmap.deploy.jobs import JobStore

    if not (data / "jobs.sqlite").is_file():
        raise OutputError(f"{data}: no node data here (no jobs.sqlite)")
    store = JobStore(data / "jobs.sqlite")
    counts = store.counts()
    out.print("jobs: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"), highlight=False)
    for job in store.jobs(20):
        took = f"{job.finished - job.started:.1f}s" if job.finished and job.started else ""
        out.print(
            f"  job {job.id}: series {job.series_uid} {job.modality} from {job.calling_ae}: {job.state} {took} "
            f"{job.error}",
            highlight=False,
            soft_wrap=True,  # one line per job, whatever the terminal's width (grep, logs)
        )
    waiting = [row for row in store.outbox() if row[2] != "sent"]
    out.print(f"outbox: {len(waiting)} result(s) waiting", highlight=False)
    store.close()


def main() -> None:
    """Console entry point: run the app, turning user errors into one line and a non-zero exit."""
    warnings.showwarning = _show_warning
    warnings.simplefilter("default", MedmapWarning)
    try:
        app()
    except MedmapError as exc:
        if not getattr(exc, "quiet", False):  # a training rank echoing another's failure stays silent
            sys.stderr.write(f"error: {_one_line(str(exc))}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
