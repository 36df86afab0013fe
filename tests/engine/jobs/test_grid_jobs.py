"""A grid in the job queue: one job (one turn, one place in the limits, one cancel) whose result holds
its candidates, stored beside it as ``<job id>-<i>.png``, sent again after a restart, pruned with it."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from engine.errors import QueueFull
from engine.jobs.events import Finished, JobCancelled
from engine.media.imageio import read_metadata
from engine.queue import JobQueue
from engine.spec.request import Request
from tests.engine.jobs.test_queue import Recorder, make_cfg
from tests.fakes import FakeRunner


def four(prompt: str = "four moons") -> Request:
    return Request(prompt=prompt, steps=2, width=32, height=32, seed=3, grid=4)


async def test_a_grid_is_one_job_whose_candidates_are_stored_sent_again_after_a_restart_and_pruned(tmp_path):
    cfg = make_cfg(tmp_path)
    q, rec = JobQueue(cfg, FakeRunner(delay=0)), Recorder()
    q.subscribe(rec)
    await q.start()
    job, _ = await q.submit(four(), "alice")
    fin = await rec.wait(Finished, job.id)
    await q.close()  # not marked delivered: the next start sends it again
    assert rec.of(job.id).count("Started") == 1 and len(fin.candidates) == 4
    assert Image.open(io.BytesIO(fin.png)).size == (64, 64)
    files = [Path(cfg.queue.results_dir) / f"{job.id}-{i}.png" for i in range(1, 5)]
    assert [f.read_bytes() for f in files] == list(fin.candidates)
    assert [(read_metadata(f)["request"]["seed"], read_metadata(f)["request"]["grid"]) for f in files] == [
        (3, 1), (4, 1), (5, 1), (6, 1)]

    q2, rec2 = JobQueue(cfg, FakeRunner()), Recorder()
    q2.subscribe(rec2)
    await q2.start()
    again = await rec2.wait(Finished, job.id)
    await q2.close()
    assert again.candidates == fin.candidates and again.png == fin.png

    await asyncio.sleep(0.1)
    q3 = JobQueue(make_cfg(tmp_path, keep_days=1e-6), FakeRunner())  # 0.09 s: pruned at start
    await q3.start()
    await q3.close()
    assert q3.get(job.id) is None and not any(f.exists() for f in files)


async def test_a_grid_counts_as_one_job_for_the_limits_and_one_cancel_stops_it(tmp_path):
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    q, rec = JobQueue(make_cfg(tmp_path, per_owner_pending=2), runner), Recorder()
    q.subscribe(rec)
    await q.start()
    try:
        job, _ = await q.submit(four(), "alice")
        await q.submit(four("another"), "alice")  # two grids of four are two jobs
        with pytest.raises(QueueFull):
            await q.submit(four("a third"), "alice")
        await q.cancel(job.id, by="alice")
        await rec.wait(JobCancelled, job.id)
        hold.set()
        await rec.wait(Finished)
        assert rec.of(job.id).count("JobCancelled") == 1 and "Finished" not in rec.of(job.id)
        assert not list(Path(tmp_path / "results").glob(f"{job.id}*.png"))
    finally:
        await q.close()
