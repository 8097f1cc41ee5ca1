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
        job = next((j for j in node.store.jobs(10_000) if j.id == job_id), None)
        if job is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        return job

    def describe(job) -> dict:
        took = round(job.finished - job.started, 2) if job.finished and job.started else None
        waited = round(job.started - job.last_received, 2) if job.started else None
        result = json.loads(job.result) if job.result else {}
        return {
            "id": job.id,
            "series_uid": job.series_uid,
            "study_uid": job.study_uid,
            "modality": job.modality,
            "calling_ae": job.calling_ae,
            "state": job.state,
            "bundle": Path(job.bundle).name if job.bundle else None,
            "attempts": job.attempts,
            "error": job.error,
            "seconds_processing": took,
            "seconds_waiting": waited,
            "segments": result.get("segments"),
            "findings": result.get("findings"),
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
        jobs = [describe(j) for j in node.store.jobs(10_000) if j.series_uid in series]
        return {"jobs": jobs}

    @app.get("/v1/jobs", dependencies=guard)
    def jobs() -> list[dict]:
        return [describe(j) for j in node.store.jobs(500)]

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
        rows = []
        for j in (describe(j) for j in node.store.jobs(200)):
            if j["segments"]:
                answer = ", ".join(f"{k} {v['volume_ml']:.1f} ml" for k, v in j["segments"].items())
            elif j["findings"]:
                answer = "; ".join(
                    f"{f['decision']} ({max(f['probabilities'].values()):.2f})" if "decision" in f else "not assessed"
                    for f in j["findings"]
                )
            else:
                answer = html.escape(j["error"])
            thumb = (
                f'<img class="thumb" alt="job {j["id"]}" src="/v1/jobs/{j["id"]}/thumbnail.png{suffix}">'
                if "thumbnail.png" in files_of(j["id"])
                else ""
            )
            seconds = "" if j["seconds_processing"] is None else f"{j['seconds_processing']:.1f} s"
            rows.append(
                f'<tr data-job="{j["id"]}" data-state="{j["state"]}"><td>{j["id"]}</td>'
                f'<td class="uid">{html.escape(j["series_uid"])}</td><td>{html.escape(j["modality"])}</td>'
                f'<td class="state">{j["state"]}</td><td>{seconds}</td><td>{answer}</td><td>{thumb}</td></tr>'
            )
        body = "".join(rows) or '<tr><td colspan="7">no jobs yet</td></tr>'
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>medmap node</title>
<meta http-equiv="refresh" content="5"><style>body{{font-family:system-ui,sans-serif;margin:2em}}
td,th{{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left}} .uid{{font-family:monospace;font-size:.8em}}
img.thumb{{width:120px}}</style></head><body><h1>medmap node</h1>
<p>medmap {__version__}; jobs {html.escape(json.dumps(node.store.counts()))}</p>
<table id="jobs"><tr><th>job</th><th>series</th><th>modality</th><th>state</th><th>processing</th><th>result</th>
<th>overlay</th></tr>{body}</table></body></html>"""

    return app


def serve_http(app: FastAPI, host: str, port: int):
    """Run the app with uvicorn in a background thread; returns the server (``should_exit = True`` stops it)."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    threading.Thread(target=server.run, name="medmap-http", daemon=True).start()
    return server
