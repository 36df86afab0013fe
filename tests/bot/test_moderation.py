"""Banned prompts: one private line for the asker, nothing queued or shown; the log channel hears of
every request and refusal, and a log channel that is gone costs no job."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bot.config import ModerationConfig
from tests.bot.conftest import (
    FakeRunner,
    job_of,
    make_config,
    png,
    run_bot,
    submitted,
    wait_ephemeral,
    wait_results,
)

REFUSED = "⚠️ this server does not allow that prompt"


def moderated(tmp_path, fake, *, discord: dict[str, Any] | None = None, **moderation: Any):
    """A test config with a ``[moderation]`` table."""
    cfg = make_config(tmp_path, fake, **(discord or {}))
    return cfg.model_copy(update={"moderation": ModerationConfig.model_validate(moderation)})


def public(fake, but=()) -> list:
    """The bot's messages everyone can see, outside the channels ``but``."""
    skip = {c.id for c in but}
    return [m for m in fake.bot_messages() if not m.ephemeral and not m.deleted and m.channel_id not in skip]


async def test_a_banned_prompt_is_refused_privately_everywhere_and_the_log_channel_hears_of_it(fake, tmp_path):
    log_ch = fake.add_channel("mod-log")
    cfg = moderated(tmp_path, fake, banned=["gore", "re:sp[i1]ders?"], log_channel=log_ch.id)
    runner = FakeRunner()
    async with run_bot(fake, cfg, runner) as bot:
        alice = fake.add_user("alice")
        picture = {"image": ("a.png", png((64, 64)), "image/png")}
        for name, options, attachments in [
            ("imagine", {"prompt": "a forest ^ ＧＯＲＥ everywhere"}, None),  # a story part, full-width letters
            ("zoom", {"prompt": "the land of sp1ders", "frames": 2}, None),
            ("edit", {"prompt": "a fur coat", "region": "go\u200bre"}, picture),  # the region, a zero-width space
            ("edit", {"prompt": "jacket -> Gore"}, picture),
        ]:
            inter = await fake.slash(alice, fake.channel, name, options, attachments=attachments)
            assert await wait_ephemeral(fake, inter) == REFUSED
            assert not inter.deferred and [m.ephemeral for m in inter.messages] == [True]

        # a reply to a picture, and the edit form
        upload = await fake.user_message(alice, fake.channel, "", attachments=[("u.png", png(), "image/png")])
        reply = await fake.user_message(alice, fake.channel, "make it gore", reply_to=upload)
        [notice] = await fake.wait_for(lambda: [m for m in fake.bot_messages() if m.reply_to == reply.id])
        assert notice.content == f"{REFUSED}" and "make it" not in notice.content
        menu = await fake.context_menu(alice, fake.channel, upload, "Edit with VQGAN")
        await menu.wait_response()
        field = menu.modal["components"][0]["components"][0]["custom_id"]
        form = await fake.modal_submit(alice, fake.channel, menu.modal["custom_id"], {field: "spiders -> kittens"})
        assert await wait_ephemeral(fake, form) == REFUSED

        lines = await fake.wait_for(lambda: len(fake.messages_in(log_ch)) >= 6 and fake.messages_in(log_ch))
        assert bot.refusals.counts() == {"moderation": 6}
        assert runner.calls == [] and bot.queue.pending() == [] and not bot.queue.jobs_of(str(alice.id))
        assert public(fake, but=[log_ch]) == [notice] and fake.threads() == []  # no status, thread or echo
        commands = ["/imagine", "/zoom", "/edit", "/edit", "reply", "edit form"]
        rules = ["`gore`", "`re:sp[i1]ders?`", "`gore`", "`gore`", "`gore`", "`re:sp[i1]ders?`"]
        for line, command, rule in zip(lines, commands, rules, strict=True):
            assert line.content.startswith(f"🚫 <@{alice.id}> · {command} · <#{fake.channel.id}> · refused")
            assert rule in line.content and "(config)" in line.content
            assert not any(w in line.content for w in ("forest", "land of", "fur coat", "make it", "kittens"))

        # an allowed request: one line with the prompt, the job and a link to its status message
        ok = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a quiet *lake*", "steps": 2})
        job = await submitted(fake, bot, ok)
        await wait_results(fake)
        line = (await fake.wait_for(lambda: len(fake.messages_in(log_ch)) >= 7 and fake.messages_in(log_ch)))[-1]
        head, prompt = line.content.split("\n")
        assert head.startswith(f"✅ <@{alice.id}> · /imagine · <#{fake.channel.id}> · job `{job.id}` · ")
        assert head.endswith(f"/channels/{fake.guild_id}/{fake.channel.id}/{ok.original.id}")
        assert prompt == r"> a quiet \*lake\*"
        posts = fake.requests_to("POST", rf"^/channels/{log_ch.id}/messages$")
        assert all(p.json["allowed_mentions"]["parse"] == [] for p in posts)  # names people, pings nobody
        assert bot.refusals.counts() == {"moderation": 6}


@pytest.mark.parametrize("trouble", ["deleted", "forbidden"])
async def test_a_log_channel_that_is_gone_or_unwritable_is_a_warning_not_a_failed_job(fake, tmp_path, caplog,
                                                                                     trouble):
    log_ch = fake.add_channel("mod-log")
    if trouble == "deleted":
        await fake.delete_channel(log_ch)
    else:
        fake.fail_next("POST", rf"^/channels/{log_ch.id}/messages$", status=403, count=10)
    cfg = moderated(tmp_path, fake, banned=["gore"], log_channel=log_ch.id)
    runner = FakeRunner()
    with caplog.at_level(logging.WARNING, logger="bot.modlog"):
        async with run_bot(fake, cfg, runner) as bot:
            alice = fake.add_user("alice")
            refused = await fake.slash(alice, fake.channel, "imagine", {"prompt": "gore"})
            assert await wait_ephemeral(fake, refused) == REFUSED
            inter = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a red barn", "steps": 2})
            [result] = await wait_results(fake)
            assert "a red barn" in result.content and (await job_of(fake, bot, result)).state == "finished"
            assert inter.original is not None
            await fake.wait_for(lambda: len(fake.requests_to("POST", rf"^/channels/{log_ch.id}/messages$")) >= 2)
    warnings = [r for r in caplog.records if "moderation log channel" in r.message]
    assert len(warnings) == 1 and str(log_ch.id) in warnings[0].message  # once, not once per line
    assert fake.messages_in(log_ch) == []
