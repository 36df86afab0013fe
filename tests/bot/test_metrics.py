"""GET /metrics (bot/metrics.py): what an operator graphs, scraped after a few jobs and read with
prometheus_client's own parser."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.bot.conftest import (
    FakeRunner,
    run_bot,
    submitted,
    wait_ephemeral,
    wait_results,
    web_config,
    web_url,
)


async def scrape(cfg) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by name and labels."""
    async with aiohttp.ClientSession() as http, http.get(web_url(cfg, "/metrics")) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=")
        text = await resp.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class Runner(FakeRunner):
    """Holds every job while ``open`` is False; "too big" runs out of GPU memory (at its size and at the
    smaller retry)."""

    def __init__(self) -> None:
        super().__init__(delay=0.01)
        self.open = True
        self.gate = lambda req: self.open

    def __call__(self, req, on_progress, should_stop):
        if req.prompt == "too big":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().__call__(req, on_progress, should_stop)


async def test_metrics_count_jobs_lanes_refusals_and_discord_errors(fake, tmp_path):
    cfg = web_config(tmp_path, fake, gallery=False, queue={"per_owner_pending": 2},
                     limits={"daily_gpu_seconds": 0.001})  # one picture uses up a day: the next one relaxes
    runner = Runner()
    async with run_bot(fake, cfg, runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        fake.fail_next("PATCH", r"/webhooks/.*/messages/@original", status=429, retry_after=0.05)
        await submitted(fake, bot, await fake.slash(alice, fake.channel, "imagine", {"prompt": "a red fox"}))
        await wait_results(fake, 1)
        runner.open = False
        for who, prompt in ((bob, "a green frog"), (alice, "a blue jay"), (bob, "too big")):
            await submitted(fake, bot, await fake.slash(who, fake.channel, "imagine", {"prompt": prompt}))
        too_long = await fake.slash(alice, fake.channel, "imagine", {"prompt": "x" * 600})
        assert "characters" in await wait_ephemeral(fake, too_long)
        third = await fake.slash(bob, fake.channel, "imagine", {"prompt": "a third one"})
        assert "limit 2" in await wait_ephemeral(fake, third)
        waiting = await scrape(cfg)
        assert waiting[("vqgan_jobs_running", ())] == 1  # the frog
        assert waiting[("vqgan_queue_depth", (("lane", "fast"),))] == 1  # bob's "too big"
        assert waiting[("vqgan_queue_depth", (("lane", "relax"),))] == 1  # alice's jay: she is over today's time
        runner.open = True
        await wait_results(fake, 3)
        await fake.wait_for(lambda: not bot.queue.pending() and any(
            j.state == "failed" for j in bot.queue.jobs_of(str(bob.id))), timeout=20)
        m = await scrape(cfg)

    assert m[("vqgan_jobs_submitted_total", ())] == 4
    assert m[("vqgan_jobs_finished_total", ())] == 3
    assert m[("vqgan_jobs_failed_total", (("reason", "out_of_memory"),))] == 1
    assert sum(v for (name, _), v in m.items() if name == "vqgan_jobs_failed_total") == 1
    assert m[("vqgan_jobs_cancelled_total", ())] == 0
    assert m[("vqgan_job_run_seconds_count", ())] == 3 and m[("vqgan_job_run_seconds_sum", ())] > 0
    assert m[("vqgan_step_seconds_count", ())] == 3
    assert m[("vqgan_job_wait_seconds_count", ())] == 4  # each job's first start
    assert m[("vqgan_queue_depth", (("lane", "fast"),))] == 0 and m[("vqgan_queue_depth", (("lane", "relax"),))] == 0
    assert m[("vqgan_jobs_running", ())] == 0
    assert m[("vqgan_workers_alive", ())] == 1
    assert m[("vqgan_worker_heartbeat_age_seconds", (("worker", "local"),))] == 0
    assert m[("vqgan_gateway_ready", ())] == 1
    assert m[("vqgan_refusals_total", (("kind", "input"),))] == 1  # the prompt over max_prompt_chars
    assert m[("vqgan_refusals_total", (("kind", "pending"),))] == 1  # bob's third while two wait
    assert sum(v for (name, _), v in m.items() if name == "vqgan_refusals_total") == 2
    assert m[("vqgan_discord_api_errors_total", (("status", "429"),))] >= 1


async def test_with_redis_workers_it_counts_the_live_ones(fake, tmp_path):
    from tests.fleet import free_port

    cfg = web_config(tmp_path, fake, gallery=False,
                     queue={"backend": "redis", "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with run_bot(fake, cfg):
        m = await scrape(cfg)
    assert m[("vqgan_workers_alive", ())] == 0  # none reachable: painting is paused
    assert not [k for k in m if k[0] == "vqgan_worker_heartbeat_age_seconds"]
