"""The node's durable state in one SQLite file: instances received, one job per series, and the outbox.

A job follows a series: ``receiving`` (instances arriving) -> ``queued`` (complete: idle long enough,
or its association released) -> ``running`` (the bundle is predicting) -> ``sending`` (results in the
outbox) -> ``done``; or ``failed`` (with the reason), ``ignored`` (no bundle's route accepts it), or
``refused`` (the routed bundle found the series outside its intended use: nothing is sent, the reason kept).
The outbox holds one row per result instance, keyed by its SOP Instance UID: a result is sent until
the destination acknowledges it, with exponential back-off, and never twice once acknowledged.

Every write is one committed transaction (SQLite in WAL mode, synchronous=FULL), so a node killed at
any moment restarts from a consistent state: `recover` returns jobs that were running to the queue
(their results were not yet in the outbox, so nothing is duplicated) and keeps unsent results.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY, series_uid TEXT NOT NULL, path TEXT NOT NULL, received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    series_uid TEXT UNIQUE NOT NULL, study_uid TEXT, modality TEXT, body_part TEXT, description TEXT,
    calling_ae TEXT, folder TEXT NOT NULL, state TEXT NOT NULL, bundle TEXT, attempts INTEGER DEFAULT 0,
    error TEXT DEFAULT '', first_received REAL, last_received REAL, started REAL, finished REAL,
    result TEXT DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    sop_uid TEXT PRIMARY KEY, job_id INTEGER NOT NULL, path TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER DEFAULT 0, next_try REAL DEFAULT 0, error TEXT DEFAULT '', sent REAL
);
"""

STATES = ("receiving", "queued", "running", "sending", "done", "failed", "ignored", "refused")
FINISHED_STATES = ("done", "failed", "ignored", "refused")
FINISHED_STATES_SQL = ", ".join(f"'{state}'" for state in FINISHED_STATES)  # for SQL's IN (...)
# Columns added after the first release: a node's existing database gains them on start.
ADDED_JOB_COLUMNS = {"accession": "TEXT DEFAULT ''", "patient_ref": "TEXT DEFAULT ''"}


@dataclass
class Job:
    id: int
    series_uid: str
    study_uid: str
    modality: str
    body_part: str
    description: str
    calling_ae: str
    folder: str
    state: str
    bundle: str | None
    attempts: int
    error: str
    first_received: float
    last_received: float
    started: float | None
    finished: float | None
    result: str
    accession: str = ""
    patient_ref: str = ""  # a pseudonym of the Patient ID (`Node.patient_reference`), never the ID itself


class JobStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, kind in ADDED_JOB_COLUMNS.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(sql, args).fetchall()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return rows

    def _many(self, statements: list[tuple[str, tuple]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # --- receiving ---------------------------------------------------------------------------------
    def record_instance(self, sop_uid: str, series_uid: str, path: str, series: dict) -> None:
        """An instance is safely on disk: remember it, and open (or extend) its series' job.

        A finished job is reopened by a *new* instance of its series (the series grew), never by one it
        already has: senders resend what they are unsure was stored (after an aborted association, a
        restart), and that must not make the series answered twice.
        """
        now = time.time()
        self._many(
            [
                (
                    "INSERT INTO jobs (series_uid, study_uid, modality, body_part, description, calling_ae, folder,"
                    " state, first_received, last_received, accession, patient_ref)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'receiving', ?, ?, ?, ?)"
                    " ON CONFLICT(series_uid) DO UPDATE SET last_received = excluded.last_received,"
                    f" state = CASE WHEN jobs.state IN ({FINISHED_STATES_SQL})"
                    " AND NOT EXISTS (SELECT 1 FROM instances WHERE sop_uid = ?) THEN 'receiving'"
                    " ELSE jobs.state END",
                    (
                        series_uid,
                        series.get("study_uid", ""),
                        series.get("modality", ""),
                        series.get("body_part", ""),
                        series.get("description", ""),
                        series.get("calling_ae", ""),
                        series["folder"],
                        now,
                        now,
                        series.get("accession", ""),
                        series.get("patient_ref", ""),
                        sop_uid,
                    ),
                ),
                ("INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?)", (sop_uid, series_uid, path, now)),
            ]
        )

    def complete_idle(self, idle_seconds: float) -> list[str]:
        """Series with no instance for ``idle_seconds`` are complete: queue them."""
        cutoff = time.time() - idle_seconds
        rows = self._run(
            "UPDATE jobs SET state = 'queued' WHERE state = 'receiving' AND last_received <= ? RETURNING series_uid",
            (cutoff,),
        )
        return [r[0] for r in rows]

    def complete(self, series_uids: list[str]) -> None:
        """An association that sent these series was released: they are complete now."""
        for uid in series_uids:
            self._run("UPDATE jobs SET state = 'queued' WHERE state = 'receiving' AND series_uid = ?", (uid,))

    # --- processing --------------------------------------------------------------------------------
    def next_queued(self) -> Job | None:
        rows = self._run(
            "UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1 WHERE id = "
            "(SELECT id FROM jobs WHERE state = 'queued' ORDER BY last_received LIMIT 1) RETURNING *",
            (time.time(),),
        )
        return Job(*rows[0]) if rows else None

    def set_state(self, job_id: int, state: str, *, error: str = "", bundle: str | None = None) -> None:
        finished = time.time() if state in FINISHED_STATES else None
        self._run(
            "UPDATE jobs SET state = ?, error = ?, bundle = COALESCE(?, bundle), finished = COALESCE(?, finished)"
            " WHERE id = ?",
            (state, error, bundle, finished, job_id),
        )

    def results_ready(self, job_id: int, results: list[tuple[str, str]], summary: str) -> None:
        """The job's result instances (SOP UID, path) enter the outbox, atomically with the state change."""
        statements = [
            ("INSERT OR IGNORE INTO outbox (sop_uid, job_id, path, state) VALUES (?, ?, ?, 'pending')", (u, job_id, p))
            for u, p in results
        ]
        state = "sending" if results else "done"
        statements.append(
            (
                "UPDATE jobs SET state = ?, result = ?, finished = CASE WHEN ? = 'done' THEN ? ELSE finished END"
                " WHERE id = ?",
                (state, summary, state, time.time(), job_id),
            )
        )
        self._many(statements)

    # --- sending -----------------------------------------------------------------------------------
    def due(self) -> list[tuple[str, int, str, int]]:
        return self._run(
            "SELECT sop_uid, job_id, path, attempts FROM outbox WHERE state = 'pending' AND next_try <= ?"
            " ORDER BY job_id",
            (time.time(),),
        )

    def sent(self, sop_uid: str) -> None:
        rows = self._run(
            "UPDATE outbox SET state = 'sent', sent = ? WHERE sop_uid = ? RETURNING job_id", (time.time(), sop_uid)
        )
        if rows:
            self._run(
                "UPDATE jobs SET state = 'done', finished = ? WHERE id = ? AND state = 'sending' AND NOT EXISTS"
                " (SELECT 1 FROM outbox WHERE job_id = ? AND state = 'pending')",
                (time.time(), rows[0][0], rows[0][0]),
            )

    def send_failed(self, sop_uid: str, error: str, backoff: float) -> None:
        self._run(
            "UPDATE outbox SET attempts = attempts + 1, error = ?, next_try = ? WHERE sop_uid = ?",
            (error, time.time() + backoff, sop_uid),
        )

    # --- recovery and reporting --------------------------------------------------------------------
    def recover(self) -> int:
        """After a crash or shutdown: jobs that were running go back to the queue, and the idle clock of
        series still being received restarts now (their senders were cut off while the node was down and
        need the idle time to reconnect and finish; queueing them at once would answer half a series)."""
        self._run("UPDATE jobs SET last_received = ? WHERE state = 'receiving'", (time.time(),))
        return len(self._run("UPDATE jobs SET state = 'queued' WHERE state = 'running' RETURNING id"))

    def jobs(self, limit: int = 100) -> list[Job]:
        return [Job(*row) for row in self._run("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))]

    def job(self, job_id: int) -> Job | None:
        """One job by its id, however old."""
        rows = self._run("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job(*rows[0]) if rows else None

    def counts(self) -> dict[str, int]:
        rows = self._run("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {state: n for state, n in rows}

    def event(self, kind: str, detail: str) -> None:
        """Something a PACS engineer should see on the page (a rejected association, a refused instance)."""
        self._run("INSERT INTO events (time, kind, detail) VALUES (?, ?, ?)", (time.time(), kind, detail))

    def events(self, limit: int = 20) -> list[tuple[float, str, str]]:
        return self._run("SELECT time, kind, detail FROM events ORDER BY id DESC LIMIT ?", (limit,))

    def deliveries(self, job_ids: list[int]) -> dict[int, dict]:
        """Per job, its results in the outbox: how many sent and pending, attempts, the last error. One
        query for a whole page of jobs (the page refreshes every few seconds)."""
        rows = self._run(
            "SELECT job_id, state, attempts, error FROM outbox WHERE job_id >= ?", (min(job_ids, default=0),)
        )
        by_job: dict[int, list[tuple]] = {job_id: [] for job_id in job_ids}
        for job_id, *row in rows:
            if job_id in by_job:
                by_job[job_id].append(row)
        return {
            job_id: {
                "results": len(mine),
                "sent": sum(r[0] == "sent" for r in mine),
                "pending": sum(r[0] == "pending" for r in mine),
                "attempts": max((r[1] for r in mine), default=0),
                "last_error": next((r[2] for r in mine if r[0] == "pending" and r[2]), ""),
            }
            for job_id, mine in by_job.items()
        }

    def outbox(self) -> list[tuple]:
        return self._run("SELECT sop_uid, job_id, state, attempts, error FROM outbox ORDER BY job_id")

    def close(self) -> None:
        with self._lock:
            self._db.close()
