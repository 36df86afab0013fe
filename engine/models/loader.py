"""Load models once and keep them: an LRU of loaded VQGANs and CLIPs, bounded by config.

A job naming another model loads it; the least recently used one is dropped when more than
``models.max_loaded`` of a kind are held. Safe to call from the worker thread.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.config import ClipSpec, ModelsConfig, cache_dir
from engine.errors import ModelFileMissing, UserError
from engine.models.clip import Clip, load_clip_files, load_clip_pretrained
from engine.models.vqgan import VQGAN, load_vqgan
from engine.spec.request import ModelSpec


@dataclass
class Models:
    vqgan: VQGAN
    clip: Clip
    device: torch.device
    dtype: torch.dtype | None = None  # autocast dtype for decoder and CLIP; None = full fp32
    more_clips: tuple[Clip, ...] = ()  # an ensemble: the CLIP models after ``clip``
    weights: tuple[float, ...] = ()  # each CLIP model's weight in the prompt loss; () = just ``clip``, weight 1

    def clips(self) -> list[tuple[Clip, float]]:
        """Every CLIP model with its weight, ``clip`` first."""
        models = [self.clip, *self.more_clips]
        weights = list(self.weights) or [1.0 / len(models)] * len(models)
        return list(zip(models, weights, strict=True))

    def key(self) -> tuple[int, str, str]:
        """Jobs whose models share this key can be stepped together."""
        return id(self.vqgan), "+".join(str(id(c)) for c, _ in self.clips()), str(self.device)


# ``models.precision`` -> the autocast dtype of the decoder and CLIP (None: full fp32).
_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype ``Models.dtype`` holds for a ``models.precision`` setting."""
    return _AUTOCAST[precision]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from engine.errors import UserError

        raise UserError("--device cuda was asked for, but no CUDA GPU is available")
    return torch.device(name)


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[str, Any] = OrderedDict()

    def get(self, key: str, make: Callable[[], Any]) -> Any:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = make()
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return value


def fetch_missing(spec: ModelSpec, cache: Path, progress: bool = True, *, vqgan: bool = True) -> None:
    """Download every model file ``spec`` needs that is not on disk yet (``vqgan=False``: its CLIP's only).

    Each file is tried, and one ``ModelFileMissing`` names all that failed (file, URLs, where to
    save it), so that someone without a network learns everything to copy in one go.
    """
    from engine.models.clip import clip_weights_path
    from engine.models.registry import fetch_checkpoint

    problems: list[str] = []
    if vqgan and spec.vqgan_config and spec.vqgan_checkpoint:
        problems += [f"model file not found: {p}" for p in (spec.vqgan_config, spec.vqgan_checkpoint)
                     if not Path(p).expanduser().is_file()]
    elif vqgan:  # a preset: its config ships with the package, only the checkpoint may be missing
        try:
            fetch_checkpoint(spec.vqgan, cache, progress)
        except ModelFileMissing as e:
            problems.append(str(e))
    if spec.clip_config and spec.clip_checkpoint:
        problems += [f"model file not found: {p}" for p in (spec.clip_config, spec.clip_checkpoint)
                     if not Path(p).expanduser().is_file()]
    elif (spec.clip_pretrained and ":" not in spec.clip_model
          and not Path(spec.clip_pretrained).expanduser().is_file()):
        try:
            clip_weights_path(spec.clip_model, spec.clip_pretrained, cache / "open_clip")
        except ModelFileMissing as e:
            problems.append(str(e))
    if not problems:
        return
    from engine.models.availability import downloaded

    here = f"; downloaded here: {downloaded(cache)}"  # what would work now, offline
    if len(problems) == 1:
        raise ModelFileMissing(problems[0] + here)
    raise ModelFileMissing(f"{len(problems)} model files are missing: "
                           + " ".join(f"({i}) {p};" for i, p in enumerate(problems, 1)).rstrip(";") + here)


class ModelCache:
    def __init__(self, cfg: ModelsConfig) -> None:
        self.cfg = cfg
        self._vqgans = _LRU(cfg.max_loaded)
        self._clips = _LRU(cfg.max_loaded)
        self._lock = threading.Lock()

    def _make_vqgan(self, spec: ModelSpec, device: torch.device) -> VQGAN:
        if spec.vqgan_config and spec.vqgan_checkpoint:
            config, ckpt = Path(spec.vqgan_config), Path(spec.vqgan_checkpoint)
        else:
            from engine.models.registry import ensure_preset

            config, ckpt = ensure_preset(spec.vqgan, cache_dir(self.cfg))
        return load_vqgan(config, ckpt).to(device)

    def _make_clip(self, spec: ClipSpec, device: torch.device) -> Clip:
        if spec.clip_config and spec.clip_checkpoint:
            clip = load_clip_files(spec.clip_config, spec.clip_checkpoint)
        else:
            clip = load_clip_pretrained(spec.clip_model, spec.clip_pretrained,
                                        cache_dir=str(cache_dir(self.cfg) / "open_clip"))
        return clip.to(device)

    def loaded(self) -> list[str]:
        """The models held now (for ``python -m engine fleet``)."""
        return [*self._vqgans.items, *self._clips.items]

    def missing(self, spec: ModelSpec, device: torch.device | str | None = None) -> list[str]:
        """The models of ``spec`` not loaded now (a job's status says it is loading them)."""
        dev = resolve_device(self.cfg.device) if device is None else torch.device(device)
        out = [] if f"{spec.vqgan_key()}@{dev}" in self._vqgans.items else [f"VQGAN {spec.vqgan}"]
        return out + [f"CLIP {c.choice()}" for c in spec.clips() if f"{c.key()}@{dev}" not in self._clips.items]

    def clip(self, spec: ClipSpec, device: torch.device | str | None = None) -> Clip:
        """One CLIP model alone (describing a picture needs no VQGAN): the same LRU entry as jobs using it."""
        dev = resolve_device(self.cfg.device) if device is None else torch.device(device)
        key = f"{spec.key()}@{dev}"
        with self._lock:
            if key not in self._clips.items:
                fetch_missing(ModelSpec(**spec.model_dump()), cache_dir(self.cfg), vqgan=False)
            clip: Clip = self._clips.get(key, functools.partial(self._make_clip, spec, dev))
        return clip

    def get(self, spec: ModelSpec, device: torch.device | str | None = None) -> Models:
        dev = resolve_device(self.cfg.device) if device is None else torch.device(device)
        clips = spec.clips()
        if len(clips) > self._clips.size:
            raise UserError(f"{len(clips)} CLIP models at once, but models.max_loaded is {self._clips.size}")
        with self._lock:
            if self.missing(spec, dev):
                for c in clips:
                    fetch_missing(spec.model_copy(update=c.model_dump()), cache_dir(self.cfg))
            vqgan = self._vqgans.get(f"{spec.vqgan_key()}@{dev}", lambda: self._make_vqgan(spec, dev))
            loaded: list[Clip] = [self._clips.get(f"{c.key()}@{dev}", functools.partial(self._make_clip, c, dev))
                                  for c in clips]
        return Models(vqgan, loaded[0], dev, autocast_dtype(self.cfg.precision), tuple(loaded[1:]),
                      tuple(spec.weights()) if len(loaded) > 1 else ())
