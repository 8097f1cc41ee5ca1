"""Soak the DICOM node: many instances over concurrent associations, broken files mixed in, an unknown AE,
and the node killed with SIGKILL at random moments and restarted. Then check that nothing it acknowledged
was lost and that every good series was answered exactly once.

    python scripts/soak_node.py --bundle BUNDLE                      # 10,000 instances, 20 associations, 3 kills
    python scripts/soak_node.py --bundle BUNDLE --instances 300 --associations 6   # the CI form (tests)

BUNDLE is an MR segmentation bundle (the test suite's ball bundle, or any bundle whose modality the
generated series are written in). Peers are real and local: Orthanc (own storage, 127.0.0.1) as the
PACS; the senders are pynetdicom SCUs, one series per association as a modality sends them, which
resend what was not acknowledged when the node goes away (as a PACS retries). Mixed in: 5 % of the
series carry a broken instance (truncated pixel data: the job must fail with a one-line reason and
send nothing), instances with invalid UIDs (must be refused with a failure status, never stored), and
one association from an AE title the node does not know (must be rejected).

Checks, all printed with a verdict and written as JSON; exit status 1 if any fails:
1. every instance the node acknowledged is in its spool (readable, same SOP Instance UID) and job store;
2. every good series has exactly one SEG in Orthanc; no broken series has one;
3. broken series' jobs failed with a one-line reason; invalid-UID instances were never acknowledged;
4. the unknown AE was rejected; the node ends healthy (answers C-ECHO, no job left running).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.test_node import NodeProcess, Orthanc, ball_series, free_port, wait_for  # noqa: E402

SLICES_PER_SERIES = 14  # ball_series


def make_series(work: Path, count: int, broken_share: float, rng: random.Random) -> list[dict]:
    """Good series, broken series (one truncated instance) and a few invalid-UID instances."""
    import pydicom

    series = []
    for i in range(count):
        folder, study = ball_series(work / f"series-{i:05d}", seed=1000 + i)
        files = sorted(folder.iterdir())
        datasets = [pydicom.dcmread(f) for f in files]
        kind = "broken" if rng.random() < broken_share else "good"
        if kind == "broken":
            victim = datasets[rng.randrange(len(datasets))]
            victim.PixelData = victim.PixelData[: len(victim.PixelData) // 2]
        series.append({"study": study, "uid": str(datasets[0].SeriesInstanceUID), "kind": kind, "datasets": datasets})
    for i in range(max(1, count // 20)):  # instances the node must refuse: an invalid SOP Instance UID
        ds = pydicom.dcmread(sorted((work / f"series-{i:05d}").iterdir())[0])
        ds.SOPInstanceUID = f"1.2.840.99.0{i + 1}" if i % 2 else f"1.2.840.99.{i}x"  # leading zero; a letter
        series.append({"study": "", "uid": str(ds.SeriesInstanceUID), "kind": "invalid", "datasets": [ds]})
    rng.shuffle(series)
    return series


class Sender:
    """One series per association; after an abort, resend what was not acknowledged (as a PACS retries)."""

    def __init__(self, port: int, acked: dict, refused: dict, lock: threading.Lock) -> None:
        self.port, self.acked, self.refused, self.lock = port, acked, refused, lock

    def send(self, item: dict, deadline: float) -> None:
        from pynetdicom import AE
        from pynetdicom.sop_class import MRImageStorage

        pending = list(item["datasets"])
        while pending and time.time() < deadline:
            ae = AE(ae_title="STORESCU")
            ae.add_requested_context(MRImageStorage)
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
            assoc = ae.associate("127.0.0.1", self.port, ae_title="MEDMAP")
            if not assoc.is_established:
                time.sleep(0.5)  # the node is down (killed): try again
                continue
            try:
                while pending:
                    ds = pending[0]
                    status = assoc.send_c_store(ds)
                    if not status or "Status" not in status:
                        break  # the association died: what was not acknowledged is resent
                    with self.lock:
                        (self.acked if status.Status == 0 else self.refused)[str(ds.SOPInstanceUID)] = item
                    pending.pop(0)
            finally:
                if assoc.is_established:
                    assoc.release()


def run(args) -> dict:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="medmap-soak-"))
    count = max(2, args.instances // SLICES_PER_SERIES)
    print(f"generating {count} series ({count * SLICES_PER_SERIES} instances) ...", flush=True)
    series = make_series(work, count, args.broken, rng)
    orthanc = Orthanc(work / "orthanc")
    port = free_port()
    node = NodeProcess(args.bundle, work / "node", port, f"ORTHANC@127.0.0.1:{orthanc.dicom}")
    node.args[node.args.index("--idle") + 1] = str(args.idle)
    acked: dict[str, dict] = {}
    refused: dict[str, dict] = {}
    lock = threading.Lock()
    checks: dict[str, bool | str] = {}
    try:
        orthanc.start(port)
        node.start()
        intruder = AE(ae_title="INTRUDER")
        intruder.add_requested_context(Verification)
        assoc = intruder.associate("127.0.0.1", port, ae_title="MEDMAP")
        checks["unknown AE rejected"] = not assoc.is_established
        if assoc.is_established:
            assoc.release()

        sender = Sender(port, acked, refused, lock)
        queue = list(series)
        deadline = time.time() + args.timeout

        def worker() -> None:
            while time.time() < deadline:
                with lock:
                    if not queue:
                        return
                    item = queue.pop()
                sender.send(item, deadline)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.associations)]
        started = time.time()
        for t in threads:
            t.start()
        # Kill at random moments of the transfer: when random shares of the instances have been acknowledged.
        total = sum(len(s["datasets"]) for s in series)
        moments = sorted(rng.uniform(0.05, 0.9) * total for _ in range(args.kills))
        kills = 0
        while any(t.is_alive() for t in threads) and kills < args.kills:
            if len(acked) < moments[kills]:
                time.sleep(0.005)
                continue
            node.kill()
            kills += 1
            print(f"  kill -9 number {kills} after {len(acked)} acknowledged instances", flush=True)
            time.sleep(rng.uniform(0.1, 1.0))
            node.start()
        for t in threads:
            t.join(max(1.0, deadline - time.time()))
        sending_seconds = time.time() - started
        checks["every series sent before the deadline"] = not queue and not any(t.is_alive() for t in threads)

        # Let the node finish: every job done or failed, nothing waiting in the outbox.
        db = node.data / "jobs.sqlite"

        def settled():
            with sqlite3.connect(db) as con:
                open_jobs = con.execute(
                    "SELECT COUNT(*) FROM jobs WHERE state IN ('receiving', 'queued', 'running', 'sending')"
                ).fetchone()[0]
                pending = con.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
            return open_jobs == 0 and pending == 0

        wait_for(settled, args.timeout, "every job to finish")
        checks.update(verify(node, orthanc, series, acked, refused))
        checks["node answers C-ECHO at the end"] = node.echo()
        result = {
            "instances acknowledged": len(acked),
            "instances refused": len(refused),
            "series": {k: sum(s["kind"] == k for s in series) for k in ("good", "broken", "invalid")},
            "kills": kills,
            "associations": args.associations,
            "sending seconds": round(sending_seconds, 1),
            "checks": checks,
        }
    finally:
        node.stop()
        orthanc.stop()
    if all(v is True for v in result["checks"].values()):
        shutil.rmtree(work, ignore_errors=True)
    else:
        result["kept for inspection"] = str(work)
    return result


def verify(node, orthanc, series, acked, refused) -> dict:
    import pydicom

    checks: dict[str, bool | str] = {}
    with sqlite3.connect(node.data / "jobs.sqlite") as con:
        stored = dict(con.execute("SELECT sop_uid, path FROM instances").fetchall())
        jobs = {uid: (state, error) for uid, state, error in con.execute("SELECT series_uid, state, error FROM jobs")}
    lost = [uid for uid in acked if uid not in stored or not Path(stored[uid]).is_file()]
    wrong = [
        uid
        for uid in acked
        if uid in stored
        and Path(stored[uid]).is_file()
        and str(pydicom.dcmread(stored[uid], stop_before_pixels=True).SOPInstanceUID) != uid
    ]
    checks["every acknowledged instance in the spool and the job store"] = (not lost and not wrong) or (
        f"{len(lost)} lost, {len(wrong)} with another instance's content"
    )
    invalid = [s for s in series if s["kind"] == "invalid"]
    checks["invalid UIDs refused, never acknowledged"] = all(
        str(s["datasets"][0].SOPInstanceUID) in refused and str(s["datasets"][0].SOPInstanceUID) not in acked
        for s in invalid
    )
    problems = []
    for s in series:
        if s["kind"] == "invalid":
            continue
        segs = orthanc.find("Instance", {"StudyInstanceUID": s["study"], "Modality": "SEG"})
        state, error = jobs.get(s["uid"], ("missing", ""))
        if s["kind"] == "good" and (len(segs) != 1 or state != "done"):
            problems.append(f"good series {s['uid']}: {len(segs)} SEG, job {state} {error[:80]}")
        if s["kind"] == "broken" and (segs or state != "failed" or "\n" in error or not error):
            problems.append(f"broken series {s['uid']}: {len(segs)} SEG, job {state}")
    checks["every good series answered exactly once, broken ones failed with a reason"] = not problems or (
        "; ".join(problems[:5])
    )
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--associations", type=int, default=20)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--broken", type=float, default=0.05, help="share of series with a broken instance")
    parser.add_argument("--idle", type=int, default=10, help="the node's --idle seconds")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args)
    for name, verdict in result.pop("checks").items():
        print(f"{'PASS' if verdict is True else 'FAIL'}  {name}" + ("" if verdict is True else f": {verdict}"))
        result.setdefault("failed", []).extend([] if verdict is True else [name])
    for key, value in result.items():
        if key != "failed":
            print(f"{key:28} {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 1 if result.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
