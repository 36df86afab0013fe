"""Small pieces without a Discord: config, URLs, messages, images, command sync, the entry point."""

from __future__ import annotations

import io
import sys
from types import SimpleNamespace

import discord.asset
import discord.gateway
import discord.http
import pytest
from PIL import Image, PngImagePlugin

from bot.__main__ import main
from bot.access import Refused, check_access, is_moderator
from bot.config import BotConfig, DiscordConfig, load_bot_config
from bot.endpoints import cdn_url, gateway_for, point_at
from bot.images import fit_png
from bot.inputs import build_request, fit_request_size
from bot.uploads import decode_image
from engine.errors import BadImage, ConfigError, UserError
from tests.bot.conftest import FakeRunner, make_config, run_bot


def test_config_defaults_and_unknown_keys(tmp_path, monkeypatch):
    cfg = load_bot_config(None)
    assert cfg.discord.rerun_emoji == "🔁" and cfg.discord.filesize_limit == 10 * 1024 * 1024
    assert cfg.progress_every() == cfg.generation.progress_every
    p = tmp_path / "c.toml"
    p.write_text('[discord]\nguilds = [1, 2]\nprogress_every = 7\nallowed_roles = ["artists", 3]\n')
    cfg = load_bot_config(p)
    assert cfg.discord.guilds == [1, 2] and cfg.progress_every() == 7 and cfg.discord.allowed_roles == ["artists", 3]
    p.write_text("[discord]\nrerun_emoj = 'x'\n")
    with pytest.raises(ConfigError, match="discord.rerun_emoj: unknown key"):
        load_bot_config(p)
    monkeypatch.setenv("DISCORD_API_BASE", "http://127.0.0.1:9")
    assert load_bot_config(None).discord.api_base == "http://127.0.0.1:9"


def test_point_at_sets_every_url_and_back():
    saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.asset.Asset.BASE)
    try:
        point_at(DiscordConfig(api_base="https://proxy.example:8443/discord"))
        assert discord.http.Route.BASE == "https://proxy.example:8443/discord/api/v10"
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "wss://proxy.example:8443/discord/"
        assert discord.asset.Asset.BASE == "https://proxy.example:8443/discord"
        assert discord.http.Route("GET", "/webhooks/1/tok").url.startswith("https://proxy.example:8443/")
        point_at(DiscordConfig())
        assert discord.http.Route.BASE == "https://discord.com/api/v10"
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "wss://gateway.discord.gg/"
        assert discord.asset.Asset.BASE == "https://cdn.discordapp.com"
    finally:
        (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
         discord.asset.Asset.BASE) = saved


def test_cdn_urls_follow_the_api_base():
    d = DiscordConfig(api_base="http://127.0.0.1:5000")
    assert cdn_url("https://cdn.discordapp.com/attachments/1/2/a.png?ex=1", d) == \
        "http://127.0.0.1:5000/attachments/1/2/a.png?ex=1"
    assert cdn_url("https://example.org/a.png", d) == "https://example.org/a.png"
    assert cdn_url("https://cdn.discordapp.com/a.png", DiscordConfig()) == "https://cdn.discordapp.com/a.png"
    assert str(gateway_for(DiscordConfig(gateway_url="ws://x:1/gw"))) == "ws://x:1/gw"


def test_bad_fields_are_one_line_from_the_engines_formatter():
    with pytest.raises(UserError, match="the prompt is empty"):  # not a ValueError: pydantic lets it through
        build_request(BotConfig(), prompt="   ")
    with pytest.raises(UserError) as ei:
        build_request(BotConfig(), prompt="x", steps=0)
    assert str(ei.value) == "steps: must be at least 1"
    cfg = BotConfig()
    with pytest.raises(UserError, match="weight 0"):
        build_request(cfg, prompt="a:0")


def test_access_rules():
    cfg = BotConfig(discord=DiscordConfig(allowed_guilds=[1], allowed_channels=[10], allowed_roles=["art"],
                                          moderator_roles=[99]))
    role = SimpleNamespace(id=5, name="art")
    member = SimpleNamespace(roles=[role], guild_permissions=SimpleNamespace(administrator=False))
    check_access(cfg, guild_id=1, channel_id=10, member=member)
    check_access(cfg, guild_id=1, channel_id=11, parent_id=10, member=member)  # a thread of an allowed channel
    with pytest.raises(Refused, match="direct messages"):
        check_access(cfg, guild_id=None, channel_id=3, member=member)
    with pytest.raises(Refused, match="not enabled"):
        check_access(cfg, guild_id=2, channel_id=10, member=member)
    with pytest.raises(Refused, match="roles"):
        check_access(cfg, guild_id=1, channel_id=10, member=SimpleNamespace(roles=[], guild_permissions=None))
    assert not is_moderator(cfg, member, 1)
    assert is_moderator(cfg, SimpleNamespace(roles=[SimpleNamespace(id=99, name="m")], guild_permissions=None), 1)
    dm_ok = BotConfig(discord=DiscordConfig(allow_dms=True))
    check_access(dm_ok, guild_id=None, channel_id=3)


def test_fit_size_keeps_aspect_within_limits():
    cfg = BotConfig()
    w, h = fit_request_size(1920, 1080, cfg)
    assert w % 16 == 0 and h % 16 == 0 and abs(w / h - 16 / 9) < 0.15
    assert w * h <= cfg.limits.max_pixels


def test_decode_image_guards():
    cfg = BotConfig()
    buf = io.BytesIO()
    Image.new("RGB", (8000, 8000)).save(buf, format="PNG")
    with pytest.raises(BadImage, match="8000x8000"):
        decode_image(cfg.model_copy(update={"limits": cfg.limits.model_copy(update={"max_input_pixels": 10_000})}),
                     buf.getvalue())
    with pytest.raises(BadImage, match="not an image in a known format"):
        decode_image(cfg, b"\x89PNG\r\n\x1a\nbroken")


