"""Several users' jobs share the GPU: stepped together, each gets the picture it would get alone."""

from __future__ import annotations

import asyncio
import io

import numpy as np
from PIL import Image

from engine.config import load_config
from engine.jobs.events import Finished, JobCancelled, Started
from engine.method.generate import generate
from engine.queue import JobQueue
from engine.spec.request import Request
from engine.workers.runner import EngineRunner
from tests.tinymodels import write_tiny_config


async def _started_queue(tmp_path, **queue) -> tuple[JobQueue, list, EngineRunner]:
    """A queue on the tiny models, recording every event."""
    cfg = load_config(write_tiny_config(tmp_path, queue=queue))
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


async def test_waiting_jobs_join_a_running_batch_and_match_their_solo_images(tmp_path):
    q, events, runner = await _started_queue(tmp_path, batch_size=3)
    cfg = runner.cfg
    reqs = [Request.from_config(cfg, prompt=p, seed=i, steps=s)
            for i, (p, s) in enumerate([("a red barn", 12), ("a blue lake", 6), ("a green hill", 8)])]
    first, _ = await q.submit(reqs[0], owner="ana")
    await _until(lambda: _count(events, Started))
    others = [(await q.submit(r, owner=o))[0] for r, o in zip(reqs[1:], ("ben", "cy"), strict=True)]
    ids = [first.id] + [j.id for j in others]
    await _until(lambda: _count(events, Finished) == 3)
    await q.close()
    done = {e.job.id: e for e in events if isinstance(e, Finished)}
    assert set(done) == set(ids)
    order = [(type(e).__name__, e.job.id) for e in events if isinstance(e, Started | Finished)]
    # The later jobs started while the first was still running: they joined its batch.
    assert order.index(("Started", ids[1])) < order.index(("Finished", ids[0]))
    assert order.index(("Started", ids[2])) < order.index(("Finished", ids[0]))
    models = runner.cache.get(reqs[0].models)
    for job_id, req in zip(ids, reqs, strict=True):
        alone = np.asarray(generate(models, req).image).astype(int)
        batched = np.asarray(Image.open(io.BytesIO(done[job_id].png)).convert("RGB")).astype(int)
        assert np.abs(alone - batched).max() <= 1  # the README's stated tolerance


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
