"""Fixtures for the bot's end-to-end tests: a fake Discord, a config, a fake or tiny-model runner."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord.asset
import discord.gateway
import discord.http
import pytest
from PIL import Image

from bot.app import VQGANBot
from bot.config import BotConfig
from engine.config import Config
from engine.queue import JobQueue
from tests.fakediscord import FakeDiscord, Message
from tests.fakes import FakeRunner  # noqa: F401  (the bot tests take the one fake runner from here)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """A running fake Discord; discord.py's global URLs are restored afterwards."""
    saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.asset.Asset.BASE)
    async with FakeDiscord() as server:
        try:
            yield server
            assert not server.unknown_routes, f"routes the fake does not know: {server.unknown_routes}"
        finally:
            (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
             discord.asset.Asset.BASE) = saved


def make_config(tmp_path: Path, fake: FakeDiscord, base: Config | None = None, *,
                queue: dict[str, Any] | None = None, limits: dict[str, Any] | None = None,
                http: dict[str, Any] | None = None, gallery: dict[str, Any] | None = None,
                **discord_section: Any) -> BotConfig:
    """A BotConfig for one test: its own SQLite file and data dir, pointed at ``fake``; ``http`` and
    ``gallery`` are those tables (the web server and the gallery; off when not given)."""
    data: dict[str, Any] = base.model_dump() if base is not None else {
        "generation": {"steps": 4, "width": 64, "height": 64, "cutouts": 4, "progress_every": 2},
    }
    data.pop("discord", None)
    data["queue"] = {**data.get("queue", {}), "db_path": str(tmp_path / "jobs.sqlite3"),
                     "results_dir": str(tmp_path / "results"), **(queue or {})}
    if limits:
        data["limits"] = {**data.get("limits", {}), **limits}
    data["discord"] = {"api_base": fake.api_base, "data_dir": str(tmp_path / "discord"),  # one picture a job
                       "progress_interval_s": 0.0, "notice_delete_after_s": 0.0, "grid": 1, **discord_section}
    for name, table in (("http", http), ("gallery", gallery)):
        if table is not None:
            data[name] = table
    return BotConfig.model_validate(data)


GALLERY_SECRET = "a test secret of 32 characters.."


def web_config(tmp_path: Path, fake: FakeDiscord, *, gallery: bool | dict[str, Any] = True,
               http: dict[str, Any] | None = None, **kw: Any) -> BotConfig:
    """``make_config`` with the web server on a free 127.0.0.1 port and, unless ``gallery=False``, the gallery
    (``gallery``: more of its keys)."""
    from tests.fleet import free_port

    table = {"enabled": True, "secret": GALLERY_SECRET, **(gallery if isinstance(gallery, dict) else {})}
    return make_config(tmp_path, fake, http={"port": free_port(), **(http or {})},
                       gallery=table if gallery else None, **kw)


def web_url(cfg: BotConfig, path: str = "") -> str:
    return f"http://{cfg.http.host}:{cfg.http.port}{path}"


# ------------------------------------------------------------------ a fake engine: tests.fakes.FakeRunner


# ------------------------------------------------------------------ helpers


@contextlib.asynccontextmanager
async def run_bot(fake: FakeDiscord, cfg: BotConfig, runner: Any = None) -> AsyncIterator[VQGANBot]:
    bot = VQGANBot(cfg, JobQueue(cfg, runner=runner))
    async with fake.running(bot) as b:
        yield b


def png(size: tuple[int, int] = (32, 32), colour: tuple[int, int, int] = (200, 40, 40), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 255).save(buf, format="PNG")
    return buf.getvalue()


def results(fake: FakeDiscord) -> list[Message]:
    """The bot's final result posts (an image + the seed line), oldest first."""
    return sorted((m for m in fake.bot_messages() if m.attachments and "seed `" in m.content
                   and m.attachments[0].filename.startswith("vqgan-")), key=lambda m: m.id)


def progress_posts(fake: FakeDiscord) -> list[Message]:
    return [m for m in fake.bot_messages() if m.attachments and m.attachments[0].filename.startswith("progress-")]


async def wait_results(fake: FakeDiscord, n: int = 1, timeout: float = 20.0) -> list[Message]:
    return await fake.wait_for(lambda: len(results(fake)) >= n and results(fake), timeout)


async def job_of(fake: FakeDiscord, bot: VQGANBot, result: Message) -> Any:
    """The job behind a posted result (annotated just after posting, so wait for it)."""
    return await fake.wait_for(lambda: bot.queue.find(result_message_id=result.id))


async def submitted(fake: FakeDiscord, bot: VQGANBot, inter: Any) -> Any:
    """The job an /imagine or /edit interaction queued, once it is queued."""
    return await fake.wait_for(  # generous: a loaded 2-core machine answers late, a quick one at once
        lambda: inter.original is not None and bot.queue.find(status_message_id=inter.original.id), timeout=20)


def ephemeral_text(fake: FakeDiscord, inter: Any) -> str:
    """The text of an interaction's ephemeral answer (callback or followup)."""
    for cb in inter.responses:
        if cb.data and cb.data.get("flags", 0) & 64:
            return cb.data.get("content", "")
    for m in inter.followups:
        if m.ephemeral:
            return m.content
    return ""


async def wait_ephemeral(fake: FakeDiscord, inter: Any, timeout: float = 5.0) -> str:
    return await fake.wait_for(lambda: ephemeral_text(fake, inter), timeout)


async def settle(seconds: float = 0.2) -> None:
    await asyncio.sleep(seconds)
