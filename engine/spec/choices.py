"""Which models a request may pick: ``[models] vqgan_choices`` and ``clip_choices``.

A CLIP choice is ``NAME/TAG`` (an open_clip model and its pretrained tag), ``NAME`` alone for the
configured local files, or an ensemble ``A/tag+B/tag``. No torch here: the bot checks choices too.
"""

from __future__ import annotations

from engine.config import ClipSpec, ModelsConfig, ModelSpec
from engine.errors import UserError, quoted


def vqgan_choices(cfg: ModelsConfig) -> list[str]:
    """The VQGAN presets offered (the configured one first)."""
    return list(dict.fromkeys([cfg.vqgan, *cfg.vqgan_choices]))


def clip_choices(cfg: ModelsConfig) -> list[str]:
    """The CLIP models and ensembles offered (the configured one first)."""
    configured = "+".join(c.choice() for c in cfg.spec().clips())
    return list(dict.fromkeys([configured, *cfg.clip_choices]))


def parse_clip_choice(choice: str, cfg: ModelsConfig) -> list[ClipSpec]:
    """``"A/tag+B/tag"`` -> one ``ClipSpec`` per model; the configured model keeps its local files."""
    configured = {c.choice(): c for c in cfg.spec().clips()}
    specs = []
    for part in (p.strip() for p in choice.split("+")):
        if not part:
            raise UserError(f"CLIP choice {quoted(choice)}: an empty model name")
        if part in configured:
            specs.append(configured[part])
            continue
        name, _, tag = part.partition("/")
        specs.append(ClipSpec(clip_model=name, clip_pretrained=tag or None))
    return specs


def with_choices(spec: ModelSpec, cfg: ModelsConfig, *, vqgan: str | None = None, clip: str | None = None,
                 weights: tuple[float, ...] = ()) -> ModelSpec:
    """``spec`` with the VQGAN and CLIP a user picked by name; a name not offered is refused with the list."""
    changes: dict = {}
    if vqgan is not None:
        offered = vqgan_choices(cfg)
        if vqgan not in offered:
            raise UserError(f"unknown model {quoted(vqgan)}; available: {', '.join(offered)}")
        if vqgan != cfg.vqgan or not (cfg.vqgan_config and cfg.vqgan_checkpoint):
            changes.update(vqgan=vqgan, vqgan_config=None, vqgan_checkpoint=None)
        else:
            changes.update(vqgan=cfg.vqgan, vqgan_config=cfg.vqgan_config, vqgan_checkpoint=cfg.vqgan_checkpoint)
    if clip is not None:
        offered = clip_choices(cfg)
        if clip not in offered:
            raise UserError(f"unknown CLIP model {quoted(clip)}; available: {', '.join(offered)}")
        changes.update(clip_spec(parse_clip_choice(clip, cfg), weights))
    return ModelSpec.model_validate({**spec.model_dump(), **changes})


def clip_spec(clips: list[ClipSpec], weights: tuple[float, ...] = ()) -> dict:
    """The ``ModelSpec`` fields for these CLIP models (the first one in the flat fields, for old readers)."""
    if weights and len(weights) != len(clips):
        raise UserError(f"give --clip-weight once per CLIP model ({len(clips)} models, {len(weights)} weights)")
    first = clips[0]
    return {**first.model_dump(), "more_clips": tuple(c.model_dump() for c in clips[1:]),
            "clip_weights": tuple(weights)}


def check_offered(spec: ModelSpec, cfg: ModelsConfig) -> None:
    """Refuse a request whose models are not among the choices (e.g. from an old PNG's metadata)."""
    if spec.vqgan_key() != cfg.spec().vqgan_key() and spec.vqgan not in vqgan_choices(cfg):
        raise UserError(f"unknown model {spec.vqgan!r}; available: {', '.join(vqgan_choices(cfg))}")
    offered = {c.key() for choice in clip_choices(cfg) for c in parse_clip_choice(choice, cfg)}
    for c in spec.clips():
        if c.key() not in offered:
            raise UserError(f"unknown CLIP model {c.choice()!r}; available: {', '.join(clip_choices(cfg))}")
