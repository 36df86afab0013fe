"""Several users' jobs share the GPU: stepped together, each gets the picture it would get alone, bit for bit."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from engine.__main__ import main
from engine.config import load_config
from engine.jobs.events import Finished, JobCancelled, JobProgress, Started
from engine.method.generate import generate
from engine.queue import JobQueue
from engine.spec.request import Request
from engine.workers.runner import EngineRunner
from tests.tinymodels import write_tiny_config


async def _started_queue(tmp_path, generation: dict | None = None, **queue) -> tuple[JobQueue, list, EngineRunner]:
    """A queue on the tiny models, recording every event."""
    cfg = load_config(write_tiny_config(tmp_path, queue=queue, generation=generation or {}))
    runner = EngineRunner(cfg)
    q = JobQueue(cfg, runner=runner)
    events: list = []
    q.subscribe(events.append)
    await q.start()
    return q, events, runner


async def _until(check, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def _count(events: list, kind: type) -> int:
    return sum(isinstance(e, kind) for e in events)


def _rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.mark.pixels
async def test_jobs_joining_a_batch_of_four_give_their_solo_pictures_and_reruns_give_them_back(tmp_path):
    """The issue's case, in 8 steps instead of 16 (the one-call batch's losses already differed from the
    solo ones at step 1; one picture differed by 108/255 at step 16): each job's loss at every step and its
    picture are exactly those of the job alone."""
    q, events, runner = await _started_queue(tmp_path, generation={"progress_every": 1}, batch_size=4)
    cfg = runner.cfg
    reqs = [Request.from_config(cfg, prompt=f"a red barn at dusk, take {s}", seed=s, steps=8, width=64, height=64,
                                cutouts=8) for s in range(40, 44)]
    first, _ = await q.submit(reqs[0], owner="ana")
    await _until(lambda: _count(events, Started))
    jobs = [first] + [(await q.submit(r, owner=o))[0] for r, o in zip(reqs[1:], ("ben", "cy", "dee"), strict=True)]
    await _until(lambda: _count(events, Finished) == 4, timeout=120)
    await q.close()
    order = [(type(e).__name__, e.job.id) for e in events if isinstance(e, Started | Finished)]
    # The later jobs started while the first was still running: they joined its batch.
    assert all(order.index(("Started", j.id)) < order.index(("Finished", first.id)) for j in jobs)
    done = {e.job.id: e.png for e in events if isinstance(e, Finished)}
    models = runner.cache.get(reqs[0].models)
    for job, req in zip(jobs, reqs, strict=True):
        solo: list[float] = []
        alone = np.asarray(generate(models, req, on_progress=lambda p, solo=solo: solo.append(p.loss),
                                    progress_every=1).image)
        batched = {e.step: e.loss for e in events if isinstance(e, JobProgress) and e.job.id == job.id}
        assert batched and all(loss == solo[step - 1] for step, loss in batched.items()), (req.seed, batched, solo)
        assert np.array_equal(_rgb(done[job.id]), alone), f"seed {req.seed}: batched differs from alone"
    # Anyone can redo a result from its metadata, on the same machine, and get the very picture back.
    posted, again = tmp_path / "41.png", tmp_path / "41-again.png"
    posted.write_bytes(done[jobs[1].id])
    assert main(["rerun", str(posted), "-o", str(again), "--config", str(tmp_path / "config.toml")]) == 0
    assert np.array_equal(np.asarray(Image.open(again).convert("RGB")), _rgb(done[jobs[1].id]))


@pytest.mark.pixels
async def test_a_grid_joins_a_batch_with_a_place_for_each_candidate_and_each_is_its_solo_picture(tmp_path):
    from engine.spec.request import candidate_request

    q, events, runner = await _started_queue(tmp_path, batch_size=3)
    cfg = runner.cfg
    a, _ = await q.submit(Request.from_config(cfg, prompt="a", seed=1, steps=12), owner="ana")
    await _until(lambda: _count(events, Started))
    grid_req = Request.from_config(cfg, prompt="two lighthouses", seed=5, steps=3, grid=2)
    grid, _ = await q.submit(grid_req, owner="ben")
    c, _ = await q.submit(Request.from_config(cfg, prompt="c", seed=2, steps=2), owner="cy")
    await _until(lambda: _count(events, Finished) == 3, timeout=60)
    await q.close()
    order = [(type(e).__name__, e.job.id) for e in events if isinstance(e, Started | Finished)]
    assert order.index(("Started", grid.id)) < order.index(("Finished", a.id))  # it joined the batch of a
    first_done = min(order.index(("Finished", a.id)), order.index(("Finished", grid.id)))
    assert order.index(("Started", c.id)) > first_done  # a (1) and the grid (2) filled the batch of 3
    fin = next(e for e in events if isinstance(e, Finished) and e.job.id == grid.id)
    models = runner.cache.get(grid_req.models)
    for i, png in enumerate(fin.candidates, 1):
        alone = np.asarray(generate(models, candidate_request(grid_req, i)).image)
        assert np.array_equal(_rgb(png), alone), f"candidate {i} differs from its solo run"


async def test_jobs_of_another_size_wait_for_the_batch(tmp_path):
    q, events, runner = await _started_queue(tmp_path, batch_size=4)
    cfg = runner.cfg
    a, _ = await q.submit(Request.from_config(cfg, prompt="a", seed=1, steps=6), owner="ana")
    b, _ = await q.submit(Request.from_config(cfg, prompt="b", seed=2, steps=2, width=48), owner="ben")
    await _until(lambda: _count(events, Finished) == 2)
    await q.close()
    order = [(type(e).__name__, e.job.id) for e in events if isinstance(e, Started | Finished)]
    assert order == [("Started", a.id), ("Finished", a.id), ("Started", b.id), ("Finished", b.id)]


async def test_cancelling_one_job_of_a_batch_leaves_the_others_running(tmp_path):

    q, events, runner = await _started_queue(tmp_path, batch_size=2)
    cfg = runner.cfg
    a, _ = await q.submit(Request.from_config(cfg, prompt="a", seed=1, steps=40), owner="ana")
    b, _ = await q.submit(Request.from_config(cfg, prompt="b", seed=2, steps=10), owner="ben")
    await _until(lambda: _count(events, Started) == 2)
    await q.cancel(a.id, by="ana")
    await _until(lambda: _count(events, Finished))
    await q.close()
    assert [e.job.id for e in events if isinstance(e, JobCancelled)] == [a.id]
    assert [e.job.id for e in events if isinstance(e, Finished)] == [b.id]
    assert q.get(a.id) is None or q.get(a.id).state == "cancelled"


async def test_a_result_not_yet_shown_is_sent_again_after_a_restart(tmp_path):
    """The process died between finishing a job and the front end posting it: nothing is lost."""
    q, events, runner = await _started_queue(tmp_path)
    cfg = runner.cfg
    shown, _ = await q.submit(Request.from_config(cfg, prompt="shown", seed=1), owner="ana")
    lost, _ = await q.submit(Request.from_config(cfg, prompt="lost", seed=2), owner="ben")
    await _until(lambda: _count(events, Finished) == 2)
    await q.mark_delivered(shown.id)  # the front end posted this one, then "crashed"
    await q.close()

    again = JobQueue(cfg, runner=EngineRunner(cfg))
    seen: list = []
    again.subscribe(seen.append)
    await again.start()
    await asyncio.sleep(0.1)
    await again.close()
    resent = [e for e in seen if isinstance(e, Finished)]
    assert [e.job.id for e in resent] == [lost.id]
    assert resent[0].png == next(e.png for e in events if isinstance(e, Finished) and e.job.id == lost.id)
    assert resent[0].metadata["request"]["prompt"] == "lost"
