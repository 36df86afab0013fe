"""Describing pictures for a front end (``python -m engine describe``, the bot's /describe): the configured
CLIP from the model cache, then ``engine.method.describe``.

``Describer.describe(image bytes, n)`` blocks for seconds (CLIP on every candidate prompt; a minute the first
time a model meets the vocabularies, whose embeddings are then cached on disk), so the bot calls it in a
thread. One picture is described at a time. Given the runner's ``ModelCache`` it shares the CLIP the jobs
use instead of loading a second copy. The first CLIP of an ensemble is the one that describes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import ClipSpec, Config, cache_dir
from engine.errors import UserError
from engine.method.describe import MAX_SUGGESTIONS, Suggestion, image_embedding, suggest, vocabulary_tables
from engine.method.vocabulary import Vocabulary, load_vocabularies

if TYPE_CHECKING:
    import torch

    from engine.models.loader import ModelCache

__all__ = ["Describer", "clip_identity", "MAX_SUGGESTIONS"]

DECODE_BOX = 1024  # a picture is shrunk to at most this while decoding: CLIP looks at 224 pixels


def clip_identity(spec: ClipSpec) -> str:
    """What names a CLIP model's text embeddings on disk: its cache key, the open_clip version (its
    tokenizer), and for model files their size and modification time (a replaced file is another model)."""
    import open_clip

    parts = [spec.key(), f"open_clip {open_clip.__version__}"]
    for p in (spec.clip_config, spec.clip_checkpoint, spec.clip_pretrained):
        path = Path(p).expanduser() if p else None
        if path is not None and path.is_file():
            st = path.stat()
            parts.append(f"{path.name} {st.st_size} {st.st_mtime_ns}")
    return "; ".join(parts)


class Describer:
    """Suggested prompts for pictures, with ``cfg``'s first CLIP model (loaded on first use)."""

    def __init__(self, cfg: Config, cache: ModelCache | None = None, *, device: str | None = None,
                 vocab_dir: Path | None = None, on_compute: Callable[[Vocabulary], None] | None = None) -> None:
        self.cfg = cfg
        self.spec = cfg.models.spec().clips()[0]
        self.device = device
        self.vocab_dir = vocab_dir  # own word lists (each missing file: the shipped one)
        self.folder = cache_dir(cfg.models) / "describe"  # beside the model files
        self.on_compute = on_compute  # told when a vocabulary's embeddings are computed (not cached yet)
        self._cache = cache
        self._lock = threading.Lock()
        self._vocabs: dict[str, Vocabulary] | None = None
        self._tables: dict[str, dict[str, torch.Tensor]] = {}  # model identity -> each slot's embeddings

    def describe(self, image: bytes | str | Path, n: int = 4) -> list[Suggestion]:
        """``n`` suggested prompts for the picture (its bytes or file), best first. ``UserError`` with one line
        for a picture that is not one, too big, or a model that cannot be had."""
        if not 1 <= n <= MAX_SUGGESTIONS:
            raise UserError(f"ask for 1 to {MAX_SUGGESTIONS} suggestions (got {n})")
        from engine.media.imageio import load_rgb

        lim = self.cfg.limits
        img = load_rgb(image, what="picture", max_bytes=lim.max_input_bytes, max_pixels=lim.max_input_pixels,
                       within=lambda w, h: (DECODE_BOX, DECODE_BOX))
        with self._lock:
            if self._vocabs is None:
                self._vocabs = load_vocabularies(self.vocab_dir)
            if self._cache is None:
                from engine.models.loader import ModelCache

                self._cache = ModelCache(self.cfg.models)
            clip = self._cache.clip(self.spec, self.device)
            model_id = clip_identity(self.spec)
            embedded = image_embedding(clip, img)
            tables = self._tables.get(model_id)
            if tables is None:
                tables = vocabulary_tables(clip, self._vocabs, folder=self.folder, model_id=model_id,
                                           dim=embedded.shape[0], on_compute=self.on_compute)
                self._tables = {model_id: tables}  # one model's tables are kept, the one describing
            return suggest(clip, embedded, self._vocabs, tables, n)
