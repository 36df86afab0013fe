"""Discord options (size, aspect, prompt, models) -> an engine ``Request``, refused in one line.

Checks run cheapest first so that most refusals are answered before the interaction is deferred:
access (``bot.access``), pending jobs (``bot.pending``), the request itself, then attachments
(``bot.uploads``).
"""

from __future__ import annotations

import inspect
import random
import re
from collections.abc import Awaitable, Callable
from typing import Any

from bot.access import Refused
from bot.config import BotConfig
from engine import (
    MAX_SEED,
    Planned,
    Request,
    aspect_size,
    check_limits,
    check_offered,
    check_prompt_length,
    plan,
    quoted,
    with_choices,
    with_style,
)

StyleLookup = Callable[[int, int | None, str], "str | None | Awaitable[str | None]"]
"""``styles(user_id, guild_id, name)``: the words of a style (``--style NAME``) that person may use
there, or None. The bot's is ``VQGANBot.styles``; without a settings store it knows none (``no_styles``)."""


def no_styles(user: int, guild: int | None, name: str) -> str | None:
    return None


ASPECTS: dict[str, tuple[int, int]] = {
    "square": (1, 1),
    "landscape": (3, 2),
    "wide": (16, 9),
    "portrait": (2, 3),
    "tall": (9, 16),
}


SIZE_RE = re.compile(r"^\s*(\d{2,5})\s*[x×*]\s*(\d{2,5})\s*$", re.I)


def fit_request_size(w: int, h: int, cfg: BotConfig) -> tuple[int, int]:
    """The aspect of ``w x h`` at the configured default pixel count, inside the limits, in 16s
    (the same rule as ``--ar``)."""
    return aspect_size((w, h), cfg.generation, cfg.limits)


def parse_size(cfg: BotConfig, size: str | None, aspect: str | None) -> tuple[int | None, int | None]:
    """``"512x384"`` or an aspect name -> width, height (``None`` = config default)."""
    if size:
        m = SIZE_RE.match(size)
        if not m:
            raise Refused(f"size {quoted(size)} should look like 512x384", kind="input")
        return int(m.group(1)), int(m.group(2))
    if aspect:
        if aspect not in ASPECTS:
            raise Refused(f"aspect should be one of {', '.join(ASPECTS)}", kind="input")
        return fit_request_size(*ASPECTS[aspect], cfg)
    return None, None


def read_prompt(cfg: BotConfig, text: str) -> list[Planned]:
    """What a person typed, as one ``Planned`` per job (its parameters read, a sweep expanded,
    ``--repeat``), refused in one line; the length is checked first, on all of it."""
    check_prompt_length(text, cfg.limits)
    return plan(text, cfg.limits)


async def job_fields(cfg: BotConfig, jobs: list[Planned], options: dict[str, Any], *, user: int,
                     guild: int | None, styles: StyleLookup = no_styles,
                     image_prompts: bool = False) -> list[dict[str, Any]]:
    """``build_request`` fields for each job: the parameters, then the command's options on top (an
    option wins over the parameter of the same name; ``seed`` goes up by one for each ``--repeat``).
    ``image_prompts``: whether the request has any (``--iw`` weighs them)."""
    base = random.randrange(MAX_SEED + 1)
    out = []
    for job in jobs:
        p = job.params
        fields: dict[str, Any] = {k: v for k, v in p.fields().items() if v is not None}
        first = options.get("seed") if options.get("seed") is not None else p.seed
        fields["seed"] = job.seed(first if first is not None else base)
        if p.aspect:
            fields["width"], fields["height"] = aspect_size(p.aspect, cfg.generation, cfg.limits)
        fields.update(model=p.model, clip=p.clip)
        if p.image_weight is not None:
            if not image_prompts:
                raise Refused("--iw weighs the image prompts, and there are none (attach an image_prompt)")
            fields["image_weight"] = p.image_weight
        prompt = p.prompt
        if p.style is not None:
            words = styles(user, guild, p.style)
            words = await words if inspect.isawaitable(words) else words
            if words is None:
                raise Refused(f"no style named {quoted(p.style)} here")
            prompt = with_style(prompt, words)
        fields["prompt"] = prompt
        fields.update({k: v for k, v in options.items() if v is not None and k != "seed"})
        out.append(fields)
    return out


def build_request(cfg: BotConfig, **fields: Any) -> Request:
    """``Request.from_config`` + ``check_limits``; both raise one-line ``UserError``s. ``image_weight``
    (``--iw``) is the weight of each image prompt that has none of its own."""
    check_prompt_length(fields.get("prompt") or "", cfg.limits)  # before parsing: a huge prompt is refused for its size
    weight = fields.pop("image_weight", None)
    if weight is not None and fields.get("image_prompts"):
        fields["image_prompts"] = [{"weight": weight, **ip} for ip in fields["image_prompts"]]
    model, clip = fields.pop("model", None), fields.pop("clip", None)
    if model is not None or clip is not None:  # chosen by name among [models] vqgan_choices / clip_choices
        fields["models"] = with_choices(cfg.models.spec(), cfg.models, vqgan=model, clip=clip).model_dump()
    req = Request.from_config(cfg, **fields)
    check_limits(req, cfg.limits)
    return req


def rerun_request(cfg: BotConfig, req: Request, seed: int) -> Request:
    """The same request with a new seed, validated again (limits may have changed since)."""
    new = req.with_changes(seed=seed)
    check_limits(new, cfg.limits)
    check_offered(new.models, cfg.models)  # the operator may have withdrawn a model since
    return new
