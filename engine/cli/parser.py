"""The command line's table: each subcommand and the module that owns its flags and runs it.

A command module has ``add_parser(subparsers)`` (cheap: it imports nothing heavy) and
``run(args, cfg) -> exit code``; ``NEEDS_CONFIG = False`` where it reads no config.toml.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn

from engine.cli import bench, describe, fleet, models, paint, timelapse, zoom
from engine.version import __version__

# The order of ``--help``; a module may register several subcommands (paint: imagine, edit, vary, rerun).
MODULES: tuple[ModuleType, ...] = (paint, models, bench, fleet, timelapse, zoom, describe)
COMMANDS: dict[str, ModuleType] = {
    **{c: paint for c in paint.COMMANDS}, "models": models, "bench": bench, "worker": fleet, "fleet": fleet,
    "timelapse": timelapse, "zoom": zoom, "describe": describe,
}


class Parser(argparse.ArgumentParser):
    """A usage error is one line and exit 2, as every other bad input. A subcommand built with
    ``intermixed=True`` takes its positionals among its options too (``outpaint IMG -o OUT --left 64 PROMPT``:
    plain argparse takes every positional from the first run of them, and refuses a later one)."""

    def __init__(self, *args: Any, intermixed: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.intermixed = intermixed

    def parse_known_args(  # type: ignore[override]  # typeshed's overloads; this one passes them through
            self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        if not self.intermixed:
            return super().parse_known_args(args, namespace)
        self.intermixed = False  # parse_known_intermixed_args calls parse_known_args itself
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self.intermixed = True

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; building it imports nothing heavy (no torch)."""
    parser = Parser(prog="python -m engine", description="VQGAN+CLIP: paint and edit images from text.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in MODULES:
        module.add_parser(sub)
    return parser
