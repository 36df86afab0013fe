"""The job queue's durable record: one SQLite table, one row per job.

WAL journal with ``synchronous=NORMAL``: a commit survives the process being killed at any
point (the database is never left half-written), and writers never block readers. The store
deals in plain dicts so that it does not depend on the queue's models; ``request`` and
``origin`` are stored as JSON text. A ``JobStore`` is used from one thread (the queue keeps
a dedicated one for it), so it needs no locking of its own.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

COLUMNS = (
    "id", "owner", "state", "priority", "request", "origin", "created_at", "started_at",
    "finished_at", "error", "result_path", "seconds", "attempts", "delivered",
)
_JSON = ("request", "origin")
TERMINAL = ("finished", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    request TEXT NOT NULL,
    origin TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    result_path TEXT,
    seconds REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
"""


class JobStore:
    """Rows of the ``jobs`` table in and out; every call is its own committed transaction."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each statement commits at once, so nothing waits in an open transaction.
        self._db = sqlite3.connect(p, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def save(self, row: dict[str, Any]) -> None:
        """Insert or update a job (an update keeps its rowid, hence its place in ``load``)."""
        values = [json.dumps(row[c]) if c in _JSON else row[c] for c in COLUMNS]
        updates = ", ".join(f"{c}=excluded.{c}" for c in COLUMNS[1:])
        self._db.execute(
            f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}",
            values,
        )

    def load(self) -> list[dict[str, Any]]:
        """All jobs, oldest first (submission order)."""
        rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs ORDER BY created_at, rowid")
        return [self._decode(r) for r in rows]

    def prune(self, before: float) -> list[dict[str, Any]]:
        """Delete ended jobs that ended before ``before``; returns them (to remove their files)."""
        marks = ", ".join("?" * len(TERMINAL))
        rows = self._db.execute(
            f"DELETE FROM jobs WHERE state IN ({marks}) AND finished_at < ? RETURNING {', '.join(COLUMNS)}",
            (*TERMINAL, before),
        ).fetchall()
        return [self._decode(r) for r in rows]

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def _decode(row: sqlite3.Row) -> dict[str, Any]:
        return {c: json.loads(row[c]) if c in _JSON else row[c] for c in COLUMNS}
