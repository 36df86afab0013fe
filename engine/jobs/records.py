"""What the coordinator knows of every job: in memory (with an index by origin) and in SQLite, in step.

All file and database work runs on one thread of its own (``in_db``), in order, so the event loop
never blocks on a disk and a job's writes never overtake each other. Results and progress frames live
beside the store (``results_dir``). Short-lived origin keys (``forget_at``) are dropped on time, in
memory and on disk.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine.config import GRID_SIZES, QueueConfig, TimelapseConfig
from engine.errors import StorageError
from engine.jobs.job import Job, stored_job
from engine.jobs.quota import utc_day
from engine.jobs.store import JobStore, storage_problem
from engine.media.files import candidate_path, job_path, private_dir, write_atomic
from engine.media.frames import FrameStore

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0
MAX_CANDIDATES = max(GRID_SIZES)
FORGET_RETRY_S = 60.0  # dropping expired origin keys failed (e.g. a full disk): try again after this


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class Records:
    """The jobs by id, their submission order, an index by origin key/value, and their store."""

    def __init__(self, cfg: QueueConfig, timelapse: TimelapseConfig) -> None:
        self.cfg = cfg
        self.results = Path(cfg.results_dir)
        self.frames = FrameStore(self.results, timelapse.max_frames)
        self.jobs: dict[str, Job] = {}
        self._rank: dict[str, int] = {}  # job id -> submission rank, for stable ordering
        self._ranks = itertools.count()
        self._by_origin: dict[tuple[str, Any], set[str]] = {}  # (origin key, value) -> job ids
        self._store: JobStore | None = None
        self._db = ThreadPoolExecutor(1, thread_name_prefix="jobqueue-db")  # ordered writes
        self._pruned_at = 0.0  # time.monotonic()
        self.unreadable: set[str] = set()  # stored by an older version: only its state is ever written
        self._forget_timer: asyncio.TimerHandle | None = None
        self._forget_task: asyncio.Task[None] | None = None
        self._closing = False

    # -- opening and closing -----------------------------------------------------------------

    async def open(self) -> list[tuple[Job, bool]]:
        """Check the results folder, open the store, prune, and return every stored job (and whether
        this version could read it), each inserted already."""
        await self.in_db(self._prepare_results)
        self._store = await self.in_db(JobStore, self.cfg.db_path)
        await self.prune()
        out = []
        for row in await self.in_db(self._store.load):
            job, readable = stored_job(row)
            self.insert(job)
            if not readable:
                self.unreadable.add(job.id)
            out.append((job, readable))
        return out

    @property
    def is_open(self) -> bool:
        return self._store is not None

    async def close(self) -> None:
        self._closing = True
        if self._forget_timer is not None:
            self._forget_timer.cancel()
        if self._forget_task is not None:
            await self._forget_task
        if self._store is not None:
            await self.in_db(self._store.close)
        self._db.shutdown()

    def _prepare_results(self) -> None:
        """At start: the results folder exists (0700 when made here) and takes a file."""
        try:
            private_dir(self.results)
            probe = self.results / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise StorageError(storage_problem(e, self.results, "the results folder")) from e

    # -- memory --------------------------------------------------------------------------------

    def insert(self, job: Job) -> None:
        self.jobs[job.id] = job
        self._rank[job.id] = next(self._ranks)
        self._index(job, add=True)

    def replace(self, job: Job, **changes: Any) -> Job:
        """A changed copy of ``job``, recorded in memory (``save`` writes it)."""
        old = self.jobs.get(job.id)
        job = job.model_copy(update=changes)
        if old is None or old.origin != job.origin:
            if old is not None:
                self._index(old, add=False)
            self._index(job, add=True)
        self.jobs[job.id] = job
        return job

    def forget(self, job_id: str) -> None:
        """Drop a job from memory (pruned, or never stored)."""
        if (job := self.jobs.pop(job_id, None)) is not None:
            self._index(job, add=False)
        self._rank.pop(job_id, None)

    def ranks(self) -> dict[str, int]:
        return self._rank

    def find(self, **origin: Any) -> Job | None:
        """The newest job whose ``origin`` holds all these key/values (from an index, not a scan)."""
        matches = self.matching(**origin)
        return matches[-1] if matches else None

    def matching(self, **origin: Any) -> list[Job]:
        """Every job whose ``origin`` holds all these key/values, in submission order (from the index)."""
        if not origin or not all(_hashable(v) for v in origin.values()):
            jobs: Iterable[Job] = self.jobs.values()
        else:
            ids = set.intersection(*(self._by_origin.get((k, v), set()) for k, v in origin.items()))
            jobs = (self.jobs[i] for i in ids)
        matches = [j for j in jobs if all(k in j.origin and j.origin[k] == v for k, v in origin.items())]
        return sorted(matches, key=lambda j: self._rank[j.id])

    def _index(self, job: Job, *, add: bool) -> None:
        """Keep ``_by_origin`` in step with ``job.origin`` (values that cannot be dict keys are scanned for)."""
        for key in ((k, v) for k, v in job.origin.items() if _hashable(v)):
            if add:
                self._by_origin.setdefault(key, set()).add(job.id)
            elif (ids := self._by_origin.get(key)) is not None:
                ids.discard(job.id)
                if not ids:
                    del self._by_origin[key]

    # -- disk ------------------------------------------------------------------------------------

    async def save(self, job: Job, usage: tuple[str, str, float] | None = None) -> None:
        """Write a job; ``usage`` (owner, UTC day, seconds): GPU time charged with it, in one transaction."""
        assert self._store is not None
        if job.id in self.unreadable:  # keep the stored request and origin as they are
            await self.in_db(self._store.update, job.id, state=job.state, error=job.error,
                             finished_at=job.finished_at, delivered=job.delivered)
        else:
            await self.in_db(self._store.save, job.model_dump(mode="json"), usage)

    async def usage_on(self, day: str) -> dict[str, float]:
        """Each person's GPU seconds on a UTC day, from the store."""
        assert self._store is not None
        used: dict[str, float] = await self.in_db(self._store.usage_on, day)
        return used

    async def update(self, job_id: str, **columns: Any) -> None:
        assert self._store is not None
        await self.in_db(self._store.update, job_id, **columns)

    def later(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue file work on the database thread (in order with the other writes) without waiting."""
        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("job queue: %s failed", getattr(fn, "__name__", fn))

        try:
            self._db.submit(run)
        except RuntimeError:  # shut down: nothing more is kept
            pass

    async def in_db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._db, functools.partial(fn, *args, **kwargs))

    def write_result(self, job_id: str, png: bytes, candidates: tuple[bytes, ...] = ()) -> str:
        """On the database thread: the result PNG (a grid's candidates first, as ``<job id>-<i>.png``),
        each written whole or not at all; the result's path."""
        path = job_path(self.results, job_id, ".png")
        try:
            private_dir(self.results)  # made again if someone removed it
            for i, picture in enumerate(candidates, 1):
                write_atomic(candidate_path(self.results, job_id, i), picture)
            write_atomic(path, png)
        except OSError as e:
            line = storage_problem(e, self.results, "the results folder")
            log.error("job %s: %s", job_id, line)
            raise StorageError(f"could not save the picture: {line}") from e
        return str(path)

    def remove_result(self, job_id: str, path: str | None) -> None:
        """On the database thread: a job's result and any grid candidates beside it, gone."""
        if path:
            Path(path).unlink(missing_ok=True)
            for i in range(1, MAX_CANDIDATES + 1):
                candidate_path(Path(path).parent, job_id, i).unlink(missing_ok=True)

    async def keep_pruning(self) -> None:
        """Prune old jobs every ``PRUNE_EVERY_S`` while open (a task of the coordinator's)."""
        while not self._closing:
            if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
                try:
                    await self.prune()
                except Exception:
                    log.exception("job queue: pruning old jobs failed")
            await asyncio.sleep(60)

    def keep_frame(self, job: Job, step: int, total: int, png: bytes) -> None:
        """A running job's progress picture as a timelapse frame (later, on the database thread)."""
        if job.request.zoom is None:
            self.later(self.frames.add, job.id, step, total, png)
        else:  # every frame of a zoom is its video (a local worker has written it already)
            self.later(self.frames.zoom_frame, job.id, step, png)

    def frames_dir(self, job_id: str) -> Path | None:
        """A job's frames folder, when it holds a frame (None for an unknown or pruned job)."""
        if job_id not in self.jobs:
            return None
        folder = self.frames.folder(job_id)
        try:
            return folder if any(p.suffix == ".png" for p in folder.iterdir()) else None
        except OSError:
            return None

    async def prune(self) -> None:
        assert self._store is not None
        self._pruned_at = time.monotonic()
        before = time.time() - self.cfg.keep_days * 86400
        gone = await self.in_db(self._store.prune, before, utc_day(before))
        for row in gone:
            self.forget(row["id"])
            await self.in_db(self.remove_result, row["id"], row["result_path"])
            await self.in_db(self.frames.remove, row["id"])

    # -- origin keys that expire (short-lived secrets) ----------------------------------------

    async def expire_key(self, key: str, after_s: float) -> int:
        """Each job whose origin holds ``key`` (and no deadline for it) loses it ``after_s`` seconds after
        its submission, at once if that has passed; how many jobs that was."""
        ids = [j.id for j in self.jobs.values() if key in j.origin and key not in j.forget_at]
        for job_id in ids:
            job = self.jobs[job_id]
            self.replace(job, forget_at={**job.forget_at, key: job.created_at + after_s})
        for job_id in ids:
            if (kept := self.jobs.get(job_id)) is not None:  # it may have been pruned meanwhile
                await self.update(kept.id, forget_at=kept.forget_at)
        await self.forget_due()
        return len(ids)

    def schedule_forget(self, at_least: float = 0.0) -> None:
        """Wake ``forget_due`` at the earliest deadline of any job's ``forget_at``."""
        if self._forget_timer is not None:
            self._forget_timer.cancel()
            self._forget_timer = None
        deadlines = [t for j in self.jobs.values() for t in j.forget_at.values()]
        if deadlines and not self._closing:
            delay = max(at_least, min(deadlines) - time.time(), 0.0)
            self._forget_timer = asyncio.get_running_loop().call_later(delay, self._forget_soon)

    def _forget_soon(self) -> None:
        self._forget_timer = None
        if not self._closing and (self._forget_task is None or self._forget_task.done()):
            self._forget_task = asyncio.get_running_loop().create_task(self.forget_due(), name="jobqueue-forget")

    async def forget_due(self) -> None:
        """Drop the origin keys whose time is up, in memory and on disk (WAL included)."""
        assert self._store is not None
        now, changed, retry = time.time(), False, 0.0
        try:
            for job_id in [j.id for j in self.jobs.values() if any(t <= now for t in j.forget_at.values())]:
                job = self.jobs.get(job_id)  # read again: the job may have changed during the last write
                if job is None:
                    continue
                due = {k for k, t in job.forget_at.items() if t <= now}
                job = self.replace(job, origin={k: v for k, v in job.origin.items() if k not in due},
                                   forget_at={k: t for k, t in job.forget_at.items() if k not in due})
                await self.in_db(self._store.update, job.id, origin=job.origin, forget_at=job.forget_at)
                changed = True
            if changed:
                await self.in_db(self._store.scrub)
        except Exception:
            log.exception("job queue: dropping expired origin keys failed; trying again in %g s", FORGET_RETRY_S)
            retry = FORGET_RETRY_S
        self.schedule_forget(retry)
