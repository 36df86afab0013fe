"""Quotas and the relax lane (engine/jobs/quota.py, order.py): GPU time per person per UTC day, through
``JobQueue`` with the shared fake runner, and with a fake Redis worker reporting the run times it likes.

The quotas are tiny (a microsecond), so one short job puts its owner over; nothing waits for a real quota.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.config import Config, LimitsConfig, QueueConfig
from engine.errors import OverQuota
from engine.jobs.events import Event, Failed, Finished, JobCancelled, Started
from engine.queue import JobQueue
from engine.spec.request import Request
from tests.fakes import FakeResult, FakeRunner
from tests.fleet import FakeWorker, RedisServer, needs_redis, png_of

TINY = 1e-6  # GPU seconds a day: any job that ran puts its owner over


class Reporting(FakeRunner):
    """Paints at once and reports the seconds it measured (kept in ``reported`` by prompt); the prompt
    "gate" waits until ``gate`` is set, "user-error" fails."""

    def __init__(self) -> None:
        super().__init__(delay=0)
        self.opened = threading.Event()
        self.gate = lambda req: req.prompt != "gate" or self.opened.is_set()
        self.started: list[str] = []
        self.reported: dict[str, float] = {}

    def __call__(self, req: Request, on_progress: Callable[[Any], None], should_stop: Callable[[], bool]) -> Any:
        t0 = time.monotonic()
        self.started.append(req.prompt)
        if req.prompt == "user-error":
            from engine.errors import UserError

            raise UserError("that prompt names a file that does not exist")
        result = super().__call__(req, on_progress, should_stop)
        self.reported[req.prompt] = time.monotonic() - t0
        return FakeResult(result.image, req, self.reported[req.prompt])


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, ev: Event) -> None:
        self.events.append(ev)

    def of(self, kind: type, job_id: str) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and e.job.id == job_id]

    async def wait(self, kind: type, job_id: str, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while not self.of(kind, job_id):
            assert time.monotonic() < deadline, f"no {kind.__name__} for {job_id}"
            await asyncio.sleep(0.005)
        return self.of(kind, job_id)[0]


def make_cfg(tmp_path: Path, limits: dict[str, Any], **queue: Any) -> Config:
    return Config(limits=LimitsConfig(**limits),
                  queue=QueueConfig(db_path=str(tmp_path / "jobs.sqlite3"), results_dir=str(tmp_path / "results"),
                                    per_owner_pending=10, **queue))


def ask(prompt: str) -> Request:
    return Request(prompt=prompt, steps=2, width=64, height=64, seed=1)


@pytest.fixture
async def open_queue(tmp_path: Path):
    """``open_queue(runner, daily_gpu_seconds=..., relax=..., ...)`` -> a started queue and a Recorder."""
    opened: list[JobQueue] = []

    async def _open(runner: Any, **limits: Any) -> tuple[JobQueue, Recorder]:
        q = JobQueue(make_cfg(tmp_path, limits), runner)
        rec = Recorder()
        q.subscribe(rec)
        await q.start()
        opened.append(q)
        return q, rec

    yield _open
    for q in opened:
        await q.close()


async def run_one(q: JobQueue, rec: Recorder, owner: str, prompt: str = "warm-up") -> Finished:
    job, _ = await q.submit(ask(prompt), owner)
    return await rec.wait(Finished, job.id)


def lanes_on_disk(tmp_path: Path) -> dict[str, str]:
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        return dict(db.execute("SELECT id, lane FROM jobs"))


async def test_over_the_quota_a_job_waits_in_the_relax_lane_while_fast_jobs_wait_and_turns_stay_fair(
        open_queue, tmp_path):
    runner = Reporting()
    q, rec = await open_queue(runner, daily_gpu_seconds=TINY)
    for owner in ("alice", "dave"):  # each runs one job: both are over today's GPU time
        fin = await run_one(q, rec, owner, f"warm-up {owner}")
        assert fin.seconds == fin.job.seconds == runner.reported[f"warm-up {owner}"] > 0
        assert q.quota.usage(owner).used_s == pytest.approx(fin.seconds) and q.quota.usage(owner).over
    assert not q.quota.usage("bob").over and q.quota.usage("bob").used_s == 0
    gate, _ = await q.submit(ask("gate"), "xavier")
    await rec.wait(Started, gate.id)
    a1, pos = await q.submit(ask("a1"), "alice")
    assert a1.lane == "relax" and pos == 1  # nobody else waits: it is next
    await q.submit(ask("a2"), "alice")
    await q.submit(ask("d1"), "dave")
    b1, pos = await q.submit(ask("b1"), "bob")
    assert b1.lane == "fast" and pos == 1, "a fast job goes ahead of every relax one"
    await q.submit(ask("c1"), "carol")
    await q.submit(ask("b2"), "bob")
    assert q.position(a1.id) == 4 and q.quota.lane_of(q.get(a1.id)) == "relax"
    assert q.quota.depth() == {"fast": 3, "relax": 3}
    # Fast first, round-robin within it; then the relax lane, round-robin too (alice was served before dave).
    expected = ["gate", "b1", "c1", "b2", "a1", "d1", "a2"]
    assert [j.request.prompt for j in q.pending()] == expected
    assert lanes_on_disk(tmp_path)[a1.id] == "relax" and lanes_on_disk(tmp_path)[b1.id] == "fast"
    runner.opened.set()
    await rec.wait(Finished, q.find().id)
    while q.pending():
        await asyncio.sleep(0.005)
    assert runner.started[2:] == expected
    used = {o: q.quota.usage(o).used_s for o in ("alice", "bob", "carol", "dave", "xavier")}
    ran = {o: sum(j.seconds or 0 for j in q.jobs_of(o)) for o in used}
    assert used == pytest.approx(ran) and all(s > 0 for s in used.values())


class Batching(Reporting):
    """Steps jobs of the same size together; each step waits for ``opened``."""

    batching = True

    def start(self, request: Request, on_progress: Callable[[Any], None]) -> Any:
        self.started.append(request.prompt)
        return super().start(request, on_progress)

    def step(self, runs: Any) -> None:
        assert self.opened.wait(10)
        super().step(runs)


async def test_a_relax_job_does_not_join_a_running_batch_while_a_fast_job_waits(open_queue):
    runner = Batching()
    runner.opened.set()
    q, rec = await open_queue(runner, daily_gpu_seconds=TINY)
    await run_one(q, rec, "alice")
    runner.opened.clear()
    first, _ = await q.submit(ask("first"), "xavier")
    await rec.wait(Started, first.id)  # in a batch, held at its first step
    relaxed, _ = await q.submit(ask("same size, relaxed"), "alice")
    other = ask("other size, fast").model_copy(update={"width": 32, "height": 32})
    fast, _ = await q.submit(other, "bob")
    assert relaxed.lane == "relax" and fast.lane == "fast"
    runner.opened.set()
    await rec.wait(Finished, relaxed.id)
    assert runner.started == ["warm-up", "first", "other size, fast", "same size, relaxed"]
    assert rec.of(Started, fast.id)[0].job.started_at <= rec.of(Started, relaxed.id)[0].job.started_at


async def test_with_relax_off_a_job_over_the_quota_is_refused_in_one_line_and_nothing_is_queued(open_queue, tmp_path):
    q, rec = await open_queue(Reporting(), daily_gpu_seconds=TINY, relax=False)
    await run_one(q, rec, "alice")
    with pytest.raises(OverQuota, match=r"^You have used today's GPU time \(\d\.\d s of 0\.0 s\); ask again after "
                                        r"it resets at midnight UTC \(in \d+ (h \d\d min|min \d\d s|s)\)\.$"):
        await q.submit(ask("one more"), "alice")
    assert len(q.jobs_of("alice")) == 1 and len(lanes_on_disk(tmp_path)) == 1, "nothing queued, nothing stored"
    bob, _ = await q.submit(ask("bob's"), "bob")  # everybody else paints on
    assert (await rec.wait(Finished, bob.id)).job.lane == "fast"


@pytest.mark.parametrize("exempt", [True, False])
async def test_a_moderator_over_the_quota_is_exempt_only_when_the_key_says_so(open_queue, exempt):
    q, rec = await open_queue(Reporting(), daily_gpu_seconds=TINY, relax=False, moderators_exempt=exempt)
    await run_one(q, rec, "mod")
    if exempt:
        job, _ = await q.submit(ask("mod again"), "mod", moderator=True)
        assert job.lane == "fast" and (await rec.wait(Finished, job.id)).job.seconds > 0
        assert q.quota.usage("mod").over, "a moderator's time is counted all the same"
    else:
        with pytest.raises(OverQuota):
            await q.submit(ask("mod again"), "mod", moderator=True)
    with pytest.raises(OverQuota):
        await q.submit(ask("not as a moderator"), "mod")


async def test_usage_and_lanes_survive_a_restart_and_a_relaxed_job_is_fast_once_the_utc_day_turns(tmp_path):
    cfg = make_cfg(tmp_path, {"daily_gpu_seconds": TINY})
    q, rec = JobQueue(cfg, Reporting()), Recorder()
    q.subscribe(rec)
    await q.start()
    try:
        await run_one(q, rec, "alice")
        gate, _ = await q.submit(ask("gate"), "xavier")
        await rec.wait(Started, gate.id)
        relaxed, _ = await q.submit(ask("relaxed"), "alice")
        used = q.quota.usage("alice").used_s
    finally:
        await q.close()  # the gate job is interrupted: it is queued again
    runner = Reporting()
    q, rec = JobQueue(cfg, runner), Recorder()
    q.subscribe(rec)
    await q.start()
    try:
        assert used > 0 and q.quota.usage("alice").used_s == pytest.approx(used), "read back from the store"
        assert q.get(relaxed.id).lane == "relax" and q.quota.lane_of(q.get(relaxed.id)) == "relax"
        await rec.wait(Started, gate.id)  # interrupted, it runs first again: xavier was served last
        await q.submit(ask("fast"), "bob")
        await q.submit(ask("x2"), "xavier")
        assert [j.request.prompt for j in q.pending()] == ["gate", "fast", "x2", "relaxed"]
        today = q.quota.usage("alice")
        q.quota.clock = lambda: time.time() + 86400  # midnight UTC has passed
        tomorrow = q.quota.usage("alice")
        assert tomorrow.used_s == 0 and not tomorrow.over and tomorrow.day != today.day
        assert tomorrow.resets_at == today.resets_at + 86400 and 0 < today.resets_at - time.time() <= 86400
        assert q.quota.lane_of(q.get(relaxed.id)) == "fast", "its owner is no longer over: it waits as a fast job"
        assert [j.request.prompt for j in q.pending()] == ["gate", "fast", "relaxed", "x2"], "fair turns: alice's before xavier's"
        assert q.get(relaxed.id).lane == "relax", "the submission's lane stays on record"
    finally:
        runner.opened.set()
        await q.close()


async def test_failed_and_cancelled_jobs_count_the_time_they_were_held(open_queue):
    runner = Reporting()
    q, rec = await open_queue(runner, daily_gpu_seconds=3600)
    failed, _ = await q.submit(ask("user-error"), "alice")
    fail = await rec.wait(Failed, failed.id)
    gate, _ = await q.submit(ask("gate"), "alice")
    waiting, _ = await q.submit(ask("never ran"), "alice")
    await rec.wait(Started, gate.id)
    await q.cancel(waiting.id, by="alice")
    await q.cancel(gate.id, by="alice")
    stopped = (await rec.wait(JobCancelled, gate.id)).job
    assert 0 < fail.job.seconds <= fail.job.finished_at - fail.job.started_at
    assert 0 < stopped.seconds <= stopped.finished_at - stopped.started_at
    assert q.get(waiting.id).seconds is None, "a job cancelled while waiting ran for nothing"
    assert q.quota.usage("alice").used_s == pytest.approx(fail.job.seconds + stopped.seconds)
    assert q.quota.usage("alice").left_s == pytest.approx(3600 - fail.job.seconds - stopped.seconds)


@needs_redis
async def test_a_remote_workers_reported_seconds_count_and_hostile_ones_are_capped_by_the_time_it_held_the_job(
        tmp_path):
    """A worker reports the run time; one that claims a billion seconds, minus a billion, or NaN (as raw JSON,
    which pydantic reads) cannot explode or zero anybody's use: no job counts more than the time it was held."""
    from engine.fleet.wire import FinishedMsg, encode

    honest = 1e-4  # surely less than a hand-out's round trip through Redis

    def answer(job):
        claim = {"honest": honest, "huge": 1e9, "negative": -1e9, "nan": math.nan, "inf": math.inf}[job.request.prompt]
        msg = FinishedMsg(worker="mallory", job_id=job.job_id, lease=job.lease, png=png_of(64, 64), seconds=0.0,
                          metadata={"request": job.request.to_metadata(), "note": None})
        return [json.dumps({**json.loads(encode(msg)), "seconds": claim}).encode()]  # NaN, Infinity: JSON literals

    server = RedisServer(tmp_path / "redis")
    server.start()
    q = None
    try:
        with FakeWorker(server.url, "mallory", capacity=5, answer=answer):
            cfg = make_cfg(tmp_path, {"daily_gpu_seconds": 60}, backend="redis", redis_url=server.url,
                           batch_size=5)
            q, rec = JobQueue(cfg), Recorder()
            q.subscribe(rec)
            await q.start()
            ids = {p: (await q.submit(ask(p), "alice"))[0].id for p in ("honest", "huge", "negative", "nan", "inf")}
            done = {p: (await rec.wait(Finished, i)).job for p, i in ids.items()}
    finally:
        if q is not None:
            await q.close()
        server.kill()
    assert done["honest"].seconds == honest
    for p in ("huge", "negative", "nan", "inf"):
        held = done[p].finished_at - done[p].started_at
        assert 0 < done[p].seconds <= held < 10, p
    assert q.quota.usage("alice").used_s == pytest.approx(sum(j.seconds for j in done.values()))
