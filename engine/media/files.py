"""The file rules every room shares: a file is written whole or not at all, and a job id is a file name
only through ``job_path``.

A kill mid-write, a full disk or two writers of the same name must never leave a half file that a
later reader (a resumed zoom, a job reading an upload, a rerun) would take for a whole one.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomic", "job_path", "candidate_path", "private_dir"]

_PLAIN_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


def write_atomic(path: Path, data: bytes | str | Callable[[Path], None], *, encoding: str = "utf-8") -> None:
    """Write ``data`` (bytes, text, or a function that writes the file it is given) to ``path`` whole or
    not at all: into a temporary file of its own beside it (so concurrent writers never share one), then
    renamed over ``path`` (its folder made if missing). On failure the temporary file is removed and the
    error raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        elif isinstance(data, str):
            tmp.write_text(data, encoding=encoding)
        else:
            data(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def job_path(folder: str | Path, job_id: str, suffix: str = "") -> Path:
    """``folder/<job id><suffix>``: the one way a job id becomes a file name (results, frames, a worker's
    inputs). An id that is not a plain name (``/``, ``..``, a NUL byte: a hostile message) is a ``ValueError``,
    so no id can lead outside ``folder``, whatever its caller checked before."""
    if not isinstance(job_id, str) or not _PLAIN_ID.fullmatch(job_id):
        raise ValueError(f"not a job id: {job_id!r:.80}")
    return Path(folder) / f"{job_id}{suffix}"


def candidate_path(folder: str | Path, job_id: str, i: int) -> Path:
    """``folder/<job id>-<i>.png``: candidate ``i`` (1-based) of a grid job, beside its grid ``<job id>.png``."""
    if not isinstance(i, int) or not 1 <= i <= 99:
        raise ValueError(f"not a candidate number: {i!r:.20}")
    return job_path(folder, job_id, f"-{i}.png")


def private_dir(folder: Path) -> None:
    """Create ``folder`` (and missing parents) readable by this user only; an existing one is left alone
    (results, uploads: other people's pictures)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(mode=0o700)
        os.chmod(p, 0o700)  # whatever the umask
