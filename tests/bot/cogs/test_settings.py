"""/settings (bot/cogs/settings.py): a person's defaults, set on a private panel, paint their /imagine."""

from __future__ import annotations

import sqlite3

from bot.origin import Origin
from tests.bot.conftest import FakeRunner, make_config, png, run_bot, submitted, wait_ephemeral, wait_results

FORM = "vqgan-settings:form"


def _config(tmp_path, fake, **limits):
    cfg = make_config(tmp_path, fake, queue={"per_owner_pending": 10}, limits=limits or None)
    models = {**cfg.models.model_dump(), "vqgan_choices": ["wikiart_16384"]}
    return cfg.model_validate({**cfg.model_dump(), "models": models})


def controls(message) -> dict[str, dict]:
    """The panel's menus and buttons by what they set (``vqgan-settings:<what>``)."""
    return {c["custom_id"].split(":")[1]: c for row in message.components for c in row.get("components", [])}


async def open_panel(fake, user):
    inter = await fake.slash(user, fake.channel, "settings")
    assert (await inter.wait_response()).type == 4 and inter.first_response_delay < 3.0
    assert inter.original.ephemeral
    return inter.original


async def pick(fake, user, panel, menu: str, value: str):
    inter = await fake.select(user, fake.message(panel.id), f"vqgan-settings:{menu}", [value])
    assert (await inter.wait_response()).type == 7  # the panel, changed in place
    return fake.message(panel.id)


async def fill_form(fake, user, panel, **values: str):
    press = await fake.button_click(user, fake.message(panel.id), f"vqgan-settings:{'form'}")
    assert (await press.wait_response()).type == 9 and press.modal["custom_id"] == FORM
    fields = {c["custom_id"]: c for row in press.modal["components"] for c in row["components"]}
    assert set(values) <= set(fields)
    answer = {k: values.get(k, fields[k].get("value") or "") for k in fields}
    return await fake.modal_submit(user, fake.channel, FORM, answer, message=fake.message(panel.id))


async def test_saved_settings_paint_imagine_an_option_given_wins_and_they_survive_a_restart(fake, tmp_path):
    cfg = _config(tmp_path, fake)
    runner = FakeRunner(delay=0)
    async with run_bot(fake, cfg, runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        panel = first_panel = await open_panel(fake, alice)
        assert {"model", "aspect", "form", "timelapse", "reset"} <= set(controls(panel))
        assert "clip" not in controls(panel)  # one CLIP offered: nothing to choose
        panel = await pick(fake, alice, panel, "model", "wikiart_16384")
        panel = await pick(fake, alice, panel, "aspect", "wide")
        assert "model: `wikiart_16384`" in panel.content and "size: `wide`" in panel.content
        sent = await fill_form(fake, alice, panel, steps="6", suffix="oil  painting")
        assert (await sent.wait_response()).type == 7
        panel = fake.message(panel.id)
        assert "steps: `6`" in panel.content and "**oil painting**" in panel.content
        press = await fake.button_click(alice, panel, "vqgan-settings:timelapse")
        assert (await press.wait_response()).type == 7 and "Timelapse: on" in str(fake.message(panel.id).components)

        mine = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a castle"})
        job = await submitted(fake, bot, mine)
        theirs = await fake.slash(bob, fake.channel, "imagine", {"prompt": "a castle"})
        given = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a castle", "steps": 2, "aspect": "square",
                                                                 "model": "imagenet_f16_16384", "timelapse": False})
        await wait_results(fake, 3)
        painted = {(c.models.vqgan, c.steps, c.width > c.height, c.prompt): c for c in runner.calls}
        assert set(painted) == {
            ("wikiart_16384", 6, True, "a castle, oil painting"),  # alice's settings
            ("imagenet_f16_16384", 4, False, "a castle"),  # bob: the server's defaults
            ("imagenet_f16_16384", 2, False, "a castle, oil painting"),  # alice's options win; her suffix stays
        }
        explicit = painted[("imagenet_f16_16384", 2, False, "a castle, oil painting")]
        assert (explicit.width, explicit.height) == (64, 64)
        assert Origin.read(job.origin).timelapse is True
        assert Origin.read(bot.queue.find(status_message_id=given.original.id).origin).timelapse is None
        assert Origin.read(bot.queue.find(status_message_id=theirs.original.id).origin).timelapse is None

    # a restart (and a lower step limit since): the settings are still hers; the one now refused is left out
    runner2 = FakeRunner(delay=0)
    async with run_bot(fake, _config(tmp_path, fake, max_steps=5), runner2) as bot:
        panel = await open_panel(fake, alice)
        assert "model: `wikiart_16384`" in panel.content and "steps: `6`" in panel.content
        assert "⚠️ not used from your /settings: 6 steps" in panel.content  # said on the panel too
        again = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a keep"})
        await submitted(fake, bot, again)
        await fake.wait_for(lambda: len(runner2.calls) == 1)
        req = runner2.calls[0]
        assert req.models.vqgan == "wikiart_16384" and req.prompt == "a keep, oil painting" and req.steps == 4
        assert "not used from your /settings: 6 steps (steps must be between 1 and 5" in again.original.content
        old_panel = await pick(fake, alice, first_panel, "aspect", "tall")  # a panel from before the restart
        assert "size: `tall`" in old_panel.content and "model: `wikiart_16384`" in old_panel.content


