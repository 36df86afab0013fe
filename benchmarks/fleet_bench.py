"""Benchmark of the Redis backend (issue #15); not a test. Needs ``redis-server`` on PATH.

    python benchmarks/fleet_bench.py [--jobs 8] [--steps 40] [--overhead-jobs 40]

1. Jobs per hour with 1 and with 2 worker processes (``python -m engine worker``) on the tiny test
   models, 32x32, one thread each (a 2-core machine).
2. What the Redis path adds over the local one: submit -> ``Finished`` latency of a job that does no
   work, and per progress event, with the same instant runner in both (the Redis one in a worker
   process of its own). Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from engine.config import Config, load_config  # noqa: E402
from engine.jobs.events import Finished, JobProgress  # noqa: E402
from engine.queue import JobQueue  # noqa: E402
from engine.spec.request import Request  # noqa: E402
from tests.fleet import RedisServer, Workers  # noqa: E402
from tests.tinymodels import write_tiny_config  # noqa: E402


class InstantRunner:
    """No painting at all: ``events`` progress images of 32x32, then a result."""

    def __init__(self, events: int) -> None:
        self.events = events
        self.image = Image.new("RGB", (32, 32), (10, 20, 30))

    def __call__(self, request: Request, on_progress: Any, should_stop: Any) -> Any:
        from types import SimpleNamespace

        for i in range(self.events):
            on_progress(SimpleNamespace(step=i + 1, total=self.events, loss=0.0, image=self.image))
        img = self.image
        return SimpleNamespace(image=img, request=request, seconds=0.0, losses=[], mask=None,
                               png_bytes=lambda: _png(img))


def _png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _cfg(cfg: Config, folder: Path, **queue: Any) -> Config:
    q = {"db_path": str(folder / "jobs.sqlite3"), "results_dir": str(folder / "results"), **queue}
    return cfg.model_copy(update={"queue": cfg.queue.model_copy(update=q)})


async def _latency(cfg: Config, runner: Any, jobs: int) -> float:
    """Median seconds from submit to Finished, one job at a time (with a listener, as the bot has)."""
    q = JobQueue(cfg, runner)
    done: asyncio.Queue[Any] = asyncio.Queue()
    q.subscribe(lambda e: done.put_nowait(e) if isinstance(e, Finished) else None)
    q.subscribe(lambda e: None if isinstance(e, JobProgress) else None)
    await q.start()
    try:
        if cfg.queue.backend == "redis":  # wait for the worker
            while not q.fleet():
                await asyncio.sleep(0.05)
        times = []
        for i in range(jobs + 3):
            t = time.perf_counter()
            await q.submit(Request.from_config(cfg, prompt=f"job {i}", steps=1, seed=i), owner=f"o{i}")
            await done.get()
            if i >= 3:  # warm-up
                times.append(time.perf_counter() - t)
        return statistics.median(times)
    finally:
        await q.close()


def _instant_worker(config: str, url: str, events: int) -> None:
    from engine.fleet.process import run_worker

    os.environ["OMP_NUM_THREADS"] = "1"
    asyncio.run(run_worker(load_config(config), url, f"instant{events}", "cpu", runner=InstantRunner(events)))


async def overhead(tmp: Path, server: RedisServer, config: Path, jobs: int, events: int) -> dict[str, float]:
    base = load_config(config)
    out: dict[str, float] = {}
    for n in (0, events):
        out[f"local_{n}"] = await _latency(_cfg(base, tmp / f"local{n}", backend="local", batch_size=1),
                                           InstantRunner(n), jobs)
        proc = mp.get_context("spawn").Process(target=_instant_worker, args=(str(config), server.url, n))
        proc.start()
        try:
            out[f"redis_{n}"] = await _latency(_cfg(base, tmp / f"redis{n}", backend="redis", batch_size=1,
                                                    redis_url=server.url), None, jobs)
        finally:
            proc.terminate()
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    return {
        "local_ms_per_job": 1000 * out["local_0"], "redis_ms_per_job": 1000 * out["redis_0"],
        "redis_adds_ms_per_job": 1000 * (out["redis_0"] - out["local_0"]),
        "local_ms_per_progress": 1000 * (out[f"local_{events}"] - out["local_0"]) / events,
        "redis_ms_per_progress": 1000 * (out[f"redis_{events}"] - out["redis_0"]) / events,
    }


async def throughput(tmp: Path, server: RedisServer, config: Path, workers: int, jobs: int, steps: int) -> float:
    """Jobs per hour with ``workers`` worker processes, measured from the first start to the last finish."""
    cfg = _cfg(load_config(config), tmp / f"fleet{workers}", backend="redis", batch_size=1, redis_url=server.url)
    fleet = Workers(config, server.url, tmp)
    names = [f"bench{workers}-{i}" for i in range(workers)]
    for name in names:
        fleet.start(name)
    q = JobQueue(cfg)
    ends: list[float] = []
    starts: list[float] = []
    q.subscribe(lambda e: ends.append(time.perf_counter()) if isinstance(e, Finished) else None)
    try:
        await q.start()
        while len(q.fleet() or []) < workers:
            await asyncio.sleep(0.1)
        # One warm-up job per worker (model loading), then the measured ones.
        for i in range(workers):
            await q.submit(Request.from_config(cfg, prompt=f"warm {i}", steps=2, seed=i), owner=f"w{i}")
        while len(ends) < workers:
            await asyncio.sleep(0.05)
        ends.clear()
        starts.append(time.perf_counter())
        for i in range(jobs):
            await q.submit(Request.from_config(cfg, prompt=f"bench {i}", steps=steps, seed=i), owner=f"o{i % 3}",
                           priority=0)
        while len(ends) < jobs:
            await asyncio.sleep(0.05)
        return jobs * 3600 / (ends[-1] - starts[0])
    finally:
        await q.close()
        fleet.stop_all()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--overhead-jobs", type=int, default=40)
    ap.add_argument("--progress-events", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        config = write_tiny_config(tmp / "tiny", queue={"per_owner_pending": 100, "max_pending": 200,
                                                        "worker_timeout_s": 10.0})
        server = RedisServer(tmp / "redis")
        server.start()
        try:
            result: dict[str, Any] = await overhead(tmp, server, config, args.overhead_jobs, args.progress_events)
            one = await throughput(tmp, server, config, 1, args.jobs, args.steps)
            two = await throughput(tmp, server, config, 2, args.jobs, args.steps)
            result.update(jobs_per_hour_1_worker=one, jobs_per_hour_2_workers=two, speedup_2_over_1=two / one,
                          cores=os.cpu_count(), load_average=os.getloadavg()[0])
        finally:
            server.kill()
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
