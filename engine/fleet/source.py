"""A remote worker's end of the Redis transport: its job stream in, outcomes and progress out, heartbeats.

A worker opens only the files that came with its job, under a folder of its own named by the (validated)
job id, and loads only presets and the models of its own ``[models]`` (``unserved``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from engine.config import ModelsConfig, QueueConfig
from engine.errors import UserError, quoted
from engine.fleet.streams import (
    DOWN,
    EVENTS,
    EVENTS_MAXLEN,
    PROGRESS,
    PROGRESS_MAXLEN,
    WORKERS,
    cancel_tasks,
    ensure_group,
    jobs_stream,
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
    decode,
    encode,
)
from engine.jobs.port import Control, Outcome
from engine.media.files import job_path
from engine.models.trust import untrusted_model
from engine.spec.request import Request
from engine.workers.loop import Assignment
from engine.workers.protocols import Runner

log = logging.getLogger(__name__)


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

    def __init__(self, r: aioredis.Redis, cfg: QueueConfig, name: str, device: str, runner: Runner,
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
        await cancel_tasks(self._tasks)
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
            png, *candidates = [await asyncio.to_thread(_png_paths_back, p, back) if back else p
                                for p in (out.png, *out.candidates)]
            msg = FinishedMsg(worker=self.name, job_id=job_id, lease=lease, png=png, seconds=out.seconds,
                              metadata=_paths_back(out.metadata, back), mask_png=out.mask_png,
                              candidates=tuple(candidates))
            if len(encode(msg)) > MAX_MESSAGE_BYTES:
                fewer = " or fewer candidates" if candidates else ""
                msg = FailedMsg(worker=self.name, job_id=job_id, lease=lease,
                                reason=f"the picture is too large to send back; try a smaller size{fewer}")
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
        hb = Heartbeat(worker=self.name, boot=self.boot, seq=self.seq, device=self.device,
                       capacity=self.cfg.batch_size, leases=list(self.leases.values()), models=self.runner.loaded(),
                       sent_at=time.time(), available=self.runner.availability())
        await self.r.hset(WORKERS, self.name, encode(hb))

    async def _beat(self) -> None:
        every = min(max(self.cfg.worker_timeout_s / 6, 0.2), 5.0)
        while True:
            await asyncio.sleep(every)
            try:
                await self._beat_once()
            except DOWN as e:
                self._down(e)
