"""/describe and the "Describe" context menu against the fake Discord, with the tiny CLIP: the suggested
prompts, a Paint button under each that queues it as the presser's /imagine job (also after a restart), and
one-line refusals."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from bot.app import VQGANBot
from engine import Describer
from engine.config import Config
from engine.queue import JobQueue
from tests.bot.conftest import FakeRunner, job_of, make_config, png, submitted, wait_ephemeral, wait_results

WORDS = {"subjects.txt": "a cat\na lighthouse on a cliff\na bowl of fruit\na red barn\na ship at sea\n",
         "media.txt": "an oil painting\na watercolor painting\na pencil sketch\n",
         "movements.txt": "romanticism\ncubism\n", "artists.txt": "J. M. W. Turner\nClaude Monet\n",
         "flavours.txt": "dramatic lighting\nmisty\nneon lights\n"}
SUGGESTION = re.compile(r"^\*\*(\d)\.\*\* `([^`]+)` · (\d\.\d{3})$")


@pytest.fixture
def words(tmp_path: Path) -> Path:
    folder = tmp_path / "words"
    folder.mkdir()
    for name, entries in WORDS.items():
        (folder / name).write_text(entries)
    return folder


class HeldDescriber(Describer):
    """The real describer, held at the start of each picture until the test lets it go."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.entered, self.go = threading.Event(), threading.Event()

    def describe(self, image, n=4):
        self.entered.set()
        assert self.go.wait(20)
        return super().describe(image, n)


def start(fake, cfg, describer: Describer | None, runner=None):
    return fake.running(VQGANBot(cfg, JobQueue(cfg, runner=runner or FakeRunner()), describer=describer))


def suggestions(message) -> list[tuple[str, float]]:
    found = [m for line in message.content.splitlines() if (m := SUGGESTION.match(line))]
    assert [int(m[1]) for m in found] == list(range(1, len(found) + 1))
    return [(m[2], float(m[3])) for m in found]


def paint_buttons(message) -> list[str]:
    return [c["custom_id"] for row in message.components for c in row.get("components", [])]


async def answer_of(fake, inter):
    await inter.wait_response()
    assert inter.first_response_delay < 3.0
    return await fake.wait_for(lambda: inter.original is not None and suggestions(inter.original) and inter.original,
                               timeout=30)


async def test_describe_answers_with_prompts_and_a_button_that_paints_each_also_after_a_restart(
        fake, tmp_path, tiny_cfg: Config, words):
    cfg = make_config(tmp_path, fake, tiny_cfg)
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    runner = FakeRunner()
    async with start(fake, cfg, Describer(cfg, vocab_dir=words), runner) as bot:
        inter = await fake.slash(alice, fake.channel, "describe",
                                 attachments={"image": ("harbour.png", png((48, 32), (40, 80, 160)), "image/png")})
        answer = await answer_of(fake, inter)
        shown = suggestions(answer)
        assert len(shown) == 4 and len(answer.content) <= 2000 and not answer.ephemeral
        assert [s for _, s in shown] == sorted((s for _, s in shown), reverse=True)
        assert all(p.split(", ")[0] in WORDS["subjects.txt"] and ", by " in p for p, _ in shown)
        assert paint_buttons(answer) == [f"vqgan-describe:{n}" for n in (1, 2, 3, 4)]

        press = await fake.button_click(bob, fake.message(answer.id), "vqgan-describe:2")
        job = await submitted(fake, bot, press)
        assert press.first_response_delay < 3.0
        assert (job.request.prompt, job.request.kind, job.owner) == (shown[1][0], "imagine", str(bob.id))
        [result] = await wait_results(fake)
        assert shown[1][0] in result.content and (await job_of(fake, bot, result)).id == job.id

    async with start(fake, cfg, Describer(cfg, vocab_dir=words)) as bot:  # nothing stored: read from the message
        press = await fake.button_click(alice, fake.message(answer.id), "vqgan-describe:1")
        job = await submitted(fake, bot, press)
        assert (job.request.prompt, job.owner) == (shown[0][0], str(alice.id))
        assert (await job_of(fake, bot, (await wait_results(fake, 2))[1])).id == job.id


async def test_the_context_menu_describes_a_messages_first_picture_and_refusals_are_one_line(
        fake, tmp_path, tiny_cfg: Config, words):
    cfg = make_config(tmp_path, fake, tiny_cfg)
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    held = HeldDescriber(cfg, vocab_dir=words)
    held.go.set()
    async with start(fake, cfg, held):
        notes = await fake.slash(alice, fake.channel, "describe", attachments={"image": ("notes.txt", b"hi", "text/plain")})
        said = await wait_ephemeral(fake, notes)
        assert "notes.txt" in said and "\n" not in said and not [m for m in notes.messages if not m.ephemeral]

        fake_png = await fake.slash(alice, fake.channel, "describe",
                                    attachments={"image": ("lies.png", b"not a picture at all", "image/png")})
        said = await wait_ephemeral(fake, fake_png, timeout=20)
        assert "not an image" in said and "\n" not in said

        text_only = await fake.user_message(alice, fake.channel, "just words")
        said = await wait_ephemeral(fake, await fake.context_menu(alice, fake.channel, text_only, "Describe"))
        assert said == "⚠️ that message has no image to describe; pick one with a picture"

        upload = await fake.user_message(alice, fake.channel, "what is this?", attachments=[
            ("notes.txt", b"hello", "text/plain"), ("sea.png", png((32, 32), (20, 60, 200)), "image/png")])
        held.go.clear()
        held.entered.clear()
        menu = await fake.context_menu(alice, fake.channel, upload, "Describe")
        await fake.wait_for(lambda: held.entered.is_set(), timeout=20)
        queue = await fake.slash(bob, fake.channel, "queue")  # CLIP at work in its thread: the bot still answers
        await queue.wait_response()
        held.go.set()
        answer = await answer_of(fake, menu)
        assert len(suggestions(answer)) == 4 and len(paint_buttons(answer)) == 4

    async with start(fake, cfg, None):  # as with queue.backend = "redis": no describer in the bot's process
        inter = await fake.slash(alice, fake.channel, "describe",
                                 attachments={"image": ("sea.png", png(), "image/png")})
        said = await wait_ephemeral(fake, inter)
        assert "queue.backend" in said and "\n" not in said
