"""The queue's default runner: models from the LRU cache, then ``generate`` (on the worker thread)."""

from __future__ import annotations

from collections.abc import Callable

from engine.config import Config
from engine.generate import Progress, Result, generate
from engine.models.loader import ModelCache
from engine.request import Request


class EngineRunner:
    def __init__(self, cfg: Config, progress_every: int | None = None) -> None:
        self.cfg = cfg
        self.cache = ModelCache(cfg.models)
        self.progress_every = progress_every or cfg.generation.progress_every

    def __call__(self, request: Request, on_progress: Callable[[Progress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Result:
        models = self.cache.get(request.models)
        return generate(models, request, on_progress=on_progress, progress_every=self.progress_every,
                        should_stop=should_stop)
