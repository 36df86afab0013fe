"""The queue's default runner: models from the LRU cache, then ``paint`` (on the worker thread).

It can also start ``Run``s (a ``Grid`` for a grid request) and step several together, which the queue
uses to batch jobs; a grid's candidates are stepped with the others (``engine.method.grid``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from engine.config import Config
from engine.method.generate import Progress, Result, Run
from engine.method.grid import Grid, paint, start, step_all
from engine.models.availability import Availability, Surveyor
from engine.models.loader import ModelCache, Models
from engine.spec.request import Request
from engine.workers.protocols import Stepping

log = logging.getLogger(__name__)


class EngineRunner:
    def __init__(self, cfg: Config, progress_every: int | None = None, device: str | None = None) -> None:
        self.cfg = cfg
        self.device = device  # e.g. "cuda:1" for one worker per GPU; None: models.device
        self.cache = ModelCache(cfg.models)
        self.progress_every = progress_every or cfg.generation.progress_every
        self.survey = Surveyor(cfg.models)

    def availability(self) -> Availability | None:
        """Which offered models this worker can use (on disk, downloadable); None until surveyed."""
        return self.survey.current()

    def __call__(self, request: Request, on_progress: Callable[[Progress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Result:
        models = self._models(request)
        return paint(models, request, on_progress=on_progress, progress_every=self.progress_every,
                     should_stop=should_stop)

    def loaded(self) -> list[str]:
        """The models held now (the worker's heartbeat shows them)."""
        return self.cache.loaded()

    def loading(self, request: Request) -> list[str]:
        """The request's models that are not loaded now (the worker says so in the job's status)."""
        return self.cache.missing(request.models, self.device)

    def _models(self, request: Request) -> Models:
        """The request's models from the cache; loading one that is not held takes a while, so it is logged."""
        if missing := self.cache.missing(request.models, self.device):
            log.info("loading %s (models.max_loaded = %d of each kind stay loaded)", ", ".join(missing),
                     self.cfg.models.max_loaded)
        try:
            return self.cache.get(request.models, self.device)
        finally:
            if missing:
                self.survey.stale()  # it may have downloaded a model, or found one gone

    def zoom(self, request: Request, frames_dir: Path, on_frame: Callable[[int, Path], None] | None = None,
             should_stop: Callable[[], bool] | None = None, after: int = 0) -> list[Path]:
        """A zoom video's frames into ``frames_dir``, continuing from the frames already there
        (a job interrupted by a restart resumes where it stopped), or after frame ``after``
        (handed over with the job when another worker began it)."""
        from engine.method.zoom import run_zoom

        assert request.zoom is not None
        models = self._models(request)
        return run_zoom(models, request, request.zoom, frames_dir, on_frame=on_frame, should_stop=should_stop,
                        resume=True, after=after)

    # -- stepping several jobs together (used by the worker when queue.batch_size > 1) -------

    batching = True

    def start(self, request: Request, on_progress: Callable[[Progress], None] | None = None) -> Run | Grid:
        return start(self._models(request), request, on_progress=on_progress,
                     progress_every=self.progress_every)

    def step(self, runs: Sequence[Stepping]) -> None:
        step_all([cast(Run | Grid, r) for r in runs], fused=self.cfg.queue.batch_fused)  # runs it started
