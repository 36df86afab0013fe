"""Helpers for the web server's tests: a server where people have painted, and their gallery links."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.app import VQGANBot
from tests.bot.conftest import wait_ephemeral, wait_results
from tests.fakediscord import FakeDiscord, User

LINK = re.compile(r"<(http://[^>]+/gallery/[^>]+)>")


@dataclass
class World:
    alice: User
    bob: User
    mod: User
    jobs: dict[str, Any]  # prompt -> job


PROMPTS = (("alice", "a red fox in the snow"), ("bob", "bob's secret garden"), ("alice", "a blue jay <b>& friends</b>"))


async def paint(fake: FakeDiscord, bot: VQGANBot) -> World:
    """alice paints two pictures, bob one, on the fake's server; ``mod`` holds the role "mods"."""
    people = {"alice": fake.add_user("alice"), "bob": fake.add_user("bob")}
    mod = fake.add_user("mod", roles=["mods"])
    for n, (who, prompt) in enumerate(PROMPTS, 1):
        await fake.slash(people[who], fake.channel, "imagine", {"prompt": prompt, "steps": 4})
        await wait_results(fake, n)  # one at a time: a known order
    jobs = {j.request.prompt: j for j in (bot.queue.get(x.id) for x in bot.queue.results())}
    return World(people["alice"], people["bob"], mod, jobs)


async def gallery_links(fake: FakeDiscord, user: User) -> list[str]:
    """The links /gallery gives ``user`` (shown to them alone)."""
    inter = await fake.slash(user, fake.channel, "gallery")
    return LINK.findall(await wait_ephemeral(fake, inter))
