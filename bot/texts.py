"""What the bot says about a job: its heading, status lines, thread name, captions.

Delivery, the buttons and the queue commands all word a job the same way, from here. Texts that repeat a
person's words are escaped (no mentions, no markdown) and cut to fit.
"""

from __future__ import annotations

import discord

from bot.limits import THREAD_NAME, fit
from engine import MAX_SEED, Job, Request


def short_prompt(prompt: str, n: int = 180) -> str:
    p = discord.utils.escape_mentions(discord.utils.escape_markdown(prompt.replace("\n", " ")))
    return p if len(p) <= n else p[: n - 1] + "…"


def thread_name(prompt: str) -> str:
    name = fit(" ".join(prompt.split()), THREAD_NAME, "").strip()
    return name or "vqgan"


def describe_request(r: Request) -> str:
    if r.zoom is not None:
        z = r.zoom
        return (f"🎞️ zoom **{short_prompt(r.prompt)}** · seed `{r.seed}` · {z.frames} frames x "
                f"{z.steps_per_frame} steps · {r.width}x{r.height}")
    kind = {"edit": "✏️ edit", "vary": "🎲 variation", "upscale": "✨ upscale"}.get(r.kind, "🎨")
    where = f"*{short_prompt(r.region, 80)}* → " if r.region else ""
    grid = f" · grid of {r.grid}" if r.grid > 1 else ""
    return (f"{kind} {where}**{short_prompt(r.prompt)}** · seed `{r.seed}`{grid} · {r.steps} steps · "
            f"{r.width}x{r.height}")


def result_facts(r: Request, width: int, height: int, seconds: float) -> str:
    """The line under a result: seed (a grid's seeds), steps, size painted (a grid's: each picture's), time."""
    if r.grid > 1:
        last = (r.seed + r.grid - 1) % (MAX_SEED + 1)
        return (f"grid of {r.grid} · seed `{r.seed}`…`{last}` · {r.steps} steps · {width}x{height} each · "
                f"{seconds:.1f} s")
    made = f"{r.zoom.frames} frames x {r.zoom.steps_per_frame} steps" if r.zoom else f"{r.steps} steps"
    return f"seed `{r.seed}` · {made} · {width}x{height} · {seconds:.1f} s"


def result_hint(r: Request, rerun_emoji: str, vary_emoji: str) -> str:
    """What can be done with a result, in small print."""
    if r.grid > 1:
        return f"-# U: upscale that picture, V: a variation of it; react {rerun_emoji} for a new grid"
    return f"-# react {rerun_emoji} to paint it again with a new seed, {vary_emoji} for a variation"


def status_text(job: Job, line: str, note: str | None = None) -> str:
    extra = f"\n-# {note}" if note else ""
    return f"{describe_request(job.request)}\n{line}{extra}\n-# job `{job.id}` · by <@{job.owner}>"


def position_line(position: int | None) -> str:
    """Queue positions count from 1 = next to run."""
    if not position or position <= 1:
        return "⏳ next in line"
    return f"⏳ queued: #{position} in line"
