"""Which models a request read from someone else's file (PNG metadata) may name: presets and ours.

Anything else (``hf-hub:someone/clip``, a local checkpoint) would make us fetch or unpickle what the
file's author chose. ``rerun`` and ``vary`` pass every request from metadata through ``trusted_models``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import ValidationError

from engine.config import ModelsConfig, ModelSpec
from engine.errors import UserError
from engine.models.registry import PRESETS
from engine.spec.choices import clip_choices, parse_clip_choice, vqgan_choices
from engine.spec.request import resolved_path, validation_message

__all__ = ["trusted_models", "untrusted_model"]


VQGAN_KEYS = ("vqgan", "vqgan_config", "vqgan_checkpoint")
CLIP_KEYS = ("clip_model", "clip_pretrained", "clip_config", "clip_checkpoint", "more_clips", "clip_weights")


def trusted_models(data: Any, cfg: ModelsConfig, *, source: str, replaced: Collection[str] = ()) -> dict[str, Any]:
    """The ``models`` of a request read from a file someone else may have written (PNG metadata).

    They may name only presets (VQGAN presets, open_clip's built-in pretrained pairs) and the models
    configured here; anything else (``hf-hub:someone/clip``, a local checkpoint) would make us fetch
    or unpickle what the file's author chose, so it is refused. ``replaced`` holds the groups
    ("vqgan", "clip") the command line sets itself: those are taken from the config instead, and
    the caller puts its own choice on top. The rule is ``untrusted_model``'s.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: the models in its metadata are not a JSON object")
    configured = cfg.spec().model_dump()
    out = dict(configured)
    for group, keys in (("vqgan", VQGAN_KEYS), ("clip", CLIP_KEYS)):
        if group not in replaced:
            out.update({k: data[k] for k in keys if k in data})
    if "clip" not in replaced and "clip_model" in data:  # metadata from before ensembles: its one CLIP alone
        out.update(more_clips=data.get("more_clips", ()), clip_weights=data.get("clip_weights", ()))
    try:
        spec = ModelSpec.model_validate(out)
    except ValidationError as e:
        raise UserError(f"{source}: models in its metadata: {validation_message(e)}") from None

    bad = untrusted_model(spec, cfg)
    if bad is None:
        return spec.model_dump(mode="json")
    key, name = bad
    hint = "give --{} to choose one yourself"
    if key == "vqgan":
        raise UserError(f"{source}: its metadata names the VQGAN {name!r}, which is neither a preset nor "
                        f"configured; {hint.format('vqgan')}")
    if key == "clip":
        raise UserError(f"{source}: its metadata names the CLIP model {name!r}, which is neither a preset nor "
                        f"configured; {hint.format('clip-model and --clip-pretrained')}")
    option = "vqgan-config/--vqgan-checkpoint" if key.startswith("vqgan") else "clip-config/--clip-checkpoint"
    raise UserError(f"{source}: its metadata names the model file {name!r}, which is not the configured "
                    f"one; {hint.format(option)}")


def untrusted_model(spec: ModelSpec, cfg: ModelsConfig) -> tuple[str, str] | None:
    """The first model ``spec`` names that we would not load for someone else, as (key, name), or None.

    Trusted are the presets (VQGAN presets, open_clip's built-in pretrained pairs) and what ``cfg``
    configures: its files (an ensemble's too), its VQGAN and CLIP choices. Anything else
    (``hf-hub:someone/clip``, a local checkpoint) would make us fetch or unpickle what the sender
    chose. ``key`` is a file's field (``vqgan_checkpoint``, ``clip_config``, ...) with its path as
    ``name``, or ``"vqgan"`` / ``"clip"`` with the model's name (``NAME/TAG`` for CLIP). The one rule
    for PNG metadata (``trusted_models``) and for the jobs a Redis worker is sent.
    """
    ours = cfg.spec().clips()  # a configured ensemble's local files are trusted too
    for key in ("vqgan_config", "vqgan_checkpoint"):
        value = getattr(spec, key)
        if value is not None and not _same_file(value, getattr(cfg, key)):
            return key, value
    for c in spec.clips():
        for key in ("clip_config", "clip_checkpoint"):
            value = getattr(c, key)
            if value is not None and not any(_same_file(value, getattr(o, key)) for o in ours):
                return key, value
    if spec.vqgan not in PRESETS and spec.vqgan not in vqgan_choices(cfg):
        return "vqgan", spec.vqgan
    offered = {(o.clip_model, o.clip_pretrained) for choice in clip_choices(cfg)
               for o in parse_clip_choice(choice, cfg)}
    for c in spec.clips():
        if c.clip_config and c.clip_checkpoint:
            continue  # the configured files, checked above
        clip = (c.clip_model, c.clip_pretrained)
        if clip not in offered and clip not in _clip_presets():
            return "clip", c.choice()
    return None


def _same_file(a: str, b: str | None) -> bool:
    if a == b:
        return True
    if b is None:
        return False
    resolved = resolved_path(a)
    return resolved is not None and resolved == resolved_path(b)


def _clip_presets() -> set[tuple[str, str | None]]:
    """open_clip's own (architecture, pretrained tag) pairs: names it knows, from hubs it chose."""
    import open_clip

    return {(a, t) for a, t in open_clip.list_pretrained()}
