"""The node's HTTP face (FastAPI): upload studies, follow jobs, fetch results, and a small web page.

``POST /v1/studies`` (multipart DICOM files) ingests them exactly as C-STORE does and marks their
series complete; ``GET /v1/jobs``, ``GET /v1/jobs/{id}``, ``GET /v1/jobs/{id}/result`` (JSON with links
to the SEG / SR / NIfTI files), ``GET /v1/jobs/{id}/files/{name}``, ``GET /v1/jobs/{id}/thumbnail.png``,
``GET /healthz``; OpenAPI documentation at ``/docs``. ``GET /`` is the web page: the jobs with their
state, timings, findings or segment volumes and a thumbnail of each result.

With a token configured every route but ``/healthz`` needs ``Authorization: Bearer <token>`` (the page
and its images also take ``?token=`` so that a browser can open them).
"""

from __future__ import annotations

import html
import io
import json
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response

from medmap import __version__
from medmap.errors import MedmapError


def create_app(node, token: str | None = None) -> FastAPI:
    app = FastAPI(title="medmap node", version=__version__, description="Jobs of the medmap DICOM node.")

    def authorised(request: Request) -> None:
        if not token:
            return
        header = request.headers.get("authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        given = given or request.query_params.get("token", "")
        if not secrets.compare_digest(given, token):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token")

    guard = [Depends(authorised)]

    def job_or_404(job_id: int):
        job = node.store.job(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        return job

    def described(jobs: list) -> list[dict]:
        """`describe` for many jobs, their deliveries read in one query."""
        deliveries = node.store.deliveries([j.id for j in jobs])
        return [describe(j, deliveries[j.id]) for j in jobs]

    def describe(job, delivery: dict | None = None) -> dict:
        took = round(job.finished - job.started, 2) if job.finished and job.started else None
        waited = round(job.started - job.last_received, 2) if job.started else None
        result = json.loads(job.result) if job.result else {}
        return {
            "id": job.id,
            "received": _iso(job.first_received),
            "series_uid": job.series_uid,
            "study_uid": job.study_uid,
            "accession": job.accession,
            "patient_ref": job.patient_ref,
            "modality": job.modality,
            "body_part": job.body_part,
            "calling_ae": job.calling_ae,
            "state": job.state,
            "bundle": Path(job.bundle).name if job.bundle else None,
            "model": node.model_of(job.bundle),
            "attempts": job.attempts,
            "error": without_paths(job.error),
            "delivery": delivery if delivery is not None else node.store.deliveries([job.id])[job.id],
            "seconds_processing": took,
            "seconds_waiting": waited,
            "segments": result.get("segments"),
            "findings": result.get("findings"),
            "detection": "coordinates" in result,  # a detector's findings (positions in LPS mm)
        }

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "version": __version__, "jobs": node.store.counts()}

    @app.post("/v1/studies", dependencies=guard)
    async def upload(files: Annotated[list[UploadFile], File()]) -> dict:
        import pydicom

        series = set()
        for upload_file in files:
            data = await upload_file.read()
            try:
                ds = pydicom.dcmread(io.BytesIO(data))
            except Exception:
                raise HTTPException(status_code=400, detail=f"{upload_file.filename}: not a DICOM file") from None
            if "PixelData" not in ds:
                raise HTTPException(status_code=400, detail=f"{upload_file.filename}: no pixel data")
            try:
                series.add(node.ingest(ds, calling_ae="HTTP"))
            except MedmapError as exc:
                raise HTTPException(status_code=400, detail=f"{upload_file.filename}: {exc}") from None
        node.store.complete(sorted(series))
        jobs = described([j for j in node.store.jobs(10_000) if j.series_uid in series])
        return {"jobs": jobs}

    @app.get("/v1/jobs", dependencies=guard)
    def jobs() -> list[dict]:
        return described(node.store.jobs(500))

    @app.get("/v1/jobs/{job_id}", dependencies=guard)
    def job(job_id: int) -> dict:
        return describe(job_or_404(job_id))

    def files_of(job_id: int) -> dict[str, Path]:
        folder = node.results / f"job-{job_id}"
        return {p.name: p for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}

    @app.get("/v1/jobs/{job_id}/result", dependencies=guard)
    def result(job_id: int) -> dict:
        job = job_or_404(job_id)
        if job.state not in ("sending", "done"):
            raise HTTPException(status_code=409, detail=f"job {job_id} is {job.state}, no result yet")
        links = {name: f"/v1/jobs/{job_id}/files/{name}" for name in sorted(files_of(job_id))}
        return {**describe(job), "files": links}

    @app.get("/v1/jobs/{job_id}/files/{name}", dependencies=guard)
    def result_file(job_id: int, name: str):
        path = files_of(job_id).get(name)
        if path is None:
            raise HTTPException(status_code=404, detail=f"job {job_id} has no file {name}")
        return FileResponse(path)

    @app.get("/v1/jobs/{job_id}/thumbnail.png", dependencies=guard)
    def thumbnail(job_id: int):
        path = files_of(job_id).get("thumbnail.png")
        if path is None:
            raise HTTPException(status_code=404, detail=f"job {job_id} has no thumbnail")
        return Response(path.read_bytes(), media_type="image/png")

    @app.get("/", response_class=HTMLResponse, dependencies=guard)
    def page(request: Request) -> str:
        suffix = f"?token={html.escape(request.query_params['token'])}" if "token" in request.query_params else ""
        rows = [_job_row(j, suffix, "thumbnail.png" in files_of(j["id"])) for j in described(node.store.jobs(200))]
        body = "".join(rows) or '<tr><td colspan="10">no jobs yet</td></tr>'
        counts = node.store.counts()
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no jobs yet"
        warning = (
            ""
            if token
            else '<p class="warn" id="no-token">This page and the API run without a token: anyone who can reach '
            "this port can read the results (start the node with --token-file).</p>"
        )
        events = "".join(
            f"<tr><td>{_iso(t)}</td><td>{html.escape(kind)}</td><td>{html.escape(without_paths(detail))}</td></tr>"
            for t, kind, detail in node.store.events(20)
        )
        events_table = (
            f'<h2>Refused at the door</h2><table id="events"><tr><th>time (UTC)</th><th>what</th><th>detail</th>'
            f"</tr>{events}</table>"
            if events
            else ""
        )
        routes = "; ".join(
            html.escape(
                f"{r.bundle.name}{f' + {r.classifier.name}' if r.classifier else ''} "
                f"({r.modality or 'any'} {r.body_part or ''})".replace(" )", ")")
            )
            for r in node.routes
        )
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>medmap node</title>
<meta http-equiv="refresh" content="5"><style>{_PAGE_STYLE}</style></head><body><h1>medmap node {
            html.escape(node.settings.ae)
        }</h1>{warning}
<p>medmap {__version__}; listening on port {node.settings.port}; models: {routes}. Jobs: {html.escape(summary)}.</p>
<table id="jobs"><tr><th>job</th><th>received (UTC)</th><th>patient / accession</th><th>from</th><th>series</th>
<th>model</th><th>state</th><th>delivery</th><th>result</th><th>overlay</th></tr>{body}</table>
{events_table}</body></html>"""

    return app


_PAGE_STYLE = """body{font-family:system-ui,sans-serif;margin:2em}
td,th{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
.uid{font-family:monospace;font-size:.75em;color:#555;display:inline-block;max-width:16em;word-break:break-all}
td.result{min-width:24em;max-width:40em} img.thumb{width:120px}
.warn{background:#fff4e0;color:#8a4b00;padding:.5em} tr[data-state=refused] td.state{color:#8a4b00;font-weight:bold}
tr[data-state=failed] td.state{color:#b00020;font-weight:bold} small{color:#555}"""


def _answer(j: dict) -> str:
    if j["segments"]:
        return html.escape(", ".join(f"{k} {v['volume_ml']:.1f} ml" for k, v in j["segments"].items()))
    if j.get("detection") and j["findings"] is not None:
        return _found(j["findings"])
    if j["findings"]:
        return html.escape(
            "; ".join(
                f"{f['decision']} ({max(f['probabilities'].values()):.2f})" if "decision" in f else "not assessed"
                for f in j["findings"]
            )
        )
    if j["state"] == "refused":
        reasons = j["error"].split("intended use: ", 1)[-1]
        return f"<b>not assessed</b>, outside the model's intended use: {html.escape(reasons)}"
    return html.escape(j["error"])


def _found(findings: list[dict]) -> str:
    """A detector's findings, one line each: position (LPS mm), diameter, score, and class when classified."""
    if not findings:
        return "no finding above the operating threshold"
    lines = []
    for number, f in enumerate(findings, start=1):
        x, y, z = f["position_lps_mm"]
        text = f"{f['finding']} {number} at ({x:.0f}, {y:.0f}, {z:.0f}) mm, {f['diameter_mm']:.1f} mm"
        text += f", score {f['score']:.2f}"
        classified = f.get("classification", {})
        if "decision" in classified:
            text += f": {classified['decision']} ({max(classified['probabilities'].values()):.2f})"
        elif classified:
            text += ": not classified (outside the classifier's intended use)"
        lines.append(html.escape(text))
    return "<br>".join(lines)


def _delivery(j: dict) -> str:
    d = j["delivery"]
    if not d["results"]:
        return "nothing to send" if j["state"] in ("done", "refused", "failed", "ignored") else ""
    text = f"{d['sent']}/{d['results']} sent"
    if d["pending"]:
        text += f", {d['pending']} waiting (attempts {d['attempts']})"
        if d["last_error"]:
            text += f": {d['last_error']}"
    return html.escape(text)


def _job_row(j: dict, suffix: str, has_thumbnail: bool) -> str:
    source = f"/v1/jobs/{j['id']}/thumbnail.png{suffix}"
    thumb = f'<img class="thumb" alt="job {j["id"]}" src="{source}">' if has_thumbnail else ""
    seconds = "" if j["seconds_processing"] is None else f"<br><small>{j['seconds_processing']:.1f} s</small>"
    accession = html.escape(j["accession"] or "no accession")
    patient = f"{html.escape(j['patient_ref'] or '-')}<br><small>{accession}</small>"
    series = (
        f"{html.escape(j['modality'])} {html.escape(j['body_part'])}"
        f'<br><span class="uid">{html.escape(j["series_uid"])}</span>'
    )
    return (
        f'<tr data-job="{j["id"]}" data-state="{j["state"]}"><td>{j["id"]}</td><td>{j["received"]}</td>'
        f"<td>{patient}</td><td>{html.escape(j['calling_ae'])}</td><td>{series}</td>"
        f'<td>{html.escape(j["model"])}</td><td class="state">{j["state"]}{seconds}</td>'
        f'<td>{_delivery(j)}</td><td class="result">{_answer(j)}</td><td>{thumb}</td></tr>'
    )


def _iso(timestamp: float | None) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds") if timestamp else ""


def without_paths(text: str) -> str:
    """An error for the page and the API: file-system paths cut to their last part (the spool's layout and
    the host's folders are not for every reader of the page; the log keeps the full message)."""
    import re

    return re.sub(r"(?:/[^\s/:;,'\"()]+){2,}/?", lambda m: Path(m.group(0)).name or m.group(0), text or "")


def serve_http(app: FastAPI, host: str, port: int):
    """Run the app with uvicorn in a background thread; returns the server (``should_exit = True`` stops it)."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    threading.Thread(target=server.run, name="medmap-http", daemon=True).start()
    return server
