"""The worker room: run the jobs a coordinator hands out, on one device.

It owns the runner (the model cache), batching, the out-of-memory policy, job timeouts and
progress; it never decides whose turn it is. Jobs come from a ``Source`` (one transport per
backend: in-process for ``backend = "local"``, Redis for ``"redis"``), and outcomes go back to it.
One loop for both: a single job is a batch of one (or runs alone with a runner that cannot batch).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engine import errors
from engine.config import QueueConfig
from engine.errors import ModelFileMissing, UserError
from engine.jobs.port import Control, Outcome
from engine.media.files import job_path, write_atomic
from engine.media.frames import frame_name
from engine.media.imageio import png_bytes
from engine.spec.request import Request, batch_key, grid_shape
from engine.workers.protocols import Painted, Runner, StepPicture, Stepping

log = logging.getLogger(__name__)


@dataclass
class Assignment:
    """A job handed to this worker: what to paint, and how the source stops it."""

    job_id: str
    request: Request
    ctl: Control
    solo: bool = False  # ran out of memory in a batch before: run it alone
    zoom_from: tuple[int, bytes] | None = None  # a zoom begun elsewhere: go on after this frame (number, PNG)


class Source(Protocol):
    """Where a worker's jobs come from and its outcomes go (one per transport)."""

    async def take(self, match: Callable[[Request], bool] | None, wait: bool) -> Assignment | None:
        """The next job for this worker (``match``: only one that joins the current batch);
        ``wait=False``: None at once when there is none; ``wait=True``: None only when closing."""
        ...

    async def done(self, job_id: str, out: Outcome) -> None: ...

    def progress(self, job_id: str, step: int, total: int, loss: float, png: bytes,
                 note: str | None = None) -> None:
        """Called on the worker thread; ``note`` (with an empty ``png``): a word for the job's status."""
        ...

    def wants_progress(self) -> bool: ...


