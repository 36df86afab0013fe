"""One GPU, many users: an asyncio job queue served by one engine worker thread.

The front end submits ``Request``s and listens to job events; the engine never reads a job's
``origin`` (whatever the front end needs to post results back). Guarantees:

* every job is in SQLite before ``submit`` returns, and every state change after it;
* after a crash or a restart, queued jobs and the interrupted one are resumed (the interrupted
  one first, from step 0); a job that cannot be finished ends with a ``Failed`` event and its
  reason, never silently;
* higher priority first, then round-robin between owners (the owner served least recently,
  by a turn counter that survives restarts and that no change of the wall clock can upset);
* a job is read again from the queue's current state at each decision (a job cancelled while
  another is admitted to a batch is never started);
* a stored job this version cannot read fails alone ("saved by an older version; please ask
  again"); storage failures are ``StorageError``s, one line naming the path and what to do;
* a worker's result that cannot be shown (``engine.jobs.results``: metadata of the wrong types, a PNG
  whose metadata is not JSON) fails its job alone, when it arrives or when a start reads it again;
* ``submit(..., forget_after={key: seconds})`` drops short-lived secrets from the stored origin;
* this is the coordinator: it decides whose turn it is and records; the jobs run in
  ``engine.workers.loop`` (``backend = "local"``: in this process; ``"redis"``: in ``python -m engine worker``
  processes, through ``engine.fleet.transport``);
* the generation runs on one worker thread, so the event loop stays responsive; each listener
  has its own delivery task, so a slow listener stalls neither the worker nor the others (it
  may miss intermediate ``Progress`` events, never any other kind).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import logging
import math
import os
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from engine.config import Config
from engine.errors import MalformedResult, StorageError, UserError
from engine.jobs.results import check_metadata, check_result, png_metadata
from engine.jobs.store import TERMINAL, JobStore, storage_problem
from engine.media.files import job_path, private_dir, write_atomic
from engine.media.frames import FrameStore
from engine.models.availability import Availability, unavailable
from engine.spec.request import Request
from engine.workers.loop import Assignment, Control, Outcome, Worker

log = logging.getLogger(__name__)

State = Literal["queued", "running", "finished", "failed", "cancelled"]
MAX_ATTEMPTS = 3  # starts of a job that the process did not survive, before giving up on it
PRUNE_EVERY_S = 3600.0
LISTENER_FLUSH_S = 5.0  # at close, how long listeners get to receive the last events
FORGET_RETRY_S = 60.0  # dropping expired origin keys failed (e.g. a full disk): try again after this
STALE = "saved by an older version; please ask again"


class QueueFull(UserError):
    """The owner or the whole queue is at its pending limit."""


class ModelsUnavailable(UserError):
    """No worker can use the request's models: they are not downloaded and cannot be now (offline)."""


class NotAllowed(UserError):
    """Someone other than the owner or a moderator tried to act on a job."""


class Job(BaseModel):
    """A request, who asked, and where the answer goes; immutable (a change makes a new copy)."""

    model_config = ConfigDict(frozen=True)

    id: str
    request: Request
    owner: str
    origin: dict[str, Any] = {}
    priority: int = 0
    state: State = "queued"
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result_path: str | None = None
    seconds: float | None = None
    attempts: int = 0
    delivered: bool = False  # the front end said it showed the result (``mark_delivered``)
    served: int | None = None  # the queue's turn counter when it last started (fairness, not a clock)
    forget_at: dict[str, float] = {}  # origin key -> time.time() after which it is dropped


@dataclass(frozen=True, slots=True)
class Queued:
    job: Job
    position: int  # 1 = next to run


@dataclass(frozen=True, slots=True)
class Started:
    job: Job


