"""More than one GPU: the coordinator (``JobQueue`` with ``backend = "redis"``) and worker processes
(``python -m engine worker``) on a real ``redis-server``, the guarantees of issue #15 one by one.

One Redis server and two workers serve the whole module (a worker process takes seconds to start);
a test that kills one starts its replacement. Each test has its own job store.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.config import Config, load_config
from engine.errors import ModelsUnavailable
from engine.fleet.wire import FailedMsg, FinishedMsg
from engine.jobs.events import Failed, Finished, JobCancelled, JobProgress, Loading, Started
from engine.queue import JobQueue
from engine.spec.request import Request
from tests.fleet import ROOT, RedisServer, Workers, free_port, needs_redis
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

    def elsewhere(self, name: str) -> Path:
        """A worker's config as on a machine of its own: its results (and zoom frames) in a folder of its own."""
        path = self.tmp / f"{name}.toml"
        path.write_text(self.config.read_text().replace(str(self.tmp / "tiny" / "results"),
                                                        str(self.tmp / name / "results")))
        return path

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
        f.workers.start("w2", config=f.elsewhere("w2"))
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
                         if not isinstance(e, JobProgress)]
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
    return lambda: all(rec.of(Finished, i) or rec.of(Failed, i) or rec.of(JobCancelled, i) for i in ids)


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
    # each worker loads the models for its first job, says so over the wire, and keeps them for the rest
    assert {e.job.id for e in rec.of(Loading)} == set(long)


async def test_a_remote_workers_job_keeps_its_timelapse_frames_ending_on_its_result(fleet: Fleet, coordinator):
    from engine.media.frames import frame_name
    from engine.media.timelapse import frame_files  # issue #13

    q, rec, cfg = await coordinator()
    job, _ = await q.submit(ask(cfg, "a lighthouse", steps=4), owner="alice")
    await rec.until(ended(rec, [job.id]))
    assert rec.of(Finished, job.id)
    deadline = time.monotonic() + 5  # the last frame is written on the queue's file thread
    while (folder := q.frames_dir(job.id)) is None or len(frame_files(folder)) < 3:
        assert time.monotonic() < deadline, folder and [f.name for f in frame_files(folder)]
        await asyncio.sleep(0.05)
    files = frame_files(folder)
    assert [f.name for f in files] == [frame_name(s) for s in (1, 2, 4)]  # progress_every = 2
    assert files[-1].read_bytes() == Path(q.get(job.id).result_path).read_bytes()


@pytest.mark.pixels
async def test_a_grid_crosses_the_wire_as_one_job_with_its_candidates(fleet: Fleet, coordinator):
    import io

    import numpy as np
    from PIL import Image

    from engine.media.imageio import read_metadata

    q, rec, cfg = await coordinator()
    job, _ = await q.submit(ask(cfg, "two lighthouses", steps=2).with_changes(grid=2), owner="alice")
    await rec.until(ended(rec, [job.id]))
    [fin] = rec.of(Finished, job.id)
    assert len(rec.of(Started, job.id)) == 1 and len(fin.candidates) == 2
    grid = np.asarray(Image.open(io.BytesIO(fin.png)).convert("RGB"))
    assert grid.shape == (32, 64, 3)  # 1x2 cells of 32x32
    for i, png in enumerate(fin.candidates, 1):
        assert Path(cfg.queue.results_dir, f"{job.id}-{i}.png").read_bytes() == png
        assert read_metadata(png)["request"]["seed"] == i and read_metadata(png)["request"]["grid"] == 1
        assert np.array_equal(grid[:, 32 * (i - 1):32 * i], np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))


def holder(fleet: Fleet, job_id: str) -> str | None:
    """The worker whose heartbeat says it holds this job (what ``python -m engine fleet`` shows)."""
    for w in _workers(fleet):
        if any(lease.startswith(f"{job_id}.") for lease in w["leases"]):
            return w["worker"]
    return None


