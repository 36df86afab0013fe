"""The seam between the coordinator and its transports (in-process worker, Redis fleet).

A transport moves jobs to workers and their outcomes back; it decides nothing. It asks the
coordinator only what ``Port`` declares (whose turn it is, record this outcome, take this job back),
and the coordinator asks it only what ``Transport`` declares. Neither reaches into the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from engine.jobs.job import Job
from engine.models.availability import Availability


class Control:
    """How a running job is stopped: the coordinator (or the worker's loop) says why, the worker
    thread reads it between steps (plain attributes: the GIL makes a single assignment safe to read)."""

    def __init__(self, job_id: str, deadline: float) -> None:
        self.job_id = job_id
        self.deadline = deadline
        self.reason: str | None = None  # "cancel" | "close" | "timeout"

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason

    def should_stop(self) -> bool:
        if self.reason is None and time.monotonic() > self.deadline:
            self.reason = "timeout"
        return self.reason is not None


@dataclass
class Outcome:
    """How a job's run ended, as a worker reports it."""

    kind: Literal["finished", "failed", "stopped"]
    reason: str = ""
    png: bytes = b""
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    mask_png: bytes | None = None
    candidates: tuple[bytes, ...] = ()  # a grid's pictures (PNGs, each with its own request), in order
    solo: bool = False  # "stopped" because the batch ran out of memory: run it again alone
    elsewhere: bool = False  # "failed" because this worker cannot run it (a model it lacks)


class Port(Protocol):
    """What a transport may ask of the coordinator."""

    @property
    def closing(self) -> bool: ...

    def job(self, job_id: str) -> Job | None:
        """The job's current record (never a copy taken before an ``await``)."""
        ...

    async def next_job(self, match: Callable[[Job], bool] | None, wait: bool, *,
                       skip_solo: bool | None = None) -> tuple[Job, Control] | None:
        """Whose turn it is: the next job ``match`` accepts, marked running. ``wait``: until there is one
        (None only when closing). ``skip_solo`` (default: when matching a batch): not jobs that run alone."""
        ...

    def runs_alone(self, job_id: str) -> bool:
        """The job ran out of memory in a batch once: it must run alone."""
        ...

    async def conclude(self, job_id: str, out: Outcome) -> None:
        """Record a running job's outcome (a job cancelled meanwhile is left as it is)."""
        ...

    async def requeue(self, job_id: str, *, counted: bool) -> None:
        """Put a running job back in the queue; ``counted``: its attempt counts (it may have killed a worker)."""
        ...

    async def fail(self, job_id: str, reason: str) -> None:
        """End a waiting job that no worker can run."""
        ...

    async def broken(self, job_id: str, e: Exception) -> None:
        """A bug or a broken disk while handling the job: it fails with a line saying so."""
        ...

    def progress(self, job_id: str, step: int, total: int, loss: float, png: bytes, note: str | None = None) -> None:
        """A running job's picture (or, with ``note``, a word on its status); on the event loop."""
        ...

    def progress_from_thread(self, job_id: str, step: int, total: int, loss: float, png: bytes,
                             note: str | None = None) -> None:
        """``progress`` from a worker thread."""
        ...

    def wants_progress(self) -> bool:
        """Whether anybody keeps progress pictures (listeners or timelapse frames)."""
        ...

    def wake(self) -> None:
        """Something changed (a worker has room again): whoever waits in ``changed`` looks again now."""
        ...

    async def changed(self, timeout: float) -> None:
        """Wait until something may be worth another look (a job queued, a worker's room), or ``timeout``."""
        ...

    async def zoom_last(self, job_id: str) -> tuple[int, bytes] | None:
        """A zoom's newest frame the coordinator holds (number, PNG), to go on from on another worker."""
        ...


class Transport(Protocol):
    """What the coordinator may ask of its transport."""

    async def serve(self, port: Port) -> None:
        """Move jobs to workers and outcomes back until ``port.closing``."""
        ...

    def adopt(self, job: Job) -> bool:
        """A job recorded as running at start: True when a worker may still hold it (the transport keeps
        it); False when it died with this process (the coordinator runs it again)."""
        ...

    def cancel(self, job_id: str) -> None:
        """Tell the worker holding a cancelled job to drop it (best effort)."""
        ...

    def fleet(self) -> list[dict[str, Any]] | None:
        """The live workers' latest heartbeats; None when the one worker is this process."""
        ...

    def availability(self) -> list[Availability | None]:
        """What the workers say of the models they offer (empty when nothing is known)."""
        ...

    def paused(self) -> str | None:
        """Why no job can start now, or None."""
        ...
