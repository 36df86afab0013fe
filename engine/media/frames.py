"""Each job's progress frames on disk, beside its result, for timelapses.

The coordinator (``engine.jobs.coordinator``) writes them from the ``JobProgress`` events it receives, so they are
kept for both backends (local and Redis workers), and writes the result PNG itself as the last frame.
A job's frames live in ``<results_dir>/<job id>.frames/`` as ``frame_name(step)`` (zero-padded, so name order
is step order) and are bounded by ``max_frames``: a frame is kept only when it falls into a new one of
``max_frames`` equal slices of the run, so whatever the run's length the kept frames are spread evenly,
the first and the last always among them. Everything here is blocking file work: call it off the event
loop, from one thread (the queue's database thread), so a job's writes stay in order.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from engine.errors import UserError
from engine.media.files import job_path, write_atomic
from engine.media.timelapse import frame_files, thin

log = logging.getLogger(__name__)


# -- the one frame-naming rule: 00001.png, 00002.png, ... (progress frames by step, zoom frames by number;
# the worker, the CLI and the coordinator alike). Readers sort numbers as numbers (``frame_files``).

def frame_name(k: int) -> str:
    """Frame (or step) k's file name (1-based): ``00001.png``."""
    return f"{k:05d}.png"


def existing_frames(frames_dir: Path) -> int:
    """How many frames (00001.png, 00002.png, ... without a gap) the folder already holds."""
    k = 0
    while (frames_dir / frame_name(k + 1)).is_file():
        k += 1
    return k


class FrameStore:
    """Writes, bounds and removes the frames of every job under one results folder."""

    def __init__(self, results_dir: Path, max_frames: int) -> None:
        self.results = Path(results_dir)
        self.max_frames = 0 if max_frames <= 0 else max(2, max_frames)
        self._slice: dict[str, int] = {}  # job id -> the slice of the run its newest kept frame is in
        self._step: dict[str, int] = {}  # job id -> the newest step seen

    @property
    def enabled(self) -> bool:
        return self.max_frames > 0

    def folder(self, job_id: str) -> Path:
        return job_path(self.results, job_id, ".frames")

    def restart(self, job_id: str) -> None:
        """A job (re)starts from step 0: frames of an earlier attempt go."""
        self.remove(job_id)

    def wants(self, job_id: str, step: int, total: int) -> bool:
        """Whether ``add`` would keep this step's frame: it opens a new slice of the run (or is the first)."""
        if not self.enabled or total <= 0:
            return False
        return step >= total or self._part(step, total) > self._slice.get(job_id, -1)

    def add(self, job_id: str, step: int, total: int, png: bytes) -> None:
        """A progress frame, kept when ``wants`` says so. A step before the last one seen means the run
        began again (a worker's retry at a smaller size after running out of memory): its frames start over."""
        if step < self._step.get(job_id, 0):
            self.remove(job_id)
        self._step[job_id] = step
        if self.wants(job_id, step, total):
            self._slice[job_id] = self._part(step, total)
            self._write(job_id, step, png)

    def _part(self, step: int, total: int) -> int:
        return min(self.max_frames - 1, step * (self.max_frames - 1) // total)

    def final(self, job_id: str, step: int, png: bytes) -> None:
        """The result itself as the last frame (the same bytes as the result PNG), then the bound."""
        self._slice.pop(job_id, None)
        self._step.pop(job_id, None)
        if not self.enabled:
            return
        self._write(job_id, step, png)
        try:
            files = frame_files(self.folder(job_id))
            for f in set(files) - set(thin(files, self.max_frames)):  # e.g. frames of a worker lost mid-run
                f.unlink(missing_ok=True)
        except (UserError, OSError) as e:
            log.warning("job %s: could not bound its timelapse frames: %s", job_id, e)

    def zoom_frame(self, job_id: str, k: int, png: bytes) -> None:
        """Frame k of a zoom video, as its worker named it (``engine.method.zoom.frame_name``), unless the worker
        wrote it here itself (the local backend); a Redis worker on another machine sends it this way."""
        if not (self.folder(job_id) / frame_name(k)).exists():
            self._write(job_id, k, png, frame_name(k))

    def zoom_last(self, job_id: str) -> tuple[int, bytes] | None:
        """The newest frame k of a zoom video, with frames 1..k all here, and its PNG; None without
        frame 1. A worker taking the job over goes on from it (the frames before it stay here)."""
        if not (k := existing_frames(self.folder(job_id))):
            return None
        try:
            return k, (self.folder(job_id) / frame_name(k)).read_bytes()
        except OSError as e:
            log.warning("job %s: could not read zoom frame %d: %s", job_id, k, e.strerror or e)
            return None

    def remove(self, job_id: str) -> None:
        """A job that ended without a result, or was pruned: its frames go."""
        self._slice.pop(job_id, None)
        self._step.pop(job_id, None)
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def _write(self, job_id: str, step: int, png: bytes, name: str | None = None) -> None:
        """Whole or not at all; a frame that cannot be written is logged, never fails the job."""
        folder = self.folder(job_id)
        path = folder / (name or frame_name(step))
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(path, png)
        except OSError as e:
            log.warning("job %s: could not keep a timelapse frame in %s: %s", job_id, folder, e.strerror or e)
