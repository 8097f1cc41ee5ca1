"""Commands that ship and serve models: bundle create / info, export, predict, serve, node status."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from medmap.cli.app import _one_line, app, out
from medmap.errors import ConfigError, OutputError

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