def test_fit_png_downscales_and_keeps_metadata():
    img = Image.effect_noise((256, 256), 100).convert("RGB")
    info = PngImagePlugin.PngInfo()
    info.add_text("request", '{"seed": 1}')
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    big = buf.getvalue()
    small = fit_png(big, len(big) // 3)
    assert len(small) <= len(big) // 3
    out = Image.open(io.BytesIO(small))
    assert out.text["request"] == '{"seed": 1}' and out.width < 256
    assert fit_png(big, len(big)) is big


def test_missing_token_is_one_line(monkeypatch, capsys):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DISCORD_TOKEN" in err


def test_bad_config_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DISCORD_TOKEN", "x")
    p = tmp_path / "c.toml"
    p.write_text("[discord]\nnope = 1\n")
    assert main(["--config", str(p)]) == 2
    assert "discord.nope: unknown key" in capsys.readouterr().err


def test_a_bad_discord_api_base_in_the_environment_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("DISCORD_TOKEN", "x")
    monkeypatch.setenv("DISCORD_API_BASE", "discord.example")  # no scheme
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "$DISCORD_API_BASE: discord.api_base: " in err and "http://" in err


def test_the_engine_reads_the_same_file_without_the_discord_table(tmp_path):
    from engine.config import Config, load_config

    p = tmp_path / "c.toml"
    p.write_text('[generation]\nsteps = 7\n[discord]\nrerun_emoji = "R"\n')
    engine, bot = load_config(p), load_bot_config(p)
    assert engine.generation.steps == bot.generation.steps == 7 and not hasattr(engine, "discord")
    assert bot.discord.rerun_emoji == "R" and isinstance(bot, Config)
    p.write_text('[generation]\nstepz = 7\n[discord]\nrerun_emoji = "R"\n')
    with pytest.raises(ConfigError, match=r"c.toml: generation.stepz: unknown key"):
        load_bot_config(p)
    p.write_text('discord = 3\n')
    with pytest.raises(ConfigError, match=r"c.toml: discord: "):
        load_bot_config(p)


def test_the_healthcheck_loads_neither_discord_nor_torch(tmp_path):
    import subprocess
    import time

    (tmp_path / "heartbeat").write_text(f"{time.time():.0f}\n")
    (tmp_path / "c.toml").write_text(f'[discord]\ndata_dir = "{tmp_path}"\n')
    code = ("import sys; from bot.health import main; rc = main(['--config', sys.argv[1]]); "
            "print(rc, sorted(m for m in ('discord', 'torch', 'aiohttp') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.toml")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split("\n")[-2] == "0 []"


async def test_commands_are_synced_only_when_changed(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    async with run_bot(fake, cfg, FakeRunner()):
        pass
    assert len(fake.command_syncs) == 1
    names = {c["name"] for c in fake.commands[None]}
    assert {"imagine", "edit", "queue", "cancel", "help", "Edit with VQGAN", "describe", "Describe"} <= names
    async with run_bot(fake, cfg, FakeRunner()):
        pass
    assert len(fake.command_syncs) == 1  # unchanged: not synced again
    guild_cfg = make_config(tmp_path, fake, guilds=[fake.guild_id])
    async with run_bot(fake, guild_cfg, FakeRunner()):
        pass
    assert len(fake.command_syncs) == 2 and fake.command_syncs[-1][0] == fake.guild_id


def test_bot_package_never_imports_torch():
    import subprocess

    code = ("import bot.app, bot.cogs.imagine, bot.cogs.gestures, bot.cogs.queue, bot.cogs.buttons, bot.timelapse, "
            "bot.cogs.describe, bot.suggestions, engine.media.timelapse, sys; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_old_uploads_are_pruned(tmp_path):
    import os
    import time

    from bot.uploads import prune_uploads

    cfg = BotConfig(discord=DiscordConfig(data_dir=str(tmp_path)))
    up = tmp_path / "uploads"
    up.mkdir()
    old, new = up / "old.png", up / "new.png"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    t = time.time() - (cfg.queue.keep_days + 1) * 86400
    os.utime(old, (t, t))
    assert prune_uploads(cfg) == 1 and not old.exists() and new.exists()


def test_discord_text_limits_fit_and_split():
    from bot import limits

    assert limits.fit("short", 100) == "short"
    assert limits.fit("x" * 150, 100) == "x" * 99 + "…"
    text = "\n\n".join(f"**Part {i}**\n" + "word " * 120 for i in range(6))
    pieces = limits.split(text, 2000)
    assert len(pieces) > 1 and all(len(p) <= 2000 for p in pieces)
    assert all(p.startswith("**Part") for p in pieces)  # broken between paragraphs
    assert "".join(text.split()) == "".join("".join(pieces).split())  # nothing lost
    assert limits.split("y" * 4500, 2000) == ["y" * 2000, "y" * 2000, "y" * 500]
    assert limits.split("") == [""]


def test_fit_cuts_a_text_to_discords_limit_counting_as_discord_may():
    from bot.limits import CONTENT, fit, length

    assert fit("a windmill", 10) == "a windmill" and fit("a windmill", 9) == "a windmi…"
    assert fit("a windmill at dusk", 12) == "a windmill…"  # no space left before the mark
    long = fit("🎨" * 1500, CONTENT)  # each one is two UTF-16 units: never cut in half
    assert length(long) <= CONTENT and long.endswith("…") and set(long[:-1]) == {"🎨"}
    assert fit("abc", 0) == "" and fit("abc", 1) == "…"
