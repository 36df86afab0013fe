"""The one fake runner, and its progress and result, without torch: for tests that replace the engine.

``FakeRunner`` has the whole shape a worker asks of a runner (``engine.workers.protocols.Runner``); a
test that needs a job to behave otherwise (slow, failing, out of memory, batching) subclasses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from engine.errors import Cancelled, UserError
from engine.media.collage import tile
from engine.media.imageio import png_bytes
from engine.spec.request import Request, candidate_request, grid_shape


@dataclass
class FakeProgress:
    step: int
    total: int
    loss: float
    image: Image.Image


@dataclass
class FakeResult:
    image: Image.Image
    request: Request
    seconds: float
    losses: list[float] = field(default_factory=list)
    mask: Image.Image | None = None
    candidates: list[FakeResult] = field(default_factory=list)

    def png_bytes(self) -> bytes:
        """A PNG carrying the request in its metadata, like the engine's."""
        return png_bytes(self.image, {"engine_version": "fake", "request": self.request.to_metadata()})


def square(req: Request) -> Image.Image:
    """The fake's picture: a square coloured by the seed (a grid: its candidates' squares, tiled)."""
    if req.grid > 1:
        return tile([square(c.request) for c in candidates(req)], grid_shape(req.grid)[1])
    return Image.new("RGB", (req.width, req.height), (req.seed * 97 % 256, req.seed * 57 % 256, req.seed * 17 % 256))


def candidates(req: Request) -> list[FakeResult]:
    """A grid's candidates as the engine makes them: each request alone, with its own seed."""
    return [FakeResult(square(c), c, 0.0) for c in
            (candidate_request(req, i, parent=f"grid #{i}") for i in range(1, req.grid + 1))] if req.grid > 1 else []


def result_of(req: Request, seconds: float, img: Image.Image | None = None) -> FakeResult:
    return FakeResult(square(req) if img is None else img, req, seconds, candidates=candidates(req))


@dataclass
class FakeRun:
    """A fake job painted a step at a time (what ``FakeRunner.start`` gives and ``step`` advances)."""

    request: Request
    on_progress: Callable[[Any], None] | None
    steps_done: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> bool:
        return self.steps_done >= self.request.steps

    def advance(self) -> None:
        self.steps_done += 1
        if self.on_progress is not None:
            self.on_progress(FakeProgress(self.steps_done, self.request.steps, 1.0 / self.steps_done,
                                          square(self.request)))

    def result(self) -> FakeResult:
        return result_of(self.request, time.monotonic() - self.started)


class FakeRunner:
    """A coloured square per seed, ``delay`` s per step, progress every ``every`` steps; ``gate(request)``
    holds a job until it returns True; ``noise`` paints incompressible pictures (upload size limits).
    It runs one job at a time (``batching = False``) and makes no zoom videos. A grid request gives its
candidates' squares tiled, with each candidate's result (as the engine's ``Grid``)."""

    batching = False

    def __init__(self, delay: float = 0.02, every: int = 2, noise: bool = False) -> None:
        self.delay = delay
        self.every = every
        self.noise = noise
        self.calls: list[Request] = []
        self.gate: Callable[[Request], bool] | None = None

    def __call__(self, req: Request, on_progress: Callable[[Any], None], should_stop: Callable[[], bool]) -> Any:
        self.calls.append(req)
        t0 = time.monotonic()
        img = square(req)
        if self.noise:
            img = Image.merge("RGB", [Image.effect_noise(img.size, 128)] * 3)
        while self.gate is not None and not self.gate(req):
            if should_stop():
                raise Cancelled()
            time.sleep(0.01)
        for step in range(1, req.steps + 1):
            if should_stop():
                raise Cancelled()
            if self.delay:
                time.sleep(self.delay)
            if step % self.every == 0:
                on_progress(FakeProgress(step, req.steps, 1.0 / step, img))
        return result_of(req, time.monotonic() - t0, img)

    def start(self, request: Request, on_progress: Callable[[Any], None]) -> Any:
        return FakeRun(request, on_progress)

    def step(self, runs: Sequence[Any]) -> None:
        for run in runs:
            run.advance()

    def zoom(self, request: Request, frames_dir: Path, on_frame: Callable[[int, Path], None] | None = None,
             should_stop: Callable[[], bool] | None = None, after: int = 0) -> list[Path]:
        raise UserError("this worker cannot make zoom videos")

    def loading(self, request: Request) -> list[str]:
        return []

    def loaded(self) -> list[str]:
        return []

    def availability(self) -> None:
        return None
