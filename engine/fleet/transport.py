"""The Redis transport: the coordinator's end (``RedisLink``) and a remote worker's end (``RedisSource``).

Redis Streams with consumer groups carry the messages of ``engine.fleet.wire``:

* ``vqgan-clip:jobs:<worker>`` (group ``worker``): job and cancel messages for one worker. The
  coordinator writes a job there only when that worker has room (its heartbeat announces its
  capacity; the coordinator counts what it handed out), so Redis never holds a queue deep enough
  to override the coordinator's fair order;
* ``vqgan-clip:events`` (group ``coordinator``): finished, failed and returned jobs; an entry is
  acknowledged and deleted only once the coordinator has written the picture and recorded it, so
  a coordinator killed meanwhile reads it again at its next start;
* ``vqgan-clip:progress`` (group ``coordinator``): progress images, trimmed (``MAXLEN ~``);
* ``vqgan-clip:workers`` (hash): each worker's latest heartbeat.

Every hand-out has a lease (``<job id>.<attempt>.<nonce>``); an outcome that quotes another lease
(a worker that was given up on, a hand-out that was taken back) is dropped, so each result is
recorded, and delivered, once. SQLite stays the coordinator's record of truth.

A worker is trusted with no more than it needs: it gets at most the coordinator's ``queue.batch_size``
jobs at a time (whatever capacity it claims), a job still held ``job_timeout_s`` + ``worker_timeout_s``
after it was handed out (for a zoom: after its newest frame) is taken back and cancelled there, and
every picture it sends must have a size the request can be painted at (read from the PNG header,
before anything decodes it). A worker in turn opens only the files that came with its job, under
a folder of its own named by the (validated) job id, and loads only presets and the models of its own
``[models]`` (``unserved``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.config import Config, ModelsConfig, QueueConfig
from engine.errors import UserError, quoted
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
from engine.jobs.port import Control, Outcome, Port
from engine.media.files import job_path
from engine.media.imageio import png_size
from engine.models.availability import Availability
from engine.models.trust import untrusted_model
from engine.spec.request import Request
from engine.workers.loop import Assignment, Worker, batch_key, painted_sizes

log = logging.getLogger(__name__)

PREFIX = "vqgan-clip"
WORKERS = f"{PREFIX}:workers"
EVENTS = f"{PREFIX}:events"
PROGRESS = f"{PREFIX}:progress"
EVENTS_MAXLEN = 10_000
PROGRESS_MAXLEN = 1_000
JOBS_MAXLEN = 1_000
PAUSED = "painting is paused: no worker reachable"
PNG_SLACK_BYTES = 1 << 20  # a PNG from a worker: at most 8 bytes a pixel, plus this (metadata, chunks)
DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def jobs_stream(worker: str) -> str:
    return f"{PREFIX}:jobs:{worker}"


def connect(url: str) -> aioredis.Redis:
    """A client for ``url`` (``redis://`` or ``rediss://``); ``UserError`` if the URL is not one."""
    try:
        return aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    except ValueError as e:
        raise UserError(f"not a Redis URL: {_safe(url)} ({e})") from None


def _safe(url: str) -> str:
    """The URL without its password, for logs and messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def stream_entries(resp: object) -> list[tuple[Any, Any, bytes | str | None]]:
    """(stream, entry id, message) of each entry of an XREADGROUP reply (``[[stream, [(id, fields),
    ...]], ...]``; None when it timed out). An entry trimmed away (``MAXLEN ~``) while still pending
    comes back without fields: its message is None, which ``decode`` drops with a warning."""
    if not isinstance(resp, list):
        return []
    return [(stream, entry_id, (fields or {}).get(b"m")) for stream, entries in resp for entry_id, fields in entries]


async def ensure_group(r: aioredis.Redis, stream: str, group: str) -> None:
    with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
        await r.xgroup_create(stream, group, id="0", mkstream=True)


async def check_reachable(r: aioredis.Redis, url: str) -> None:
    """One line (``UserError``) when Redis cannot be used: wrong password, unreachable host."""
    try:
        await r.ping()
    except RedisError as e:
        raise UserError(f"cannot use Redis at {_safe(url)}: {e}") from None
    except OSError as e:
        raise UserError(f"cannot reach Redis at {_safe(url)}: {e}") from None


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait until each has ended (whatever it raised)."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task


# -- the coordinator's end -------------------------------------------------------------------


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
        await _cancel(self._tasks)
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
                    log.warning("redis at %s is reachable again", _safe(self.url))
                self.reachable, self._said_down = True, False
            except DOWN as e:
                self._down(e)
            except Exception:
                log.exception("fleet: dispatching failed")
            await self.q.changed(0.2)

    def _down(self, e: BaseException) -> None:
        if not self._said_down:
            log.warning("redis at %s unreachable (%s); %s", _safe(self.url), e, PAUSED)
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
                wrong = None if job is None else (wrong_picture(msg.png, job.request) or (
                    None if msg.mask_png is None else wrong_picture(msg.mask_png, job.request, "mask")))
                if wrong:
                    log.warning("fleet: job %s failed: worker %s sent %s", msg.job_id, msg.worker, wrong)
                    await self.q.conclude(msg.job_id, Outcome("failed", reason=f"the worker sent back {wrong}"))
                else:
                    await self.q.conclude(msg.job_id, Outcome("finished", png=msg.png, seconds=msg.seconds,
                                                               metadata=msg.metadata, mask_png=msg.mask_png))
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


# -- a remote worker's end -------------------------------------------------------------------


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


def unserved(request: Request, models: ModelsConfig) -> str | None:
    """Why this worker will not load ``request``'s models (None: it will). It loads presets and the
    models of its own ``[models]`` only (``engine.models.trust.untrusted_model``, the rule PNG metadata
    follows), never a file of its disk that a message names; the line is the same whether or not
    that file is there. Another worker may serve it (``FailedMsg.elsewhere``)."""
    bad = untrusted_model(request.models, models)
    if bad is None:
        return None
    key, name = bad
    what = {"vqgan": "VQGAN", "clip": "CLIP model"}.get(key, "model file")
    return f"{what} {quoted(name if key in ('vqgan', 'clip') else Path(name).name)} is not one this worker serves"


def _local_request(request: Request, files: dict[str, bytes], folder: Path) -> tuple[Request, dict[str, str]]:
    """The request with its input images written under ``folder``; and local path -> original path.

    Every image it names must have come with it: a worker never opens a file of its own disk that a
    message names. One that did not is a ``UserError`` saying so, the same whether or not that path
    exists here (nothing is looked up)."""
    named = [("input image", request.init_image), ("mask", request.mask),
             *(("image prompt", p.path) for p in request.image_prompts)]
    for what, path in named:
        if path and path not in files:
            raise UserError(f"{what} {Path(path).name[:80]}: not sent with the job")
    paths = list(dict.fromkeys(p for _, p in named if p))
    if not paths:
        return request, {}
    folder.mkdir(parents=True, exist_ok=True)
    here: dict[str, str] = {}
    for i, path in enumerate(paths):  # named by number: no part of a wire value becomes a file name
        local = folder / f"{i}.img"
        local.write_bytes(files[path])
        here[path] = str(local)
    update: dict[str, Any] = {
        "image_prompts": tuple(p.model_copy(update={"path": here.get(p.path, p.path)}) for p in request.image_prompts),
        "inputs": tuple(f.model_copy(update={"path": here.get(f.path, f.path)}) for f in request.inputs)}
    if request.init_image:
        update["init_image"] = here.get(request.init_image, request.init_image)
    if request.mask:
        update["mask"] = here.get(request.mask, request.mask)
    return request.model_copy(update=update), {v: k for k, v in here.items()}


def _paths_back(value: Any, back: dict[str, str]) -> Any:
    """Metadata with the worker's copies of the inputs named by their paths on the coordinator."""
    if isinstance(value, str):
        return back.get(value, value)
    if isinstance(value, dict):
        return {k: _paths_back(v, back) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_paths_back(v, back) for v in value]
    return value


def _png_paths_back(png: bytes, back: dict[str, str]) -> bytes:
    import io

    from PIL import Image

    from engine.media.imageio import png_bytes, read_metadata

    meta = read_metadata(png)
    if not meta:
        return png
    return png_bytes(Image.open(io.BytesIO(png)), _paths_back(meta, back))


class RedisSource:
    """A worker process's transport: jobs from its stream, outcomes and heartbeats back."""

    def __init__(self, r: aioredis.Redis, cfg: QueueConfig, name: str, device: str, runner: Any,
                 models: ModelsConfig) -> None:
        self.r, self.cfg, self.name, self.device, self.runner = r, cfg, name, device, runner
        self.models = models  # the only models it loads, with the presets
        self.boot = secrets.token_hex(4)
        self.stream = jobs_stream(name)
        self.inbox: list[tuple[JobMsg, Control]] = []
        self.leases: dict[str, str] = {}  # job id -> lease, for every job held
        self.ctls: dict[str, Control] = {}
        self.changed = asyncio.Event()
        self.closing = False
        self.seq = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._said_down = False
        self._loop: asyncio.AbstractEventLoop
        self.files = Path(tempfile.mkdtemp(prefix="vqgan-clip-worker-"))  # input images of held jobs
        self.back: dict[str, dict[str, str]] = {}  # job id -> local input path -> the coordinator's

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.r.delete(self.stream)  # a previous life's hand-outs: the coordinator takes them back
        await ensure_group(self.r, self.stream, "worker")
        await self._beat_once()
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._beat())]

    def stop(self) -> None:
        """Ctrl-C / SIGTERM: take nothing new; the running jobs stop within a step and go back."""
        self.closing = True
        for ctl in self.ctls.values():
            ctl.stop("close")
        self.changed.set()

    async def close(self) -> None:
        for msg, _ctl in self.inbox:  # handed out, never started: back at once
            lease = self.leases.get(msg.job_id, msg.lease)
            await self._post(ReturnedMsg(worker=self.name, job_id=msg.job_id, lease=lease))
        self.inbox.clear()
        await _cancel(self._tasks)
        with contextlib.suppress(Exception):
            await self.r.hdel(WORKERS, self.name)
            await self.r.delete(self.stream)
        with contextlib.suppress(Exception):
            await self.r.aclose()
        shutil.rmtree(self.files, ignore_errors=True)

    # Source

    async def take(self, match: Any, wait: bool) -> Assignment | None:
        while not self.closing:
            for i, (msg, ctl) in enumerate(self.inbox):
                if match is None or (not msg.solo and match(msg.request)):
                    del self.inbox[i]
                    self.ctls[msg.job_id] = ctl
                    start = None if msg.zoom_from is None else (msg.zoom_from.frame, msg.zoom_from.png)
                    return Assignment(msg.job_id, msg.request, ctl, solo=msg.solo, zoom_from=start)
            if not wait:
                return None
            self.changed.clear()
            await self.changed.wait()
        return None

    async def done(self, job_id: str, out: Outcome) -> None:
        lease = self.leases.get(job_id)
        ctl = self.ctls.pop(job_id, None)
        if lease is None:
            return
        msg: Any
        back = self.back.pop(job_id, {})
        shutil.rmtree(job_path(self.files, job_id), ignore_errors=True)
        if out.kind == "finished":
            png = await asyncio.to_thread(_png_paths_back, out.png, back) if back else out.png
            msg = FinishedMsg(worker=self.name, job_id=job_id, lease=lease, png=png, seconds=out.seconds,
                              metadata=_paths_back(out.metadata, back), mask_png=out.mask_png)
            if len(encode(msg)) > MAX_MESSAGE_BYTES:
                msg = FailedMsg(worker=self.name, job_id=job_id, lease=lease,
                                reason="the picture is too large to send back; try a smaller size")
        elif out.kind == "failed":
            msg = FailedMsg(worker=self.name, job_id=job_id, lease=lease, reason=out.reason,
                            elsewhere=out.elsewhere)
        elif ctl is not None and ctl.reason == "cancel":
            msg = None  # the coordinator has recorded the cancel; nothing more is sent for it
        else:
            msg = ReturnedMsg(worker=self.name, job_id=job_id, lease=lease, solo=out.solo)
        if msg is not None:
            await self._post(msg)
        self.leases.pop(job_id, None)

    def progress(self, job_id: str, step: int, total: int, loss: float, png: bytes,
                 note: str | None = None) -> None:
        lease = self.leases.get(job_id)
        ctl = self.ctls.get(job_id)
        if lease is None or (ctl is not None and ctl.reason == "cancel"):
            return
        data = encode(ProgressMsg(worker=self.name, job_id=job_id, lease=lease, step=step, total=total,
                                  loss=loss, png=png, note=note))
        if len(data) <= MAX_MESSAGE_BYTES:
            asyncio.run_coroutine_threadsafe(self._progress(data), self._loop)

    def wants_progress(self) -> bool:
        return True

    # inside

    async def _progress(self, data: bytes) -> None:
        with contextlib.suppress(RedisError, OSError):  # progress is worth no wait
            await self.r.xadd(PROGRESS, {"m": data}, maxlen=PROGRESS_MAXLEN, approximate=True)

    async def _post(self, msg: Any) -> None:
        """An outcome, sent until Redis takes it (it may be restarting); given up only when stopping."""
        data = encode(msg)
        for attempt in range(1_000_000):
            try:
                await self.r.xadd(EVENTS, {"m": data}, maxlen=EVENTS_MAXLEN, approximate=True)
                return
            except DOWN as e:
                if self.closing and attempt >= 10:
                    log.error("worker %s: could not hand back job %s: %s", self.name, msg.job_id, e)
                    return
                self._down(e)
                await asyncio.sleep(0.5)

    def _down(self, e: BaseException) -> None:
        if not self._said_down:
            log.warning("worker %s: redis unreachable (%s); retrying", self.name, e)
            self._said_down = True

    async def _read(self) -> None:
        while True:
            try:
                resp = await self.r.xreadgroup("worker", self.name, {self.stream: ">"}, count=16, block=500)
                self._said_down = False
            except ResponseError as e:  # NOGROUP: Redis lost its data
                log.warning("worker %s: %s", self.name, e)
                await asyncio.sleep(0.2)
                with contextlib.suppress(RedisError, OSError):
                    await ensure_group(self.r, self.stream, "worker")
                continue
            except DOWN as e:
                self._down(e)
                await asyncio.sleep(0.5)
                continue
            for _stream, entry_id, raw in stream_entries(resp):
                with contextlib.suppress(RedisError, OSError):
                    await self.r.xack(self.stream, "worker", entry_id)
                    await self.r.xdel(self.stream, entry_id)
                try:
                    await self._handle(decode(raw, f"worker {self.name}"))
                except Exception as e:  # a bug: this message is lost, the worker serves on
                    log.error("worker %s: dropped a message it could not handle: %s: %s", self.name,
                              type(e).__name__, e)

    async def _handle(self, msg: Any) -> None:
        if isinstance(msg, JobMsg):
            if msg.boot == self.boot and msg.job_id in self.leases:  # handed out again while still here:
                self.leases[msg.job_id] = msg.lease  # the same work, reported under the new lease
                return
            if msg.boot != self.boot or self.closing:
                log.info("worker %s: dropped job %s (not for this run of the worker)", self.name, msg.job_id)
                return
            if (why := await asyncio.to_thread(unserved, msg.request, self.models)) is not None:
                log.warning("worker %s: job %s refused: %s", self.name, msg.job_id, why)
                await self._post(FailedMsg(worker=self.name, job_id=msg.job_id, lease=msg.lease, reason=why,
                                           elsewhere=True))
                return
            ctl = Control(msg.job_id, time.monotonic() + self.cfg.job_timeout_s)
            folder = job_path(self.files, msg.job_id)
            try:
                local, self.back[msg.job_id] = _local_request(msg.request, msg.files, folder)
            except (UserError, OSError) as e:  # not sent, or a full disk here (another worker may do better)
                shutil.rmtree(folder, ignore_errors=True)
                full = isinstance(e, OSError)
                reason = f"this worker cannot keep its input images: {e}" if full else str(e)
                log.warning("worker %s: job %s failed: %s", self.name, msg.job_id, reason)
                await self._post(FailedMsg(worker=self.name, job_id=msg.job_id, lease=msg.lease, reason=reason,
                                           elsewhere=full))
                return
            self.leases[msg.job_id] = msg.lease
            self.inbox.append((msg.model_copy(update={"request": local}), ctl))
            self.changed.set()
        elif isinstance(msg, CancelMsg):
            if self.leases.get(msg.job_id) != msg.lease:
                return
            for i, (queued, _ctl) in enumerate(self.inbox):
                if queued.job_id == msg.job_id:
                    del self.inbox[i]
                    self.leases.pop(msg.job_id, None)
                    return
            if (running := self.ctls.get(msg.job_id)) is not None:
                running.stop("cancel")
        elif msg is not None:
            log.warning("worker %s: dropped a %s message on its job stream", self.name, msg.kind)

    async def _beat_once(self) -> None:
        self.seq += 1
        cache = getattr(self.runner, "cache", None)
        models = cache.loaded() if cache is not None and hasattr(cache, "loaded") else []
        survey = getattr(self.runner, "availability", None)
        hb = Heartbeat(worker=self.name, boot=self.boot, seq=self.seq, device=self.device,
                       capacity=self.cfg.batch_size, leases=list(self.leases.values()), models=models,
                       sent_at=time.time(), available=survey() if survey is not None else None)
        await self.r.hset(WORKERS, self.name, encode(hb))

    async def _beat(self) -> None:
        every = min(max(self.cfg.worker_timeout_s / 6, 0.2), 5.0)
        while True:
            await asyncio.sleep(every)
            try:
                await self._beat_once()
            except DOWN as e:
                self._down(e)


async def run_worker(cfg: Config, url: str, name: str | None, device: str | None, runner: Any = None) -> int:
    """``python -m engine worker``: serve jobs from Redis until SIGTERM or Ctrl-C."""
    r = connect(url)
    try:
        await check_reachable(r, url)
    except UserError:
        with contextlib.suppress(Exception):
            await r.aclose()
        raise
    dev = device or cfg.models.device
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {dev} was asked for, but no CUDA GPU is available")
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    if runner is None:
        from engine.workers.runner import EngineRunner  # torch, only now

        runner = EngineRunner(cfg, device=device)
    source = RedisSource(r, cfg.queue, name, dev, runner, cfg.models)
    await source.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, source.stop)
    print(f"worker {name} ({dev}) serving jobs from {_safe(url)}", file=sys.stderr, flush=True)
    worker = Worker(cfg.queue, runner, source)
    try:
        await worker.serve()
    finally:
        await source.close()
    return 0

