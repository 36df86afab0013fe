"""The in-process transport: one worker in this process, asking the coordinator for jobs through its port.

``backend = "local"``: the bot (or any embedder) paints on its own GPU; the worker's thread owns it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.config import QueueConfig
from engine.jobs.job import Job
from engine.jobs.port import Outcome, Port
from engine.models.availability import Availability
from engine.spec.request import Request
from engine.workers.loop import Assignment, Worker
from engine.workers.protocols import Runner


class LocalSource:
    """The worker's ``Source`` over the coordinator's ``Port``."""

    def __init__(self, port: Port) -> None:
        self.port = port

    async def take(self, match: Callable[[Request], bool] | None, wait: bool) -> Assignment | None:
        begun = await self.port.next_job(None if match is None else (lambda j: match(j.request)), wait)
        if begun is None:
            return None
        job, ctl = begun
        return Assignment(job.id, job.request, ctl, solo=self.port.runs_alone(job.id))

    async def done(self, job_id: str, out: Outcome) -> None:
        await self.port.conclude(job_id, out)

    def progress(self, job_id: str, step: int, total: int, loss: float, png: bytes,
                 note: str | None = None) -> None:
        self.port.progress_from_thread(job_id, step, total, loss, png, note)

    def wants_progress(self) -> bool:
        return self.port.wants_progress()


class LocalTransport:
    """A ``Transport`` whose one worker runs in this process."""

    def __init__(self, cfg: QueueConfig, runner: Runner) -> None:
        self.cfg, self.runner = cfg, runner

    async def serve(self, port: Port) -> None:
        await Worker(self.cfg, self.runner, LocalSource(port)).serve()

    def adopt(self, job: Job) -> bool:
        return False  # a job "running" at start died with this process: run it again

    def cancel(self, job_id: str) -> None:
        pass  # the coordinator's Control stops it within a step

    def fleet(self) -> list[dict[str, Any]] | None:
        return None

    def availability(self) -> list[Availability | None]:
        survey = self.runner.availability()
        return [survey] if survey is not None else []

    def paused(self) -> str | None:
        return None
