"""Smoke tests: a plain discord.py Bot against tests.fakediscord (no project code involved)."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakediscord import FakeDiscord
from tests.fakediscord.fixtures import fake_discord  # noqa: F401  (fixture)


def png_bytes(w: int = 4, h: int = 3) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * w for _ in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


class SmokeBot(commands.Bot):
    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(command_prefix="!", intents=intents)
        self.seen_messages: list[discord.Message] = []
        self.seen_reactions: list[discord.RawReactionActionEvent] = []

        @app_commands.command(name="paint", description="paint a picture")
        @app_commands.describe(prompt="what to paint")
        async def paint(interaction: discord.Interaction, prompt: str, steps: int = 10) -> None:
            await interaction.response.defer(thinking=True)
            await asyncio.sleep(0.05)
            await interaction.followup.send(
                f"{prompt} x{steps}", file=discord.File(io.BytesIO(png_bytes()), "out.png")
            )

        self.tree.add_command(paint)

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        if message.author.id != self.user.id:
            self.seen_messages.append(message)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.user_id != self.user.id:
            self.seen_reactions.append(payload)


async def test_connect_ready_and_sync(fake_discord: FakeDiscord):  # noqa: F811
    bot = SmokeBot()
    async with fake_discord.running(bot):
        guild = bot.get_guild(fake_discord.guild_id)
        assert guild is not None and guild.name == "Test Guild"
        assert bot.user.id == fake_discord.bot_user.id == bot.application_id
        channel = guild.get_channel(fake_discord.channel.id)
        perms = channel.permissions_for(guild.me)
        assert (
            perms.send_messages and perms.attach_files and perms.create_public_threads and perms.add_reactions
        )
        assert len(fake_discord.command_syncs) == 1
        scope, cmds = fake_discord.command_syncs[0]
        assert scope is None and [c["name"] for c in cmds] == ["paint"]
        assert fake_discord.identifies[0]["intents"] & (1 << 15)
        assert not fake_discord.unknown_routes


async def test_slash_defer_then_followup_with_file(fake_discord: FakeDiscord):  # noqa: F811
    bot = SmokeBot()
    user = fake_discord.add_user("alice", roles=["artist"])
    async with fake_discord.running(bot):
        inter = await fake_discord.slash(user, fake_discord.channel, "paint", {"prompt": "a cat", "steps": 3})
        assert inter.data["options"][1] == {"name": "steps", "type": 4, "value": 3}
        cb = await inter.wait_response(timeout=3)
        assert cb.type == 5 and inter.deferred and inter.first_response_delay < 3
        [msg] = await inter.wait_followups(1)
        assert msg is inter.original and not msg.loading  # first followup fills the "thinking" message
        assert msg.content == "a cat x3"
        [att] = msg.attachments
        assert (
            att.filename == "out.png"
            and att.content_type == "image/png"
            and (att.width, att.height) == (4, 3)
        )
        async with aiohttp.ClientSession() as s, s.get(att.url) as r:
            assert r.status == 200 and await r.read() == png_bytes()


async def test_thread_png_message_reaction_and_user_messages(fake_discord: FakeDiscord):  # noqa: F811
    bot = SmokeBot()
    user = fake_discord.add_user("bob")
    async with fake_discord.running(bot):
        channel = bot.get_channel(fake_discord.channel.id)
        root = await channel.send("starting a job")
        thread = await root.create_thread(name="job 1")
        assert thread.id == root.id and fake_discord.thread_for(root.id).name == "job 1"
        await fake_discord.wait_for(lambda: bot.get_channel(thread.id))  # THREAD_CREATE arrived
        sent = await thread.send("done", file=discord.File(io.BytesIO(png_bytes(8, 8)), "final.png"))
        [stored] = fake_discord.messages_in(thread.id)
        assert stored.id == sent.id and stored.attachments[0].data == png_bytes(8, 8)
        assert await sent.attachments[0].read() == png_bytes(8, 8)  # through discord.py's CDN fetch

        umsg = await fake_discord.user_message(user, thread.id, "nice!", reply_to=stored)
        got = await fake_discord.wait_for(lambda: [m for m in bot.seen_messages if m.id == umsg.id])
        assert (
            got[0].content == "nice!"
            and got[0].channel.id == thread.id
            and got[0].reference.message_id == sent.id
        )

        await fake_discord.react(user, stored, "🎨")
        [ev] = await fake_discord.wait_for(lambda: bot.seen_reactions)
        assert (ev.message_id, ev.user_id, str(ev.emoji), ev.member.id) == (sent.id, user.id, "🎨", user.id)

        await sent.add_reaction("✅")
        assert stored.reactions["✅"] == [fake_discord.bot_user.id]

        fake_discord.message_content = False
        hidden = await fake_discord.user_message(user, channel.id, "secret")
        got = await fake_discord.wait_for(lambda: [m for m in bot.seen_messages if m.id == hidden.id])
        assert got[0].content == ""


async def test_rate_limit_is_retried(fake_discord: FakeDiscord):  # noqa: F811
    bot = SmokeBot()
    async with fake_discord.running(bot):
        fake_discord.fail_next("POST", r"^/channels/\d+/messages$", status=429, retry_after=0.2)
        msg = await bot.get_channel(fake_discord.channel.id).send("after 429")
        posts = fake_discord.requests_to("POST", r"^/channels/\d+/messages$")
        assert [r.status for r in posts] == [429, 200]
        assert fake_discord.message(msg.id).content == "after 429"


async def test_faults_deleted_thread_denied_threads_expired_token(fake_discord: FakeDiscord):  # noqa: F811
    bot = SmokeBot()
    async with fake_discord.running(bot):
        channel = bot.get_channel(fake_discord.channel.id)
        root = await channel.send("x")
        thread = await root.create_thread(name="t")
        await fake_discord.delete_channel(thread.id)
        with pytest.raises(discord.NotFound) as ei:
            await thread.send("gone")
        assert ei.value.code == 10003
        fake_discord.deny_threads(channel.id)
        root2 = await channel.send("y")
        with pytest.raises(discord.Forbidden) as ei:
            await root2.create_thread(name="t2")
        assert ei.value.code == 50013
        await fake_discord.delete_message(root2)
        with pytest.raises(discord.NotFound) as ei:
            await channel.fetch_message(root2.id)
        assert ei.value.code == 10008

        await fake_discord.set_permissions(channel.id, deny=["attach_files"])  # bot overwrite + CHANNEL_UPDATE
        await fake_discord.wait_for(lambda: not channel.permissions_for(channel.guild.me).attach_files)
        with pytest.raises(discord.Forbidden):
            await channel.send(file=discord.File(io.BytesIO(png_bytes()), "x.png"))

        user = fake_discord.add_user("carol")
        inter = await fake_discord.slash(user, channel.id, "paint", {"prompt": "p"})
        await inter.wait_followups(1)
        fake_discord.expire_tokens()
        wh = discord.Webhook.partial(fake_discord.app_id, inter.token, client=bot)
        with pytest.raises(discord.HTTPException) as ei:
            await wh.send("late", wait=True)
        assert ei.value.status == 401 and ei.value.code == 50027


async def test_restart_second_client_connects(fake_discord: FakeDiscord):  # noqa: F811
    async with fake_discord.running(SmokeBot()) as bot1:
        await bot1.get_channel(fake_discord.channel.id).send("before restart")
    bot2 = SmokeBot()
    async with fake_discord.running(bot2):
        assert len(fake_discord.identifies) == 2 and len(fake_discord.command_syncs) == 2
        user = fake_discord.add_user("dave")
        umsg = await fake_discord.user_message(user, fake_discord.channel, "hello again")
        await fake_discord.wait_for(lambda: [m for m in bot2.seen_messages if m.id == umsg.id])
        history = [m async for m in bot2.get_channel(fake_discord.channel.id).history(limit=10)]
        assert [m.content for m in history] == ["hello again", "before restart"]


async def test_gateway_resume_after_drop(fake_discord: FakeDiscord):  # noqa: F811
    bot = SmokeBot()
    user = fake_discord.add_user("erin")
    async with fake_discord.running(bot):
        await fake_discord.drop_gateway(4000)
        await fake_discord.wait_for(lambda: fake_discord.resumes and fake_discord.connected, timeout=10)
        umsg = await fake_discord.user_message(user, fake_discord.channel, "after resume")
        await fake_discord.wait_for(lambda: [m for m in bot.seen_messages if m.id == umsg.id])
        assert len(fake_discord.identifies) == 1


class EditModal(discord.ui.Modal, title="Edit"):
    prompt = discord.ui.TextInput(label="prompt", custom_id="prompt")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"edit: {self.prompt.value}", ephemeral=True)


class MenuBot(SmokeBot):
    def __init__(self, guild_id: int) -> None:
        super().__init__()
        self.guild_obj = discord.Object(id=guild_id)

        @app_commands.context_menu(name="Edit image")
        async def edit_image(interaction: discord.Interaction, message: discord.Message) -> None:
            await interaction.response.send_modal(EditModal(custom_id="edit-modal"))

        @app_commands.command(name="upscale", description="upscale")
        async def upscale(interaction: discord.Interaction, image: discord.Attachment, factor: float) -> None:
            data = await image.read()
            await interaction.response.send_message(
                f"{image.filename} {factor}", file=discord.File(io.BytesIO(data), "up.png")
            )
            msg = await interaction.original_response()
            await msg.edit(
                content="replaced", attachments=[discord.File(io.BytesIO(png_bytes(2, 2)), "v2.png")]
            )

        self.tree.add_command(edit_image)
        self.tree.add_command(upscale, guild=self.guild_obj)

    async def setup_hook(self) -> None:
        await self.tree.sync()
        await self.tree.sync(guild=self.guild_obj)


async def test_context_menu_modal_attachment_option_and_edit(fake_discord: FakeDiscord):  # noqa: F811
    bot = MenuBot(fake_discord.guild_id)
    user = fake_discord.add_user("frank")
    async with fake_discord.running(bot):
        assert fake_discord.gateway_queries[0]["compress"] == "zlib-stream"
        assert [s for s, _ in fake_discord.command_syncs] == [None, fake_discord.guild_id]
        target = await fake_discord.user_message(user, fake_discord.channel, "an image")

        inter = await fake_discord.context_menu(user, fake_discord.channel, target, "Edit image")
        await inter.wait_response()
        assert inter.modal["custom_id"] == "edit-modal"
        sub = await fake_discord.modal_submit(user, fake_discord.channel, "edit-modal", {"prompt": "bluer"})
        await sub.wait_response()
        assert sub.original.content == "edit: bluer" and sub.original.ephemeral

        up = await fake_discord.slash(
            user,
            fake_discord.channel,
            "upscale",
            {"factor": 2},
            attachments={"image": ("in.png", png_bytes(), "image/png")},
        )
        assert up.data["guild_id"] == str(fake_discord.guild_id)
        assert {o["name"]: o["type"] for o in up.data["options"]} == {"factor": 10, "image": 11}
        await fake_discord.wait_for(lambda: up.original and up.original.edited_at)
        msg = up.original
        assert msg.content == "replaced" and [a.filename for a in msg.attachments] == ["v2.png"]
        assert msg.attachments[0].data == png_bytes(2, 2)
        assert not fake_discord.unknown_routes


async def test_two_guilds_each_with_its_own_owner_roles_members_and_emoji(fake_discord: FakeDiscord):  # noqa: F811
    b = fake_discord.add_guild("Other Guild")  # before the bot connects: in READY
    pat = fake_discord.add_user("pat", roles=["Patron"])
    fake_discord.join(pat, b, roles=["Patron", "mods"])  # same names, other roles
    wave = fake_discord.add_emoji("wave", animated=True, guild=b)
    bot = SmokeBot()
    async with fake_discord.running(bot):
        ga, gb = bot.get_guild(fake_discord.guild_id), bot.get_guild(b.id)
        assert ga is not None and gb is not None and gb.owner_id == b.owner_id != fake_discord.owner.id
        in_a, in_b = await ga.fetch_member(pat.id), await gb.fetch_member(pat.id)
        assert {r.name for r in in_a.roles[1:]} == {"Patron"} and {r.name for r in in_b.roles[1:]} == {"Patron", "mods"}
        assert {r.id for r in in_a.roles[1:]}.isdisjoint(r.id for r in in_b.roles[1:])
        assert [str(e) for e in gb.emojis] == [str(wave)] and str(wave).startswith("<a:wave:")
        c = fake_discord.add_guild("Joined Later")
        await fake_discord.wait_for(lambda: bot.get_guild(c.id))
        b_general = fake_discord.channels_of(b)[0]
        inter = await fake_discord.slash(fake_discord.users[b.owner_id], b_general, "paint", {"prompt": "x"})
        [msg] = await inter.wait_followups(1)
        assert msg.guild_id == b.id and inter.payload["guild_id"] == str(b.id)
        assert inter.payload["member"]["permissions"] == str((1 << 53) - 1)  # B's owner, in B
        with pytest.raises(ValueError, match="not a member"):
            await fake_discord.slash(pat, fake_discord.channels_of(c)[0], "paint", {"prompt": "x"})
