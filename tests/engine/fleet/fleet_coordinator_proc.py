"""A coordinator (``JobQueue`` with ``backend = "redis"``) in a process of its own, printing its
events as JSON lines; ``test_fleet.py`` kills it with SIGKILL while workers paint, then starts it
again. It marks each result delivered once it has printed it. Usage::

    python tests/engine/fleet_coordinator_proc.py CONFIG [--submit N] [--steps N]

It exits once no job is pending.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from engine.config import load_config
from engine.jobs.events import Event, Finished, JobProgress
from engine.queue import JobQueue
from engine.spec.request import Request


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--submit", type=int, default=0)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    cfg = load_config(args.config)
    queue = JobQueue(cfg)
    idle = asyncio.Event()

    async def on_event(ev: Event) -> None:
        line: dict[str, Any] = {"event": type(ev).__name__, "job": ev.job.id}
        if isinstance(ev, JobProgress):
            line["step"] = ev.step
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        if isinstance(ev, Finished):
            await queue.mark_delivered(ev.job.id)
        if ev.job.state in ("finished", "failed", "cancelled") and not queue.pending():
            idle.set()

    queue.subscribe(on_event)
    await queue.start()
    for i in range(args.submit):
        req = Request.from_config(cfg, prompt=f"picture {i}", steps=args.steps, seed=i)
        await queue.submit(req, owner=f"owner{i}")
    if queue.pending():
        await idle.wait()
    await queue.close()


if __name__ == "__main__":
    asyncio.run(main())
