"""Fair turns: the order in which queued jobs run (a pure function of the jobs and who was served when).

Two lanes (``engine.jobs.quota``): a job in the relax lane waits while any job in the fast lane waits;
within each lane the same fair turns hold.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping

from engine.jobs.job import Job, Lane


def _fast(job: Job) -> Lane:
    return "fast"


def service_order(queued: Iterable[Job], rank_of: Mapping[str, int], last_served: Mapping[str, int],
                  lane_of: Callable[[Job], Lane] = _fast) -> list[Job]:
    """Queued jobs in the order they will run: the fast lane's before the relax lane's (``lane_of``);
    within a lane an interrupted job first, then by priority, then the owner served least recently
    (``last_served``: owner -> turn of their last start), then submission order (``rank_of``: job id
    -> submission rank). Turns are counted, not timed, so no change of the wall clock can upset them."""
    jobs = list(queued)
    relaxed = {j.id for j in jobs if lane_of(j) == "relax"}

    def rank(j: Job) -> tuple[bool, bool, int, int]:
        return (j.id in relaxed, j.started_at is None, -j.priority, rank_of[j.id])

    by_owner: dict[str, deque[Job]] = {}
    for job in sorted(jobs, key=rank):
        by_owner.setdefault(job.owner, deque()).append(job)
    last = dict(last_served)
    tick = max(last.values(), default=0)
    order: list[Job] = []
    while by_owner:
        owner = min(by_owner, key=lambda o: (rank(by_owner[o][0])[:3], last.get(o, -math.inf),
                                             rank(by_owner[o][0])[3]))
        order.append(by_owner[owner].popleft())
        if not by_owner[owner]:
            del by_owner[owner]
        tick += 1
        last[owner] = tick
    return order


def eligible(order: list[Job], match: Callable[[Job], bool] | None, solo: Collection[str], batch: bool,
             lane_of: Callable[[Job], Lane] = _fast) -> list[Job]:
    """The jobs of ``order`` (``service_order``) a worker may take now: those ``match`` accepts. Joining
    a ``batch``: none that must run alone (``solo``), and no relax-lane job while a fast-lane job waits
    (it would run ahead of it). A fresh pick follows the order, so a worker that can run none of the
    waiting fast jobs (a model it lacks) may still take a relax job."""
    fast_waits = batch and any(lane_of(j) == "fast" for j in order)
    return [j for j in order if (match is None or match(j)) and not (batch and j.id in solo)
            and not (fast_waits and lane_of(j) == "relax")]
