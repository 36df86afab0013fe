"""Describe a picture: prompts that CLIP finds close to it, built from the vocabularies.

Like the CLIP Interrogator's search, without its captioning model: each vocabulary (subject, medium, art
movement, artist, flavour; ``engine.method.vocabulary``) is ranked by the cosine similarity of its entries'
text embeddings with the picture's embedding. The search keeps a beam of ``n`` prompts (at least ``BEAM``), best
first: the best subjects, then, one slot at a time, each prompt with each of the best few mediums (movements,
artists) appended, every such full prompt scored by CLIP and the best kept. Up to ``MAX_FLAVOURS`` flavours are then
added the same way, a prompt keeping its place without one when no flavour brings it closer. Scoring whole
prompts, not words alone, is what makes the parts fit together (CLIP's text embedding is not a sum of words).
The score is the cosine similarity of the prompt's embedding with the picture's: higher is closer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from engine.errors import UserError
from engine.method.vocabulary import SLOTS, Vocabulary, embed_vocabulary, encode_in_batches, load_vocabularies

MAX_SUGGESTIONS = 10
BEAM = 4  # prompts the search keeps at least: asking for fewer gives the first of the same answer
CANDIDATES = 4  # of each of medium, movement and artist tried on every prompt of the beam
FLAVOUR_CANDIDATES = 6  # flavours tried on every prompt of the beam, each round
MAX_FLAVOURS = 3


class TextImage(Protocol):
    """What describing uses of a CLIP model (``engine.models.clip.Clip`` has it; tests give a fake)."""

    size: int

    @property
    def device(self) -> torch.device: ...
    def encode_text(self, texts: list[str]) -> torch.Tensor: ...
    def encode_image(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Suggestion:
    """A prompt for a picture and its parts; ``score``: CLIP's cosine similarity of the two."""

    prompt: str
    score: float
    subject: str
    medium: str
    movement: str
    artist: str  # as in the prompt: "by <name>"
    flavours: tuple[str, ...] = ()


def picture_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """What CLIP looks at (its usual preprocessing): the shorter side scaled to ``size`` (bicubic), the
    centre square, RGB in [0, 1] as a (1, 3, size, size) tensor. Transparency is shown over white."""
    if img.mode != "RGB":
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    scale = size / min(img.size)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def image_embedding(clip: TextImage, img: Image.Image) -> torch.Tensor:
    """The picture's unit embedding, (D,) on the CPU."""
    with torch.no_grad():
        out = clip.encode_image(picture_tensor(img, clip.size).to(clip.device))
    return out[0].detach().float().cpu()


def vocabulary_tables(clip: TextImage, vocabs: Mapping[str, Vocabulary], *, folder: Path | None = None,
                      model_id: str | None = None, dim: int | None = None,
                      on_compute: Callable[[Vocabulary], None] | None = None) -> dict[str, torch.Tensor]:
    """Each slot's text embeddings (cached in ``folder`` per model and list; see ``engine.method.vocabulary``)."""
    return {slot: embed_vocabulary(clip.encode_text, vocab, folder=folder, model_id=model_id, dim=dim,
                                   on_compute=on_compute)
            for slot, vocab in vocabs.items()}


@dataclass(frozen=True)
class _Prompt:
    parts: tuple[str, ...]  # subject, medium, movement, artist (as far as the search got)
    flavours: tuple[str, ...]
    score: float

    @property
    def text(self) -> str:
        return ", ".join((*self.parts, *self.flavours))

    def key(self) -> tuple[tuple[str, ...], frozenset[str]]:
        """Two prompts with the same parts and flavours are one suggestion, whatever the flavours' order."""
        return self.parts, frozenset(self.flavours)


class _Scorer:
    """Full prompts' similarity with the picture, each prompt encoded once, in batches."""

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], image: torch.Tensor) -> None:
        self.encode, self.image = encode, image
        self.known: dict[str, float] = {}

    def __call__(self, texts: list[str]) -> list[float]:
        new = list(dict.fromkeys(t for t in texts if t not in self.known))
        if new:
            sims = encode_in_batches(self.encode, new) @ self.image
            self.known.update(zip(new, (float(s) for s in sims), strict=True))
        return [self.known[t] for t in texts]


def _best(pool: list[_Prompt], n: int) -> list[_Prompt]:
    """The ``n`` best distinct prompts, best first (ties: the earlier, i.e. better-ranked, candidate)."""
    out: dict[tuple[tuple[str, ...], frozenset[str]], _Prompt] = {}
    for p in sorted(pool, key=lambda p: -p.score):
        out.setdefault(p.key(), p)
        if len(out) == n:
            break
    return list(out.values())


def _top(table: torch.Tensor, image: torch.Tensor, k: int) -> list[int]:
    sims = table @ image
    return sims.topk(min(k, len(sims))).indices.tolist()


def suggest(clip: TextImage, image: torch.Tensor, vocabs: Mapping[str, Vocabulary],
            tables: Mapping[str, torch.Tensor], n: int = 4) -> list[Suggestion]:
    """``n`` distinct prompts for the picture whose embedding is ``image`` (D,), best first."""
    if not 1 <= n <= MAX_SUGGESTIONS:
        raise UserError(f"ask for 1 to {MAX_SUGGESTIONS} suggestions (got {n})")
    want, n = n, max(n, BEAM)
    score = _Scorer(clip.encode_text, image)
    subjects = vocabs["subject"].texts
    sims = tables["subject"] @ image
    beam = [_Prompt((subjects[i],), (), float(sims[i])) for i in _top(tables["subject"], image, n)]
    for slot in ("medium", "movement", "artist"):
        texts = vocabs[slot].texts
        tried = [_Prompt((*p.parts, texts[i]), (), 0.0) for p in beam for i in _top(tables[slot], image, CANDIDATES)]
        scores = score([p.text for p in tried])
        beam = _best([_Prompt(p.parts, (), s) for p, s in zip(tried, scores, strict=True)], n)
    flavours = [vocabs["flavour"].texts[i] for i in _top(tables["flavour"], image, FLAVOUR_CANDIDATES)]
    for _ in range(MAX_FLAVOURS):
        tried = [_Prompt(p.parts, (*p.flavours, f), 0.0) for p in beam for f in flavours if f not in p.flavours]
        scores = score([p.text for p in tried])
        grown = _best(beam + [_Prompt(p.parts, p.flavours, s) for p, s in zip(tried, scores, strict=True)], n)
        if {p.key() for p in grown} == {p.key() for p in beam}:
            break  # no flavour brings any prompt closer
        beam = grown
    return [Suggestion(p.text, p.score, subject, medium, movement, artist, p.flavours)
            for p in _best(beam, want) for subject, medium, movement, artist in [p.parts]]


def describe(clip: TextImage, img: Image.Image, n: int = 4, *, vocabs: Mapping[str, Vocabulary] | None = None,
             folder: Path | None = None, model_id: str | None = None,
             on_compute: Callable[[Vocabulary], None] | None = None) -> list[Suggestion]:
    """``n`` suggested prompts for ``img``, best first; the vocabularies' embeddings are cached in ``folder``
    under ``model_id`` when both are given (computed afresh otherwise)."""
    vocabs = load_vocabularies() if vocabs is None else vocabs
    missing = [s for s in SLOTS if s not in vocabs]
    if missing:
        raise ValueError(f"no vocabulary for {', '.join(missing)}")
    image = image_embedding(clip, img)
    tables = vocabulary_tables(clip, vocabs, folder=folder, model_id=model_id, dim=image.shape[0],
                               on_compute=on_compute)
    return suggest(clip, image, vocabs, tables, n)
