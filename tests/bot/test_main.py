"""``python -m bot`` as a real process: env-configured endpoint, heartbeat, SIGTERM mid-job, then restart."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from bot.health import main as health_main
from tests.bot.conftest import FakeRunner, make_config, progress_posts, run_bot, wait_results
from tests.tinymodels import write_tiny_config

ROOT = Path(__file__).resolve().parents[2]


async def test_sigterm_mid_job_keeps_it_for_the_next_start(fake, tmp_path):
    data = tmp_path / "discord"
    # tiny models and a fresh queue; api_base comes from the environment only
    cfg_path = write_tiny_config(tmp_path, limits={"max_steps": 100000},
                                 discord={"data_dir": str(data), "progress_interval_s": 0.0})
    env = {**os.environ, "DISCORD_TOKEN": "fake-token", "DISCORD_API_BASE": fake.api_base,
           "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(cfg_path), cwd=str(tmp_path), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        await fake.wait_ready(timeout=60)
        await fake.wait_for(lambda: (data / "heartbeat").exists(), timeout=10)
        assert health_main(["--config", str(cfg_path)]) == 0  # the container healthcheck
        alice = fake.add_user("alice")
        inter = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a very long painting",
                                                                  "steps": 50000})
        await inter.wait_response()
        await fake.wait_for(lambda: progress_posts(fake), timeout=60)  # running
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, out.decode()[-3000:]
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        [(state,)] = db.execute("SELECT state FROM jobs").fetchall()
    assert state == "queued"

    # the next start (here in-process, with a fast fake engine) delivers it into the same thread
    cfg = make_config(tmp_path, fake, data_dir=str(data))
    async with run_bot(fake, cfg, FakeRunner(delay=0.0, every=25000)):
        [result] = await wait_results(fake, timeout=30)
        assert result.channel_id == fake.thread_for(inter.original).id
        assert "50000 steps" in result.content


def test_no_network_is_one_line_after_a_few_quick_tries_then_exit_1(tmp_path):
    """A new user starts the bot with a token but no way to Discord: one line naming api_base, exit 1."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        api_base = f"http://127.0.0.1:{s.getsockname()[1]}"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[discord]\ndata_dir = "{tmp_path / "discord"}"\nconnect_attempts = 3\n'
                   f'connect_backoff_s = 0.05\n[queue]\ndb_path = "{tmp_path / "jobs.sqlite3"}"\n'
                   f'results_dir = "{tmp_path / "results"}"\n')
    env = {**os.environ, "DISCORD_TOKEN": "some-token", "DISCORD_API_BASE": api_base, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bot", "--config", str(cfg)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]  # non-zero: a supervisor (Docker restart) starts it again
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot reach Discord at {api_base} (connection refused) after 3 tries; "
                      "check the network or DISCORD_API_BASE"]
    assert proc.stderr.count("trying again in") == 2  # 3 tries in all, with a growing pause between them


async def test_the_healthcheck_says_unhealthy_while_discord_s_gateway_is_down(fake, tmp_path):
    data = tmp_path / "discord"
    cfg_path = tmp_path / "config.toml"  # what the container healthcheck reads
    cfg_path.write_text(f'[discord]\ndata_dir = "{data}"\nheartbeat_s = 0.2\n')
    cfg = make_config(tmp_path, fake, data_dir=str(data), heartbeat_s=0.2)

    def healthy() -> bool:
        return health_main(["--config", str(cfg_path)]) == 0

    async with run_bot(fake, cfg, FakeRunner()):
        await fake.wait_for(healthy)
        await fake.gateway_down()  # discord.py keeps trying to reconnect; REST still answers
        await fake.wait_for(lambda: not healthy(), timeout=3)  # 3 x heartbeat_s
        await asyncio.sleep(1.0)
        assert not healthy(), "no heartbeat while the gateway is down"
        fake.gateway_up()
        await fake.wait_for(healthy, timeout=30)  # reconnected: healthy again