@dataclass(frozen=True, slots=True)
class Progress:
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
    e.g. that it was made smaller after running out of GPU memory), checked by ``engine.jobs.results``."""

    job: Job
    png: bytes
    metadata: dict[str, Any]
    seconds: float
    mask_png: bytes | None = None  # the edit mask used, e.g. the region CLIP found (white = changed)


@dataclass(frozen=True, slots=True)
class Failed:
    job: Job
    reason: str  # one line a user can read


@dataclass(frozen=True, slots=True)
class Cancelled:
    job: Job
    by: str | None


Event = Queued | Started | Loading | Progress | Finished | Failed | Cancelled
Listener = Callable[[Event], Awaitable[None] | None]
Runner = Callable[[Request, Callable[[Any], None], Callable[[], bool]], Any]


class JobQueue:
    """The bot's view of the GPU: submit, cancel, query, and listen to job events."""

    def __init__(self, cfg: Config, runner: Runner | None = None) -> None:
        if runner is None and cfg.queue.backend == "local":
            from engine.workers.runner import EngineRunner  # torch and the models only when really used

            runner = EngineRunner(cfg)
        self._cfg = cfg.queue
        self._runner = runner
        self._results = Path(cfg.queue.results_dir)
        self._frames = FrameStore(self._results, cfg.timelapse.max_frames)
        self._jobs: dict[str, Job] = {}
        self._order: dict[str, int] = {}  # job id -> submission rank, for stable ordering
        self._by_origin: dict[tuple[str, Any], set[str]] = {}  # (origin key, value) -> job ids: find() scans none
        self._rank = itertools.count()
        self._last_served: dict[str, int] = {}  # owner -> the turn their last job started at
        self._turns = itertools.count(1)  # service turns: monotonic, persisted as ``Job.served``
        self._listeners: list[_Listener] = []
        self._store: JobStore | None = None
        self._db = ThreadPoolExecutor(1, thread_name_prefix="jobqueue-db")  # ordered writes
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._pruned_at = 0.0  # time.monotonic()
        self._saving: set[str] = set()  # submitted, not yet on disk: not announced, not run
        self._unreadable: set[str] = set()  # stored by an older version: only its state is ever written
        self._forget_timer: asyncio.TimerHandle | None = None
        self._forget_task: asyncio.Task[None] | None = None
        self._solo: set[str] = set()  # jobs that ran out of memory in a batch: run them alone
        self._running: dict[str, Control] = {}  # the running job(s): how to stop each
        self._loop: asyncio.AbstractEventLoop  # set by start()
        self._link: Any = None  # backend "redis": the coordinator's end of the transport; runs no job
        if cfg.queue.backend == "redis":
            from engine.config import redis_url
            from engine.fleet.transport import RedisLink

            self._link = RedisLink(self, redis_url(cfg.queue))

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, recover jobs a crash or a restart interrupted, start the worker.

        Subscribe first: the recovered jobs' ``Queued`` (or ``Failed``) events are sent here.
        """
        self._loop = asyncio.get_running_loop()
        await self._in_db(self._prepare_results)
        self._store = await self._in_db(JobStore, self._cfg.db_path)
        await self._prune()
        ended: list[Failed] = []
        turn = 0
        for row in await self._in_db(self._store.load):
            job, readable = self._from_row(row)
            self._insert(job)
            if not readable:
                self._unreadable.add(job.id)
            if isinstance(job.served, int):
                self._last_served[job.owner] = max(self._last_served.get(job.owner, 0), job.served)
                turn = max(turn, job.served)
            if job.state in TERMINAL:
                continue
            reason = None
            if not readable:
                reason = STALE
            elif job.state == "running" and job.attempts >= MAX_ATTEMPTS and self._link is None:  # it killed us
                reason = f"it could not be finished after {job.attempts} attempts"
            if reason:
                ended.append(Failed(await self._end(job, "failed", error=reason), reason))
            elif job.state == "running" and self._link is not None:  # a worker may hold it still
                self._link.adopt(job)
                self._running[job.id] = Control(job.id, math.inf)
            elif job.state == "running":  # the process died under it: run it again, first
                await self._save(self._replace(job, state="queued"))
        self._turns = itertools.count(turn + 1)
        await self._forget_due()
        for ev in ended:
            self._emit(ev)
        for pos, job in enumerate(self._service_order(), 1):
            self._emit(Queued(job, pos))
        for job in [j for j in self._jobs.values() if j.state == "finished" and not j.delivered]:
            await self._resend(job)  # died before it was shown
        self._worker = asyncio.create_task(self._serve(), name="jobqueue-worker")
        self.availability()  # the local worker surveys its models in the background from now

    async def _resend(self, job: Job) -> None:
        """At start: a finished job's result again, read from its PNG; a result that cannot be read
        fails that job alone with a line (it never stops the start, nor the others' results)."""
        try:
            again = await self._in_db(_reread, job)
        except Exception as e:
            if isinstance(e, MalformedResult):
                reason = str(e)
            elif isinstance(e, OSError):
                reason = f"its picture cannot be read again: {storage_problem(e, job.result_path or '?', 'the result')}"
            else:
                log.exception("job %s: reading its result again failed", job.id)
                reason = "the job queue failed; see the log"
            log.warning("job %s: %s", job.id, reason)
            try:
                self._emit(Failed(await self._end(job, "failed", error=reason), reason))
            except Exception as e2:
                await self._broken(job.id, e2)
            return
        if again is not None:
            self._emit(again)

    async def close(self) -> None:
        """Stop the running job within a step and keep it queued for the next ``start``."""
        if self._worker is None:
            return
        self._closing = True
        for ctl in self._running.values():
            ctl.stop("close")
        self._wakeup.set()
        await self._worker
        if self._forget_timer is not None:
            self._forget_timer.cancel()
        if self._forget_task is not None:
            await self._forget_task
        tasks = [t for listener in self._listeners if (t := listener.task) is not None and not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=LISTENER_FLUSH_S)
        if self._store is not None:
            await self._in_db(self._store.close)
        self._db.shutdown()
        self._worker = None

    # -- the front end's API ---------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` (plain or async) for every event; returns an unsubscribe."""
        entry = _Listener(listener)
        self._listeners.append(entry)

        def unsubscribe() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)
                entry.items.clear()

        return unsubscribe

    async def submit(
        self, request: Request, owner: str, origin: dict[str, Any] | None = None, priority: int = 0, *,
        forget_after: Mapping[str, float] | None = None,
    ) -> tuple[Job, int]:
        """Queue a request; returns the job and its position (1 = next). It is on disk on return.

        ``forget_after``: origin keys to drop, in memory and on disk, that many seconds after
        submission (short-lived secrets). ``StorageError`` if it cannot be stored: nothing is queued.
        """
        if self._store is None or self._closing:
            raise RuntimeError("the job queue is not running (call start() first)")
        pending = [j for j in self._jobs.values() if j.state in ("queued", "running")]
        mine = sum(j.owner == owner for j in pending)
        if mine >= self._cfg.per_owner_pending:
            raise QueueFull(
                f"You already have {mine} jobs waiting; wait for one to finish or cancel one with /cancel."
            )
        if len(pending) >= self._cfg.max_pending:
            raise QueueFull(f"The queue is full ({len(pending)} jobs); try again in a few minutes.")
        if why := unavailable(request.models, self.availability(), fleet=self._link is not None):
            raise ModelsUnavailable(f"Can't paint that now: {why}.")
        job_id = secrets.token_hex(6)
        while job_id in self._jobs:
            job_id = secrets.token_hex(6)
        now = time.time()
        origin = dict(origin or {})
        forget = {k: now + float(s) for k, s in (forget_after or {}).items() if k in origin}
        job = Job(id=job_id, request=request, owner=owner, origin=origin, priority=priority,
                  created_at=now, forget_at=forget)
        self._insert(job)
        self._saving.add(job.id)  # counted against the limits, but not run before it is on disk
        try:
            await self._save(job)
        except BaseException:
            self._forget(job.id)
            raise
        finally:
            self._saving.discard(job.id)
        job = self._jobs[job.id]
        position = self._place(job.id)
        self._emit(Queued(job, position))
        self._wakeup.set()
        if forget:
            self._schedule_forget()
        return job, position

    async def expire_origin_key(self, key: str, after_s: float) -> int:
        """``forget_after`` for jobs already stored (e.g. by a version without it): each job whose
        origin holds ``key`` loses it ``after_s`` seconds after its submission, at once if that has
        passed. Returns how many jobs it applied to."""
        if self._store is None:
            raise RuntimeError("the job queue is not running (call start() first)")
        ids = [j.id for j in self._jobs.values() if key in j.origin and key not in j.forget_at]
        for job_id in ids:
            job = self._jobs[job_id]
            self._replace(job, forget_at={**job.forget_at, key: job.created_at + after_s})
        for job_id in ids:
            if (kept := self._jobs.get(job_id)) is not None:  # it may have been pruned meanwhile
                await self._in_db(self._store.update, kept.id, forget_at=kept.forget_at)
        await self._forget_due()
        return len(ids)

    async def cancel(self, job_id: str, by: str, moderator: bool = False) -> Job:
        """Cancel a queued job, or stop a running one within a step. KeyError if unknown."""
        job = self._jobs[job_id]
        if by != job.owner and not moderator:
            raise NotAllowed("Only the person who asked for this job or a moderator can cancel it.")
        if job.state in TERMINAL:
            raise UserError(f"Job {job.id} has already {job.state}; there is nothing to cancel.")
        if job.id in self._running:
            self._running[job.id].stop("cancel")
        if self._link is not None:
            self._link.cancel(job.id)
        job = await self._end(job, "cancelled")
        self._emit(Cancelled(job, by))
        return job

    async def mark_delivered(self, job_id: str) -> None:
        """The front end has shown this job's result; until then a restart sends ``Finished`` again."""
        await self._save(self._replace(self._jobs[job_id], delivered=True))

    async def annotate(self, job_id: str, **origin: Any) -> Job:
        """Merge keys into a job's ``origin`` (e.g. the message that shows it) and persist them."""
        job = self._jobs[job_id]
        job = self._replace(job, origin={**job.origin, **origin})
        await self._save(job)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def find(self, **origin: Any) -> Job | None:
        """The newest job whose ``origin`` holds all these key/values (from an index, not a scan)."""
        if not origin or not all(_hashable(v) for v in origin.values()):
            jobs: Iterable[Job] = self._jobs.values()
        else:
            ids = set.intersection(*(self._by_origin.get((k, v), set()) for k, v in origin.items()))
            jobs = (self._jobs[i] for i in ids)
        matches = [j for j in jobs if all(k in j.origin and j.origin[k] == v for k, v in origin.items())]
        return max(matches, key=lambda j: self._order[j.id], default=None)

    def frames_dir(self, job_id: str) -> Path | None:
        """The folder of a job's progress frames (PNGs named by step, in step order; the last one is
        its result), for timelapses; None for an unknown or pruned job, or one that kept no frames."""
        if job_id not in self._jobs:
            return None
        folder = self._frames.folder(job_id)
        try:
            return folder if any(p.suffix == ".png" for p in folder.iterdir()) else None
        except OSError:
            return None

    def pending(self) -> list[Job]:
        """The running job first, then the queued ones in the order they will run."""
        running = [j for j in self._jobs.values() if j.state == "running"]
        return running + self._service_order()

    def jobs_of(self, owner: str) -> list[Job]:
        """All of an owner's jobs still on record, newest first."""
        return [j for j in reversed(self._jobs.values()) if j.owner == owner]

    def position(self, job_id: str) -> int | None:
        """0 = running, 1 = next, ...; None when the job is not pending."""
        job = self._jobs.get(job_id)
        if job is None or job.state in TERMINAL:
            return None
        return 0 if job.state == "running" else self._place(job_id)

    def _place(self, job_id: str) -> int:
        return next(i for i, j in enumerate(self._service_order(), 1) if j.id == job_id)

    # -- scheduling ------------------------------------------------------------------------

    def _service_order(self) -> list[Job]:
        """Queued jobs in the order they will run: an interrupted job first, then by priority,
        then the owner served least recently, then submission order."""

        def rank(j: Job) -> tuple[bool, int, int]:
            return (j.started_at is None, -j.priority, self._order[j.id])

        by_owner: dict[str, deque[Job]] = {}
        queued = (j for j in self._jobs.values() if j.state == "queued" and j.id not in self._saving)
        for job in sorted(queued, key=rank):
            by_owner.setdefault(job.owner, deque()).append(job)
        last = dict(self._last_served)
        tick = max(last.values(), default=0)
        order: list[Job] = []
        while by_owner:
            owner = min(by_owner, key=lambda o: (rank(by_owner[o][0])[:2], last.get(o, -math.inf),
                                                 rank(by_owner[o][0])[2]))
            order.append(by_owner[owner].popleft())
            if not by_owner[owner]:
                del by_owner[owner]
            tick += 1
            last[owner] = tick
        return order

    def fleet(self) -> list[dict[str, Any]] | None:
        """The live workers' latest heartbeats (name, device, capacity, leases, models, sent_at);
        None with the local backend (the one worker is this process)."""
        return None if self._link is None else self._link.fleet()

    def availability(self) -> list[Availability | None]:
        """What the workers say of the models they offer: on disk, downloadable, or not (offline).
        Empty when nothing is known (a runner without surveys, or no live worker)."""
        if self._link is not None:
            return self._link.availability()
        survey = getattr(self._runner, "availability", None)
        return [survey()] if survey is not None else []

    def paused(self) -> str | None:
        """Why no job can start now ("painting is paused: no worker reachable"), or None."""
        return None if self._link is None else self._link.paused()

    async def _serve(self) -> None:
        """The local backend: one worker in this process, fed by the in-process transport.
        The Redis backend: hand jobs to remote workers until closed."""
        if self._link is None:
            assert self._runner is not None, "__init__ makes an EngineRunner for the local backend"
            await Worker(self._cfg, self._runner, _LocalSource(self)).serve()
            return
        await self._link.start()
        try:
            while not self._closing:
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            await self._link.close()

    async def _maybe_prune(self) -> None:
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            try:
                await self._prune()
            except Exception:
                log.exception("job queue: pruning old jobs failed")

    async def _next(self, match: Callable[[Job], bool] | None, wait: bool,
                    skip_solo: bool | None = None) -> tuple[Job, Control] | None:
        """Whose turn it is: mark the next job (that ``match`` accepts) running and return it.

        ``wait``: until there is one (None only when closing); otherwise None when there is none.
        ``skip_solo`` (default: when matching a batch): leave out jobs that must run alone.
        """
        skip_solo = match is not None if skip_solo is None else skip_solo
        while not self._closing:
            if wait:
                await self._maybe_prune()
            order = [j for j in self._service_order()
                     if (match is None or match(j)) and not (skip_solo and j.id in self._solo)]
            if not order:
                if not wait:
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            for job in order if not wait else order[:1]:
                try:
                    begun = await self._begin(job.id)
                except Exception as e:  # a broken disk: say so on this job, keep serving the others
                    await self._broken(job.id, e)
                    continue
                if begun is not None:
                    return begun
            if not wait:
                return None
        return None

    async def _broken(self, job_id: str, e: Exception) -> None:
        """A bug or a broken disk while handling a job: it fails with a line saying so."""
        log.error("job queue: job %s", job_id, exc_info=e)
        self._running.pop(job_id, None)
        job = self._jobs[job_id]
        if job.state not in TERMINAL:
            reason = str(e) if isinstance(e, StorageError) else "the job queue failed; see the log"
            job = self._replace(job, state="failed", error=reason, finished_at=time.time())
            self._emit(Failed(job, reason))
            with contextlib.suppress(Exception):
                await self._save(job)

    async def _begin(self, job_id: str) -> tuple[Job, Control] | None:
        """Mark a job running (saved, announced); None if it is no longer queued (cancelled
        meanwhile, e.g. while another job was being admitted) or was cancelled while being saved."""
        job = self._jobs.get(job_id)  # the current state, never a copy taken before an await
        if job is None or job.state != "queued" or self._closing:
            return None
        ctl = Control(job.id, time.monotonic() + self._cfg.job_timeout_s)
        self._running[job.id] = ctl
        if job.request.zoom is None:  # a zoom video resumes from the frames it has made
            self._in_db_later(self._frames.restart, job.id)  # from step 0 again: an earlier attempt's frames go
        turn = next(self._turns)
        job = self._replace(job, state="running", started_at=time.time(), attempts=job.attempts + 1, served=turn)
        self._last_served[job.owner] = turn
        try:
            await self._save(job)
        except BaseException:
            self._running.pop(job.id, None)
            raise
        if self._jobs[job.id].state != "running":
            self._running.pop(job.id, None)
            return None
        self._emit(Started(job))
        return job, ctl

    def _write_result(self, job_id: str, png: bytes) -> str:
        """On the worker thread: the result PNG, written whole or not at all; its path."""
        path = job_path(self._results, job_id, ".png")
        try:
            private_dir(self._results)  # made again if someone removed it
            write_atomic(path, png)
        except OSError as e:
            line = storage_problem(e, self._results, "the results folder")
            log.error("job %s: %s", job_id, line)
            raise StorageError(f"could not save the picture: {line}") from e
        return str(path)

    def _prepare_results(self) -> None:
        """At start: the results folder exists (0700 when made here) and takes a file."""
        try:
            private_dir(self._results)
            probe = self._results / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise StorageError(storage_problem(e, self._results, "the results folder")) from e

    async def _conclude(self, job_id: str, out: Outcome) -> None:
        """Record a job's outcome (its picture written first) and tell the listeners."""
        self._running.pop(job_id, None)
        job = self._jobs.get(job_id)
        if job is None or job.state != "running":  # cancelled meanwhile: its Cancelled event has gone out
            return
        path, metadata = None, out.metadata
        if out.kind == "finished":
            try:  # a result the front end could not show (or a restart not read) fails here, alone
                metadata = await self._in_db(check_result, out.png, out.metadata)
                path = await self._in_db(self._write_result, job_id, out.png)
            except (StorageError, MalformedResult) as e:
                log.warning("job %s: %s", job_id, e)
                out = Outcome("failed", reason=str(e))
            job = self._jobs[job_id]
            if job.state != "running":  # cancelled while the picture was written
                if path:
                    Path(path).unlink(missing_ok=True)
                return
        if out.kind == "finished":
            if job.request.zoom is None:  # a zoom's frames are its video, the last one its result already
                self._in_db_later(self._frames.final, job_id, job.request.steps, out.png)  # the result, last
            job = await self._end(job, "finished", result_path=path, seconds=out.seconds)
            self._emit(Finished(job, out.png, metadata, out.seconds, out.mask_png))
        elif out.kind == "failed":
            job = await self._end(job, "failed", error=out.reason)
            self._emit(Failed(job, out.reason))
        else:  # stopped by close() or sent back to run alone: queued again, the attempt not counted
            if out.solo:
                self._solo.add(job_id)
            await self._save(self._replace(job, state="queued", attempts=job.attempts - 1))
            self._wakeup.set()

    def _on_progress(self, job_id: str, step: int, total: int, loss: float, png: bytes,
                     note: str | None = None) -> None:
        """On the worker thread."""
        self._loop.call_soon_threadsafe(self._progress, job_id, step, total, loss, png, note)

    def _progress(self, job_id: str, step: int, total: int, loss: float, png: bytes,
                  note: str | None = None) -> None:
        job = self._jobs.get(job_id)
        if job is not None and job.state == "running":
            if note is not None:  # a word on the job's status (loading models), no picture
                self._emit(Loading(job, note))
                return
            if job.request.zoom is None:
                self._in_db_later(self._frames.add, job_id, step, total, png)
            else:  # every frame of a zoom is its video (a local worker has written it already)
                self._in_db_later(self._frames.zoom_frame, job_id, step, png)
            self._emit(Progress(job, step, total, loss, png))

    # -- state, events, store --------------------------------------------------------------

    def _insert(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._order[job.id] = next(self._rank)
        self._index(job, add=True)

    def _replace(self, job: Job, **changes: Any) -> Job:
        old = self._jobs.get(job.id)
        job = job.model_copy(update=changes)
        if old is None or old.origin != job.origin:
            if old is not None:
                self._index(old, add=False)
            self._index(job, add=True)
        self._jobs[job.id] = job
        return job

    def _forget(self, job_id: str) -> None:
        """Drop a job from memory (pruned, or never stored)."""
        if (job := self._jobs.pop(job_id, None)) is not None:
            self._index(job, add=False)
        self._order.pop(job_id, None)

    def _index(self, job: Job, *, add: bool) -> None:
        """Keep ``_by_origin`` in step with ``job.origin`` (values that cannot be dict keys are scanned for)."""
        for key in ((k, v) for k, v in job.origin.items() if _hashable(v)):
            if add:
                self._by_origin.setdefault(key, set()).add(job.id)
            elif (ids := self._by_origin.get(key)) is not None:
                ids.discard(job.id)
                if not ids:
                    del self._by_origin[key]

    async def _end(self, job: Job, state: State, **changes: Any) -> Job:
        job = self._replace(job, state=state, finished_at=time.time(), **changes)
        if state != "finished":  # no result to make a timelapse of
            self._in_db_later(self._frames.remove, job.id)
        await self._save(job)
        return job

    def _emit(self, event: Event) -> None:
        for listener in self._listeners:
            listener.put(event)

    async def _save(self, job: Job) -> None:
        assert self._store is not None
        if job.id in self._unreadable:  # keep the stored request and origin as they are
            await self._in_db(self._store.update, job.id, state=job.state, error=job.error,
                              finished_at=job.finished_at, delivered=job.delivered)
        else:
            await self._in_db(self._store.save, job.model_dump(mode="json"))

    def _in_db_later(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue file work on the database thread (in order with the other writes) without waiting."""
        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("job queue: %s failed", getattr(fn, "__name__", fn))

        with contextlib.suppress(RuntimeError):  # shut down: nothing more is kept
            self._db.submit(run)

    async def _in_db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._db, functools.partial(fn, *args, **kwargs))

    async def _prune(self) -> None:
        assert self._store is not None
        self._pruned_at = time.monotonic()
        gone = await self._in_db(self._store.prune, time.time() - self._cfg.keep_days * 86400)
        for row in gone:
            self._forget(row["id"])
            if row["result_path"]:
                Path(row["result_path"]).unlink(missing_ok=True)
            await self._in_db(self._frames.remove, row["id"])

    # -- origin keys that expire (short-lived secrets) ----------------------------------------

    def _schedule_forget(self, at_least: float = 0.0) -> None:
        """Wake ``_forget_due`` at the earliest deadline of any job's ``forget_at``."""
        if self._forget_timer is not None:
            self._forget_timer.cancel()
            self._forget_timer = None
        deadlines = [t for j in self._jobs.values() for t in j.forget_at.values()]
        if deadlines and not self._closing:
            delay = max(at_least, min(deadlines) - time.time(), 0.0)
            self._forget_timer = self._loop.call_later(delay, self._forget_soon)

    def _forget_soon(self) -> None:
        self._forget_timer = None
        if not self._closing and (self._forget_task is None or self._forget_task.done()):
            self._forget_task = self._loop.create_task(self._forget_due(), name="jobqueue-forget")

    async def _forget_due(self) -> None:
        """Drop the origin keys whose time is up, in memory and on disk (WAL included)."""
        assert self._store is not None
        now, changed, retry = time.time(), False, 0.0
        try:
            for job_id in [j.id for j in self._jobs.values() if any(t <= now for t in j.forget_at.values())]:
                job = self._jobs.get(job_id)  # read again: the job may have changed during the last write
                if job is None:
                    continue
                due = {k for k, t in job.forget_at.items() if t <= now}
                job = self._replace(job, origin={k: v for k, v in job.origin.items() if k not in due},
                                    forget_at={k: t for k, t in job.forget_at.items() if k not in due})
                await self._in_db(self._store.update, job.id, origin=job.origin, forget_at=job.forget_at)
                changed = True
            if changed:
                await self._in_db(self._store.scrub)
        except Exception:
            log.exception("job queue: dropping expired origin keys failed; trying again in %g s", FORGET_RETRY_S)
            retry = FORGET_RETRY_S
        self._schedule_forget(retry)

    @staticmethod
    def _from_row(row: dict[str, Any]) -> tuple[Job, bool]:
        """A stored job, and whether this version can read it. If not (a field an older version
        allowed, a value that is not JSON), what can be read is kept so the job can be failed."""
        try:
            if not all(isinstance(row[c], dict) for c in ("request", "origin", "forget_at")):
                raise ValueError("request, origin or forget_at is not a JSON object")
            return Job.model_validate(row), True
        except Exception as e:  # a ValidationError, or a validator's own UserError
            log.warning("job %s: saved by an older version, cannot be read: %s", row.get("id"), e)
            stored = row["request"] if isinstance(row["request"], dict) else {}
            base = Request.model_construct(prompt="")  # the defaults, then what a front end shows, if sound
            shown = {k: v for k, v in stored.items()
                     if k in ("kind", "prompt", "seed", "steps", "width", "height") and type(v) is type(getattr(base, k))}
            fields = {**row, "request": base.model_copy(update=shown),
                      "origin": row["origin"] if isinstance(row["origin"], dict) else {},
                      "forget_at": row["forget_at"] if isinstance(row["forget_at"], dict) else {},
                      "state": row["state"] if row["state"] in get_args(State) else "queued",
                      "served": row["served"] if isinstance(row["served"], int) else None}
            return Job.model_construct(**fields), False


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class _LocalSource:
    """The in-process transport: the worker asks this queue for jobs and reports back to it."""

    def __init__(self, queue: JobQueue) -> None:
        self.q = queue

    async def take(self, match: Callable[[Request], bool] | None, wait: bool) -> Assignment | None:
        begun = await self.q._next(None if match is None else (lambda j: match(j.request)), wait)
        if begun is None:
            return None
        job, ctl = begun
        return Assignment(job.id, job.request, ctl, solo=job.id in self.q._solo)

    async def done(self, job_id: str, out: Outcome) -> None:
        try:
            await self.q._conclude(job_id, out)
        except Exception as e:
            await self.q._broken(job_id, e)

    def progress(self, job_id: str, step: int, total: int, loss: float, png: bytes,
                 note: str | None = None) -> None:
        self.q._on_progress(job_id, step, total, loss, png, note)

    def wants_progress(self) -> bool:
        return bool(self.q._listeners) or self.q._frames.enabled


class _Listener:
    """One subscriber's mailbox, drained by its own task, so it can lag without harm."""

    def __init__(self, fn: Listener) -> None:
        self.fn = fn
        self.items: deque[Event] = deque()
        self.task: asyncio.Task[None] | None = None

    def put(self, event: Event) -> None:
        if isinstance(event, Progress):  # a lagging listener only needs the newest progress
            stale = [e for e in self.items if isinstance(e, Progress) and e.job.id == event.job.id]
            for e in stale:
                self.items.remove(e)
        self.items.append(event)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self.items:
            event = self.items.popleft()
            try:
                result = self.fn(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("job queue listener %r failed on %s", self.fn, type(event).__name__)


def _reread(job: Job) -> Finished | None:
    """A finished job's event again, from its PNG on disk (None when the file is gone);
    ``MalformedResult`` when that PNG's metadata cannot be read (e.g. stored by an older version)."""
    path = Path(job.result_path or "")
    if not job.result_path or not path.is_file():
        return None
    png = path.read_bytes()
    meta = png_metadata(png) or {}
    ran = meta.get("request", job.request.to_metadata())
    metadata = check_metadata({"request": ran, "note": None}, "the picture's metadata")
    return Finished(job, png, metadata, float(job.seconds or 0.0))
