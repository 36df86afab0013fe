"""More than one GPU: the coordinator (``JobQueue`` with ``backend = "redis"``) and worker processes
(``python -m engine worker``) on a real ``redis-server``, the guarantees of issue #15 one by one.

One Redis server and two workers serve the whole module (a worker process takes seconds to start);
a test that kills one starts its replacement. Each test has its own job store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.config import Config, load_config
from engine.queue import Cancelled, Failed, Finished, JobQueue, Progress, Started
from engine.request import Request
from tests.fleet import RedisServer, Workers, free_port, needs_redis
from tests.tinymodels import write_tiny_config

pytestmark = needs_redis


class Fleet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis = RedisServer(tmp / "redis")
        self.redis.start()
        self.config = write_tiny_config(tmp / "tiny", queue={
            "backend": "redis", "redis_url": self.redis.url, "worker_timeout_s": 3.0, "batch_size": 1})
        self.workers = Workers(self.config, self.redis.url, tmp)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)

    def wait_for_workers(self, *names: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                have = {k.decode() for k in self.client().hkeys("vqgan-clip:workers")}
            except redis.ConnectionError:
                have = set()
            if set(names) <= have:
                return
            time.sleep(0.1)
        raise AssertionError(f"workers {names} did not come up: " + "".join(self.workers.log(n) for n in names))

    def cfg(self, folder: Path, **queue: Any) -> Config:
        cfg = load_config(self.config)
        q = {"db_path": str(folder / "jobs.sqlite3"), "results_dir": str(folder / "results"), **queue}
        return cfg.model_copy(update={"queue": cfg.queue.model_copy(update=q)})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    f = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        f.workers.start("w1")
        f.workers.start("w2")
        f.wait_for_workers("w1", "w2")
        yield f
    finally:
        f.workers.stop_all()
        f.redis.kill()


class Recorder:
    def __init__(self, q: JobQueue) -> None:
        self.events: list[Any] = []
        q.subscribe(self.events.append)

    def of(self, kind: type, job_id: str | None = None) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and (job_id is None or e.job.id == job_id)]

    async def until(self, cond, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                kinds = [(type(e).__name__, e.job.id, e.job.owner) for e in self.events
                         if not isinstance(e, Progress)]
                raise AssertionError(f"timed out; events: {kinds}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def coordinator(fleet: Fleet, tmp_path: Path):
    opened: list[JobQueue] = []

    async def _open(**queue: Any) -> tuple[JobQueue, Recorder, Config]:
        cfg = fleet.cfg(tmp_path, **queue)
        q = JobQueue(cfg)
        rec = Recorder(q)
        await q.start()
        opened.append(q)
        return q, rec, cfg

    yield _open
    for q in opened:
        await q.close()


def ask(cfg: Config, prompt: str, steps: int = 4) -> Request:
    return Request.from_config(cfg, prompt=prompt, steps=steps, seed=1)


def ended(rec: Recorder, ids: list[str]):
    return lambda: all(rec.of(Finished, i) or rec.of(Failed, i) or rec.of(Cancelled, i) for i in ids)


async def test_six_jobs_of_three_people_over_two_workers_finish_once_in_fair_turns(fleet: Fleet, coordinator):
    q, rec, cfg = await coordinator()
    # Two long jobs keep both workers busy while the others are asked for, so turns are the queue's to give.
    long = [(await q.submit(ask(cfg, "a long one", steps=60), owner="zed"))[0].id for _ in range(2)]
    await rec.until(lambda: len(rec.of(Started)) == 2)
    ids = []
    for owner in ("alice", "alice", "bob", "bob", "carol", "carol"):
        job, _ = await q.submit(ask(cfg, f"a picture for {owner}"), owner=owner)
        ids.append(job.id)
    await rec.until(ended(rec, long + ids), timeout=60)

    finished = Counter(e.job.id for e in rec.of(Finished))
    assert finished == Counter({i: 1 for i in long + ids}), "every job finishes, and is delivered, once"
    for i in ids:
        assert Path(q.get(i).result_path).is_file()
    started = [e.job.owner for e in rec.of(Started) if e.job.id in ids]
    assert started == ["alice", "bob", "carol", "alice", "bob", "carol"]
    assert not rec.of(Failed)


def holder(fleet: Fleet, job_id: str) -> str | None:
    """The worker whose heartbeat says it holds this job (what ``python -m engine fleet`` shows)."""
    for w in _workers(fleet):
        if any(lease.startswith(f"{job_id}.") for lease in w["leases"]):
            return w["worker"]
    return None


def _workers(fleet: Fleet) -> list[dict]:
    from engine.wire import Heartbeat, decode

    beats = [decode(v) for v in fleet.client().hgetall("vqgan-clip:workers").values()]
    return [hb.model_dump() for hb in beats if isinstance(hb, Heartbeat)]


async def wait_holder(fleet: Fleet, job_id: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while (name := holder(fleet, job_id)) is None:
        assert time.monotonic() < deadline, "no worker announced the job"
        await asyncio.sleep(0.05)
    return name


async def test_a_worker_killed_mid_job_loses_it_to_another_within_the_timeout(fleet: Fleet, coordinator):
    q, rec, cfg = await coordinator()
    job, _ = await q.submit(ask(cfg, "a lighthouse", steps=60), owner="alice")
    await rec.until(lambda: rec.of(Progress, job.id))
    victim = await wait_holder(fleet, job.id)
    fleet.workers.kill(victim)  # SIGKILL
    killed_at = time.monotonic()
    await rec.until(lambda: len(rec.of(Started, job.id)) == 2, timeout=10)
    assert time.monotonic() - killed_at < 3.0 + 1.5, "taken over within worker_timeout_s"
    await rec.until(ended(rec, [job.id]), timeout=30)
    assert len(rec.of(Finished, job.id)) == 1 and not rec.of(Failed)
    assert q.get(job.id).attempts == 2
    fleet.workers.start(victim)  # back for the next tests (it comes up while they run)


async def test_cancelling_a_job_on_a_remote_worker_stops_it_and_nothing_follows_the_cancel(fleet: Fleet, coordinator):
    q, rec, cfg = await coordinator()
    job, _ = await q.submit(ask(cfg, "a very long painting", steps=400), owner="alice")
    await rec.until(lambda: len(rec.of(Progress, job.id)) >= 2)
    worker = await wait_holder(fleet, job.id)
    await q.cancel(job.id, by="alice")
    await rec.until(lambda: rec.of(Cancelled, job.id))
    n = rec.events.index(rec.of(Cancelled, job.id)[0]) + 1
    deadline = time.monotonic() + 5
    while holder(fleet, job.id) is not None:  # the worker lets go of it (a step is ~30 ms here)
        assert time.monotonic() < deadline, f"{worker} kept running the cancelled job"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    assert [e for e in rec.events[n:] if e.job.id == job.id] == [], "nothing is posted after cancelled"
    assert q.get(job.id).state == "cancelled"
    # The worker serves on.
    nxt, _ = await q.submit(ask(cfg, "the next one"), owner="bob")
    await rec.until(lambda: rec.of(Finished, nxt.id), timeout=30)


async def test_bad_messages_on_the_wire_are_dropped_and_logged_and_everyone_keeps_working(
        fleet: Fleet, coordinator, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    q, rec, cfg = await coordinator()
    r = fleet.client()
    good = {"v": 1, "kind": "returned", "worker": "w1", "job_id": "x", "lease": "x.1.aa"}
    import json

    bad = [json.dumps({k: v for k, v in good.items() if k != "lease"}).encode(),  # a missing field
           json.dumps({**good, "v": 99}).encode(),  # another version
           b'{"v": 1, "kind": "finished", "png": "' + b"A" * (10 * 1024 * 1024) + b'"}',  # 10 MB
           bytes(range(256))]  # garbage
    for data in bad:
        r.xadd("vqgan-clip:events", {"m": data})
        r.xadd("vqgan-clip:progress", {"m": data})
        for w in _workers(fleet):
            r.xadd(f"vqgan-clip:jobs:{w['worker']}", {"m": data})
    r.xadd("vqgan-clip:events", {"no": "m"})
    job, _ = await q.submit(ask(cfg, "still painting"), owner="alice")
    await rec.until(lambda: rec.of(Finished, job.id), timeout=30)
    dropped = [m for m in caplog.messages if "dropped" in m]
    assert any("10485" in m for m in dropped) and any("v:" in m or "v" in m for m in dropped)
    assert len(dropped) >= 5
    logs = "".join(fleet.workers.log(w["worker"]) for w in _workers(fleet))
    assert "dropped a malformed message" in logs and "Traceback" not in logs


def test_a_worker_with_a_wrong_password_or_no_redis_says_one_line_and_exits_2(fleet: Fleet, tmp_path: Path):
    import subprocess
    import sys

    locked = RedisServer(tmp_path / "locked", password="right")
    locked.start()
    try:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
        procs = [subprocess.Popen([sys.executable, "-m", "engine", "worker", "--config", str(fleet.config),
                                   "--redis", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for url in (f"redis://:wrong@127.0.0.1:{locked.port}/0", f"redis://127.0.0.1:{free_port()}/0")]
        for proc in procs:
            try:
                _out, stderr = proc.communicate(timeout=60)
            finally:
                proc.kill()
            p = subprocess.CompletedProcess(proc.args, proc.returncode, _out, stderr)
            assert p.returncode == 2, p.stderr
            assert len(p.stderr.strip().splitlines()) == 1 and "Redis" in p.stderr
            assert "wrong" not in p.stderr, "the password is never printed"
    finally:
        locked.kill()


async def test_the_coordinator_starts_without_redis_and_says_painting_is_paused(fleet: Fleet, tmp_path: Path):
    cfg = fleet.cfg(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    q = JobQueue(cfg)
    await q.start()
    try:
        assert q.paused() == "painting is paused: no worker reachable"
        job, pos = await q.submit(ask(cfg, "waits"), owner="alice")
        assert pos == 1 and q.get(job.id).state == "queued"
    finally:
        await q.close()


async def test_a_job_that_takes_down_three_workers_fails_with_a_message(fleet: Fleet, coordinator):
    fleet.workers.start("w3")
    fleet.wait_for_workers("w1", "w2", "w3")
    q, rec, cfg = await coordinator()
    job, _ = await q.submit(ask(cfg, "a poison pill", steps=400), owner="mallory")
    for attempt in range(1, 4):
        await rec.until(lambda a=attempt: len(rec.of(Started, job.id)) == a, timeout=15)
        fleet.workers.kill(await wait_holder(fleet, job.id))
    await rec.until(lambda: rec.of(Failed, job.id), timeout=15)
    assert "stopped 3 workers" in rec.of(Failed, job.id)[0].reason
    assert not rec.of(Finished, job.id)