class Worker:
    """Runs jobs from a source until it says there are no more (``take`` returns None)."""

    def __init__(self, cfg: QueueConfig, runner: Runner, source: Source) -> None:
        self.cfg = cfg
        self.runner = runner
        self.source = source
        self.gpu = ThreadPoolExecutor(1, thread_name_prefix="jobqueue-worker")
        self.running: dict[str, Control] = {}

    async def serve(self) -> None:
        try:
            while (a := await self.source.take(None, True)) is not None:
                try:
                    if self.batching() and not a.solo and a.request.zoom is None:  # a zoom runs alone
                        await self._run_batch(a)
                    else:
                        await self._run(a)
                except Exception:  # a bug: say so on the job, keep serving the others
                    log.exception("worker: job %s", a.job_id)
                    for job_id in dict.fromkeys([a.job_id, *self.running]):
                        if self.running.pop(job_id, None) is not None or job_id == a.job_id:
                            await self._report_broken(job_id)
        finally:
            self.gpu.shutdown(wait=False)

    async def _report_broken(self, job_id: str) -> None:
        try:
            await self.source.done(job_id, Outcome("failed", reason="the job queue failed; see the log"))
        except Exception:
            log.exception("worker: could not report job %s", job_id)

    def batching(self) -> bool:
        return self.cfg.batch_size > 1 and self.runner.batching

    def stop_all(self, reason: str) -> None:
        for ctl in self.running.values():
            ctl.stop(reason)

    async def _done(self, job_id: str, out: Outcome) -> None:
        self.running.pop(job_id, None)
        await self.source.done(job_id, out)

    async def _run(self, a: Assignment) -> None:
        self.running[a.job_id] = a.ctl
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self.gpu, self._execute, a)
        except BaseException:
            self.running.pop(a.job_id, None)
            raise
        await self._done(a.job_id, out)

    async def _run_batch(self, first: Assignment) -> None:
        """Step compatible jobs together; a finished job leaves, a waiting one joins at the next step.

        The loop decides who is in the batch between steps; each step is one hop to the GPU thread.
        Out of memory sends the batch's jobs back to the coordinator to run alone.
        """
        runner = self.runner
        key = batch_key(first.request)
        runs: dict[str, Stepping] = {}
        held: dict[str, Assignment] = {}
        loop = asyncio.get_running_loop()
        gpu = self.gpu

        def match(req: Request) -> bool:  # a grid takes a place in the batch for each of its candidates
            return batch_key(req) == key and req.grid <= self.cfg.batch_size - sum(h.request.grid for h in held.values())

        async def admit(a: Assignment) -> None:
            held[a.job_id] = a
            self.running[a.job_id] = a.ctl
            try:
                await loop.run_in_executor(gpu, self._say_loading, a.job_id, a.request)
                runs[a.job_id] = await loop.run_in_executor(
                    gpu, runner.start, a.request, lambda p, i=a.job_id: self._on_progress(i, p))
            except Exception as e:
                held.pop(a.job_id, None)
                await self._done(a.job_id, self._failure(e, a.ctl, a.request) or Outcome(
                    "failed", reason=f"ran out of GPU memory at {a.request.width}x{a.request.height}; "
                                     "try a smaller size"))

        try:
            await admit(first)
            while runs:
                while (sum(h.request.grid for h in held.values()) < self.cfg.batch_size
                       and (a := await self.source.take(match, False)) is not None):
                    await admit(a)
                for job_id in list(runs):
                    ctl = held[job_id].ctl
                    if ctl.should_stop():
                        runs.pop(job_id)
                        a = held.pop(job_id)
                        await self._done(job_id, self._stopped(ctl))
                if not runs:
                    break
                try:
                    await loop.run_in_executor(gpu, runner.step, list(runs.values()))
                except Exception as e:
                    if not _is_oom(e):
                        raise
                    await loop.run_in_executor(gpu, _free_memory)
                    for job_id in list(runs):  # back to the coordinator, to run one at a time
                        runs.pop(job_id)
                        held.pop(job_id)
                        await self._done(job_id, Outcome("stopped", solo=True))
                    return
                for job_id, run in list(runs.items()):
                    if run.done:
                        runs.pop(job_id)
                        held.pop(job_id)
                        await self._done(job_id, await loop.run_in_executor(gpu, _finish, run))
        except Exception:
            log.exception("worker: a batch failed")
            for job_id in list(runs):
                runs.pop(job_id)
                await self._done(job_id, Outcome("failed", reason="the engine failed; see the log"))
            raise

    # -- the worker thread -----------------------------------------------------------------

    def _execute(self, a: Assignment) -> Outcome:
        """Run one job on the worker thread; never raises."""
        if a.request.zoom is not None:
            return self._execute_zoom(a)
        ctl, asked = a.ctl, a.request
        request, note = asked, None
        while not ctl.reason:
            try:
                self._say_loading(a.job_id, request)
                result = self.runner(request, lambda p: self._on_progress(a.job_id, p), ctl.should_stop)
                png = result.png_bytes()
            except Exception as e:
                out = self._failure(e, ctl, request)
                if out is not None:
                    return out
            else:
                return _outcome(result, png, note)
            # Out of memory: the exception and its frames (holding tensors) are gone by now.
            _free_memory()
            w, h = request.width, request.height
            smaller = _smaller(w, h)
            if note is None and self.cfg.oom_retry_smaller and smaller and not ctl.reason:
                note = f"ran out of GPU memory at {w}x{h}; made at {smaller[0]}x{smaller[1]} instead"
                request = request.model_copy(update={"width": smaller[0], "height": smaller[1]})
                continue
            hint = f" such as {smaller[0]}x{smaller[1]}" if smaller else ""
            tried = "" if request is asked else f", and again at {w}x{h} when retried smaller"
            return Outcome("failed", reason=f"ran out of GPU memory at {asked.width}x{asked.height}{tried}; "
                                            f"try a smaller size{hint}")
        return Outcome("stopped")

    def _execute_zoom(self, a: Assignment) -> Outcome:
        """A zoom video: its frames go to the job's frames folder as they are made (each one a
        ``Progress`` event), and a run stopped by a restart continues from them. The result is the
        last frame; the front end makes the video from the folder (``JobQueue.frames_dir``)."""
        ctl, request = a.ctl, a.request
        assert request.zoom is not None
        runner = self.runner
        total = request.zoom.frames
        folder = zoom_folder(self.cfg, a.job_id)
        made = a.zoom_from[0] if a.zoom_from else 0

        def on_frame(k: int, path: Path) -> None:
            nonlocal made
            made = k
            ctl.deadline = time.monotonic() + self.cfg.job_timeout_s  # job_timeout_s bounds each frame
            if self.source.wants_progress():
                self.source.progress(a.job_id, k, total, 0.0, path.read_bytes())

        started = time.monotonic()
        try:
            self._say_loading(a.job_id, request)
            if a.zoom_from is None:
                frames = runner.zoom(request, folder, on_frame, ctl.should_stop)
            else:  # another worker began it: on from the newest frame the coordinator holds
                after, png = a.zoom_from
                write_atomic(folder / frame_name(after), png)
                frames = runner.zoom(request, folder, on_frame, ctl.should_stop, after=after)
            if ctl.reason:  # cancelled or closing as the last frame was written (every frame is made)
                return self._stopped(ctl)
            png = Path(frames[-1]).read_bytes()
        except Exception as e:
            out = self._failure(e, ctl, request, f"frame {made + 1} of the zoom" if made else "a frame of the zoom")
            if out is None:
                _free_memory()
                return Outcome("failed", reason=f"ran out of GPU memory at {request.width}x{request.height}; "
                                                "try a smaller size")
            return out
        meta = {"request": request.to_metadata(), "note": None, "frames": total}
        return Outcome("finished", png=png, seconds=time.monotonic() - started, metadata=meta)

    def _stopped(self, ctl: Control, what: str = "it") -> Outcome:
        """A job its control stopped: a timeout fails it, a cancel or close stops it. ``what`` took
        too long: the job, or the frame of a zoom being made (``job_timeout_s`` bounds each frame)."""
        if ctl.reason == "timeout":
            return Outcome("failed", reason=f"{what} took longer than {self.cfg.job_timeout_s:g} s and was stopped")
        return Outcome("stopped")

    def _failure(self, e: Exception, ctl: Control, request: Request, what: str = "it") -> Outcome | None:
        """What an exception from the runner means for the job; None for out of memory."""
        if isinstance(e, errors.Cancelled) and ctl.reason:
            return self._stopped(ctl, what)
        if isinstance(e, ModelFileMissing):
            return Outcome("failed", reason=str(e), elsewhere=True)
        if isinstance(e, UserError):
            return Outcome("failed", reason=str(e))
        if _is_oom(e):
            return None
        log.error("engine failed on %s", request.model_dump_json(), exc_info=e)
        return Outcome("failed", reason=f"the engine failed: {type(e).__name__}")

    def _say_loading(self, job_id: str, request: Request) -> None:
        """Tell the job's status which of its models are being loaded (that takes a while), if any."""
        if missing := self.runner.loading(request):
            self.source.progress(job_id, 0, request.steps, 0.0, b"", note=f"loading {', '.join(missing)}")

    def _on_progress(self, job_id: str, p: StepPicture) -> None:
        if not self.source.wants_progress():
            return
        png = png_bytes(p.image)  # encoded here, off the event loop
        self.source.progress(job_id, int(p.step), int(p.total), float(p.loss), png)


