"""A job's stored progress frames -> one MP4 that fits the upload limit, for Discord.

The engine keeps the frames (``JobQueue.frames_dir``) and encodes them (``engine.media.timelapse``,
which never imports torch); this module picks the limit, runs the encoder off the event loop,
and hands back the bytes, so that a result and the Timelapse button post the same thing.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import discord

from engine import JobQueue, UserError

NO_FRAMES = "no frames kept for this job"
TIMELAPSE_FPS = 12


@dataclass(frozen=True)
class Video:
    """An encoded timelapse, ready to upload."""

    data: bytes
    filename: str
    frames: int
    note: str | None

    def file(self) -> discord.File:
        import io

        return discord.File(io.BytesIO(self.data), filename=self.filename)

    def caption(self) -> str:
        return f"🎞️ how it formed · {self.frames} frames" + (f"\n-# {self.note}" if self.note else "")


def frames_of(queue: JobQueue, job_id: str) -> list[Path]:
    """The job's stored frames in step order; [] when it has none (never kept, or pruned)."""
    from engine import frame_files

    folder = queue.frames_dir(job_id)
    if folder is None:
        return []
    try:
        return list(frame_files(folder))
    except UserError:
        return []


def _encode(frames: list[Path], job_id: str, max_bytes: int, fps: int, name: str, hold: bool) -> Video:
    from engine import HOLD_S, make_timelapse

    with tempfile.TemporaryDirectory(prefix="vqgan-timelapse-") as tmp:
        out = Path(tmp) / f"{name}-{job_id}.mp4"
        made = make_timelapse(frames, out, fps=fps, max_bytes=max_bytes, hold_s=HOLD_S if hold else 0.0)
        return Video(Path(made.path).read_bytes(), out.name, made.frames, made.note)


async def render(queue: JobQueue, job_id: str, max_bytes: int) -> Video:
    """Encode the job's frames (in a thread); ``UserError`` (one line) when there is nothing to show.
    A timelapse plays at ``TIMELAPSE_FPS`` and holds its result at the end (``HOLD_S``); a zoom video's folder holds
    every frame of it, played at the zoom's own fps with nothing held (every frame is the video)."""
    frames = frames_of(queue, job_id)
    if not frames:
        raise UserError(NO_FRAMES)
    job = queue.get(job_id)
    zoom = job.request.zoom if job is not None else None
    if zoom is not None:
        return await asyncio.to_thread(_encode, frames, job_id, max_bytes, zoom.fps, "zoom", False)
    return await asyncio.to_thread(_encode, frames, job_id, max_bytes, TIMELAPSE_FPS, "timelapse", True)
