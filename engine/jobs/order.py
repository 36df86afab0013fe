"""Fair turns: the order in which queued jobs run (a pure function of the jobs and who was served when)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping

from engine.jobs.job import Job


def service_order(queued: Iterable[Job], rank_of: Mapping[str, int], last_served: Mapping[str, int]) -> list[Job]:
    """Queued jobs in the order they will run: an interrupted job first, then by priority, then the
    owner served least recently (``last_served``: owner -> turn of their last start), then submission
    order (``rank_of``: job id -> submission rank). Turns are counted, not timed, so no change of the
    wall clock can upset them."""

    def rank(j: Job) -> tuple[bool, int, int]:
        return (j.started_at is None, -j.priority, rank_of[j.id])

    by_owner: dict[str, deque[Job]] = {}
    for job in sorted(queued, key=rank):
        by_owner.setdefault(job.owner, deque()).append(job)
    last = dict(last_served)
    tick = max(last.values(), default=0)
    order: list[Job] = []
    while by_owner:
        owner = min(by_owner, key=lambda o: (rank(by_owner[o][0])[:2], last.get(o, -math.inf),
                                             rank(by_owner[o][0])[2]))
        order.append(by_owner[owner].popleft())
        if not by_owner[owner]:
            del by_owner[owner]
        tick += 1
        last[owner] = tick
    return order
