"""What the coordinator tells its listeners, and the one mailbox that delivers it.

Events carry PNG bytes, never tensors. A ``Mailbox`` delivers in order from a task of its own, so a
slow consumer stalls nobody else; when it lags, a job's newer progress replaces its older progress
still waiting (a progress picture is only worth its newest), and no other event is ever dropped.
The queue gives each listener one; the bot keeps one per job.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.jobs.job import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Queued:
    job: Job
    position: int  # 1 = next to run


@dataclass(frozen=True, slots=True)
class Started:
    job: Job


@dataclass(frozen=True, slots=True)
class JobProgress:
    """A picture of a running job at a step (the last one is its result)."""

    job: Job
    step: int
    total: int
    loss: float
    png: bytes


@dataclass(frozen=True, slots=True)
class Loading:
    """A running job waits for models to load (that takes a while): ``note`` says which,
    e.g. "loading ViT-B-16/openai"."""

    job: Job
    note: str


@dataclass(frozen=True, slots=True)
class Finished:
    """``metadata``: ``request`` (the request actually run, JSON) and ``note`` (str or None,
    e.g. that it was made smaller after running out of GPU memory), checked by ``engine.jobs.results``.
    A grid's ``png`` is the candidates tiled; ``candidates`` are their own PNGs (1 first), each with its
    own request (``grid`` 1, its seed) in its metadata, stored as ``<job id>-<i>.png`` beside the grid."""

    job: Job
    png: bytes
    metadata: dict[str, Any]
    seconds: float
    mask_png: bytes | None = None  # the edit mask used, e.g. the region CLIP found (white = changed)
    candidates: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Failed:
    job: Job
    reason: str  # one line a user can read


@dataclass(frozen=True, slots=True)
class JobCancelled:
    job: Job
    by: str | None


Event = Queued | Started | Loading | JobProgress | Finished | Failed | JobCancelled
Listener = Callable[[Event], Awaitable[None] | None]


class _AboutAJob(Protocol):
    @property
    def job(self) -> Job: ...


class Mailbox:
    """Events for one consumer, delivered in order by a task of its own (see the module's docstring)."""

    def __init__(self, deliver: Callable[[Any], Awaitable[None] | None], name: str = "mailbox") -> None:
        self.deliver, self.name = deliver, name
        self.items: deque[_AboutAJob] = deque()
        self.task: asyncio.Task[None] | None = None

    def put(self, event: _AboutAJob) -> None:
        if isinstance(event, JobProgress):
            for stale in [e for e in self.items if isinstance(e, JobProgress) and e.job.id == event.job.id]:
                self.items.remove(stale)
        self.items.append(event)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._drain(), name=self.name)

    def clear(self) -> None:
        self.items.clear()

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    async def _drain(self) -> None:
        while self.items:
            event = self.items.popleft()
            try:
                result = self.deliver(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%s: delivering %s failed", self.name, type(event).__name__)
