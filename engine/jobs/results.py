"""A finished job's result as the coordinator accepts it: checked once, where it enters.

A worker (in this process, or over Redis and perhaps of another version) hands back a PNG and its
metadata: ``request`` (the request actually run, a JSON object), ``note`` (a line for the person, or
None) and, for a zoom, ``frames``. The front end reads the metadata to show the result, and a restart
reads the PNG's own ``vqgan-clip`` metadata to send an undelivered result again. So a result that does
not hold up (metadata of the wrong types, a PNG whose metadata is not a JSON object) fails its job with
one line here, "the worker's result was malformed: ...", instead of breaking its delivery and, after
it, every later start.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import BadImage, MalformedResult, error_line
from engine.jobs.events import Finished
from engine.jobs.job import Job
from engine.jobs.store import storage_problem
from engine.media.files import candidate_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MALFORMED = "the worker's result was malformed"
_WORDS = {"model_type": "is not a JSON object", "dict_type": "is not a JSON object", "missing": "is missing",
          "string_type": "is not text", "int_type": "is not a whole number", "int_parsing": "is not a whole number",
          "int_from_float": "is not a whole number"}


class RanRequest(BaseModel):
    """The request actually run, as far as a front end reads it; any other key is kept as it is."""

    model_config = ConfigDict(extra="allow", frozen=True)

    prompt: str | None = None
    seed: int | None = None
    steps: int | None = Field(None, ge=0)
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)
    grid: int | None = Field(None, ge=1)  # a grid: that many candidates come with the picture


class ResultMeta(BaseModel):
    """A finished job's metadata (``Finished.metadata``, ``FinishedMsg.metadata``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    request: RanRequest
    note: str | None = None
    frames: int | None = Field(None, ge=0)


def check_metadata(metadata: object, where: str = "metadata") -> dict[str, Any]:
    """``metadata`` validated, as the plain dict a front end reads; ``MalformedResult`` if it is not."""
    try:
        meta = ResultMeta.model_validate(metadata)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join([where, *(str(p) for p in err["loc"])])
        msg = _WORDS.get(err["type"]) or error_line({**err, "loc": ()})
        raise MalformedResult(f"{MALFORMED}: {field} {msg}") from None
    return meta.model_dump(exclude_unset=True)


def check_result(png: bytes, metadata: object, candidates: tuple[bytes, ...] = ()) -> dict[str, Any]:
    """A worker's picture and metadata, checked: the metadata validated (returned as a dict), the
    picture a PNG whose own metadata, when it has any, can be read again at a restart; so is each of a
    grid's candidates, one for each place of the grid the job asked for."""
    meta = check_metadata(metadata)
    asked = meta["request"].get("grid") or 1
    if len(candidates) != (asked if asked > 1 else 0):
        raise MalformedResult(f"{MALFORMED}: {len(candidates)} candidates for a grid of {asked}")
    for what, picture in [("the picture", png), *((f"candidate {i}", c) for i, c in enumerate(candidates, 1))]:
        if not picture.startswith(PNG_SIGNATURE):
            raise MalformedResult(f"{MALFORMED}: {what} is not a PNG")
        embedded = png_metadata(picture)
        if embedded is not None and "request" in embedded:
            check_metadata({"request": embedded["request"]}, f"{what}'s metadata")
    return meta


def png_metadata(png: bytes) -> dict[str, Any] | None:
    """The picture's own metadata (None when it has none); ``MalformedResult`` when it cannot be read."""
    from engine.media.imageio import read_metadata  # Pillow and numpy, only when a result is checked

    try:
        return read_metadata(png, what="the picture")
    except BadImage as e:
        raise MalformedResult(f"{MALFORMED}: {e}") from None


def finished_again(job: Job) -> Finished | None:
    """A finished job's event again, from its PNG on disk (None when the file is gone);
    ``MalformedResult`` when that PNG's metadata cannot be read (e.g. stored by an older version)."""
    path = Path(job.result_path or "")
    if not job.result_path or not path.is_file():
        return None
    png = path.read_bytes()
    meta = png_metadata(png) or {}
    ran = meta.get("request", job.request.to_metadata())
    metadata = check_metadata({"request": ran, "note": None}, "the picture's metadata")
    candidates = tuple(p.read_bytes() for p in candidate_files(job))
    return Finished(job, png, metadata, float(job.seconds or 0.0), candidates=candidates)


def candidate_files(job: Job) -> list[Path]:
    """A finished grid job's candidate PNGs beside its grid (``<job id>-<i>.png``), 1 first; [] for one picture."""
    if not job.result_path or job.request.grid == 1:
        return []
    return [candidate_path(Path(job.result_path).parent, job.id, i) for i in range(1, job.request.grid + 1)]


def read_again(job: Job) -> Finished | str | None:
    """``finished_again``, with what went wrong as the one line the job then fails with."""
    try:
        return finished_again(job)
    except MalformedResult as e:
        return str(e)
    except OSError as e:
        return f"its picture cannot be read again: {storage_problem(e, job.result_path or '?', 'the result')}"
    except Exception:
        logging.getLogger(__name__).exception("job %s: reading its result again failed", job.id)
        return "the job queue failed; see the log"
