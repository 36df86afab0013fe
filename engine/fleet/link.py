"""The coordinator's end of the Redis transport: hand jobs to workers with room, take back what a
silent or hoarding worker holds, and record what workers send (``engine.jobs.port.Transport``).

A worker is trusted with no more than it needs: at most the coordinator's ``queue.batch_size`` jobs at a
time (whatever capacity it claims); a job still held ``job_timeout_s`` + ``worker_timeout_s`` after it was
handed out (for a zoom: after its newest frame) is taken back and cancelled there; every picture it sends
must have a size the request can be painted at (read from the PNG header, before anything decodes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import ResponseError

from engine.config import QueueConfig
from engine.errors import UserError
from engine.fleet.streams import (
    DOWN,
    EVENTS,
    JOBS_MAXLEN,
    PAUSED,
    PROGRESS,
    WORKERS,
    cancel_tasks,
    check_reachable,
    connect,
    ensure_group,
    jobs_stream,
    safe_url,
    stream_entries,
)
from engine.fleet.wire import (
    MAX_MESSAGE_BYTES,
    CancelMsg,
    FailedMsg,
    FinishedMsg,
    Heartbeat,
    JobMsg,
    ProgressMsg,
    ReturnedMsg,
    ZoomFrame,
    decode,
    encode,
)
from engine.jobs.job import MAX_ATTEMPTS, TERMINAL, Job
from engine.jobs.port import Outcome, Port
from engine.media.imageio import png_size
from engine.models.availability import Availability
from engine.spec.request import Request, batch_key
from engine.workers.loop import painted_sizes

PNG_SLACK_BYTES = 1 << 20  # a PNG from a worker: at most 8 bytes a pixel, plus this (metadata, chunks)

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    hb: Heartbeat
    at: float  # time.monotonic() on the coordinator when this heartbeat (seq) was first seen


@dataclass
class _Lease:
    lease: str | None  # None: adopted after a restart, the nonce not known yet
    worker: str | None
    boot: str | None
    sent_at: float
    missing_since: float | None = None
    deadline: float = math.inf  # time.monotonic() after which the hand-out is taken back
    frame: int = 0  # a zoom: its newest frame seen (each new one moves the deadline)


class RedisLink:
    """The coordinator's end: hands jobs to workers with room, records what they send back."""

    def __init__(self, cfg: QueueConfig, url: str) -> None:
        self.q: Port  # the coordinator, from ``serve``
        self.url = url
        self.r = connect(url)
        self.timeout = cfg.worker_timeout_s
        self.job_timeout = cfg.job_timeout_s
        self.room = cfg.batch_size  # the most jobs one worker gets at a time
        self.workers: dict[str, _Seen] = {}
        self.leases: dict[str, _Lease] = {}  # job id -> its current hand-out
        self.refused: dict[str, dict[str, str]] = {}  # job id -> worker -> why it cannot run it
        self.reachable = False
        self._tasks: list[asyncio.Task[None]] = []
        self._said_down = False
        self._stale: set[str] = set()  # leases a worker was told to drop

    # the Transport (what the coordinator asks)

    def adopt(self, job: Job) -> bool:
        """A job recorded as running when the coordinator started: a worker may still hold it."""
        self.leases[job.id] = _Lease(None, None, None, time.monotonic(), deadline=self._deadline())
        return True

    async def serve(self, port: Port) -> None:
        """Hand jobs to workers and record what they send back until the coordinator closes."""
        self.q = port
        await self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.close()

    async def start(self) -> None:
        try:
            await check_reachable(self.r, self.url)
            self.reachable = True
        except UserError as e:
            log.error("%s; %s", e, PAUSED)
            self._said_down = True
        self._tasks = [asyncio.create_task(self._dispatch(), name="fleet-dispatch"),
                       asyncio.create_task(self._events(), name="fleet-events")]

    async def close(self) -> None:
        await cancel_tasks(self._tasks)
        with contextlib.suppress(Exception):
            await self.r.aclose()

    def fleet(self) -> list[dict[str, Any]]:
        return [self.workers[n].hb.model_dump() for n in sorted(self._live())]

    def availability(self) -> list[Availability | None]:
        """What each live worker says of its offered models (None: it has not surveyed them yet)."""
        return [self.workers[n].hb.available for n in sorted(self._live())]

    def paused(self) -> str | None:
        if not self.reachable or not self._live():
            return PAUSED
        return None

    def cancel(self, job_id: str) -> None:
        """Tell the worker holding this job to stop it (best effort: its outcome is ignored anyway)."""
        held = self.leases.pop(job_id, None)
        if held is None or held.worker is None or held.lease is None:
            return
        msg = CancelMsg(job_id=job_id, lease=held.lease)
        task = asyncio.create_task(self._send(held.worker, encode(msg)))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # the loops

    async def _dispatch(self) -> None:
        while not self.q.closing:
            try:
                await self._poll_workers()
                await self._check_leases()
                await self._hand_out()
                if not self.reachable:
                    log.warning("redis at %s is reachable again", safe_url(self.url))
                self.reachable, self._said_down = True, False
            except DOWN as e:
                self._down(e)
            except Exception:
                log.exception("fleet: dispatching failed")
            await self.q.changed(0.2)

    def _down(self, e: BaseException) -> None:
        if not self._said_down:
            log.warning("redis at %s unreachable (%s); %s", safe_url(self.url), e, PAUSED)
            self._said_down = True
        self.reachable = False

    async def _poll_workers(self) -> None:
        raw = await self.r.hgetall(WORKERS)
        if not self.reachable:  # silence while Redis was away is not a worker's fault
            now = time.monotonic()
            for known in self.workers.values():
                known.at = now
        now = time.monotonic()
        for key, data in raw.items():
            name = key.decode(errors="replace") if isinstance(key, bytes) else key
            hb = decode(data, f"heartbeat of {name!r}")
            if not isinstance(hb, Heartbeat) or hb.worker != name:
                continue
            seen = self.workers.get(name)
            if seen is not None and seen.hb.boot != hb.boot:
                await self._lost(name, "it restarted", counted=True)
                seen = None
            if seen is None or seen.hb.seq != hb.seq:
                self.workers[name] = _Seen(hb, now)
            for lease in hb.leases:
                job_id = lease.split(".", 1)[0]
                held = self.leases.get(job_id)
                if held is not None and held.worker is None and self._lease_ok(job_id, lease):
                    held.lease, held.worker, held.boot = lease, name, hb.boot  # adopted after a restart
                elif (held is None or held.lease != lease) and lease not in self._stale:
                    # A hand-out taken back (the worker was silent too long): free the worker of it.
                    if len(self._stale) > 10_000:
                        self._stale.clear()
                    self._stale.add(lease)
                    await self._send(name, encode(CancelMsg(job_id=job_id, lease=lease)))
        for name, seen in list(self.workers.items()):
            key = name.encode()
            if key not in raw:  # it stopped and said goodbye; its jobs come back through the events
                self.workers.pop(name, None)
            elif now - seen.at > self.timeout:
                log.warning("fleet: worker %s silent for %.1f s; its jobs go to the others", name, now - seen.at)
                await self._lost(name, "it went silent", counted=True)
                await self.r.hdel(WORKERS, name)
                await self.r.delete(jobs_stream(name))

    def _deadline(self) -> float:
        """When a hand-out made (or a zoom frame seen) now is taken back: the worker's own timeout
        (``job_timeout_s``) has had ``worker_timeout_s`` more to report."""
        return time.monotonic() + self.job_timeout + self.timeout

    async def _lost(self, name: str, why: str, counted: bool) -> None:
        self.workers.pop(name, None)
        for job_id, held in list(self.leases.items()):
            if held.worker == name:
                await self._requeue(job_id, counted, f"worker {name}: {why}")

    async def _requeue(self, job_id: str, counted: bool, why: str, fail: str | None = None) -> None:
        """Take a hand-out back; ``counted``: the worker may have died of it (poison jobs fail, with
        ``fail`` as the reason when given)."""
        self.leases.pop(job_id, None)
        job = self.q.job(job_id)
        if job is None or job.state != "running":
            return
        if counted and job.attempts >= MAX_ATTEMPTS:
            reason = fail or f"it stopped {job.attempts} workers, so it will not be tried again"
            log.warning("fleet: job %s failed: %s (%s)", job_id, reason, why)
            await self.q.conclude(job_id, Outcome("failed", reason=reason))
            return
        log.info("fleet: job %s queued again (%s)", job_id, why)
        await self.q.requeue(job_id, counted=counted)

    async def _overdue(self, job_id: str, held: _Lease) -> None:
        """A job its worker still holds past its deadline (a worker that hoards, or whose own timeout
        failed): cancelled there, and queued for another worker, never that one again."""
        reason = f"it took longer than {self.job_timeout:g} s and was stopped"
        log.warning("fleet: job %s ran past job_timeout_s on worker %s; taken back", job_id, held.worker)
        if held.worker is not None and held.lease is not None:
            await self._send(held.worker, encode(CancelMsg(job_id=job_id, lease=held.lease)))
            self._stale.add(held.lease)  # its heartbeat still naming it is no news
            self.refused.setdefault(job_id, {})[held.worker] = reason
        await self._requeue(job_id, True, f"worker {held.worker}: ran past job_timeout_s", fail=reason)

    async def _check_leases(self) -> None:
        now = time.monotonic()
        for job_id, held in list(self.leases.items()):
            if held.worker is not None and now > held.deadline:
                await self._overdue(job_id, held)
                continue
            if held.worker is None:  # adopted, and no worker claimed it
                if now - held.sent_at > self.timeout:
                    await self._requeue(job_id, False, "no worker holds it")
                continue
            seen = self.workers.get(held.worker)
            if seen is None:  # it said goodbye: its outcomes are in the events stream, or it is lost
                held.missing_since = held.missing_since or now
                if now - held.missing_since > min(1.0, self.timeout):
                    await self._requeue(job_id, False, f"worker {held.worker} stopped")
            elif seen.at > held.sent_at and held.lease not in seen.hb.leases:
                held.missing_since = held.missing_since or now
                if now - held.missing_since > self.timeout:  # e.g. Redis restarted without its data
                    await self._requeue(job_id, False, f"worker {held.worker} never got it")
            else:
                held.missing_since = None
        live = set(self._live())
        for job_id, why in list(self.refused.items()):
            job = self.q.job(job_id)
            if job is None or job.state in TERMINAL:
                self.refused.pop(job_id, None)
            elif job.state != "queued":
                continue
            elif live and live <= set(why):  # no live worker can run it
                self.refused.pop(job_id, None)
                await self.q.fail(job_id, next(iter(why.values())))

    def _live(self) -> list[str]:
        now = time.monotonic()
        return [n for n, s in self.workers.items() if now - s.at <= self.timeout]

    async def _hand_out(self) -> None:
        for name in self._live():
            seen = self.workers[name]
            while True:
                mine = [j for j, h in self.leases.items() if h.worker == name]
                if len(mine) >= min(seen.hb.capacity, self.room) or any(self.q.runs_alone(j) for j in mine):
                    break
                refused = {j for j, why in self.refused.items() if name in why}
                if mine:
                    first = self.q.job(mine[0])
                    assert first is not None, "a job handed out is on record"
                    key = batch_key(first.request)

                    def match(job: Job, key: tuple = key, refused: set[str] = refused) -> bool:
                        return job.id not in refused and batch_key(job.request) == key
                    begun = await self.q.next_job(match, False, skip_solo=True)
                else:
                    def not_refused(job: Job, refused: set[str] = refused) -> bool:
                        return job.id not in refused
                    begun = await self.q.next_job(not_refused, False, skip_solo=False)
                if begun is None:
                    break
                job, _ctl = begun
                lease = f"{job.id}.{job.attempts}.{secrets.token_hex(3)}"
                self.leases[job.id] = _Lease(lease, name, seen.hb.boot, time.monotonic(), deadline=self._deadline())
                files = await asyncio.to_thread(input_files, job.request)
                msg = JobMsg(job_id=job.id, lease=lease, request=job.request, solo=self.q.runs_alone(job.id),
                             boot=seen.hb.boot, files=files)
                if job.request.zoom is not None and (last := await self.q.zoom_last(job.id)):
                    # A zoom another worker began: go on after its newest frame here (the file thread
                    # has written what arrived before); too large to send with it, it starts over.
                    resumed = msg.model_copy(update={"zoom_from": ZoomFrame(frame=last[0], png=last[1])})
                    if len(encode(resumed)) <= MAX_MESSAGE_BYTES:
                        msg = resumed
                if len(data := encode(msg)) > MAX_MESSAGE_BYTES:
                    self.leases.pop(job.id, None)
                    size = sum(len(b) for b in files.values()) / 2**20
                    await self.q.conclude(job.id, Outcome("failed", reason=(
                        f"its images are too large to send to a worker ({size:.1f} MB; at most "
                        f"{MAX_MESSAGE_BYTES * 3 // 4 // 2**20} MB in all)")))
                    continue
                try:
                    await self._send(name, data)
                except BaseException:
                    await self._requeue(job.id, False, "redis unreachable")
                    raise

    async def _send(self, worker: str, data: bytes) -> None:
        await self.r.xadd(jobs_stream(worker), {"m": data}, maxlen=JOBS_MAXLEN, approximate=True)

    async def _events(self) -> None:
        backlog = True  # first what a previous coordinator read and did not acknowledge
        while not self.q.closing:
            try:
                await ensure_group(self.r, EVENTS, "coordinator")
                await ensure_group(self.r, PROGRESS, "coordinator")
                while not self.q.closing:
                    pos = "0" if backlog else ">"
                    # Progress first: a backlog's last images are shown before its results.
                    resp = await self.r.xreadgroup("coordinator", "coordinator", {PROGRESS: pos, EVENTS: pos},
                                                   count=64, block=None if backlog else 200)
                    got = stream_entries(resp)
                    for stream, entry_id, raw in got:
                        await self._receive(raw)
                        await self.r.xack(stream, "coordinator", entry_id)
                        await self.r.xdel(stream, entry_id)
                    if backlog and not got:
                        backlog = False
            except ResponseError as e:  # NOGROUP: Redis lost its data; the groups are made again
                log.warning("fleet: %s", e)
                backlog = True
                await asyncio.sleep(0.2)
            except DOWN as e:
                self._down(e)
                backlog = True
                await asyncio.sleep(0.5)

    def _lease_ok(self, job_id: str, lease: str) -> bool:
        held = self.leases.get(job_id)
        if held is None:
            return False
        if held.lease is None:  # adopted: any lease of the attempt it was recorded at
            job = self.q.job(job_id)
            return job is not None and lease.startswith(f"{job_id}.{job.attempts}.")
        return held.lease == lease

    def _new_frame(self, job_id: str, k: int) -> None:
        """A zoom's frame k arrived: ``job_timeout_s`` bounds each frame, so a new one moves the deadline."""
        held = self.leases.get(job_id)
        if held is not None and k > held.frame:
            held.frame, held.deadline = k, self._deadline()

    async def _receive(self, raw: bytes | str | None) -> None:
        msg = decode(raw, "fleet events")
        if msg is None:
            return
        if not isinstance(msg, ProgressMsg | FinishedMsg | FailedMsg | ReturnedMsg):
            log.warning("fleet: dropped a %s message on the events stream", msg.kind)
            return
        if not self._lease_ok(msg.job_id, msg.lease):
            if not isinstance(msg, ProgressMsg):
                log.info("fleet: dropped a %s of job %s from %s: not its current hand-out",
                         msg.kind, msg.job_id, msg.worker)
            return
        job = self.q.job(msg.job_id)
        try:
            if isinstance(msg, ProgressMsg):
                if msg.note is None and job is not None and (wrong := wrong_picture(msg.png, job.request)):
                    log.warning("fleet: dropped a progress image of job %s from %s: %s", msg.job_id, msg.worker, wrong)
                    return
                if job is not None and job.request.zoom is not None and msg.note is None:
                    self._new_frame(msg.job_id, msg.step)
                self.q.progress(msg.job_id, msg.step, msg.total, msg.loss, msg.png, msg.note)
            elif isinstance(msg, FinishedMsg):
                self.leases.pop(msg.job_id, None)
                wrong = None if job is None else wrong_result(msg, job.request)
                if wrong:
                    log.warning("fleet: job %s failed: worker %s sent %s", msg.job_id, msg.worker, wrong)
                    await self.q.conclude(msg.job_id, Outcome("failed", reason=f"the worker sent back {wrong}"))
                else:
                    await self.q.conclude(msg.job_id, Outcome("finished", png=msg.png, seconds=msg.seconds,
                                                               metadata=msg.metadata, mask_png=msg.mask_png,
                                                               candidates=msg.candidates))
            elif isinstance(msg, FailedMsg) and msg.elsewhere:
                log.warning("fleet: worker %s cannot run job %s: %s", msg.worker, msg.job_id, msg.reason)
                self.refused.setdefault(msg.job_id, {})[msg.worker] = msg.reason
                await self._requeue(msg.job_id, False, f"worker {msg.worker} cannot run it")
            elif isinstance(msg, FailedMsg):
                self.leases.pop(msg.job_id, None)
                await self.q.conclude(msg.job_id, Outcome("failed", reason=msg.reason))
            else:
                self.leases.pop(msg.job_id, None)
                await self.q.conclude(msg.job_id, Outcome("stopped", solo=msg.solo))
        except Exception as e:
            await self.q.broken(msg.job_id, e)
        if not isinstance(msg, ProgressMsg):
            self.q.wake()  # a worker has room again: hand out the next job now