def _workers(fleet: Fleet) -> list[dict]:
    from engine.fleet.wire import Heartbeat, decode

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
    await rec.until(lambda: rec.of(JobProgress, job.id))
    victim = await wait_holder(fleet, job.id)
    with fleet.workers.back_after(victim):  # for the next tests (it comes up while they run)
        fleet.workers.kill(victim)  # SIGKILL
        killed_at = time.monotonic()
        await rec.until(lambda: len(rec.of(Started, job.id)) == 2, timeout=10)
        assert time.monotonic() - killed_at < 3.0 + 2.0, "taken over within worker_timeout_s (and a poll)"
        await rec.until(ended(rec, [job.id]), timeout=30)
        assert len(rec.of(Finished, job.id)) == 1 and not rec.of(Failed)
        assert q.get(job.id).attempts == 2


async def test_cancelling_a_job_on_a_remote_worker_stops_it_and_nothing_follows_the_cancel(fleet: Fleet, coordinator):
    q, rec, cfg = await coordinator()
    job, _ = await q.submit(ask(cfg, "a very long painting", steps=400), owner="alice")
    await rec.until(lambda: len(rec.of(JobProgress, job.id)) >= 2)
    worker = await wait_holder(fleet, job.id)
    await q.cancel(job.id, by="alice")
    await rec.until(lambda: rec.of(JobCancelled, job.id))
    n = rec.events.index(rec.of(JobCancelled, job.id)[0]) + 1
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
    good = {"v": 2, "kind": "returned", "worker": "w1", "job_id": "x", "lease": "x.1.aa"}
    bad = [json.dumps({k: v for k, v in good.items() if k != "lease"}).encode(),  # a missing field
           json.dumps({**good, "v": 99}).encode(),  # another version
           b'{"v": 2, "kind": "finished", "png": "' + b"A" * (10 * 1024 * 1024) + b'"}',  # 10 MB
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


def test_a_worker_with_a_wrong_password_or_no_redis_says_one_line_and_exits_2(
        fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from engine.cli import main

    locked = RedisServer(tmp_path / "locked", password="right")
    locked.start()
    try:
        for url in (f"redis://:wrong@127.0.0.1:{locked.port}/0", f"redis://127.0.0.1:{free_port()}/0",
                    "http://127.0.0.1/0"):
            assert main(["worker", "--config", str(fleet.config), "--redis", url]) == 2
            err = capsys.readouterr().err
            assert len(err.strip().splitlines()) == 1 and "Redis" in err, err
            assert "wrong" not in err, "the password is never printed"
    finally:
        locked.kill()


def test_fleet_shows_the_workers_and_the_queue_per_owner(fleet: Fleet, capsys: pytest.CaptureFixture[str]):
    from engine.cli import main
    from tests.fleet import FakeWorker

    fleet.wait_for_workers("w1", "w2")
    with FakeWorker(fleet.redis.url, "greedy", capacity=1_000_000):  # it would get queue.batch_size (1) jobs
        assert main(["fleet", "--config", str(fleet.config)]) == 0
    out = capsys.readouterr().out
    assert "workers: 3" in out or "workers: 4" in out
    for name in ("w1", "w2"):
        assert f"  {name}  cpu  jobs " in out
    assert "  greedy  cpu  jobs 0/1  models: none loaded" in out, "the room the coordinator gives it, not its claim"
    assert "tiny_vqgan" in out and "last heartbeat" in out and "queue: 0 waiting, 0 running" in out


async def test_a_worker_stopped_with_sigterm_hands_its_job_back_at_once(fleet: Fleet, coordinator):
    fleet.wait_for_workers("w1", "w2")
    q, rec, cfg = await coordinator()
    job, _ = await q.submit(ask(cfg, "a slow sunset", steps=120), owner="alice")
    await rec.until(lambda: rec.of(JobProgress, job.id))
    name = await wait_holder(fleet, job.id)
    with fleet.workers.back_after(name):
        stopped_at = time.monotonic()
        fleet.workers.kill(name, signal.SIGTERM, wait=False)  # the hand-back comes before the process exits
        await rec.until(lambda: len(rec.of(Started, job.id)) == 2, timeout=10)
        handed_back = time.monotonic() - stopped_at
        assert fleet.workers.procs[name].wait(timeout=30) == 0, "a clean stop"
        assert handed_back < 3.0, "handed back at once, not after worker_timeout_s (3 s)"
        assert rec.of(Started, job.id)[1].job.attempts == 1, "a handed-back job's attempt is not counted"
        await rec.until(ended(rec, [job.id]), timeout=30)
        assert len(rec.of(Finished, job.id)) == 1


async def test_a_zoom_taken_over_by_another_worker_goes_on_from_the_coordinator_s_frames(fleet: Fleet, coordinator):
    """Issue #14: w1 and w2 keep their frames on machines of their own; the coordinator holds the video's."""
    from engine.spec.request import ZoomSpec

    fleet.wait_for_workers("w1", "w2")
    q, rec, cfg = await coordinator()
    zoom = Request.from_config(cfg, prompt="a city ^ a forest", seed=7,
                               zoom=ZoomSpec(frames=6, steps_per_frame=8, zoom=1.1, rotate=3, fps=6))
    whole, _ = await q.submit(zoom, owner="bob")  # uninterrupted, on one worker, for comparison
    job, _ = await q.submit(zoom, owner="alice")  # on the other one
    await rec.until(lambda: any(p.step >= 3 for p in rec.of(JobProgress, job.id)), timeout=60)
    first = await wait_holder(fleet, job.id)
    with fleet.workers.back_after(first):
        fleet.workers.kill(first, signal.SIGTERM)  # stops within a step and hands the job back
        await rec.until(lambda: len(rec.of(Started, job.id)) == 2, timeout=10)
        taken_at = rec.events.index(rec.of(Started, job.id)[1])
        await rec.until(ended(rec, [whole.id, job.id]), timeout=60)
        assert len(rec.of(Finished, job.id)) == 1 and not rec.of(Failed)
        later = [e.step for e in rec.events[taken_at:] if isinstance(e, JobProgress) and e.job.id == job.id]
        made_first = max(e.step for e in rec.events[:taken_at] if isinstance(e, JobProgress) and e.job.id == job.id)
        assert 3 <= made_first < 6 and later == list(range(made_first + 1, 7)), "the second worker goes on after them"
        for k in range(1, 7):  # the video's frames are those of the uninterrupted run, pixel for pixel
            name = f"{k:05d}.png"
            assert (q.frames_dir(job.id) / name).read_bytes() == (q.frames_dir(whole.id) / name).read_bytes(), name
        assert Path(q.get(job.id).result_path).read_bytes() == Path(q.get(whole.id).result_path).read_bytes()


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


def run_coordinator(fleet: Fleet, folder: Path, *args: str) -> subprocess.Popen[str]:
    cfg = fleet.cfg(folder)
    path = folder / "coordinator.toml"
    path.write_text(fleet.config.read_text().replace(str(fleet.tmp / "tiny" / "jobs.sqlite3"), cfg.queue.db_path)
                    .replace(str(fleet.tmp / "tiny" / "results"), cfg.queue.results_dir))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(Path(__file__).with_name("fleet_coordinator_proc.py")), str(path),
                             *args], stdout=subprocess.PIPE, text=True, env=env)


