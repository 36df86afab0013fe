"""The job queue's durable record: one SQLite table, one row per job (and, beside it, each person's
settings and styles: ``engine.jobs.preferences``).

WAL journal with ``synchronous=NORMAL``: a commit survives the process being killed at any
point (the database is never left half-written), and writers never block readers. The store
deals in plain dicts so that it does not depend on the queue's models; ``request``, ``origin``
and ``forget_at`` are stored as JSON text (a value that is not valid JSON comes back as the raw
text, for the queue to fail that one job). A ``JobStore`` is used from one thread (the queue keeps
a dedicated one for it), so it needs no locking of its own.

The folder is created 0700 and the database 0600 (origins may hold short-lived secrets);
``secure_delete`` and ``scrub`` make sure a dropped secret does not linger in free pages or the WAL.
Every failure leaves as a ``StorageError``: one line naming the file and what to do.

The schema has a version (``PRAGMA user_version``); ``MIGRATIONS[n]`` turns version n-1 into n,
inside one transaction. To change the schema, append a step and nothing else.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import StorageError
from engine.jobs.job import PENDING, TERMINAL
from engine.media.files import private_dir

COLUMNS = (
    "id", "owner", "state", "priority", "request", "origin", "created_at", "started_at",
    "finished_at", "error", "result_path", "seconds", "attempts", "delivered", "served", "forget_at", "lane",
)
_JSON = ("request", "origin", "forget_at")

_V1 = """
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


def _v2(db: sqlite3.Connection) -> None:
    """Turns counted, not timed (``served``); origin keys with an expiry (``forget_at``)."""
    db.execute("ALTER TABLE jobs ADD COLUMN served INTEGER")
    db.execute("ALTER TABLE jobs ADD COLUMN forget_at TEXT NOT NULL DEFAULT '{}'")
    # Older rows: their turns in the order they started (the best the old record allows).
    db.execute("UPDATE jobs SET served = (SELECT COUNT(*) FROM jobs AS o WHERE o.started_at IS NOT NULL "
               "AND (o.started_at, o.rowid) <= (jobs.started_at, jobs.rowid)) WHERE started_at IS NOT NULL")


def _v3(db: sqlite3.Connection) -> None:
    """Each person's settings and named styles (``engine.jobs.preferences``): a versioned JSON model per
    row. A style's ``scope`` is ``user:<id>`` (one person's) or ``guild:<id>`` (a server's)."""
    db.execute("CREATE TABLE user_settings (user_id TEXT PRIMARY KEY, settings TEXT NOT NULL, "
               "updated_at REAL NOT NULL)")
    db.execute("CREATE TABLE styles (scope TEXT NOT NULL, name TEXT NOT NULL, style TEXT NOT NULL, "
               "updated_at REAL NOT NULL, PRIMARY KEY (scope, name))")


def _v4(db: sqlite3.Connection) -> None:
    """Entries moderators banned (``/moderation ban``), per scope (the bot's: a server id): ``engine.jobs.bans``."""
    db.execute("CREATE TABLE banned (scope TEXT NOT NULL, entry TEXT NOT NULL, added_by TEXT NOT NULL, "
               "added_at REAL NOT NULL, PRIMARY KEY (scope, entry))")


def _lanes_and_usage(db: sqlite3.Connection) -> None:
    """Quotas (``engine.jobs.quota``): the lane each job waits in; each person's GPU seconds per UTC day."""
    db.execute("ALTER TABLE jobs ADD COLUMN lane TEXT NOT NULL DEFAULT 'fast'")
    db.execute("CREATE TABLE IF NOT EXISTS usage (owner TEXT NOT NULL, day TEXT NOT NULL, "
               "seconds REAL NOT NULL DEFAULT 0, PRIMARY KEY (owner, day))")


def _v1(db: sqlite3.Connection) -> None:
    """The first release's layout (``executescript`` would commit the migration's transaction)."""
    for statement in _V1.split(";"):
        if statement.strip():
            db.execute(statement)


# Index n-1 holds the step to version n. Version 1 is the layout the first release wrote
# without a version number (so an unversioned file with a ``jobs`` table is version 0 -> 1: a no-op).
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3, _v4, _lanes_and_usage]
SCHEMA_VERSION = len(MIGRATIONS)


def storage_problem(e: BaseException, path: str | Path, what: str = "the job store") -> str:
    """One line for a storage failure: which file, what went wrong, what to do."""
    code = getattr(e, "sqlite_errorname", "") or ""
    err = getattr(e, "errno", None)
    text = str(e)
    if code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "not a database" in text or "malformed" in text:
        return (f"{what} {path} is damaged ({text}); move it aside (it is left as it is) "
                "and start again to begin with an empty queue")
    if code.startswith("SQLITE_FULL") or err == errno.ENOSPC or "disk is full" in text:
        return f"the disk holding {what} {path} is full; free some space and try again"
    if (code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"))
            or err in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR)
            or "readonly" in text or "unable to open" in text):
        reason = e.strerror if isinstance(e, OSError) and e.strerror else text
        return f"cannot write {what} {path} ({reason}); make that folder writable by this user or choose another path"
    return f"{what} {path} failed ({type(e).__name__}: {text}); check the disk and its permissions"


