"""What crosses the Redis transport between the coordinator and its workers: typed, versioned messages.

Every message is one JSON object with ``v`` (the wire version) and ``kind``; bytes travel as base64.
Job ids and leases have the coordinator's own shape (``JobId``, ``Lease``): a message naming anything
else (a path, ``../..``) does not validate, so no wire value can become a path on either side.
``decode`` validates what it receives and returns None for anything malformed, foreign, too large
or of another version (logged once per message, never raised): a bad message is dropped, the
process keeps serving. Job messages carry no Discord data: the origin stays with the coordinator.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from engine.errors import error_line
from engine.models.availability import Availability
from engine.spec.request import Request

log = logging.getLogger(__name__)

VERSION: Literal[2] = 2  # 2: grids (``Request.grid``, ``FinishedMsg.candidates``) and upscales; 1 is not read
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # a picture or progress image larger than this is not sent

# A job id as JobQueue.submit makes it (secrets.token_hex(6)); a lease is "<job id>.<attempt>.<nonce>".
JobId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{12}$")]
Lease = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{12}\.[0-9]{1,9}\.[0-9a-f]{1,32}$")]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    v: Literal[2] = VERSION


class ZoomFrame(BaseModel):
    """The newest frame of a zoom video the coordinator holds (frame ``frame``, 1-based, as a PNG):
    a worker taking over a zoom another worker began goes on from it instead of from frame 1."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    frame: int = Field(ge=1)
    png: bytes


class JobMsg(_Msg):
    """Coordinator -> worker: paint this. ``lease`` names this hand-out; outcomes quote it."""

    kind: Literal["job"] = "job"
    job_id: JobId
    lease: Lease
    request: Request
    solo: bool = False
    boot: str  # the worker run it is for (a restarted worker drops its previous run's jobs)
    files: dict[str, bytes] = {}  # the request's input images (init, mask, image prompts) by their path
    zoom_from: ZoomFrame | None = None  # a zoom begun elsewhere goes on after this frame; absent in older messages


class CancelMsg(_Msg):
    """Coordinator -> worker: stop this job within a step; send nothing more for it."""

    kind: Literal["cancel"] = "cancel"
    job_id: JobId
    lease: Lease


class ProgressMsg(_Msg):
    kind: Literal["progress"] = "progress"
    worker: str
    job_id: JobId
    lease: Lease
    step: int
    total: int
    loss: float
    png: bytes
    note: str | None = None  # e.g. "loading RN50/openai" (``png`` empty); absent in older messages


class FinishedMsg(_Msg):
    kind: Literal["finished"] = "finished"
    worker: str
    job_id: JobId
    lease: Lease
    png: bytes
    seconds: float
    metadata: dict[str, Any]
    mask_png: bytes | None = None
    candidates: tuple[bytes, ...] = ()  # a grid's pictures, 1 first (``png`` is them tiled)


class FailedMsg(_Msg):
    """``elsewhere``: this worker cannot run it (e.g. it lacks the model); another one may."""

    kind: Literal["failed"] = "failed"
    worker: str
    job_id: JobId
    lease: Lease
    reason: str
    elsewhere: bool = False


class ReturnedMsg(_Msg):
    """Worker -> coordinator: handed back unfinished (the worker is stopping, or ``solo``: it ran
    out of memory in a batch and should run alone); queued again, the attempt not counted."""

    kind: Literal["returned"] = "returned"
    worker: str
    job_id: JobId
    lease: Lease
    solo: bool = False


class Heartbeat(_Msg):
    """Worker -> coordinator, every few seconds: alive, and how much room it has (its credits)."""

    kind: Literal["heartbeat"] = "heartbeat"
    worker: str
    boot: str  # changes when the worker process restarts under the same name
    seq: int
    device: str
    capacity: int  # jobs it runs at a time (its queue.batch_size); the coordinator gives it at most its own
    leases: list[Lease]  # the jobs it holds (running or about to run)
    models: list[str]
    sent_at: float  # time.time() on the worker: shown by ``fleet``, never compared across machines
    available: Availability | None = None  # its offered models' survey; None: not surveyed (yet)


Message = Annotated[JobMsg | CancelMsg | ProgressMsg | FinishedMsg | FailedMsg | ReturnedMsg | Heartbeat,
                    Field(discriminator="kind")]
_adapter: TypeAdapter[Any] = TypeAdapter(Message)


def encode(msg: _Msg) -> bytes:
    return msg.model_dump_json().encode()


def decode(raw: bytes | str | None, where: str = "redis") -> Message | None:
    """The message in ``raw``, or None (logged) when it is not a valid message of this version."""
    if raw is None:
        log.warning("%s: dropped an entry without a message", where)
        return None
    if len(raw) > MAX_MESSAGE_BYTES:
        log.warning("%s: dropped a message of %d bytes (limit %d)", where, len(raw), MAX_MESSAGE_BYTES)
        return None
    try:
        return _adapter.validate_json(raw)
    except ValidationError as e:
        log.warning("%s: dropped a malformed message: %s", where, error_line(e.errors()[0]))
    except Exception as e:  # e.g. a Request validator's own UserError
        log.warning("%s: dropped a malformed message: %s", where, e)
    return None
