"""What a worker asks of the runner that paints (declared once; the worker probes nothing).

``EngineRunner`` (``engine.workers.runner``) is the real one; tests give a fake of the same shape
(``tests/fakes.py``). A runner paints one job at a time (``OneShot``) and, when it says so
(``batching``), steps several compatible jobs together (``Batching``); it makes zoom videos
(``Zooming``, or refuses with a ``UserError``), and says which models it is loading and which it can
get (``Loading``). Pictures come back as ``Painted`` results, progress as ``StepPicture``s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from PIL import Image

from engine.models.availability import Availability
from engine.spec.request import Request


class StepPicture(Protocol):
    """A progress picture of a run (``engine.method.generate.Progress``)."""

    @property
    def step(self) -> int: ...
    @property
    def total(self) -> int: ...
    @property
    def loss(self) -> float: ...
    @property
    def image(self) -> Image.Image: ...


class Painted(Protocol):
    """A finished picture (``engine.method.generate.Result``), or a grid of them."""

    @property
    def request(self) -> Request: ...
    @property
    def seconds(self) -> float: ...
    @property
    def mask(self) -> Image.Image | None: ...
    @property
    def candidates(self) -> Sequence[Painted]:
        """A grid's pictures, each with its own request (empty for a single picture)."""
        ...
    def png_bytes(self) -> bytes: ...


class Stepping(Protocol):
    """A job being painted a step at a time (``engine.method.generate.Run``, ``engine.method.grid.Grid``)."""

    @property
    def done(self) -> bool: ...
    def result(self) -> Painted: ...


OnProgress = Callable[[StepPicture], None]


class OneShot(Protocol):
    def __call__(self, request: Request, on_progress: OnProgress, should_stop: Callable[[], bool]) -> Painted:
        """Paint ``request`` to the end; raises ``engine.errors.Cancelled`` when ``should_stop()`` says so."""
        ...


class Batching(Protocol):
    batching: bool  # whether ``start``/``step`` may be used to step several jobs together

    def start(self, request: Request, on_progress: OnProgress) -> Stepping: ...

    def step(self, runs: Sequence[Stepping]) -> None:
        """One step of each run (they share models and size: ``engine.spec.request.batch_key``)."""
        ...


class Zooming(Protocol):
    def zoom(self, request: Request, frames_dir: Path, on_frame: Callable[[int, Path], None] | None = None,
             should_stop: Callable[[], bool] | None = None, after: int = 0) -> list[Path]:
        """A zoom video's frames into ``frames_dir`` (going on after frame ``after``, or from those there)."""
        ...


class Loading(Protocol):
    def loading(self, request: Request) -> list[str]:
        """The request's models that are not loaded now (the job's status says so while they load)."""
        ...

    def loaded(self) -> list[str]:
        """The models held now (a worker's heartbeat shows them)."""
        ...

    def availability(self) -> Availability | None:
        """Which offered models this runner can use (on disk, downloadable); None until surveyed."""
        ...


class Runner(OneShot, Batching, Zooming, Loading, Protocol):
    """Everything a worker asks of its runner."""
