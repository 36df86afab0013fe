"""A JobQueue over the tiny models in a process of its own, printing its events as JSON lines.

``test_queue.py`` kills it with SIGKILL in the middle of a job, then starts it again to see
the job resumed and finished. Usage::

    python tests/engine/queue_worker_proc.py CONFIG [--submit PROMPT] [--steps N] [--delay S]

It exits once no job is pending (at once if there was none to resume).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from engine.config import load_config
from engine.jobs.events import Event, Failed, Finished, JobProgress, Queued
from engine.queue import JobQueue
from engine.spec.request import Request
from engine.workers.runner import EngineRunner


class SlowRunner(EngineRunner):
    """The real engine, held back at each step so that a job lasts long enough to be killed (one job at a time)."""

    batching = False

    def __init__(self, cfg: Any, delay: float) -> None:
        super().__init__(cfg, progress_every=1)
        self.delay = delay

    def __call__(self, request: Request, on_progress: Callable[[Any], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Any:
        def slow(p: Any) -> None:
            if on_progress is not None:
                on_progress(p)
            time.sleep(self.delay)

        return super().__call__(request, slow, should_stop)


def describe(ev: Event) -> dict[str, Any]:
    line: dict[str, Any] = {"event": type(ev).__name__, "job": ev.job.id, "state": ev.job.state,
                            "attempts": ev.job.attempts}
    if isinstance(ev, Queued):
        line["position"] = ev.position
    elif isinstance(ev, JobProgress):
        line.update(step=ev.step, total=ev.total, png=len(ev.png))
    elif isinstance(ev, Finished):
        line.update(png=len(ev.png), seconds=ev.seconds, result_path=ev.job.result_path)
    elif isinstance(ev, Failed):
        line["reason"] = ev.reason
    return line


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--submit")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--delay", type=float, default=0.05)
    args = ap.parse_args()
    cfg = load_config(args.config)
    queue = JobQueue(cfg, SlowRunner(cfg, args.delay))
    idle = asyncio.Event()

    def on_event(ev: Event) -> None:
        # sys.__stdout__: model loading swaps sys.stdout (process-wide) to silence taming's prints.
        sys.__stdout__.write(json.dumps(describe(ev)) + "\n")
        sys.__stdout__.flush()
        if ev.job.state in ("finished", "failed", "cancelled") and not queue.pending():
            idle.set()

    queue.subscribe(on_event)
    await queue.start()
    if args.submit:
        req = Request.from_config(cfg, prompt=args.submit, steps=args.steps, seed=1)
        await queue.submit(req, owner="tester", origin={"channel": 1})
    if queue.pending():
        await idle.wait()
    await queue.close()


if __name__ == "__main__":
    asyncio.run(main())