def read_until(proc: subprocess.Popen[str], cond, timeout: float = 30) -> list[dict]:
    """The process's JSON lines until ``cond`` holds or it exits; a silent process fails the test at
    ``timeout`` instead of blocking it (a reader thread does the blocking reads)."""
    lines: list[dict] = []
    got: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [got.put(line) for line in iter(proc.stdout.readline, "")] + [got.put("")],
                     daemon=True).start()
    deadline = time.monotonic() + timeout
    while not cond(lines):
        try:
            line = got.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"timed out: {lines}") from None
        if not line:
            break
        lines.append(json.loads(line))
    return lines


async def test_a_coordinator_killed_while_workers_paint_loses_nothing_and_delivers_each_result_once(
        fleet: Fleet, tmp_path: Path):
    first = run_coordinator(fleet, tmp_path, "--submit", "2", "--steps", "60")
    try:
        before = read_until(first, lambda ls: sum(e["event"] == "JobProgress" for e in ls) >= 2)
    finally:
        first.kill()  # SIGKILL, while both jobs are painting
        first.wait()
    ids = {e["job"] for e in before if e["event"] == "Queued"}
    assert len(ids) == 2
    await asyncio.sleep(3)  # the workers finish meanwhile; their progress and results wait in Redis
    again = run_coordinator(fleet, tmp_path)
    try:
        after = read_until(again, lambda ls: False, timeout=30)  # until it exits: nothing pending
        assert again.wait(timeout=10) == 0
    finally:
        again.kill()
    finished = Counter(e["job"] for e in before + after if e["event"] == "Finished")
    assert finished == Counter({i: 1 for i in ids}), "each result delivered once"
    shown = max(e.get("step", 0) for e in before if e["event"] == "JobProgress")
    assert any(e["event"] == "JobProgress" and e["step"] > shown for e in after), "progress sent meanwhile is shown"
    third = run_coordinator(fleet, tmp_path)
    assert [e for e in read_until(third, lambda ls: False) if e["event"] == "Finished"] == []
    third.wait(timeout=10)


