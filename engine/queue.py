"""``JobQueue``: the coordinator with the transport ``[queue] backend`` names (the bot embeds this).

``backend = "local"``: one worker in this process (``engine.workers.local``); ``"redis"``: workers in
``python -m engine worker`` processes, through Redis Streams (``engine.fleet.link``).
"""

from __future__ import annotations

from engine.config import Config, redis_url
from engine.jobs.coordinator import Coordinator
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
