"""``JobQueue``: the coordinator with the transport ``[queue] backend`` names (the bot embeds this).

``backend = "local"``: one worker in this process (``engine.workers.local``); ``"redis"``: workers in
``python -m engine worker`` processes, through Redis Streams (``engine.fleet.link``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.config import Config, redis_url
from engine.jobs import listing
from engine.jobs.coordinator import Coordinator
from engine.jobs.listing import Listed
from engine.jobs.port import Transport
from engine.workers.protocols import Runner

__all__ = ["JobQueue"]


class JobQueue(Coordinator):
    """The front end's view of the painting (see ``Coordinator``), on the configured backend.

    ``runner``: what paints, for the local backend (default: ``EngineRunner(cfg)``, the real engine).
    """

    def __init__(self, cfg: Config, runner: Runner | None = None) -> None:
        transport: Transport
        if cfg.queue.backend == "redis":
            from engine.fleet.link import RedisLink

            transport = RedisLink(cfg.queue, redis_url(cfg.queue))
        else:
            from engine.workers.local import LocalTransport

            if runner is None:
                from engine.workers.runner import EngineRunner  # torch and the models only when really used

                runner = EngineRunner(cfg)
            transport = LocalTransport(cfg.queue, runner)
        super().__init__(cfg, transport)
        self.results_dir = Path(cfg.queue.results_dir)

    # -- read-only listings for a gallery (``engine.jobs.listing``) ----------------------------------

    def results(self, *, owner: str | None = None, origin: Mapping[str, Any] | None = None,
                limit: int | None = None) -> list[Listed]:
        """Finished jobs still on record, newest first: ``owner``'s, and/or those whose origin holds
        ``origin``'s key/values (e.g. ``{"guild_id": 123}``), at most ``limit``."""
        jobs = self.jobs_of(owner) if owner is not None else self._records.matching(**(origin or {}))
        return listing.finished(jobs, self.results_dir, owner=owner, origin=origin, limit=limit)

    def result_png(self, job_id: str) -> bytes | None:
        """A finished job's result PNG by its id, or None (unknown, not finished, pruned, or its file is
        not a plain file of the results folder). Blocking: call it off the event loop."""
        return listing.read_result(self.get(job_id), self.results_dir)