@pytest.mark.parametrize("wipe", [False, True], ids=["with its data", "without its data"])
async def test_redis_killed_and_restarted_loses_no_job_and_asking_still_works(fleet: Fleet, coordinator, wipe: bool):
    q, rec, cfg = await coordinator()
    fleet.wait_for_workers("w1", "w2")
    running, _ = await q.submit(ask(cfg, "painting through a storm", steps=90), owner="alice")
    await rec.until(lambda: rec.of(JobProgress, running.id))
    fleet.redis.kill()
    deadline = time.monotonic() + 5
    while q.paused() is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert q.paused() == "painting is paused: no worker reachable"
    waiting, pos = await q.submit(ask(cfg, "asked while Redis is down"), owner="bob")  # /imagine still answers
    assert pos == 1 and q.get(waiting.id).state == "queued"
    await asyncio.sleep(1)
    fleet.redis.start(wipe=wipe)
    await rec.until(ended(rec, [running.id, waiting.id]), timeout=40)
    assert Counter(e.job.id for e in rec.of(Finished)) == Counter({running.id: 1, waiting.id: 1})
    assert q.paused() is None


async def test_a_worker_without_the_model_hands_the_job_on_and_keeps_serving(fleet: Fleet, coordinator):
    fleet.wait_for_workers("w1", "w2")
    (fleet.tmp / "blind").mkdir(exist_ok=True)
    fleet.workers.start("blind", cwd=fleet.tmp / "blind")  # the models' relative paths lead nowhere there
    fleet.wait_for_workers("blind")
    q, rec, cfg = await coordinator()
    models = cfg.models.model_copy(update={
        k: str(Path(getattr(cfg.models, k)).relative_to(fleet.tmp))
        for k in ("vqgan_config", "vqgan_checkpoint", "clip_config", "clip_checkpoint")})
    here = cfg.model_copy(update={"models": models})
    busy = [(await q.submit(ask(cfg, "keeps w1 and w2 busy", steps=60), owner="zed"))[0].id for _ in range(2)]
    await rec.until(lambda: len(rec.of(Started)) == 2)
    job, _ = await q.submit(ask(here, "needs models blind lacks"), owner="alice")
    await rec.until(ended(rec, [*busy, job.id]), timeout=40)
    assert len(rec.of(Finished, job.id)) == 1, "another worker painted it"
    nowhere = ask(cfg, "needs a model no worker has").model_copy(update={"models": models.model_copy(
        update={"vqgan_config": "nowhere/vqgan.yaml"})})
    lost, _ = await q.submit(nowhere, owner="alice")
    await rec.until(ended(rec, [lost.id]), timeout=30)
    assert rec.of(Failed, lost.id)[0].reason == "model file 'vqgan.yaml' is not one this worker serves"
    fine, _ = await q.submit(ask(cfg, "blind still serves"), owner="bob")
    await rec.until(ended(rec, [fine.id]))
    assert rec.of(Finished, fine.id)
    assert "Traceback" not in fleet.workers.log("blind")
    fleet.workers.kill("blind", signal.SIGTERM)


