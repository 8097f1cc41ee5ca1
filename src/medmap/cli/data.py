"""Commands on images and datasets: info, convert, anonymize, demo-data, dataset check / pull."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medmap.cli.app import _fmt, _one_line, _short_uid, app, out
from medmap.errors import ConfigError, MedmapError, OutputError


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
