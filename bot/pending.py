"""How many jobs a person has waiting, counting requests still being prepared (downloads, collages).

An early copy of the queue's own per-owner limit, so that most refusals come before anything is downloaded.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from bot.access import Refused
from bot.config import BotConfig
from engine import TERMINAL, owner_limit

if TYPE_CHECKING:
    from engine import JobQueue



class Preparing:
    """Requests still being prepared (downloading, composing) per owner, before the queue knows them.

    They count against the pending limit, so that one person cannot start many downloads at once.
    ``check_pending`` then ``hold`` with no ``await`` between them: the event loop makes the pair atomic.
    ``hold`` gives a ``release`` to call as soon as the queue holds the job (or refused it), so that
    it is never counted twice.
    """

    def __init__(self) -> None:
        self._count: Counter[str] = Counter()

    def count(self, owner: str) -> int:
        return self._count[owner]

    @contextlib.contextmanager
    def hold(self, owner: str, n: int = 1) -> Iterator[Callable[[], None]]:
        """Count ``n`` requests of ``owner`` (a sweep: one per job) until the end of the block; each
        ``release()`` lets one go (once the queue holds its job or refused it)."""
        held = n

        def release() -> None:
            nonlocal held
            if held > 0:
                held -= 1
                self._count[owner] -= 1
                if self._count[owner] <= 0:
                    del self._count[owner]

        self._count[owner] += n
        try:
            yield release
        finally:
            while held > 0:
                release()


def check_pending(cfg: BotConfig, queue: JobQueue, owner: str, preparing: Preparing | None = None,
                  adding: int = 1) -> None:
    """A fast, early copy of the queue's own per-owner limit (the queue has the last word), counting
    requests still downloading too. ``adding``: the jobs this request makes (a sweep's all count, before
    any is queued: it is refused whole, and so when the whole queue has no room for all of them)."""
    mine = sum(1 for j in queue.jobs_of(owner) if j.state not in TERMINAL)
    mine += preparing.count(owner) if preparing is not None else 0
    if why := owner_limit(mine, cfg.queue.per_owner_pending, adding):  # the queue's own wording
        raise Refused(why, kind="pending")
    room = cfg.queue.max_pending - len(queue.pending())
    if adding > 1 and room < adding:
        raise Refused(f"The queue has room for {max(0, room)} more jobs and that makes {adding}; nothing was "
                      "queued. Try again in a few minutes.", kind="pending")
