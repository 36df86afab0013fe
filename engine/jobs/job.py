"""A job: a request, who asked, where the answer goes, and its state; the one definition of job states.

Every room that asks "is this job still waiting?" (the coordinator, the store, the fleet view, the bot)
asks ``PENDING`` / ``TERMINAL`` here, and the pending limits are worded once (``owner_limit``, ``check_room``).
A job waits in a ``Lane`` (``engine.jobs.quota`` decides which).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from engine.config import QueueConfig
from engine.errors import QueueFull
from engine.spec.request import Request

log = logging.getLogger(__name__)

State = Literal["queued", "running", "finished", "failed", "cancelled"]
PENDING: frozenset[str] = frozenset({"queued", "running"})
TERMINAL: frozenset[str] = frozenset({"finished", "failed", "cancelled"})
Lane = Literal["fast", "relax"]  # relax: its owner was over today's GPU time when it was submitted
MAX_ATTEMPTS = 3  # starts of a job that the process (or a worker) did not survive, before giving up on it
STALE = "saved by an older version; please ask again"


class Job(BaseModel):
    """A request, who asked, and where the answer goes; immutable (a change makes a new copy)."""

    model_config = ConfigDict(frozen=True)

    id: str
    request: Request
    owner: str
    origin: dict[str, Any] = {}
    priority: int = 0
    state: State = "queued"
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result_path: str | None = None
    seconds: float | None = None
    attempts: int = 0
    delivered: bool = False  # the front end said it showed the result (``mark_delivered``)
    served: int | None = None  # the queue's turn counter when it last started (fairness, not a clock)
    forget_at: dict[str, float] = {}  # origin key -> time.time() after which it is dropped
    lane: Lane = "fast"  # decided at submission (engine.jobs.quota); older rows are "fast"


def owner_limit(mine: int, limit: int, adding: int = 1) -> str | None:
    """The one wording of the per-owner pending limit (the queue's refusal and the bot's early one);
    ``adding``: how many jobs the request makes (a sweep or ``--repeat``: all of them, or none)."""
    if mine + adding <= limit:
        return None
    if adding == 1:
        return (f"You already have {mine} jobs waiting (limit {limit}); wait for one to finish or cancel one "
                "with /cancel.")
    return (f"That makes {adding} jobs and you have {mine} waiting (limit {limit}); nothing was queued. "
            "Ask for fewer, or wait for some to finish.")


def check_room(jobs: Iterable[Job], owner: str, cfg: QueueConfig) -> None:
    """``QueueFull`` when ``owner`` or the whole queue is at its limit of waiting and running jobs."""
    pending = [j for j in jobs if j.state in PENDING]
    if why := owner_limit(sum(j.owner == owner for j in pending), cfg.per_owner_pending):
        raise QueueFull(why)
    if len(pending) >= cfg.max_pending:
        raise QueueFull(f"The queue is full ({len(pending)} jobs); try again in a few minutes.")


def stored_job(row: dict[str, Any]) -> tuple[Job, bool]:
    """A stored job, and whether this version can read it. If not (a field an older version allowed,
    a value that is not JSON), what can be read is kept so that the job can be failed."""
    try:
        if not all(isinstance(row[c], dict) for c in ("request", "origin", "forget_at")):
            raise ValueError("request, origin or forget_at is not a JSON object")
        return Job.model_validate(row), True
    except Exception as e:  # a ValidationError, or a validator's own UserError
        log.warning("job %s: saved by an older version, cannot be read: %s", row.get("id"), e)
        stored = row["request"] if isinstance(row["request"], dict) else {}
        base = Request.model_construct(prompt="")  # the defaults, then what a front end shows, if sound
        shown = {k: v for k, v in stored.items()
                 if k in ("kind", "prompt", "seed", "steps", "width", "height") and type(v) is type(getattr(base, k))}
        fields = {**row, "request": base.model_copy(update=shown),
                  "origin": row["origin"] if isinstance(row["origin"], dict) else {},
                  "forget_at": row["forget_at"] if isinstance(row["forget_at"], dict) else {},
                  "state": row["state"] if row["state"] in get_args(State) else "queued",
                  "served": row["served"] if isinstance(row["served"], int) else None,
                  "lane": row.get("lane") if row.get("lane") in get_args(Lane) else "fast"}
        return Job.model_construct(**fields), False