async def test_a_worker_out_of_memory_says_so_on_the_job_and_keeps_serving(fleet: Fleet, tmp_path: Path):
    import multiprocessing

    from tests.fleet import run_small_gpu_worker

    own = RedisServer(tmp_path / "redis")  # this worker alone, so the job cannot land elsewhere
    own.start()
    proc = multiprocessing.get_context("spawn").Process(
        target=run_small_gpu_worker, args=(str(fleet.config), own.url, "small-gpu"))
    proc.start()
    q = None
    try:
        cfg = fleet.cfg(tmp_path, redis_url=own.url, oom_retry_smaller=True)
        q = JobQueue(cfg)
        rec = Recorder(q)
        await q.start()
        big, _ = await q.submit(ask(cfg, "too big").with_changes(width=96, height=96), owner="alice")
        await rec.until(ended(rec, [big.id]), timeout=30)
        reason = rec.of(Failed, big.id)[0].reason
        assert reason.startswith("ran out of GPU memory at 96x96, and again at 64x64 when retried smaller")
        small, _ = await q.submit(ask(cfg, "fits"), owner="bob")
        await rec.until(ended(rec, [small.id]), timeout=30)
        assert rec.of(Finished, small.id), "the worker keeps serving"
    finally:
        if q is not None:
            await q.close()
        proc.kill()
        proc.join(10)
        own.kill()