def wrong_result(msg: FinishedMsg, request: Request) -> str | None:
    """Why a finished job's pictures are refused (None: they are fine): ``wrong_picture`` for the picture
    (a grid's tiled size), its mask and each candidate (a picture of the grid's cell size)."""
    cell = request.model_copy(update={"grid": 1})
    return (wrong_picture(msg.png, request)
            or (None if msg.mask_png is None else wrong_picture(msg.mask_png, cell, "mask"))
            or next((w for i, c in enumerate(msg.candidates, 1) if (w := wrong_picture(c, cell, f"candidate {i}"))),
                    None))


def wrong_picture(png: bytes, request: Request, what: str = "picture") -> str | None:
    """Why a picture from a worker is refused (None: it is fine): not a PNG, a size ``request`` is
    never painted at, or more bytes than such a picture can take. Only the header is read."""
    size = png_size(png)
    if size is None:
        return f"a {what} that is not a PNG"
    w, h = size
    if size not in painted_sizes(request):
        return f"a {w}x{h} {what} for a {request.width}x{request.height} job"
    if len(png) > 8 * w * h + h + PNG_SLACK_BYTES:
        return f"a {w}x{h} {what} of {len(png):,} bytes, more than such a picture takes"
    return None


def input_files(request: Request) -> dict[str, bytes]:
    """The request's input images, by path, to travel with the job (a worker may be on another
    machine); one that cannot be read stays out, and the worker says it is missing."""
    paths = [request.init_image, request.mask, *(p.path for p in request.image_prompts)]
    files: dict[str, bytes] = {}
    for path in dict.fromkeys(p for p in paths if p):
        try:
            files[path] = Path(path).read_bytes()
        except OSError as e:
            log.warning("fleet: input %s cannot be read: %s", path, e)
    return files
