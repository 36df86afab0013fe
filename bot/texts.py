"""What the bot says about a job: its heading, status lines, thread name, captions.

Delivery, the buttons and the queue commands all word a job the same way, from here. Texts that repeat a
person's words are escaped (no mentions, no markdown) and cut to fit.
"""

from __future__ import annotations

import os

import discord

from bot.limits import THREAD_NAME, fit
from engine import MAX_SEED, Job, Lane, ModelSpec, Request

RELAX = "🐢 you are over today's GPU time: this job waits in the relax lane (it runs when no other job waits; /usage)"


def short_prompt(prompt: str, n: int = 180) -> str:
    p = discord.utils.escape_mentions(discord.utils.escape_markdown(prompt.replace("\n", " ")))
    return p if len(p) <= n else p[: n - 1] + "…"


def request_words(r: Request, n: int = 180) -> str:
    """A request's prompt as shown to people; a blend of pictures alone (no words) says so."""
    return short_prompt(r.prompt, n) if r.prompt else f"{len(r.image_prompts)} images blended"


def thread_name(prompt: str) -> str:
    name = fit(" ".join(prompt.split()), THREAD_NAME, "").strip()
    return name or "vqgan"


def models_text(m: ModelSpec) -> tuple[str, str]:
    """A request's VQGAN and CLIP as people read them: preset names, or local files by name only (never
    where they are on the server); an ensemble's CLIP models with their weights."""
    base = os.path.basename
    vqgan = (f"{base(m.vqgan_config)} + {base(m.vqgan_checkpoint)}" if m.vqgan_config and m.vqgan_checkpoint
             else m.vqgan)
    names = [f"{base(c.clip_config)} + {base(c.clip_checkpoint)}" if c.clip_config and c.clip_checkpoint
             else f"{c.clip_model}" + (f" ({c.clip_pretrained})" if c.clip_pretrained else "") for c in m.clips()]
    weights = m.weights()
    clip = names[0] if len(names) == 1 else " + ".join(f"{n} ×{w:g}" for n, w in zip(names, weights, strict=True))
    return vqgan, clip


def describe_request(r: Request) -> str:
    if r.zoom is not None:
        z = r.zoom
        return (f"🎞️ zoom **{request_words(r)}** · seed `{r.seed}` · {z.frames} frames x "
                f"{z.steps_per_frame} steps · {r.width}x{r.height}")
    kind = {"edit": "✏️ edit", "vary": "🎲 variation", "outpaint": "🔍 zoom out / pan",
            "upscale": "✨ upscale"}.get(r.kind, "🎨")
    where = f"*{short_prompt(r.region, 80)}* → " if r.region else ""
    tile = {"x": " · tiles left to right", "xy": " · tiles"}.get(r.tile, "")
    grid = f" · grid of {r.grid}" if r.grid > 1 else ""
    return (f"{kind} {where}**{request_words(r)}** · seed `{r.seed}`{grid} · {r.steps} steps · "
            f"{r.width}x{r.height}{tile}")


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


def position_line(position: int | None, lane: Lane = "fast") -> str:
    """Queue positions count from 1 = next to run; a job in the relax lane says why it waits."""
    line = "⏳ next in line" if not position or position <= 1 else f"⏳ queued: #{position} in line"
    return f"{line}\n{RELAX}" if lane == "relax" else line