def zoom_folder(cfg: QueueConfig, job_id: str) -> Path:
    """Where a zoom job's frames are made: its frames folder beside its result (as ``JobQueue.frames_dir``)."""
    return job_path(cfg.results_dir, job_id, ".frames")


def _finish(run: Stepping) -> Outcome:
    """On the worker thread: the final image of a batched run."""
    try:
        result = run.result()
    except UserError as e:  # this run broke down (e.g. a NaN loss): it fails, the batch goes on
        return Outcome("failed", reason=str(e))
    return _outcome(result, result.png_bytes())


def _outcome(result: Painted, png: bytes, note: str | None = None) -> Outcome:
    """A finished picture (a grid with its candidates' PNGs) as the worker reports it."""
    meta = {"request": result.request.to_metadata(), "note": note}
    return Outcome("finished", png=png, seconds=float(result.seconds), metadata=meta,
                   mask_png=None if result.mask is None else png_bytes(result.mask),
                   candidates=tuple(c.png_bytes() for c in result.candidates))


def _smaller(width: int, height: int) -> tuple[int, int] | None:
    """About 0.7x each side, a multiple of 16, at least 64; None if that is no smaller."""
    w, h = (min(v, max(64, int(v * 0.7) // 16 * 16)) for v in (width, height))
    return (w, h) if (w, h) != (width, height) else None


CELL_SIZES = (1, 2, 4, 8, 16, 32, 64)  # a VQGAN's cell (downsampling factor) is one of these


def painted_sizes(request: Request) -> frozenset[tuple[int, int]]:
    """Every size a worker may paint ``request`` at (its pictures, progress images and zoom frames): the
    request's size, or the smaller one an out-of-memory retry uses, rounded down to whole VQGAN cells;
    for a grid, that size tiled (its candidates are ``painted_sizes`` of ``grid=1``). The coordinator
    loads no model, so it allows each cell size a model may have."""
    sizes = [(request.width, request.height)]
    if smaller := _smaller(request.width, request.height):
        sizes.append(smaller)
    rows, cols = grid_shape(request.grid)
    return frozenset((max(f, w // f * f) * cols, max(f, h // f * f) * rows) for w, h in sizes for f in CELL_SIZES)


def _is_oom(e: BaseException) -> bool:
    torch = sys.modules.get("torch")  # a runner that never imported torch cannot raise its OOM
    if torch is not None and isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e)


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
