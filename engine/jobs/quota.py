"""Fair GPU time: each person's seconds per UTC day, and the lane each job waits in.

``[limits] daily_gpu_seconds`` (0 = unlimited) bounds the seconds a person's jobs run on a worker per
UTC day. What counts:

* a finished job: the run time its worker reports (``Finished.seconds``, ``FinishedMsg.seconds`` over
  Redis), checked here (``run_seconds``): a value that is not a finite, non-negative number is replaced
  by the time the coordinator held the job, and no value counts for more than that time (a worker cannot
  have run a job longer than it had it), so no worker can zero or explode anyone's use;
* a failed job, and a job cancelled while it ran: the time the coordinator held it (from its hand-out to
  its end; workers report no run time for those);
* a job handed back unfinished (a restart, a lost worker, out of memory in a batch): nothing; it runs
  again and counts then.

The seconds count on the UTC day the job ends. They are kept in the job store (table ``usage``, written in
the same transaction as the job's end), so they hold across restarts and whichever worker ran the job.

A job's lane is decided when it is submitted (``Job.lane``): "fast", or "relax" when its owner is over
the quota then (with ``[limits] relax = false`` it is refused instead: ``OverQuota``). Moderators are
never relaxed when ``moderators_exempt`` (the front end says who moderates). A relax job waits while any
fast job waits (``engine.jobs.order``; fair turns hold within each lane). A relax job whose owner is no
longer over (a new UTC day began, the quota was raised) waits as a fast one from then on (``lane_of``);
a fast job never moves to the relax lane.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping

from pydantic import BaseModel, ConfigDict

from engine.config import LimitsConfig
from engine.errors import OverQuota
from engine.jobs.job import Job, Lane
from engine.jobs.port import Outcome

log = logging.getLogger(__name__)

LANES: tuple[Lane, ...] = ("fast", "relax")
DAY_S = 86400.0


def utc_day(t: float) -> str:
    """The UTC day of ``t`` (``time.time()``), e.g. "2024-05-01": the day a job's seconds count on."""
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def next_midnight(t: float) -> float:
    """The next UTC midnight after ``t``, when the day's use starts again from zero."""
    return (math.floor(t / DAY_S) + 1) * DAY_S


