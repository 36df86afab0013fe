"""A job's stored progress frames -> one MP4 that fits the upload limit, for Discord.

The engine keeps the frames (``JobQueue.frames_dir``) and encodes them (``engine.timelapse``,
which never imports torch); this module picks the limit, runs the encoder off the event loop,
and hands back the bytes, so that a result and the Timelapse button post the same thing.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import discord

from engine.errors import UserError
from engine.queue import JobQueue

NO_FRAMES = "no frames kept for this job"


@dataclass(frozen=True)
class Clip:
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
    from engine.timelapse import frame_files

    folder = queue.frames_dir(job_id)
    if folder is None:
        return []
    try:
        return list(frame_files(folder))
    except UserError:
        return []


def _encode(frames: list[Path], job_id: str, max_bytes: int, fps: int = 12, name: str = "timelapse") -> Clip:
    from engine.timelapse import make_timelapse

    with tempfile.TemporaryDirectory(prefix="vqgan-timelapse-") as tmp:
        out = Path(tmp) / f"{name}-{job_id}.mp4"
        made = make_timelapse(frames, out, fps=fps, max_bytes=max_bytes)
        return Clip(Path(made.path).read_bytes(), out.name, made.frames, made.note)


async def render(queue: JobQueue, job_id: str, max_bytes: int, *, fps: int = 12, name: str = "timelapse") -> Clip:
    """Encode the job's frames (in a thread); ``UserError`` (one line) when there is nothing to show.
    A zoom video is the same thing at its own fps: its frames folder holds every frame."""
    frames = frames_of(queue, job_id)
    if not frames:
        raise UserError(NO_FRAMES)
    return await asyncio.to_thread(_encode, frames, job_id, max_bytes, fps, name)
