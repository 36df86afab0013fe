"""``python -m engine timelapse FRAMES_DIR -o OUT``: a video of any folder of frame PNGs (needs no config)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine.cli.flags import check_timelapse, say_timelapse
from engine.config import Config
from engine.errors import UserError

NEEDS_CONFIG = False


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("timelapse", help="a timelapse (.mp4, .webp, .gif) from a folder of frame PNGs")
    p.add_argument("frames", type=Path, metavar="FRAMES_DIR",
                   help="PNGs taken in name order: a job's stored frames, or a --progress-dir")
    p.add_argument("-o", "--output", required=True, type=Path, help=".mp4, .webp or .gif to write")
    p.add_argument("--fps", type=int, default=12, help="frames a second (12)")
    p.add_argument("--max-bytes", type=int, metavar="N",
                   help="make it fit in N bytes (fewer frames, smaller, lower quality), e.g. 10485760")


def run(args: argparse.Namespace, cfg: Config | None = None) -> int:
    """``timelapse FRAMES_DIR -o OUT``: any folder of frame PNGs, in name order."""
    from engine.media.timelapse import frame_files, make_timelapse

    check_timelapse(args.output, args.fps, "-o")
    if args.max_bytes is not None and args.max_bytes < 1:
        raise UserError("--max-bytes must be at least 1")
    made = make_timelapse(frame_files(args.frames), args.output, fps=args.fps, max_bytes=args.max_bytes)
    say_timelapse(made)
    return 0


