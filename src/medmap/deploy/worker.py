"""The node's processing side (one thread): complete idle series, route each queued series to a bundle
(the first route whose rules match Modality, BodyPartExamined, SeriesDescription), predict, put its
SEG/SR (and overlay images) into the outbox, and send what is due. A series outside a bundle's intended
use is *refused* (recorded, nothing sent); a bad series *fails* with its one-line reason; neither stops
the node."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np

from medmap.deploy.jobs import JobStore
from medmap.deploy.outbox import Outbox
from medmap.deploy.settings import NodeSettings, Route
from medmap.errors import MedmapError
from medmap.io.guard import reason

log = logging.getLogger("medmap.node")


class Worker:
    def __init__(self, settings: NodeSettings, store: JobStore, routes: list[Route], outbox: Outbox) -> None:
        self.settings, self.store, self.routes, self.outbox = settings, store, routes, outbox
        self.results = settings.data / "results"
        self.predictors: dict[str, object] = {}  # bundle path -> loaded Predictor, loaded at first use
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.results.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="medmap-node-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 600) -> None:
        """Let the current step finish; a running job is re-queued at the next start."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                self.store.complete_idle(self.settings.idle)
                job = self.store.next_queued()
                if job is not None:
                    busy = True
                    self.process(job)
                busy = self.outbox.send_due() or busy
            except Exception:  # the worker never dies; the error is in the log and the job's record
                log.exception("worker step failed")
            if not busy:
                self._stop.wait(0.5)

    def route(self, job) -> Route | None:
        return next((r for r in self.routes if r.accepts(job.modality, job.body_part, job.description)), None)

    def predictor(self, route: Route):
        """The route's loaded Predictor (with its classifier, for find-then-classify), loaded at first use."""
        key = str(route.bundle) if route.classifier is None else f"{route.bundle} + {route.classifier}"
        if key not in self.predictors:
            from medmap.inference.bundle import load_bundle
            from medmap.inference.predictor import Predictor

            self.predictors[key] = Predictor(
                load_bundle(route.bundle),
                device=self.settings.device,
                precision=self.settings.precision,
                overlays=self.settings.overlays,
                classifier=load_bundle(route.classifier) if route.classifier is not None else None,
            )
        return self.predictors[key]

    def process(self, job) -> None:
        from medmap.inference.predictor import InputCase
        from medmap.intended_use import OutOfUseError

        route = self.route(job)
        if route is None:
            self.store.set_state(job.id, "ignored", error="no bundle's route accepts this series")
            log.info("job %d (series %s): ignored, no route for modality %s", job.id, job.series_uid, job.modality)
            return
        log.info("job %d (series %s): running %s", job.id, job.series_uid, route.bundle.name)
        out = self.results / f"job-{job.id}"
        try:
            predictor = self.predictor(route)
            case = InputCase(f"series-{job.id}", Path(job.folder), job.series_uid)
            result = predictor.run_case(case, out)
        except OutOfUseError as exc:  # not a failure: the model declines, and the PACS gets nothing for it
            self.store.set_state(job.id, "refused", error=str(exc), bundle=str(route.bundle))
            log.warning("job %d (series %s) refused by %s: %s", job.id, job.series_uid, route.bundle.name, exc)
            return
        except MedmapError as exc:
            self.store.set_state(job.id, "failed", error=str(exc), bundle=str(route.bundle))
            log.warning("job %d (series %s) failed: %s", job.id, job.series_uid, exc)
            return
        except Exception as exc:  # a fault of ours, not of the input: recorded, and the node goes on
            self.store.set_state(job.id, "failed", error=f"internal error: {reason(exc)}")  # one line
            log.exception("job %d (series %s) failed with an internal error", job.id, job.series_uid)
            return
        import pydicom

        _thumbnail(case.case_id, result, out, predictor)
        sendable = []
        if self.outbox.sends:
            for path in result.dicom_results():
                sendable.append((str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID), path))
        self.store.set_state(job.id, "running", bundle=str(route.bundle))
        self.store.results_ready(job.id, sendable, json.dumps({"outputs": result.outputs, **result.result}))
        log.info("job %d (series %s): %d result(s) to send", job.id, job.series_uid, len(sendable))


def _thumbnail(case_id: str, result, out: Path, predictor) -> None:
    """A small picture of the result for the web page, from the image and label map the prediction held;
    for findings, the slice through each with a circle of its diameter (never fatal to the job)."""
    try:
        from medmap.evaluation.plots import finding_gallery, thumbnail

        image = result.image
        if "coordinates" in result.result:  # a detector's findings
            from medmap.tasks.detection.gallery import finding_crops

            crops = finding_crops(image, result.result["findings"])
            if crops:
                window = (-600.0, 1500.0) if image.meta.modality == "CT" else None
                picture = finding_gallery(crops, f"{len(crops)} finding(s)", window)
                (out / case_id / "thumbnail.png").write_bytes(picture)
            return
        labels = result.labels.array if result.labels is not None else None
        grey = image.array if image.channels == 1 else image.array[..., 0]
        window = (image.meta.window_center or 60.0, image.meta.window_width or 400.0)
        if image.meta.modality != "CT":
            low, high = (float(v) for v in np.percentile(grey, [1, 99]))
            window = ((low + high) / 2, max(high - low, 1.0))
        names = {label.value: label.name for label in predictor.bundle.labels}
        (out / case_id / "thumbnail.png").write_bytes(thumbnail(grey, labels, window, names))
    except Exception:
        log.exception("thumbnail of %s failed", case_id)
