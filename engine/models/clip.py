"""CLIP through open_clip: by name + pretrained tag, or from a local model-config JSON + weights.

OpenAI's weights were trained with QuickGELU; open_clip's built-in configs use GELU, so we
take ``quick_gelu`` from the pretrained tag's own record (a silent mismatch degrades CLIP badly).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.pretrained import get_pretrained_cfg
from torch import nn

from engine.errors import ModelFileMissing, UserError
from engine.models.checkpoint import load_checkpoint
from engine.models.fetch import FetchError, fetch
from engine.models.registry import clip_weights, hub_offline


class ClipModule(Protocol):
    """What is used of an open_clip ``CLIP``/``CustomTextCLIP`` (an ``nn.Module``): open_clip has no
    type hints, and ``nn.Module``'s own attribute lookup types ``encode_image`` as a tensor."""

    visual: nn.Module

    def encode_image(self, image: torch.Tensor) -> torch.Tensor: ...
    def encode_text(self, text: torch.Tensor) -> torch.Tensor: ...
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...
    def to(self, device: torch.device | str) -> Any: ...


@dataclass
class Clip:
    """A CLIP model with its tokenizer and input normalisation; embeddings are L2-normalised."""

    model: ClipModule
    tokenizer: Any
    size: int
    mean: tuple[float, ...]  # per RGB channel
    std: tuple[float, ...]

    def to(self, device: torch.device | str) -> Clip:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.new_tensor(self.mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] at ``size`` x ``size`` -> unit embeddings (N, D)."""
        return F.normalize(self.model.encode_image(self.normalize(x)).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


def _image_size(model: ClipModule) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def wrap_clip(model: nn.Module, tokenizer: Any, preprocess: dict[str, Any] | None = None) -> Clip:
    """An open_clip model as a ``Clip``: frozen, with its input size and normalisation."""
    pre = preprocess or getattr(model.visual, "preprocess_cfg", None) or {}
    mean = tuple(float(v) for v in pre.get("mean", OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in pre.get("std", OPENAI_DATASET_STD))
    clip = cast(ClipModule, model.eval().requires_grad_(False))  # an open_clip CLIP (untyped)
    return Clip(clip, tokenizer, _image_size(clip), mean, std)


def config_json(name: str) -> Path:
    """Where open_clip keeps the model config JSON for ``name`` (for ``--clip-config``)."""
    return Path(open_clip.__file__).parent / "model_configs" / f"{name}.json"


def clip_weights_path(name: str, pretrained: str, cache_dir: str | os.PathLike[str]) -> Path:
    """The weights file of ``name``/``pretrained``: cached, else downloaded now. One line when that fails.

    The download goes through ``engine.models.fetch`` (one try per URL, resumable, atomic), not
    huggingface_hub, whose retries take a minute and print dozens of lines when there is no network.
    """
    w = clip_weights(name, pretrained, (Path(cache_dir),))
    if w.cached_path is not None:
        return w.cached_path
    if not w.downloads:
        raise UserError(f"unknown CLIP weights {name}/{pretrained}; see open_clip.list_pretrained()")
    (url, dest), reasons = w.downloads[0], []
    if hub_offline():
        reasons.append("the Hugging Face hub (HF_HUB_OFFLINE is set)")
    else:
        for u, d in w.downloads:
            try:
                return fetch(u, d, label=f"CLIP {name}/{pretrained} {d.name}",
                             max_size=2 * w.approx_size if w.approx_size else None)
            except FetchError as e:
                reasons.append(str(e).split(" from ", 1)[-1].split("; download it yourself")[0])  # "URL (why)"
                if "HTTP 404" not in str(e):  # only a file the hub lacks is worth asking for another name
                    break
    raise ModelFileMissing(
        f"could not download CLIP {name}/{pretrained} weights from {', '.join(reasons)}; download {url} "
        f"yourself and save it as {dest} (the model's config JSON is {config_json(name)})"
    )


def load_clip_pretrained(name: str, pretrained: str | None, cache_dir: str | None = None) -> Clip:
    """An open_clip model by name with a pretrained tag's weights (fetched into ``cache_dir`` if missing)."""
    pcfg = get_pretrained_cfg(name, pretrained or "") or {}
    quick_gelu = bool(pcfg.get("quick_gelu", False))
    weights: str | None = None
    if ":" in name:  # "hf-hub:org/repo": open_clip fetches config and weights itself
        weights = pretrained
    elif pretrained:
        if Path(pretrained).expanduser().is_file():
            weights = str(Path(pretrained).expanduser())
        else:
            if name not in open_clip.list_models():
                raise UserError(f"unknown CLIP model {name!r}; see open_clip.list_models()")
            weights = str(clip_weights_path(name, pretrained, cache_dir or Path.home() / ".cache" / "clip"))
    try:
        model = open_clip.create_model(name, pretrained=weights, force_quick_gelu=quick_gelu, cache_dir=cache_dir)
    except RuntimeError as e:
        if "not found" in str(e) and "config" in str(e).lower():
            raise UserError(f"unknown CLIP model {name!r}; see open_clip.list_models()") from None
        raise ModelFileMissing(f"could not load CLIP weights {weights} for {name} ({e}); "
                               "delete the file to download it again") from None
    preprocess = {k: pcfg[k] for k in ("mean", "std") if k in pcfg} or None
    return wrap_clip(model, open_clip.get_tokenizer(name), preprocess)


def load_clip_files(config_path: str | Path, checkpoint_path: str | Path) -> Clip:
    """Build from an open_clip model-config JSON and load a state dict (.safetensors or .pt)."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise ModelFileMissing(f"CLIP config not found: {config_path}")
    try:
        cfg = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{config_path}: not valid JSON: {e}") from None
    preprocess = cfg.pop("preprocess_cfg", None)
    cfg = cfg.get("model_cfg", cfg)  # hf-hub style open_clip_config.json nests the model config
    text_cfg = cfg.get("text_cfg", {})
    custom = cfg.pop("custom_text", False) or "hf_model_name" in text_cfg
    cls = open_clip.CustomTextCLIP if custom else open_clip.CLIP
    model = cls(**cfg)
    sd = load_checkpoint(checkpoint_path)
    sd = sd.get("state_dict", sd)
    sd = {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise UserError(f"{checkpoint_path}: weights do not match {config_path.name}: "
                        f"{str(e).splitlines()[1] if len(str(e).splitlines()) > 1 else e}") from None
    tokenizer = open_clip.SimpleTokenizer(context_length=text_cfg.get("context_length", 77))
    return wrap_clip(model, tokenizer, preprocess)
