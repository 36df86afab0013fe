"""``python -m bot.health [--config config.toml]``: exit 0 while the bot is connected.

The bot touches ``<data_dir>/heartbeat`` every ``heartbeat_s`` seconds while its gateway session
is up (not while discord.py tries to reconnect); the container healthcheck runs this to see how old
that file is: over ``3 x heartbeat_s`` (90 s by default) is unhealthy. Reading the path and the
period from the config keeps the check right wherever ``data_dir`` points.
"""

from __future__ import annotations

import argparse
import sys
import time

from bot.config import load_bot_config

HEARTBEATS = 3  # touches the file may miss before the bot counts as unhealthy


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bot.health")
    p.add_argument("--config", "-c", default=None)
    args = p.parse_args(argv)
    try:
        cfg = load_bot_config(args.config)
        path = cfg.discord.heartbeat_path
        age = time.time() - path.stat().st_mtime
    except Exception as e:  # no config, no file yet: unhealthy, say why
        print(f"unhealthy: {e}", file=sys.stderr)
        return 1
    limit = HEARTBEATS * cfg.discord.heartbeat_s
    if age > limit:
        print(f"unhealthy: heartbeat is {age:.0f} s old (limit {limit:.0f} s)", file=sys.stderr)
        return 1
    print(f"healthy: heartbeat {age:.0f} s old")
    return 0


if __name__ == "__main__":
    sys.exit(main())
