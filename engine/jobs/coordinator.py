"""The coordinator: whose turn it is, what happened to every job, and who hears of it.

The front end submits ``Request``s and listens to job events; the engine never reads a job's
``origin`` (whatever the front end needs to post results back). Guarantees:

* every job is in SQLite before ``submit`` returns, and every state change after it;
* after a crash or a restart, queued jobs and the interrupted one are resumed (the interrupted
  one first, from step 0); a job that cannot be finished ends with a ``Failed`` event and its
  reason, never silently;
* higher priority first, then round-robin between owners (``engine.jobs.order``);
* each person's GPU time per UTC day is counted (``[limits] daily_gpu_seconds``); over it, a job
  waits in the relax lane, behind every fast one, or is refused (``engine.jobs.quota``, ``quota``);
* a job is read again from the current state at each decision (a job cancelled while another is
  admitted to a batch is never started);
* a stored job this version cannot read fails alone ("saved by an older version; please ask
  again"); storage failures are ``StorageError``s, one line naming the path and what to do;
* ``submit(..., forget_after={key: seconds})`` drops short-lived secrets from the stored origin;
* the jobs run elsewhere: a ``Transport`` (``engine.jobs.port``) moves them to a worker in this
  process or to workers over Redis, and asks the coordinator only what its ``Port`` declares;
* a worker's result that cannot be shown (``engine.jobs.results``: metadata of the wrong types, a PNG
  whose metadata is not JSON) fails its job alone, when it arrives or when a start reads it again;
* each listener has its own ``Mailbox``, so a slow listener stalls neither the workers nor the
  others (it may miss intermediate progress, never any other event).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.errors import MalformedResult, ModelsUnavailable, NotAllowed, StorageError, UserError
from engine.jobs.events import (
    Event,
    Failed,
    Finished,
    JobCancelled,
    JobProgress,
    Listener,
    Loading,
    Mailbox,
    Queued,
    Started,
)
from engine.jobs.job import MAX_ATTEMPTS, STALE, TERMINAL, Job, State, check_room
from engine.jobs.order import eligible, service_order
from engine.jobs.port import Control, Outcome, Transport
from engine.jobs.quota import Quota
from engine.jobs.records import Records
from engine.jobs.results import check_result, read_again
from engine.models.availability import Availability, unavailable
from engine.spec.request import Request

log = logging.getLogger(__name__)

LISTENER_FLUSH_S = 5.0  # at close, how long listeners get to receive the last events


class Coordinator:
    """The front end's view of the painting: submit, cancel, query, and listen to job events.
    It is also the ``Port`` its transport asks for turns and reports outcomes to."""

    def __init__(self, cfg: Config, transport: Transport) -> None:
        self._cfg = cfg.queue
        self._transport = transport
        self._records = Records(cfg.queue, cfg.timelapse)
        self._jobs = self._records.jobs  # the records' own dict: the current state of every job
        self.quota = Quota(cfg.limits, self._jobs)  # GPU time per person per day, and the lanes
        self._last_served: dict[str, int] = {}  # owner -> the turn their last job started at
        self._turns = itertools.count(1)  # service turns: monotonic, persisted as ``Job.served``
        self._listeners: list[Mailbox] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._saving: set[str] = set()  # submitted, not yet on disk: not announced, not run
        self._solo: set[str] = set()  # jobs that ran out of memory in a batch: run them alone
        self._running: dict[str, Control] = {}  # the running job(s): how to stop each
        self._loop: asyncio.AbstractEventLoop  # set by start()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, recover jobs a crash or a restart interrupted, start the transport.

        Subscribe first: the recovered jobs' ``Queued`` (or ``Failed``) events are sent here.
        """
        self._loop = asyncio.get_running_loop()
        ended: list[Failed] = []
        turn = 0
        for job, readable in await self._records.open():
            if isinstance(job.served, int):
                self._last_served[job.owner] = max(self._last_served.get(job.owner, 0), job.served)
                turn = max(turn, job.served)
            if job.state in TERMINAL:
                continue
            reason = None
            if not readable:
                reason = STALE
            elif job.state == "running" and self._transport.adopt(job):  # a worker may hold it still
                self._running[job.id] = Control(job.id, math.inf)
                continue
            elif job.state == "running" and job.attempts >= MAX_ATTEMPTS:  # it killed us
                reason = f"it could not be finished after {job.attempts} attempts"
            if reason:
                ended.append(Failed(await self._end(job, "failed", error=reason), reason))
            elif job.state == "running":  # the process died under it: run it again, first
                await self._records.save(self._records.replace(job, state="queued"))
        self._turns = itertools.count(turn + 1)
        self.quota.load(await self._records.usage_on(self.quota.today()))
        await self._records.forget_due()
        for ev in ended:
            self._emit(ev)
        for pos, job in enumerate(self._service_order(), 1):
            self._emit(Queued(job, pos))
        for job in [j for j in self._jobs.values() if j.state == "finished" and not j.delivered]:
            await self._resend(job)  # died before it was shown
        self._task = asyncio.create_task(self._serve(), name="jobqueue-transport")
        self.availability()  # the local worker surveys its models in the background from now

    async def _serve(self) -> None:
        housekeeping = asyncio.create_task(self._records.keep_pruning(), name="jobqueue-prune")
        try:
            await self._transport.serve(self)
        finally:
            housekeeping.cancel()

    async def _resend(self, job: Job) -> None:
        """At start: a finished job's result again, read from its PNG; a result that cannot be read
        fails that job alone with a line (it never stops the start, nor the others' results)."""
        again = await self._records.in_db(read_again, job)
        if isinstance(again, str):
            log.warning("job %s: %s", job.id, again)
            try:
                self._emit(Failed(await self._end(job, "failed", error=again), again))
            except Exception as e:
                await self.broken(job.id, e)
        elif again is not None:
            self._emit(again)

    async def close(self) -> None:
        """Stop the running job within a step and keep it queued for the next ``start``."""
        if self._task is None:
            return
        self._closing = True
        for ctl in self._running.values():
            ctl.stop("close")
        self._wakeup.set()
        await self._task
        busy = [t for box in self._listeners if box.busy and (t := box.task) is not None]
        if busy:
            await asyncio.wait(busy, timeout=LISTENER_FLUSH_S)
        await self._records.close()
        self._task = None

    # -- the front end's API ---------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` (plain or async) for every event; returns an unsubscribe."""
        box = Mailbox(listener, name=f"jobqueue-listener-{len(self._listeners)}")
        self._listeners.append(box)

        def unsubscribe() -> None:
            if box in self._listeners:
                self._listeners.remove(box)
                box.clear()

        return unsubscribe

    async def submit(
        self, request: Request, owner: str, origin: dict[str, Any] | None = None, priority: int = 0, *,
        forget_after: Mapping[str, float] | None = None, moderator: bool = False,
    ) -> tuple[Job, int]:
        """Queue a request; returns the job and its position (1 = next). It is on disk on return.

        ``forget_after``: origin keys to drop, in memory and on disk, that many seconds after
        submission (short-lived secrets). ``StorageError`` if it cannot be stored: nothing is queued.
        ``moderator``: never relaxed (``[limits] moderators_exempt``); ``OverQuota``: refused (``relax`` off).
        """
        if not self._records.is_open or self._closing:
            raise RuntimeError("the job queue is not running (call start() first)")
        check_room(self._jobs.values(), owner, self._cfg)
        lane = self.quota.lane_for(owner, moderator)
        if why := unavailable(request.models, self.availability(), fleet=self.fleet() is not None):
            raise ModelsUnavailable(f"Can't paint that now: {why}.")
        job_id = secrets.token_hex(6)
        while job_id in self._jobs:
            job_id = secrets.token_hex(6)
        now = time.time()
        origin = dict(origin or {})
        forget = {k: now + float(s) for k, s in (forget_after or {}).items() if k in origin}
        job = Job(id=job_id, request=request, owner=owner, origin=origin, priority=priority,
                  created_at=now, forget_at=forget, lane=lane)
        self._records.insert(job)
        self._saving.add(job.id)  # counted against the limits, but not run before it is on disk
        try:
            await self._records.save(job)
        except BaseException:
            self._records.forget(job.id)
            raise
        finally:
            self._saving.discard(job.id)
        job = self._jobs[job.id]
        position = self._place(job.id) or 1  # 1: it was started (or cancelled) as it was saved
        self._emit(Queued(job, position))
        self._wakeup.set()
        if forget:
            self._records.schedule_forget()
        return job, position

    async def expire_origin_key(self, key: str, after_s: float) -> int:
        """``forget_after`` for jobs already stored (e.g. by a version without it): each job whose
        origin holds ``key`` loses it ``after_s`` seconds after its submission, at once if that has
        passed. Returns how many jobs it applied to."""
        if not self._records.is_open:
            raise RuntimeError("the job queue is not running (call start() first)")
        return await self._records.expire_key(key, after_s)

    async def cancel(self, job_id: str, by: str, moderator: bool = False) -> Job:
        """Cancel a queued job, or stop a running one within a step. KeyError if unknown."""
        job = self._jobs[job_id]
        if by != job.owner and not moderator:
            raise NotAllowed("Only the person who asked for this job or a moderator can cancel it.")
        if job.state in TERMINAL:
            raise UserError(f"Job {job.id} has already {job.state}; there is nothing to cancel.")
        if job.id in self._running:
            self._running[job.id].stop("cancel")
        self._transport.cancel(job.id)
        job = await self._end(job, "cancelled", seconds=self.quota.held(job))
        self._emit(JobCancelled(job, by))
        return job

    async def mark_delivered(self, job_id: str) -> None:
        """The front end has shown this job's result; until then a restart sends ``Finished`` again."""
        await self._records.save(self._records.replace(self._jobs[job_id], delivered=True))

    async def annotate(self, job_id: str, **origin: Any) -> Job:
        """Merge keys into a job's ``origin`` (e.g. the message that shows it) and persist them."""
        job = self._jobs[job_id]
        job = self._records.replace(job, origin={**job.origin, **origin})
        await self._records.save(job)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def find(self, **origin: Any) -> Job | None:
        """The newest job whose ``origin`` holds all these key/values (from an index, not a scan)."""
        return self._records.find(**origin)

    def frames_dir(self, job_id: str) -> Path | None:
        """The folder of a job's progress frames (PNGs named by step, in step order; the last one is
        its result), for timelapses; None for an unknown or pruned job, or one that kept no frames."""
        return self._records.frames_dir(job_id)

    def pending(self) -> list[Job]:
        """The running job first, then the queued ones in the order they will run."""
        running = [j for j in self._jobs.values() if j.state == "running"]
        return running + self._service_order()

    def jobs_of(self, owner: str) -> list[Job]:
        """All of an owner's jobs still on record, newest first."""
        return [j for j in reversed(self._jobs.values()) if j.owner == owner]

    def position(self, job_id: str) -> int | None:
        """0 = running, 1 = next, ...; None when the job is not in line (ended, or still being saved)."""
        job = self._jobs.get(job_id)
        if job is None or job.state in TERMINAL:
            return None
        return 0 if job.state == "running" else self._place(job_id)

    def fleet(self) -> list[dict[str, Any]] | None:
        """The live workers' latest heartbeats; None with the local backend (the one worker is this process)."""
        return self._transport.fleet()

    def availability(self) -> list[Availability | None]:
        """What the workers say of the models they offer (empty when nothing is known yet)."""
        return self._transport.availability()

    def paused(self) -> str | None:
        """Why no job can start now ("painting is paused: no worker reachable"), or None."""
        return self._transport.paused()

    def _place(self, job_id: str) -> int | None:
        return next((i for i, j in enumerate(self._service_order(), 1) if j.id == job_id), None)

    def _service_order(self) -> list[Job]:
        queued = [j for j in self._jobs.values() if j.state == "queued" and j.id not in self._saving]
        return service_order(queued, self._records.ranks(), self._last_served, self.quota.lane_of)

    # -- the port: what a transport asks -------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closing

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def runs_alone(self, job_id: str) -> bool:
        return job_id in self._solo

    def wake(self) -> None:
        self._wakeup.set()

    async def changed(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def zoom_last(self, job_id: str) -> tuple[int, bytes] | None:
        result: tuple[int, bytes] | None = await self._records.in_db(self._records.frames.zoom_last, job_id)
        return result

    def wants_progress(self) -> bool:
        return bool(self._listeners) or self._records.frames.enabled

    async def next_job(self, match: Callable[[Job], bool] | None, wait: bool, *,
                       skip_solo: bool | None = None) -> tuple[Job, Control] | None:
        skip_solo = match is not None if skip_solo is None else skip_solo
        while not self._closing:
            order = eligible(self._service_order(), match, self._solo, skip_solo, self.quota.lane_of)
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
                    await self.broken(job.id, e)
                    continue
                if begun is not None:
                    return begun
            if not wait:
                return None
        return None

    async def _begin(self, job_id: str) -> tuple[Job, Control] | None:
        """Mark a job running (saved, announced); None if it is no longer queued (cancelled
        meanwhile, e.g. while another job was being admitted) or was cancelled while being saved."""
        job = self._jobs.get(job_id)  # the current state, never a copy taken before an await
        if job is None or job.state != "queued" or self._closing:
            return None
        ctl = Control(job.id, time.monotonic() + self._cfg.job_timeout_s)
        self._running[job.id] = ctl
        if job.request.zoom is None:  # a zoom video resumes from the frames it has made
            self._records.later(self._records.frames.restart, job.id)  # from step 0 again
        turn = next(self._turns)
        job = self._records.replace(job, state="running", started_at=time.time(), attempts=job.attempts + 1,
                                    served=turn)
        self._last_served[job.owner] = turn
        try:
            await self._records.save(job)
        except BaseException:
            self._running.pop(job.id, None)
            raise
        if self._jobs[job.id].state != "running":
            self._running.pop(job.id, None)
            return None
        self._emit(Started(job))
        return job, ctl

    async def broken(self, job_id: str, e: Exception) -> None:
        log.error("job queue: job %s", job_id, exc_info=e)
        self._running.pop(job_id, None)
        job = self._jobs.get(job_id)
        if job is not None and job.state not in TERMINAL:
            reason = str(e) if isinstance(e, StorageError) else "the job queue failed; see the log"
            job = self._records.replace(job, state="failed", error=reason, finished_at=time.time())
            self._emit(Failed(job, reason))
            try:
                await self._records.save(job)
            except Exception:
                log.exception("job queue: could not record job %s as failed", job_id)

    async def conclude(self, job_id: str, out: Outcome) -> None:
        try:
            await self._conclude(job_id, out)
        except Exception as e:
            await self.broken(job_id, e)

    async def _conclude(self, job_id: str, out: Outcome) -> None:
        """Record a job's outcome (its picture written first) and tell the listeners."""
        self._running.pop(job_id, None)
        job = self._jobs.get(job_id)
        if job is None or job.state != "running":  # cancelled meanwhile: its JobCancelled has gone out
            return
        seconds = self.quota.ran(job, out)  # what the worker reported, checked (engine.jobs.quota)
        path, metadata = None, out.metadata
        if out.kind == "finished":
            try:  # a result the front end could not show (or a restart not read) fails here, alone
                metadata = await self._records.in_db(check_result, out.png, out.metadata, out.candidates)
                path = await self._records.in_db(self._records.write_result, job_id, out.png, out.candidates)
            except (StorageError, MalformedResult) as e:
                log.warning("job %s: %s", job_id, e)
                out = Outcome("failed", reason=str(e))
            job = self._jobs[job_id]
            if job.state != "running":  # cancelled while the picture was written
                self._records.later(self._records.remove_result, job_id, path)
                return
        if out.kind == "finished":
            if job.request.zoom is None:  # a zoom's frames are its video, the last one its result already
                self._records.later(self._records.frames.final, job_id, job.request.steps, out.png)
            job = await self._end(job, "finished", result_path=path, seconds=seconds)
            self._emit(Finished(job, out.png, metadata, seconds, out.mask_png, out.candidates))
        elif out.kind == "failed":
            job = await self._end(job, "failed", error=out.reason, seconds=seconds)
            self._emit(Failed(job, out.reason))
        else:  # stopped by close() or sent back to run alone: queued again, the attempt not counted
            if out.solo:
                self._solo.add(job_id)
            await self.requeue(job_id, counted=False)

    async def requeue(self, job_id: str, *, counted: bool) -> None:
        self._running.pop(job_id, None)
        job = self._jobs.get(job_id)
        if job is None or job.state != "running":
            return
        await self._records.save(self._records.replace(job, state="queued",
                                                       attempts=job.attempts - (0 if counted else 1)))
        self._wakeup.set()

    async def fail(self, job_id: str, reason: str) -> None:
        job = self._jobs.get(job_id)
        if job is not None and job.state not in TERMINAL:
            self._running.pop(job_id, None)
            self._emit(Failed(await self._end(job, "failed", error=reason), reason))

    def progress_from_thread(self, job_id: str, step: int, total: int, loss: float, png: bytes,
                             note: str | None = None) -> None:
        self._loop.call_soon_threadsafe(self.progress, job_id, step, total, loss, png, note)

    def progress(self, job_id: str, step: int, total: int, loss: float, png: bytes, note: str | None = None) -> None:
        job = self._jobs.get(job_id)
        if job is not None and job.state == "running":
            if note is not None:  # a word on the job's status (loading models), no picture
                self._emit(Loading(job, note))
                return
            self._records.keep_frame(job, step, total, png)
            self._emit(JobProgress(job, step, total, loss, png))

    # -- state and events ----------------------------------------------------------------------

    async def _end(self, job: Job, state: State, **changes: Any) -> Job:
        job = self._records.replace(job, state=state, finished_at=time.time(), **changes)
        if state != "finished":  # no result to make a timelapse of
            self._records.later(self._records.frames.remove, job.id)
        await self._records.save(job, self.quota.charge(job.owner, changes.get("seconds")))
        return job

    def _emit(self, event: Event) -> None:
        for box in self._listeners:
            box.put(event)