def connect(path: str | Path) -> sqlite3.Connection:
    """The job store's database file opened, made private and migrated to ``SCHEMA_VERSION``: the one way
    to open it (the job store, and each person's settings and styles, ``engine.jobs.preferences``).
    Autocommit: each statement commits at once, so nothing waits in an open transaction."""
    p = Path(path)
    try:
        return _open(p)
    except StorageError:
        raise
    except (sqlite3.Error, OSError) as e:
        raise StorageError(storage_problem(e, p)) from e


def _open(p: Path) -> sqlite3.Connection:
    private_dir(p.parent)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)  # sqlite would create it 0644
    os.close(fd)
    for f in (p, *(p.with_name(p.name + s) for s in ("-wal", "-shm", "-journal"))):
        if f.exists() and os.stat(f).st_mode & 0o077:
            os.chmod(f, 0o600)  # files an older version made world-readable
    db = sqlite3.connect(p, isolation_level=None)
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA secure_delete=ON")
        while (n := _check_version(p, db) + 1) <= SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("PRAGMA user_version").fetchone()[0] == n - 1:  # another connection may have won
                    MIGRATIONS[n - 1](db)
                    db.execute(f"PRAGMA user_version={n}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
    except BaseException:
        db.close()
        raise
    return db


def _check_version(p: Path, db: sqlite3.Connection) -> int:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"the job store {p} was written by a newer version (schema {version}, this one reads up to "
            f"{SCHEMA_VERSION}); upgrade, or set queue.db_path to another file")
    return version


class JobStore:
    """Rows of the ``jobs`` table in and out; every call is its own committed transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = connect(self.path)

    def _run(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as e:
            raise StorageError(storage_problem(e, self.path)) from e

    def save(self, row: dict[str, Any], usage: tuple[str, str, float] | None = None) -> None:
        """Insert or update a job (an update keeps its rowid, hence its place in ``load``).

        ``usage`` (owner, UTC day, seconds): GPU time added to that person's day, in the same
        transaction (a job's end and its charge are on disk together, or neither is)."""
        values = [json.dumps(row[c]) if c in _JSON else row[c] for c in COLUMNS]
        updates = ", ".join(f"{c}=excluded.{c}" for c in COLUMNS[1:])
        statements: list[tuple[str, Any]] = [(
            f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}",
            values,
        )]
        if usage is not None:
            statements.append(("INSERT INTO usage (owner, day, seconds) VALUES (?, ?, ?) "
                               "ON CONFLICT(owner, day) DO UPDATE SET seconds = seconds + excluded.seconds", usage))
        self._together(statements)

    def _together(self, statements: list[tuple[str, Any]]) -> None:
        """One statement as it is (autocommit), several in one transaction."""
        if len(statements) == 1:
            self._run(*statements[0])
            return
        self._run("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                self._run(sql, args)
            self._run("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def usage_on(self, day: str) -> dict[str, float]:
        """Each person's GPU seconds on a UTC day ("2024-05-01")."""
        rows = self._run("SELECT owner, seconds FROM usage WHERE day = ?", (day,))
        return {str(r["owner"]): float(r["seconds"]) for r in rows}

    def update(self, job_id: str, **columns: Any) -> None:
        """Change some columns of one job, leaving the others (e.g. an unreadable request) as stored."""
        assert columns and all(c in COLUMNS[1:] for c in columns)
        sets = ", ".join(f"{c}=?" for c in columns)
        values = [json.dumps(v) if c in _JSON else v for c, v in columns.items()]
        self._run(f"UPDATE jobs SET {sets} WHERE id=?", (*values, job_id))

    def load(self) -> list[dict[str, Any]]:
        """All jobs in submission order."""
        return [self._decode(r) for r in self._run(f"SELECT {', '.join(COLUMNS)} FROM jobs ORDER BY rowid")]

    def prune(self, before: float, day: str | None = None) -> list[dict[str, Any]]:
        """Delete ended jobs that ended before ``before``, and the GPU time of the UTC days before
        ``day`` (the day of ``before``); returns the jobs (to remove their files)."""
        if day is not None:
            self._run("DELETE FROM usage WHERE day < ?", (day,))
        marks = ", ".join("?" * len(TERMINAL))
        rows = self._run(
            f"DELETE FROM jobs WHERE state IN ({marks}) AND finished_at < ? RETURNING {', '.join(COLUMNS)}",
            (*sorted(TERMINAL), before),
        ).fetchall()
        return [self._decode(r) for r in rows]

    def scrub(self) -> None:
        """Copy the WAL into the database and empty it, so overwritten values are gone from disk."""
        self._run("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def _decode(row: sqlite3.Row) -> dict[str, Any]:
        out = {}
        for c in COLUMNS:
            out[c] = row[c]
            if c in _JSON:
                try:
                    out[c] = json.loads(row[c])
                except (TypeError, ValueError):
                    pass  # kept as text: the queue fails this job as unreadable
        return out


def read_pending(db_path: str | Path) -> list[tuple[str, str]]:
    """(owner, state) of every waiting or running job, read-only from a coordinator's store (another
    process may be using it): what ``python -m engine fleet`` counts."""
    if not Path(db_path).is_file():
        return []
    states = sorted(PENDING)
    try:
        db = sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True)
        try:
            marks = ", ".join("?" * len(states))
            rows = db.execute(f"SELECT owner, state FROM jobs WHERE state IN ({marks})", states).fetchall()
            return [(str(o), str(s)) for o, s in rows]
        finally:
            db.close()
    except sqlite3.Error as e:
        raise StorageError(f"{db_path}: cannot read the job store: {e}") from None