def format_seconds(s: float) -> str:
    """A duration for people: "0.4 s", "42 s", "4 min 05 s", "2 h 07 min"."""
    if s < 10:
        return f"{max(s, 0.0):.1f} s"
    whole = round(s)
    hours, rest = divmod(whole, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def run_seconds(reported: float | None, held: float) -> float:
    """The seconds a job is charged: what its worker reported when that is a finite, non-negative
    number, at most ``held`` (how long the coordinator held the job); otherwise ``held``."""
    held = max(held, 0.0) if math.isfinite(held) else 0.0
    if reported is None or not math.isfinite(reported) or reported < 0:
        return held
    return min(reported, held)


class Usage(BaseModel):
    """One person's GPU time on one UTC day (what ``/usage`` and a status page show)."""

    model_config = ConfigDict(frozen=True)

    owner: str
    day: str  # the UTC day, e.g. "2024-05-01"
    used_s: float
    limit_s: float  # [limits] daily_gpu_seconds; 0 = no limit
    left_s: float | None  # None: no limit
    over: bool  # used it all: new jobs wait in the relax lane (or are refused: relax = false)
    resets_at: float  # time.time() of the next UTC midnight


class Quota:
    """Today's GPU seconds of each person (loaded from the job store, kept in step with it), and
    each waiting job's lane. ``clock`` is the time source of the UTC day (``time.time``); a test may
    move it. The public face of the quota is ``JobQueue.quota``."""

    def __init__(self, cfg: LimitsConfig, jobs: Mapping[str, Job]) -> None:
        self.cfg = cfg
        self.jobs = jobs  # the coordinator's record of every job (for ``depth``)
        self.clock: Callable[[], float] = time.time
        self._used: dict[tuple[str, str], float] = {}  # (UTC day, owner) -> seconds

    def load(self, used: Mapping[str, float]) -> None:
        """Today's use as the store holds it (at start: ``Records.usage_on(today())``)."""
        day = self.today()
        self._used = {(day, owner): s for owner, s in used.items()}

    def today(self) -> str:
        return utc_day(self.clock())

    # -- what a front end (or a status page) reads -----------------------------------------

    def usage(self, owner: str) -> Usage:
        """``owner``'s use today, what is left and when it resets."""
        now = self.clock()
        used, limit = self._used.get((utc_day(now), owner), 0.0), self.cfg.daily_gpu_seconds
        return Usage(owner=owner, day=utc_day(now), used_s=used, limit_s=limit,
                     left_s=max(limit - used, 0.0) if limit else None, over=bool(limit) and used >= limit,
                     resets_at=next_midnight(now))

    def everyone(self) -> list[Usage]:
        """Today's use of everybody who used any, most first."""
        day = self.today()
        owners = [owner for (d, owner) in self._used if d == day]
        return sorted((self.usage(o) for o in owners), key=lambda u: (-u.used_s, u.owner))

    def lane_of(self, job: Job) -> Lane:
        """The lane a job waits in now: its submission's, unless its owner is no longer over."""
        return "relax" if job.lane == "relax" and self.over(job.owner) else "fast"

    def depth(self) -> dict[Lane, int]:
        """How many jobs wait (queued, not running) in each lane."""
        out: dict[Lane, int] = dict.fromkeys(LANES, 0)
        for job in self.jobs.values():
            if job.state == "queued":
                out[self.lane_of(job)] += 1
        return out

    def over(self, owner: str) -> bool:
        limit = self.cfg.daily_gpu_seconds
        return bool(limit) and self._used.get((self.today(), owner), 0.0) >= limit

    # -- what the coordinator asks ---------------------------------------------------------------

    def lane_for(self, owner: str, moderator: bool = False) -> Lane:
        """The lane of a job submitted now; ``OverQuota`` (nothing is queued) when its owner is over
        and ``[limits] relax`` is off."""
        if not self.over(owner) or (moderator and self.cfg.moderators_exempt):
            return "fast"
        if self.cfg.relax:
            return "relax"
        u = self.usage(owner)
        raise OverQuota(f"You have used today's GPU time ({format_seconds(u.used_s)} of "
                        f"{format_seconds(u.limit_s)}); ask again after it resets at midnight UTC "
                        f"(in {format_seconds(u.resets_at - self.clock())}).")

    def held(self, job: Job) -> float | None:
        """The seconds a job that is stopped now is charged: how long it has been held; None when it
        is not running (a waiting job ran for nothing)."""
        if job.state != "running" or job.started_at is None:
            return None
        return run_seconds(None, time.time() - job.started_at)

    def ran(self, job: Job, out: Outcome) -> float:
        """The seconds a running job whose worker reported ``out`` is charged (see ``run_seconds``)."""
        held = time.time() - job.started_at if job.started_at is not None else 0.0
        reported = out.seconds if out.kind == "finished" else None
        charged = run_seconds(reported, held)
        if reported is not None and not (0 <= reported <= held + 1.0):  # not a clock's jitter
            log.warning("job %s: the worker reported %r s of run time; %.3f s counted (it was held %.3f s)",
                        job.id, reported, charged, held)
        return charged

    def charge(self, owner: str, seconds: float | None) -> tuple[str, str, float] | None:
        """Add ``seconds`` to ``owner``'s today; the (owner, day, seconds) for the store, None for nothing."""
        if seconds is None or seconds <= 0:
            return None
        day = self.today()
        for key in [k for k in self._used if k[0] < day]:  # days gone by: the store keeps them
            del self._used[key]
        self._used[(day, owner)] = self._used.get((day, owner), 0.0) + seconds
        return owner, day, seconds
