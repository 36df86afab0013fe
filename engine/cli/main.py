"""``python -m engine``: parse, read the config, run the subcommand; one line and exit 2 for bad input.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from engine.cli.parser import COMMANDS, build_parser
from engine.config import Config, load_config
from engine.errors import UserError


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.command]
    try:
        if not getattr(command, "NEEDS_CONFIG", True):
            return int(command.run(args, None))
        cfg = load_config(args.config) if getattr(args, "config", None) else default_config()
        return int(command.run(args, cfg))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def default_config() -> Config:
    """``./config.toml`` when there is one, else built-in defaults."""
    return load_config("config.toml") if Path("config.toml").is_file() else load_config(None)
