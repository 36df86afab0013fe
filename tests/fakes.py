"""The runner's progress and result, without torch: for tests that replace the engine with a fake runner."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from engine.media.imageio import png_bytes
from engine.spec.request import Request


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

    def png_bytes(self) -> bytes:
        """A PNG carrying the request in its metadata, like the engine's."""
        return png_bytes(self.image, {"engine_version": "fake", "request": self.request.to_metadata()})
