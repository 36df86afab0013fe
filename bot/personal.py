"""A person's /settings and styles applied to what they ask: options given in a command win over their
settings, their settings over ``config.toml``.

Settings are checked as the request itself checks them (``build_request``) when they are saved, and
again when they are used: a saved value this server no longer accepts (a model withdrawn, a lower
step limit) is left out of that request with a note, never refused. Styles (``/style``, the
``style:`` option, a prompt's ``--style NAME``) add their text to the prompt (``engine.with_style``),
then the settings' suffix is added. ``/imagine`` takes every setting; edits (``/edit``, replies,
mentions, the Edit form) and ``/zoom`` take the model, the CLIP and the suffix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.config import BotConfig
from bot.inputs import build_request, parse_size
from engine import Preferences, UserError, UserSettings, check_prompt_length, quoted, with_style

SHOWN_NAMES = 20  # style names listed in a refusal


def saved_fields(cfg: BotConfig, s: UserSettings, *, kinds: tuple[str, ...] = ("model", "clip", "size", "steps"),
                 strict: bool = False) -> tuple[dict[str, Any], list[str]]:
    """The request fields ``s`` gives, each checked as a request checks it; (fields, refusals of the
    ones left out). ``strict``: raise the first refusal instead (saving settings)."""
    wanted: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if "model" in kinds and s.model:
        wanted.append((f"model {quoted(s.model)}", lambda: {"model": s.model}))
    if "clip" in kinds and s.clip:
        wanted.append((f"CLIP {quoted(s.clip)}", lambda: {"clip": s.clip}))
    if "size" in kinds and (size := s.size):
        wanted.append((f"size {size[0]}x{size[1]}", lambda: {"width": size[0], "height": size[1]}))
    elif "size" in kinds and s.aspect:
        wanted.append((f"aspect {s.aspect}", lambda: dict(zip(("width", "height"), parse_size(cfg, None, s.aspect),
                                                              strict=True))))
    if "steps" in kinds and s.steps is not None:
        wanted.append((f"{s.steps} steps", lambda: {"steps": s.steps}))
    out: dict[str, Any] = {}
    left_out = []
    for what, make in wanted:
        try:
            fields = make()
            build_request(cfg, prompt="a test", **fields)
        except UserError as e:
            if strict:
                raise
            left_out.append(f"{what} ({e})")
            continue
        out.update(fields)
    return out, left_out


def check_settings(cfg: BotConfig, s: UserSettings, before: UserSettings | None = None) -> None:
    """Refuse settings a request would refuse, in its own words (one line). With ``before``, only what
    changed is checked: a value the server refuses since it was saved does not block changing another."""
    def changed(*names: str) -> bool:
        return before is None or any(getattr(s, n) != getattr(before, n) for n in names)

    kinds = tuple(k for k, names in (("model", ("model",)), ("clip", ("clip",)), ("size", ("size", "aspect")),
                                     ("steps", ("steps",))) if changed(*names))
    saved_fields(cfg, s, kinds=kinds, strict=True)
    if not changed("suffix"):
        return
    if len(s.suffix) >= cfg.limits.max_prompt_chars:
        raise UserError(f"the style suffix is {len(s.suffix)} characters; a prompt with it is at most "
                        f"{cfg.limits.max_prompt_chars}")
    if s.suffix:
        build_request(cfg, prompt=with_style("a test", s.suffix))


def notes(*lines: str | None) -> str | None:
    """A status message's notes, joined (None when there are none)."""
    return " · ".join(line for line in lines if line) or None


def unusable(cfg: BotConfig, s: UserSettings) -> str | None:
    """Which saved settings this server refuses now (left out of requests), as a note; None: all are used."""
    return _note(saved_fields(cfg, s)[1])


def _note(left_out: list[str]) -> str | None:
    return f"not used from your /settings: {'; '.join(left_out)}" if left_out else None


async def resolve_style(prefs: Preferences, user: int | str, guild: int | None, name: str) -> str:
    """The text of the style ``name`` means for ``user`` on server ``guild``; an unknown one is refused in
    one line naming the styles they have."""
    text = await prefs.style_text(user, guild, name)
    if text is not None:
        return text
    own, server = await prefs.styles(user, guild)
    names = list(dict.fromkeys(s.name for s in (*own, *server)))
    if not names:
        raise UserError(f"there is no style {quoted(name)}: save one with /style save")
    listed = ", ".join(names[:SHOWN_NAMES]) + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES
                                              else "")
    raise UserError(f"there is no style {quoted(name)}; yours: {listed}")


async def styled(prefs: Preferences, cfg: BotConfig, s: UserSettings, user: int | str, guild: int | None,
                 prompt: str, style: str | None) -> str:
    """``prompt`` with the style ``style`` names (if any), then the settings' suffix."""
    check_prompt_length(prompt, cfg.limits)  # the words as typed first: their own refusal
    out = with_style(prompt, await resolve_style(prefs, user, guild, style)) if style else prompt
    out = with_style(out, s.suffix) if s.suffix else out
    if len(out) > cfg.limits.max_prompt_chars:
        added = " and ".join(w for w, on in (("its style", style), ("your /settings suffix", s.suffix)) if on)
        raise UserError(f"with {added} the prompt is {len(out)} characters; the limit is "
                        f"{cfg.limits.max_prompt_chars}")
    return out


@dataclass(frozen=True)
class Personalised:
    """Each job's ``build_request`` fields with its asker's settings and style, and what the settings add
    to the whole ask."""

    jobs: list[dict[str, Any]]
    timelapse: bool = False
    grid: int | None = None  # the settings' grid count: /imagine's ``count`` when none is given (grids)
    note: str | None = None  # saved settings left out, and why


IMAGINE_KINDS = ("model", "clip", "size", "steps")  # what /imagine takes from the settings
PAINTING_KINDS = ("model", "clip")  # edits and zooms: their size and steps are their own


async def personalise(prefs: Preferences, cfg: BotConfig, jobs: list[dict[str, Any]], *, user: int,
                      guild: int | None, style: str | None = None, kinds: tuple[str, ...] = IMAGINE_KINDS,
                      timelapse: bool | None = None) -> Personalised:
    """``jobs`` (each job's fields: the command's options over the prompt's parameters, ``bot.inputs.
    job_fields``) with the saved settings beneath them: a setting is used only where the job has no
    value of its own (a size or an aspect given replaces the saved shape). Each prompt gets the style
    ``style`` names (the ``style:`` option), then the settings' suffix."""
    s = await prefs.settings(user)
    out, left = [], []
    for job in jobs:
        mine = tuple(k for k in kinds if job.get("width" if k == "size" else k) is None)
        fields, left_out = saved_fields(cfg, s, kinds=mine)
        left += [w for w in left_out if w not in left]
        merged = {**fields, **{k: v for k, v in job.items() if v is not None}}
        merged["prompt"] = await styled(prefs, cfg, s, user, guild, job.get("prompt") or "", style)
        out.append(merged)
    return Personalised(out, timelapse=s.timelapse if timelapse is None else timelapse, grid=s.grid,
                        note=_note(left))
