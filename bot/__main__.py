"""``python -m bot [--config config.toml]``: run the Discord bot.

The token comes from ``$DISCORD_TOKEN`` only. SIGINT and SIGTERM close the bot cleanly: the
running job is stopped and stays queued for the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING

import aiohttp
import discord

from engine import UserError

if TYPE_CHECKING:
    from bot.config import BotConfig

log = logging.getLogger("bot")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bot", description="Run the VQGAN+CLIP Discord bot.")
    p.add_argument("--config", "-c", default=None,
                   help="config.toml (default: ./config.toml when it exists, else built-in defaults)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p.parse_args(argv)


async def run(cfg: BotConfig, token: str) -> None:
    """Build the bot's dependencies here (the job queue and its engine runner, the describer sharing the
    runner's models), then run it. With the Redis backend the models are in the workers: no describer."""
    from bot.app import VQGANBot
    from engine import Describer, EngineRunner, JobQueue

    if cfg.queue.backend == "local":
        runner = EngineRunner(cfg)
        bot = VQGANBot(cfg, JobQueue(cfg, runner), describer=Describer(cfg, runner.cache))
    else:
        bot = VQGANBot(cfg, JobQueue(cfg))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def stop(sig: signal.Signals) -> None:
        if not stopping.is_set():
            log.info("%s: shutting down (the running job stays queued)", sig.name)
            stopping.set()
            loop.create_task(bot.close())

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop, sig)
        except (NotImplementedError, RuntimeError):  # not on this platform
            pass
    async with bot:
        await bot.start(token)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    token = os.environ.get("DISCORD_TOKEN", "").strip()
    if not token:
        print("error: set DISCORD_TOKEN to the bot token (Developer Portal -> your app -> Bot -> Reset Token)",
              file=sys.stderr)
        return 2
    from bot.config import load_bot_config

    path = args.config
    if path is None and os.path.exists("config.toml"):
        path = "config.toml"
    try:
        cfg = load_bot_config(path)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    discord.utils.setup_logging(level=getattr(logging, args.log_level), root=True)
    try:
        return _run_with_retries(cfg, token)
    except discord.LoginFailure:
        print("error: Discord refused the token in DISCORD_TOKEN; reset it in the Developer Portal",
              file=sys.stderr)
        return 2
    except UserError as e:  # e.g. the job store cannot be opened: one line naming the file and the fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    except discord.PrivilegedIntentsRequired:
        print("error: enable the Message Content intent (Developer Portal -> Bot -> Privileged Gateway Intents)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


# Failing to get to Discord at all (no network, a wrong DISCORD_API_BASE, Discord down). discord.py
# itself reconnects a gateway that drops later; these are what escape from logging in.
UNREACHABLE = (aiohttp.ClientConnectionError, ConnectionError, socket.gaierror, asyncio.TimeoutError,
               TimeoutError, discord.GatewayNotFound, discord.DiscordServerError)
RAN_WELL_S = 300.0  # a run this long was connected: its failure starts the count of tries afresh


def _reason(e: BaseException) -> str:
    cause = e.os_error if isinstance(e, aiohttp.ClientConnectorError) else e
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return "host not found"
    if isinstance(cause, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _run_with_retries(cfg: BotConfig, token: str) -> int:
    """Run the bot; when Discord cannot be reached, try ``connect_attempts`` times, then exit 1.

    Exit 1 with one line is what a supervisor expects: Docker's ``--restart unless-stopped`` starts
    the bot again with its own growing delay, so the bot does not need to wait forever itself.
    """
    d = cfg.discord
    delay, attempt = d.connect_backoff_s, 0
    while True:
        attempt += 1
        started = time.monotonic()
        try:
            asyncio.run(run(cfg, token))
            return 0
        except UNREACHABLE as e:
            reason = _reason(e)
        if time.monotonic() - started > RAN_WELL_S:
            delay, attempt = d.connect_backoff_s, 1
        if attempt >= d.connect_attempts:
            break
        log.warning("cannot reach Discord at %s (%s); trying again in %g s (%d of %d)",
                    d.api_base, reason, delay, attempt + 1, d.connect_attempts)
        time.sleep(delay)
        delay *= 2
    print(f"error: cannot reach Discord at {d.api_base} ({reason}) after {d.connect_attempts} tries; "
          "check the network or DISCORD_API_BASE", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
