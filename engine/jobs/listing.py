"""What a front end may list of finished jobs: read-only copies, newest first, and their result files.

A gallery shows people their own results (or a server's, to its moderators). It gets a ``Listed`` per
finished job (the request, who asked, the result file's name) and the picture's bytes by job id only
(``read_result``): a name from a URL never becomes a path, and a result that is not a plain file of the
results folder (a symlink planted there, a folder) is not read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.jobs.job import Job
from engine.media.files import job_path
from engine.spec.request import Request

MAX_RESULT_BYTES = 64 * 2**20  # a result PNG is a few MB at most; anything bigger is not one of ours


@dataclass(frozen=True)
class Listed:
    """A finished job as a gallery shows it. ``result``: its PNG's file name in the results folder."""

    id: str
    owner: str
    origin: Mapping[str, Any]
    request: Request
    created_at: float
    finished_at: float
    seconds: float | None
    result: str


def finished(jobs: Iterable[Job], results_dir: str | Path, *, owner: str | None = None,
             origin: Mapping[str, Any] | None = None, limit: int | None = None) -> list[Listed]:
    """The finished jobs among ``jobs`` whose result is the job's own file, of ``owner`` and whose origin
    holds ``origin``'s key/values, newest first (at most ``limit``)."""
    out = []
    for job in jobs:
        if job.state != "finished" or job.result_path is None or job.finished_at is None:
            continue
        if owner is not None and job.owner != owner:
            continue
        if origin and not all(k in job.origin and job.origin[k] == v for k, v in origin.items()):
            continue
        if Path(job.result_path) != job_path(results_dir, job.id, ".png"):
            continue
        out.append(Listed(job.id, job.owner, dict(job.origin), job.request, job.created_at, job.finished_at,
                          job.seconds, Path(job.result_path).name))
    out.sort(key=lambda x: x.finished_at, reverse=True)
    return out[:limit] if limit is not None else out


def read_result(job: Job | None, results_dir: str | Path) -> bytes | None:
    """The result PNG of a finished ``job``, or None: not finished, not its own file, a symlink or not a
    regular file, or gone. Blocking (call it off the event loop)."""
    if job is None or job.state != "finished" or job.result_path is None:
        return None
    path = job_path(results_dir, job.id, ".png")
    if Path(job.result_path) != path:
        return None
    if path.is_symlink():  # O_NOFOLLOW says so too, where the system has it
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # missing, or a symlink (ELOOP under O_NOFOLLOW)
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RESULT_BYTES:
            return None
        return f.read(MAX_RESULT_BYTES + 1)[:MAX_RESULT_BYTES]