async def test_an_edit_s_input_image_travels_with_the_job_to_a_worker_elsewhere(
        fleet: Fleet, coordinator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from PIL import Image

    from engine.media.imageio import read_metadata

    fleet.wait_for_workers("w1", "w2")
    monkeypatch.chdir(tmp_path)  # "photo.png" is here; the workers run in another folder, as if elsewhere
    Image.new("RGB", (32, 32), (200, 40, 40)).save("photo.png")
    q, rec, cfg = await coordinator()
    job, _ = await q.submit(Request.from_config(cfg, prompt="in autumn", init_image="photo.png", steps=4, seed=1),
                            owner="alice")
    await rec.until(ended(rec, [job.id]), timeout=30)
    [done] = rec.of(Finished, job.id)
    assert done.metadata["request"]["init_image"] == "photo.png", "named as the coordinator knows it"
    assert read_metadata(done.png)["request"]["init_image"] == "photo.png"


async def test_a_worker_back_from_a_long_silence_drops_the_job_another_took_over(fleet: Fleet, coordinator):
    fleet.wait_for_workers("w1", "w2")
    q, rec, cfg = await coordinator()
    job, _ = await q.submit(ask(cfg, "a frozen lake", steps=400), owner="alice")  # ~12 s of painting
    await rec.until(lambda: rec.of(JobProgress, job.id))
    name = await wait_holder(fleet, job.id)
    pid = fleet.workers.procs[name].pid
    os.kill(pid, signal.SIGSTOP)  # silent, not dead
    try:
        await rec.until(lambda: len(rec.of(Started, job.id)) == 2, timeout=10)
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 3
    while any(w["worker"] == name and w["leases"] for w in _workers(fleet)):
        assert time.monotonic() < deadline, f"{name} kept painting the job that went to another worker"
        await asyncio.sleep(0.05)
    await q.cancel(job.id, by="alice")
    again, _ = await q.submit(ask(cfg, "it serves again"), owner="bob")
    await rec.until(ended(rec, [again.id]), timeout=30)
    assert rec.of(Finished, again.id)


# -- issue #19: what a message may make the other side do -------------------------------------------


def send_as_coordinator(fleet: Fleet, worker: str, job: dict[str, Any]) -> None:
    """A job message written straight to ``worker``'s stream with redis-py, for the worker's current run:
    what anyone who can write to Redis can send."""
    from engine.fleet.wire import Heartbeat, decode

    hb = decode(fleet.client().hget("vqgan-clip:workers", worker))
    assert isinstance(hb, Heartbeat)
    fleet.client().xadd(f"vqgan-clip:jobs:{worker}", {"m": json.dumps({**job, "boot": hb.boot}).encode()})


def job_message(request: Request, job_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A well-formed job message as JSON, under a fresh job id unless told (the coordinator's shape)."""
    import secrets

    from engine.fleet.wire import JobMsg, encode

    good = secrets.token_hex(6)
    msg = json.loads(encode(JobMsg(job_id=good, lease=f"{good}.1.aa", request=request, boot="-", **fields)))
    if job_id is not None:
        msg.update(job_id=job_id, lease=f"{job_id}.1.aa")
    return msg


async def outcome_of(fleet: Fleet, job_id: str, timeout: float = 30) -> Any:
    """The finished or failed message a worker posts for ``job_id`` (no coordinator reads it here)."""
    from engine.fleet.wire import FailedMsg, FinishedMsg, decode

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry_id, fields in fleet.client().xrange("vqgan-clip:events"):
            msg = decode(fields.get(b"m"))
            if isinstance(msg, FinishedMsg | FailedMsg) and msg.job_id == job_id:
                fleet.client().xdel("vqgan-clip:events", entry_id)
                return msg
        await asyncio.sleep(0.1)
    raise AssertionError(f"no outcome for job {job_id}: " + fleet.workers.log("w1")[-2000:])


async def test_a_job_id_that_is_a_path_is_refused_and_the_worker_touches_no_folder_of_its_own(
        fleet: Fleet, tmp_path: Path):
    from engine.spec.request import ZoomSpec
    from tests.fleet import png_of

    fleet.wait_for_workers("w1")
    cfg = load_config(fleet.config)
    victims = {k: tmp_path / f"precious-{k}" for k in ("absolute", "relative", "zoom")}
    for folder in [*victims.values(), tmp_path / "precious-zoom.frames"]:
        folder.mkdir()
        (folder / "7.png").write_bytes(b"someone's work")
    edit = ask(cfg, "in autumn", steps=2).with_changes(init_image="photo.png")
    upload = {"photo.png": base64.b64encode(png_of(32, 32, (200, 40, 40))).decode()}
    zoom = ask(cfg, "a city", steps=2).with_changes(zoom=ZoomSpec(frames=1, steps_per_frame=2))
    up = "../" * 8 + os.path.relpath(victims["relative"], "/")  # from the worker's temp folder up to the victim
    for job_id, req in ((str(victims["absolute"]), edit), (up, edit), (str(victims["zoom"]), zoom)):
        send_as_coordinator(fleet, "w1", {**job_message(req, job_id), "files": upload})
    after = job_message(ask(cfg, "the next one", steps=2))
    send_as_coordinator(fleet, "w1", after)

    assert isinstance(await outcome_of(fleet, after["job_id"]), FinishedMsg), "the jobs after them are painted"
    for folder in [*victims.values(), tmp_path / "precious-zoom.frames"]:
        assert folder.is_dir() and [p.name for p in folder.iterdir()] == ["7.png"], f"{folder} was written to or removed"
    log = fleet.workers.log("w1")
    assert log.count("dropped a malformed message: job.job_id") == 3 and "Traceback" not in log


async def test_a_worker_opens_only_the_images_that_came_with_the_job(fleet: Fleet, tmp_path: Path):
    from tests.fleet import png_of

    fleet.wait_for_workers("w1")
    cfg = load_config(fleet.config)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "photo.png").write_bytes(png_of(32, 32, (10, 200, 10)))  # on the worker's disk
    ids = []
    for where in ("secret", "nowhere"):  # a file that is there, and one that is not: no bytes sent for either
        msg = job_message(ask(cfg, "in autumn", steps=2).with_changes(init_image=str(tmp_path / where / "photo.png")))
        send_as_coordinator(fleet, "w1", msg)
        ids.append(msg["job_id"])
    there, nowhere = [await outcome_of(fleet, i) for i in ids]
    assert isinstance(there, FailedMsg) and isinstance(nowhere, FailedMsg), "nothing is painted from the worker's disk"
    assert there.reason == nowhere.reason == "input image photo.png: not sent with the job", "and nothing tells which exists"


async def test_a_worker_loads_only_presets_and_the_models_of_its_own_config(fleet: Fleet, tmp_path: Path):
    from tests.tinymodels import write_tiny_vqgan

    fleet.wait_for_workers("w1")
    cfg = load_config(fleet.config)
    _, other = write_tiny_vqgan(tmp_path / "not-served", seed=3)  # a real checkpoint on its disk, not its own
    ids = []
    for where in (other, tmp_path / "nowhere" / other.name):  # a file that is there, and one that is not
        req = ask(cfg, "a lighthouse", steps=2)
        msg = job_message(req.with_changes(models={**req.models.model_dump(), "vqgan_checkpoint": str(where)}))
        send_as_coordinator(fleet, "w1", msg)
        ids.append(msg["job_id"])
    mine = job_message(ask(cfg, "a lighthouse", steps=2))  # the files of its config.toml
    send_as_coordinator(fleet, "w1", mine)
    there, nowhere = [await outcome_of(fleet, i) for i in ids]
    assert isinstance(there, FailedMsg) and isinstance(nowhere, FailedMsg), "nothing is loaded from another file"
    assert there.reason == nowhere.reason == "model file 'tiny_vqgan.ckpt' is not one this worker serves", \
        "and nothing tells which exists"
    assert there.elsewhere and nowhere.elsewhere, "another worker may serve it"
    assert isinstance(await outcome_of(fleet, mine["job_id"]), FinishedMsg), "its own models still paint"


async def test_a_worker_claiming_a_huge_capacity_gets_one_job_and_loses_it_after_the_job_timeout(
        fleet: Fleet, coordinator):
    from engine.fleet.wire import FinishedMsg as Done
    from tests.fleet import FakeWorker, png_of

    fleet.wait_for_workers("w1", "w2")
    own = png_of(32, 32, (255, 0, 255))

    def late(cancel, job):  # it answers anyway, after the job was taken back
        return [Done(worker="hoarder", job_id=cancel.job_id, lease=cancel.lease, png=own, seconds=1.0,
                     metadata={"request": job.request.to_metadata(), "note": None})]

    with FakeWorker(fleet.redis.url, "hoarder", capacity=1_000_000, cancelled=late) as hoarder:
        q, rec, cfg = await coordinator(job_timeout_s=1.0)  # the coordinator's limit; worker_timeout_s is 3 s
        deadline = time.monotonic() + 10
        while {"w1", "w2", "hoarder"} - {w["worker"] for w in q.fleet()}:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        ids = [(await q.submit(ask(cfg, f"a picture for {owner}"), owner=owner))[0].id
               for owner in ("alice", "alice", "bob", "bob", "carol", "carol")]
        await rec.until(ended(rec, ids), timeout=20)
        assert Counter(e.job.id for e in rec.of(Finished)) == Counter(ids), "every job painted once, by the others"
        assert not rec.of(Failed) and all(e.png != own for e in rec.of(Finished)), "its late answer is ignored"
        assert hoarder.jobs and hoarder.most_held == 1, "no more than queue.batch_size (1) at a time"
        for got, job in hoarder.jobs:  # each cancelled there and taken back after job_timeout_s + worker_timeout_s
            [(at, _)] = [c for c in hoarder.cancels if c[1].lease == job.lease]
            assert 1.0 + 3.0 - 0.5 <= at - got <= 1.0 + 3.0 + 2.5


async def test_pictures_from_a_worker_whose_size_is_not_the_request_s_are_refused(fleet: Fleet, tmp_path: Path):
    from engine.fleet.wire import FinishedMsg as Done
    from engine.fleet.wire import ProgressMsg
    from tests.fleet import FakeWorker, png_claiming, png_of

    right, huge, bomb = png_of(64, 64, (90, 120, 200)), png_of(6000, 6000, mode="1"), png_claiming(60000, 60000)

    def answer(job):
        meta = {"request": job.request.to_metadata(), "note": None}
        say = {"worker": "liar", "job_id": job.job_id, "lease": job.lease}
        frames = [ProgressMsg(**say, step=k, total=3, loss=0.5, png=png) for k, png in enumerate((huge, bomb, right), 1)]
        result = huge if job.request.prompt == "too big" else right
        return [*frames, Done(**say, png=result, seconds=1.0, metadata=meta)]

    own = RedisServer(tmp_path / "redis")  # the liar alone, so the jobs cannot land elsewhere
    own.start()
    q = None
    try:
        with FakeWorker(own.url, "liar", answer=answer):
            cfg = fleet.cfg(tmp_path, redis_url=own.url)
            q = JobQueue(cfg)
            rec = Recorder(q)
            await q.start()
            big, _ = await q.submit(ask(cfg, "too big").with_changes(width=64, height=64), owner="alice")
            fine, _ = await q.submit(ask(cfg, "just right").with_changes(width=64, height=64), owner="bob")
            await rec.until(ended(rec, [big.id, fine.id]), timeout=20)
            assert rec.of(Failed, big.id)[0].reason == "the worker sent back a 6000x6000 picture for a 64x64 job"
            assert [e.png for e in rec.of(JobProgress)] == [right, right], "only the progress images of the right size"
            assert rec.of(Finished, fine.id)[0].png == right
    finally:
        if q is not None:
            await q.close()
        own.kill()


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


@contextlib.asynccontextmanager
async def own_fleet(tmp_path: Path, server: RedisServer, worker: str, *, before: Any = None,
                    **models: Any) -> AsyncIterator[tuple[JobQueue, Recorder, Config, Workers]]:
    """A fleet of its own: ``server`` (started here), one worker named ``worker``, and a coordinator;
    ``before(config)`` runs once the config is written, before the worker starts."""
    server.start()
    config = write_tiny_config(tmp_path / "tiny", queue={"backend": "redis", "redis_url": server.url,
                                                         "worker_timeout_s": 3.0, "batch_size": 1}, models=models)
    workers = Workers(config, server.url, tmp_path)
    try:
        if before is not None:
            before(config)
        workers.start(worker)
        cfg = load_config(config)
        q = JobQueue(cfg)
        rec = Recorder(q)
        await q.start()
        try:
            yield q, rec, cfg, workers
        finally:
            await q.close()
    finally:
        workers.stop_all()
        server.kill()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
async def test_over_tls_a_model_no_offline_worker_has_is_refused_before_queueing(tmp_path: Path):
    # Workers on machines without internet, reached over TLS (rediss://, a self-signed certificate). Every
    # worker's survey counts, so a fleet of its own, whose worker offers WikiArt without having it.
    server = RedisServer(tmp_path / "redis", password="s3cret", tls=True)

    def untrusting(config: Path) -> None:
        worker = subprocess.run(
            [sys.executable, "-m", "engine", "worker", "--config", str(config), "--redis", server.url.split("?")[0]],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
        assert worker.returncode == 2 and worker.stderr.count("\n") == 1
        assert "certificate" in worker.stderr and "s3cret" not in worker.stderr

    async with own_fleet(tmp_path, server, "offline-1", before=untrusting, vqgan_choices=["wikiart_16384"],
                         offline=True) as (q, rec, cfg, workers):
        deadline = time.monotonic() + 60
        while not [a for a in q.availability() if a is not None]:
            assert time.monotonic() < deadline, workers.log("offline-1")
            await asyncio.sleep(0.1)
        wikiart = ask(cfg, "a cat").model_copy(update={"models": cfg.models.spec().model_copy(
            update={"vqgan": "wikiart_16384", "vqgan_config": None, "vqgan_checkpoint": None})})
        with pytest.raises(ModelsUnavailable) as refused:
            await q.submit(wikiart, owner="carol")
        assert "wikiart_16384 is not downloaded on any worker, and the workers are offline" in str(refused.value)
        assert q.pending() == []
        from engine.fleet.status import describe_fleet  # what `fleet` and a moderator's /queue show:all say

        assert "    offline; not downloaded: wikiart_16384" in describe_fleet(q.fleet(), [], batch_size=1)
        job, _ = await q.submit(ask(cfg, "a cat behind glass"), owner="carol")  # the models it has still paint
        await rec.until(ended(rec, [job.id]), timeout=60)
        assert rec.of(Finished, job.id) and q.fleet()[0]["worker"] == "offline-1"

