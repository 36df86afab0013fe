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
import sys

import discord

from engine.errors import UserError

log = logging.getLogger("bot")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bot", description="Run the VQGAN+CLIP Discord bot.")
    p.add_argument("--config", "-c", default=None,
                   help="config.toml (default: ./config.toml when it exists, else built-in defaults)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p.parse_args(argv)


async def run(cfg: object, token: str) -> None:
    from bot.app import VQGANBot

    bot = VQGANBot(cfg)  # type: ignore[arg-type]
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
        asyncio.run(run(cfg, token))
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
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