async def test_settings_are_checked_as_a_request_and_reset_forgets_them(fake, tmp_path):
    runner = FakeRunner(delay=0)
    async with run_bot(fake, _config(tmp_path, fake), runner):
        alice = fake.add_user("alice")
        panel = await open_panel(fake, alice)
        for values, expect in (({"steps": "5000"}, "steps must be between 1 and 1000 (got 5000)"),
                               ({"steps": "many"}, "steps should be a whole number (got 'many')"),
                               ({"size": "4000x4000"}, "size 4000x4000 is over the limit"),
                               ({"size": "big"}, "size 'big' should look like 512x384"),
                               ({"suffix": "x" * 600}, "the style suffix is 600 characters; a prompt with it is at most 500")):
            sent = await fill_form(fake, alice, panel, **values)
            line = await wait_ephemeral(fake, sent)
            assert expect in line and "\n" not in line, (values, line)
        assert "default" in fake.message(panel.id).content and "steps: `default (4)`" in fake.message(panel.id).content

        sent = await fill_form(fake, alice, panel, size="48x32", steps="2")
        await sent.wait_response()
        panel = fake.message(panel.id)
        assert "size: `48x32`" in panel.content
        assert next(o for o in controls(panel)["aspect"]["options"] if o.get("default"))["value"] == "size"
        reset = await fake.button_click(alice, panel, "vqgan-settings:reset")
        assert (await reset.wait_response()).type == 7
        assert "size: `default (64x64)`" in fake.message(panel.id).content
        await fake.slash(alice, fake.channel, "imagine", {"prompt": "a reset"})
        await wait_results(fake)
        assert (runner.calls[0].width, runner.calls[0].height, runner.calls[0].steps) == (64, 64, 4)


async def test_an_edit_by_reply_takes_the_saved_model_and_suffix_but_not_the_steps(fake, tmp_path):
    runner = FakeRunner(delay=0)
    async with run_bot(fake, _config(tmp_path, fake), runner):
        alice = fake.add_user("alice")
        panel = await pick(fake, alice, await open_panel(fake, alice), "model", "wikiart_16384")
        await (await fill_form(fake, alice, panel, steps="6", suffix="in snow")).wait_response()
        upload = await fake.user_message(alice, fake.channel, "", attachments=[("a.png", png((64, 64)), "image/png")])
        await fake.user_message(alice, fake.channel, "a red barn", reply_to=upload)
        await wait_results(fake)
        [req] = runner.calls
        assert (req.kind, req.prompt, req.models.vqgan, req.steps) == ("edit", "a red barn, in snow", "wikiart_16384", 4)


async def test_with_the_redis_backend_settings_and_styles_live_in_the_bots_own_file(fake, tmp_path):
    from tests.fleet import free_port

    cfg = make_config(tmp_path, fake, queue={"backend": "redis", "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with run_bot(fake, cfg) as bot:  # no worker anywhere: the job waits, styled
        alice = fake.add_user("alice")
        await wait_ephemeral(fake, await fake.slash(alice, fake.channel, "style save", {"name": "ink", "text": "ink"}))
        panel = await open_panel(fake, alice)
        await (await fill_form(fake, alice, panel, suffix="on paper")).wait_response()
        inter = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a crane", "style": "ink"})
        job = await submitted(fake, bot, inter)
        assert job.request.prompt == "a crane, ink, on paper"
    with sqlite3.connect(cfg.queue.db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM styles").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM user_settings").fetchone()[0] == 1


async def test_a_saved_grid_count_paints_imagine_as_a_grid_and_the_count_option_wins(fake, tmp_path):
    """A person picks a grid of 4 on the panel: their /imagine is one job of 4 candidates; ``count:1`` (the option
    given) and ``--grid 2`` (the prompt's parameter) win over it; the server's default (here 1) is used by others."""
    async with run_bot(fake, _config(tmp_path, fake), FakeRunner(delay=0)) as b:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        panel = await pick(fake, alice, await open_panel(fake, alice), "grid", "4")
        assert "grid: `4`" in panel.content and len(panel.components) <= 5
        assert (await b.preferences.settings(alice.id)).grid == 4
        asked = [(alice, {"prompt": "a harbour"}), (alice, {"prompt": "a harbour", "count": 1}),
                 (alice, {"prompt": "a harbour --grid 2"}), (bob, {"prompt": "a harbour"})]
        grids = []
        for user, options in asked:
            inter = await fake.slash(user, fake.channel, "imagine", options)
            grids.append((await submitted(fake, b, inter)).request.grid)
        assert grids == [4, 1, 2, 1]
