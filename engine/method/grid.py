"""A grid: several candidates of one request painted as one job, and shown as one picture.

Candidate ``i`` (1-based) is ``engine.spec.request.candidate_request(req, i)``: the request alone
(``grid=1``) with the seed ``req.seed + i - 1``. Each candidate is a ``Run`` of its own (its z, Adam,
targets and RNG), and the candidates are stepped together with ``step_together``: with its own decoder
and CLIP calls of a solo run's shapes, so each candidate is bit for bit the picture its solo run paints
(``rerun OUT-3.png`` gives candidate 3 again), unless ``queue.batch_fused`` fuses the batch. The
grid's progress pictures and its result are the candidates tiled (``grid_shape``: rows x columns,
candidate 1 top left); the result carries each candidate's own ``Result`` too.

``start``, ``step_all`` and ``paint`` take a grid or a single picture alike, so a runner calls them
whatever the request (a grid joins a batch of other jobs like any job: its candidates are stepped
with them).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence

import torch

from engine.errors import UserError
from engine.media.collage import tile
from engine.method.generate import Progress, Result, Run, prepare, step_together
from engine.models.loader import Models
from engine.spec.request import Request, candidate_request, grid_shape


class Grid:
    """The candidates of a grid request, stepped as one job (see the module's docstring)."""

    def __init__(self, models: Models, req: Request, *, on_progress: Callable[[Progress], None] | None = None,
                 progress_every: int = 50, should_stop: Callable[[], bool] | None = None) -> None:
        self.rows, self.cols = grid_shape(req.grid)
        self.on_progress = on_progress
        self._latest: list[Progress | None] = [None] * req.grid
        self._shown = 0
        self.runs: list[Run] = []
        for i in range(req.grid):
            seen = None if on_progress is None else (lambda p, i=i: self._seen(i, p))
            self.runs.append(Run(models, prepare(models, candidate_request(req, i + 1)), on_progress=seen,
                                 progress_every=progress_every, should_stop=should_stop))
        first = self.runs[0]
        self.req = req.with_changes(width=first.req.width, height=first.req.height)  # the size painted
        self.t0 = first.t0

    @property
    def done(self) -> bool:
        return all(r.done for r in self.runs)

    def live(self) -> list[Run]:
        """The candidates still painting."""
        return [r for r in self.runs if not r.done]

    def _seen(self, i: int, p: Progress) -> None:
        self._latest[i] = p

    def stepped(self) -> None:
        """After a step: the candidates' newest pictures tiled, as the grid's progress (at the steps they show)."""
        if self.on_progress is None or any(p is None for p in self._latest):
            return
        latest = [p for p in self._latest if p is not None]
        step = max(p.step for p in latest)
        if step <= self._shown:
            return
        self._shown = step
        rows = [torch.cat([p.frame for p in latest[r * self.cols:(r + 1) * self.cols]], dim=3)
                for r in range(self.rows)]
        loss = sum(p.loss for p in latest) / len(latest)
        self.on_progress(Progress(step, self.req.steps, loss, torch.cat(rows, dim=2), latest[0].part))

    def result(self) -> Result:
        """The grid picture with each candidate's ``Result``; a ``UserError`` when one broke down."""
        done = []
        for i, run in enumerate(self.runs, 1):
            try:
                done.append(run.result())
            except UserError as e:
                raise UserError(f"candidate {i} of the grid: {e}") from None
        losses = [sum(v) / len(v) for v in zip(*(r.losses for r in done), strict=False)]
        grid = Result(tile([r.image for r in done], self.cols), self.req, time.perf_counter() - self.t0, losses,
                      done[0].mask)
        digest = hashlib.sha256(grid.png_bytes()).hexdigest()[:16]
        grid.candidates = [
            Result(r.image, r.request.with_changes(parent=f"sha256:{digest} seed:{self.req.seed} #{i}"), r.seconds,
                   r.losses, r.mask) for i, r in enumerate(done, 1)]
        return grid


def start(models: Models, req: Request, *, on_progress: Callable[[Progress], None] | None = None,
          progress_every: int = 50, should_stop: Callable[[], bool] | None = None) -> Run | Grid:
    """A ``Run`` for one picture, a ``Grid`` for several (``req.grid``)."""
    if req.grid > 1:
        return Grid(models, req, on_progress=on_progress, progress_every=progress_every, should_stop=should_stop)
    return Run(models, prepare(models, req), on_progress=on_progress, progress_every=progress_every,
               should_stop=should_stop)


def step_all(runs: Sequence[Run | Grid], *, fused: bool = False) -> None:
    """One step of each job, a grid's candidates stepped with the others (``step_together``)."""
    step_together([r for job in runs for r in (job.live() if isinstance(job, Grid) else [job])], fused=fused)
    for job in runs:
        if isinstance(job, Grid):
            job.stepped()


def paint(models: Models, req: Request, *, on_progress: Callable[[Progress], None] | None = None,
          progress_every: int = 50, should_stop: Callable[[], bool] | None = None) -> Result:
    """``generate`` for a grid too: every step to the end; the result (a grid's carries its candidates)."""
    job = start(models, req, on_progress=on_progress, progress_every=progress_every, should_stop=should_stop)
    while not job.done:
        step_all([job])
    return job.result()
