"""Discord options (size, aspect, prompt, models) -> an engine ``Request``, refused in one line.

Checks run cheapest first so that most refusals are answered before the interaction is deferred:
access (``bot.access``), pending jobs (``bot.pending``), the request itself, then attachments
(``bot.uploads``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from bot.access import Refused
from bot.config import BotConfig
from engine import (
    Request,
    check_limits,
    check_offered,
    check_prompt_length,
    fit_size,
    quoted,
    with_choices,
)

if TYPE_CHECKING:
    pass



ASPECTS: dict[str, tuple[int, int]] = {
    "square": (1, 1),
    "landscape": (3, 2),
    "wide": (16, 9),
    "portrait": (2, 3),
    "tall": (9, 16),
}


SIZE_RE = re.compile(r"^\s*(\d{2,5})\s*[x×*]\s*(\d{2,5})\s*$", re.I)




def fit_request_size(w: int, h: int, cfg: BotConfig) -> tuple[int, int]:
    """The aspect of ``w x h`` at the configured default pixel count, inside the limits, in 16s."""
    g, lim = cfg.generation, cfg.limits
    return fit_size(w, h, lim.max_width, lim.max_height, lim.max_pixels,
                           target_pixels=min(g.width * g.height, lim.max_pixels))


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


def build_request(cfg: BotConfig, **fields: Any) -> Request:
    """``Request.from_config`` + ``check_limits``; both raise one-line ``UserError``s."""
    check_prompt_length(fields.get("prompt") or "", cfg.limits)  # before parsing: a huge prompt is refused for its size
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
