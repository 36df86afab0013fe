"""The job queue when things go wrong around it: races, old rows, clock jumps, broken storage, secrets.

Each test is a small story told through the public ``JobQueue`` API and the SQLite file it keeps.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from engine.config import Config, QueueConfig
from engine.errors import UserError
from engine.jobs.events import Failed, Finished, Queued
from engine.jobs.store import SCHEMA_VERSION
from engine.queue import JobQueue
from tests.engine.jobs.test_queue import PromptRunner, Recorder, db_rows, make_cfg, req
from tests.fakes import FakeProgress, FakeResult

STALE = "saved by an older version; please ask again"


async def started(tmp_path: Path, runner: Any = None, **queue: Any) -> tuple[JobQueue, Recorder]:
    q = JobQueue(make_cfg(tmp_path, **queue), runner or PromptRunner())
    rec = Recorder()
    q.subscribe(rec)
    await q.start()
    return q, rec


def cfg_in(data: Path) -> Config:
    """A queue whose database and results live in ``data`` (a folder that may not exist yet)."""
    return Config(queue=QueueConfig(db_path=str(data / "jobs.sqlite3"), results_dir=str(data / "results")))


async def idle(q: JobQueue, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while q.pending():
        assert time.monotonic() < deadline, [j.request.prompt for j in q.pending()]
        await asyncio.sleep(0.01)


# -- #4: a job cancelled while another joins the batch stays cancelled ------------------------


class _Run:
    def __init__(self, request: Any, on_progress: Any) -> None:
        self.request, self.on_progress, self.step_no = request, on_progress, 0

    @property
    def done(self) -> bool:
        return self.step_no >= self.request.steps

    def step(self) -> None:
        self.step_no += 1
        self.on_progress(FakeProgress(self.step_no, self.request.steps, 1.0, Image.new("RGB", (8, 8))))

    def result(self) -> FakeResult:
        return FakeResult(Image.new("RGB", (self.request.width, self.request.height)), self.request, 0.01)


class BatchRunner(PromptRunner):
    """Steps jobs of one size together, like ``EngineRunner``; ``on_start(prompt)`` runs on the
    worker thread while that job is being admitted to the batch."""

    def __init__(self, on_start: Any) -> None:
        super().__init__()
        self.on_start = on_start

    batching = True

    def start(self, request: Any, on_progress: Any) -> _Run:
        self.started.append(request.prompt)
        self.on_start(request.prompt)
        return _Run(request, on_progress)

    def step(self, runs: list[_Run]) -> None:
        for run in runs:
            run.step()


async def test_a_job_cancelled_while_another_joins_the_batch_never_starts(tmp_path):
    loop = asyncio.get_running_loop()
    ids: dict[str, str] = {}
    queued_all = threading.Event()
    q: JobQueue

    def on_start(prompt: str) -> None:
        if prompt == "A":  # hold A's admission until B and C wait behind it
            assert queued_all.wait(10)
        if prompt == "B":  # Cy cancels C at the very moment B is being admitted
            asyncio.run_coroutine_threadsafe(q.cancel(ids["C"], by="cy"), loop).result(10)

    runner = BatchRunner(on_start)
    q, rec = await started(tmp_path, runner, batch_size=3)
    try:
        for prompt, owner in (("A", "ana"), ("B", "ben"), ("C", "cy")):
            ids[prompt] = (await q.submit(req(prompt, steps=3), owner))[0].id
        queued_all.set()
        await rec.wait(Finished, ids["B"])
        await idle(q)
        assert rec.of(ids["C"]) == ["Queued", "JobCancelled"]
        assert q.get(ids["C"]).state == "cancelled" and db_rows(tmp_path)[ids["C"]]["state"] == "cancelled"
        assert runner.started == ["A", "B"]
    finally:
        await q.close()


# -- #5: one stale row fails alone; the others run -------------------------------------------


async def test_rows_an_older_version_saved_fail_alone_and_the_rest_run(tmp_path):
    runner = PromptRunner()
    q, rec = await started(tmp_path, runner, per_owner_pending=10)
    gate, _ = await q.submit(req("gate"), "xavier")
    stale = {name: (await q.submit(req(name), "alice"))[0].id
             for name in ("empty prompt", "zero weight", "blank region", "list request", "origin not json")}
    good, _ = await q.submit(req("good"), "bob")
    await q.close()  # the gate job is stopped and stays queued

    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:  # what older versions could have stored
        db.row_factory = sqlite3.Row
        def set_(column: str, value: str, name: str) -> None:
            db.execute(f"UPDATE jobs SET {column}=? WHERE id=?", (value, stale[name]))

        set_("request", json.dumps({**req().model_dump(mode="json"), "prompt": ""}), "empty prompt")
        set_("request", json.dumps({**req().model_dump(mode="json"), "prompt": "a:0"}), "zero weight")
        set_("request", json.dumps({**req().model_dump(mode="json"), "region": " "}), "blank region")
        set_("request", json.dumps(["a red apple", 5]), "list request")
        set_("origin", "{channel: 7", "origin not json")
        before = {r["id"]: (r["request"], r["origin"]) for r in db.execute("SELECT * FROM jobs")}

    runner.gate.set()
    q2, rec2 = await started(tmp_path, runner)
    try:
        for name, job_id in stale.items():
            failed = await rec2.wait(Failed, job_id)
            assert failed.reason == STALE, name
        assert rec2.of(stale["blank region"]) == ["Failed"]
        assert (await rec2.wait(Failed, stale["blank region"])).job.request.prompt == "a red apple"  # as stored
        await rec2.wait(Finished, good.id)
        await rec2.wait(Finished, gate.id)
        rows = db_rows(tmp_path)
        for job_id in stale.values():
            assert rows[job_id]["state"] == "failed" and rows[job_id]["error"] == STALE
            assert (rows[job_id]["request"], rows[job_id]["origin"]) == before[job_id]  # kept as stored
    finally:
        await q2.close()
    assert runner.started.count("good") == 1 and not set(runner.started) & set(stale)


async def test_the_store_has_a_schema_version_and_upgrades_the_first_releases_file(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:  # the layout the first release wrote, with no version number
        db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL, "
                   "priority INTEGER NOT NULL DEFAULT 0, request TEXT NOT NULL, origin TEXT NOT NULL DEFAULT '{}', "
                   "created_at REAL NOT NULL, started_at REAL, finished_at REAL, error TEXT, result_path TEXT, "
                   "seconds REAL, attempts INTEGER NOT NULL DEFAULT 0, delivered INTEGER NOT NULL DEFAULT 0)")
        db.execute("INSERT INTO jobs (id, owner, state, request, origin, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                   ("oldjob", "alice", "queued", req("kept").model_dump_json(), '{"channel": 7}', time.time()))
    q, rec = await started(tmp_path)
    try:
        done = await rec.wait(Finished, "oldjob")
        assert done.job.origin == {"channel": 7} and done.job.request.prompt == "kept"
    finally:
        await q.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
        db.execute("PRAGMA user_version=99")  # as a future version would leave it
    with pytest.raises(UserError, match=r"written by a newer version .* upgrade, or set queue\.db_path"):
        await started(tmp_path)


# -- #6: turns are counted, not timed --------------------------------------------------------


async def test_turns_alternate_even_when_the_clock_is_stepped_back(tmp_path, monkeypatch):
    real, offset = time.time, [0.0]
    monkeypatch.setattr(time, "time", lambda: real() - offset[0])

    class ClockStepper(PromptRunner):
        def __call__(self, request: Any, on_progress: Any, should_stop: Any) -> Any:
            if request.prompt == "a1":  # NTP steps the clock back an hour during A's second job
                offset[0] = 3600.0
            return super().__call__(request, on_progress, should_stop)

    runner = ClockStepper()
    q, rec = await started(tmp_path, runner, per_owner_pending=10)
    try:
        gate, _ = await q.submit(req("gate"), "xavier")
        for i in range(6):
            await q.submit(req(f"a{i}", steps=1), "alice")
            await q.submit(req(f"b{i}", steps=1), "bob")
        runner.gate.set()
        await idle(q)
    finally:
        await q.close()
    turns = "".join(p[0].upper() for p in runner.started[1:])
    assert turns == "AB" * 6


async def test_turns_survive_a_restart_across_a_clock_step(tmp_path, monkeypatch):
    real, offset = time.time, [0.0]
    monkeypatch.setattr(time, "time", lambda: real() - offset[0])
    runner = PromptRunner()
    q, rec = await started(tmp_path, runner)
    a0, _ = await q.submit(req("a0", steps=1), "alice")
    await rec.wait(Finished, a0.id)
    offset[0] = 3600.0  # the clock is stepped back an hour: bob is served after alice all the same
    b0, _ = await q.submit(req("b0", steps=1), "bob")
    await rec.wait(Finished, b0.id)
    await q.submit(req("gate"), "xavier")
    await q.submit(req("b1"), "bob")
    await q.submit(req("a1"), "alice")
    await q.close()

    q2, _ = await started(tmp_path, PromptRunner())
    try:
        assert [j.request.prompt for j in q2.pending()] == ["gate", "a1", "b1"]  # alice's turn, then bob's
    finally:
        await q2.close()


# -- #7: storage failures are one line naming the path, and nothing stored is lost ------------


async def test_a_corrupted_database_stops_start_with_one_line_and_is_left_alone(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    junk = b"this is not a database, whatever it once was\n" * 200
    path.write_bytes(junk)
    with pytest.raises(UserError) as err:
        await started(tmp_path)
    line = str(err.value)
    assert "\n" not in line and str(path) in line and "damaged" in line and "move it aside" in line
    assert path.read_bytes() == junk


@pytest.mark.parametrize("how", ["read-only file system", "a file where the folder should be"])
async def test_an_unwritable_data_folder_stops_start_with_one_line(tmp_path, monkeypatch, how):
    data = tmp_path / "data"
    if how == "a file where the folder should be":
        data.write_text("not a folder")
    else:
        real_mkdir = os.mkdir

        def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
            if Path(path).is_relative_to(data):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
    cfg = cfg_in(data)
    q = JobQueue(cfg.model_copy(update={"queue": cfg.queue.model_copy(  # results elsewhere, writable
        update={"results_dir": str(tmp_path / "results")})}), PromptRunner())
    with pytest.raises(UserError) as err:
        await q.start()
    line = str(err.value)
    assert "\n" not in line and str(data / "jobs.sqlite3") in line and "make that folder writable" in line


async def test_a_full_disk_at_submit_refuses_that_job_and_keeps_the_rest(tmp_path, monkeypatch):
    q, rec = await started(tmp_path)
    earlier, _ = await q.submit(req("earlier"), "alice", origin={"channel": 1})
    await rec.wait(Finished, earlier.id)
    await q.close()

    path = str(tmp_path / "jobs.sqlite3")
    real_connect = sqlite3.connect

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = real_connect(database, *args, **kwargs)
        if str(database) == path:  # the file may not grow: SQLite answers SQLITE_FULL, as on a full disk
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count={pages}")
        return db

    monkeypatch.setattr(sqlite3, "connect", connect)
    q2, rec2 = await started(tmp_path)
    try:
        with pytest.raises(UserError) as err:
            await q2.submit(req("big"), "bob", origin={"note": "x" * 20000})
        line = str(err.value)
        assert "\n" not in line and path in line and "full" in line and "free some space" in line
        assert q2.pending() == [] and not [e for e in rec2.events if isinstance(e, Queued)]
        assert q2.find(note="x" * 20000) is None
        small, _ = await q2.submit(req("small"), "bob")  # a row that fits still goes through
        await rec2.wait(Finished, small.id)
    finally:
        await q2.close()
    rows = db_rows(tmp_path)
    assert set(rows) == {earlier.id, small.id} and rows[earlier.id]["state"] == "finished"


async def test_an_unwritable_results_folder_is_one_line_at_start_and_to_the_user(tmp_path):
    results = tmp_path / "results"
    results.write_text("a file where the results folder should be")
    with pytest.raises(UserError) as err:
        await started(tmp_path)
    assert "\n" not in str(err.value) and f"the results folder {results}" in str(err.value)
    results.unlink()

    q, rec = await started(tmp_path)
    try:
        shutil.rmtree(results)
        results.write_text("the folder became unusable while the bot ran")
        job, _ = await q.submit(req(), "alice")
        failed = await rec.wait(Failed, job.id)
        assert failed.reason.startswith("could not save the picture: cannot write the results folder ")
        assert str(results) in failed.reason and "\n" not in failed.reason
        results.unlink()  # the admin removes the file; the queue makes the folder again and goes on
        again, _ = await q.submit(req(), "alice")
        await rec.wait(Finished, again.id)
    finally:
        await q.close()


# -- #14: the store is private, and short-lived secrets are dropped when they expire --------


async def test_the_data_folder_and_database_are_private(tmp_path):
    data = tmp_path / "data"
    q = JobQueue(cfg_in(data), PromptRunner())
    rec = Recorder()
    q.subscribe(rec)
    await q.start()
    try:
        job, _ = await q.submit(req(), "alice", origin={"token": "secret"})
        await rec.wait(Finished, job.id)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [data, *data.iterdir()]}
    finally:
        await q.close()
    assert modes.pop("data") == modes.pop("results") == 0o700
    assert modes and set(modes.values()) == {0o600}, modes  # the database, its WAL and shared memory

    (data / "jobs.sqlite3").chmod(0o644)  # as an older version left it
    q2 = JobQueue(cfg_in(data), PromptRunner())
    await q2.start()
    await q2.close()
    assert stat.S_IMODE((data / "jobs.sqlite3").stat().st_mode) == 0o600


def _on_disk(tmp_path: Path, secret: bytes) -> bool:
    return any(secret in p.read_bytes() for p in tmp_path.glob("jobs.sqlite3*"))


async def test_an_expiring_origin_key_is_dropped_from_memory_and_disk(tmp_path):
    runner = PromptRunner()
    q, rec = await started(tmp_path, runner)
    try:
        job, _ = await q.submit(req("gate"), "alice", origin={"token": "SECRET-123", "channel": 7},
                                forget_after={"token": 0.3})
        assert q.get(job.id).origin["token"] == "SECRET-123" and _on_disk(tmp_path, b"SECRET-123")
        deadline = time.monotonic() + 5
        while "token" in q.get(job.id).origin or _on_disk(tmp_path, b"SECRET-123"):  # nor in free pages or WAL
            assert time.monotonic() < deadline, "the token is still there"
            await asyncio.sleep(0.02)
        assert q.get(job.id).origin == {"channel": 7}
        assert json.loads(db_rows(tmp_path)[job.id]["origin"]) == {"channel": 7}
        runner.gate.set()
        done = await rec.wait(Finished, job.id)
        assert done.job.origin == {"channel": 7}
    finally:
        await q.close()


async def test_a_key_that_expired_while_the_queue_was_down_is_dropped_at_start(tmp_path):
    q, rec = await started(tmp_path, PromptRunner())
    job, _ = await q.submit(req("gate"), "alice", origin={"token": "SECRET-456"}, forget_after={"token": 0.2})
    await q.close()
    assert _on_disk(tmp_path, b"SECRET-456")
    await asyncio.sleep(0.3)
    runner = PromptRunner()
    runner.gate.set()
    q2, rec2 = await started(tmp_path, runner)
    try:
        assert "token" not in q2.get(job.id).origin and not _on_disk(tmp_path, b"SECRET-456")
        await rec2.wait(Finished, job.id)
    finally:
        await q2.close()


async def test_tokens_stored_before_expiry_existed_are_dropped_when_the_front_end_names_the_key(tmp_path):
    q, rec = await started(tmp_path, PromptRunner())
    old, _ = await q.submit(req("gate"), "alice", origin={"token": "SECRET-OLD", "channel": 1})
    new, _ = await q.submit(req("b"), "bob", origin={"token": "SECRET-NEW"})
    await q.close()
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:  # submitted an hour ago
        db.execute("UPDATE jobs SET created_at=created_at-3600 WHERE id=?", (old.id,))

    q2, _ = await started(tmp_path, PromptRunner())
    try:
        assert await q2.expire_origin_key("token", after_s=900) == 2
        assert q2.get(old.id).origin == {"channel": 1} and not _on_disk(tmp_path, b"SECRET-OLD")
        assert q2.get(new.id).origin == {"token": "SECRET-NEW"}  # still within its 15 minutes
        assert q2.get(new.id).forget_at["token"] == pytest.approx(q2.get(new.id).created_at + 900)
    finally:
        await q2.close()
    q3, _ = await started(tmp_path, PromptRunner())  # the deadline was stored with the job
    try:
        assert q3.get(new.id).forget_at["token"] == pytest.approx(q3.get(new.id).created_at + 900)
    finally:
        await q3.close()
