"""``python -m engine zoom PROMPT -o zoom.mp4``: an endless-zoom video, frame by frame, resumable.

The frames go to ``<stem>-frames/`` beside the video as they are made; the run's request is kept
there too (``request.json``), so ``--resume`` continues with the same seed and settings and makes the
frames an uninterrupted run would have made. Limits (``[limits] max_frames``, ``max_video_steps``) are
checked before any model loads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.cli.flags import add_paint_flags, check_timelapse, io_limits, request_flags, with_model_flags
from engine.config import Config
from engine.errors import UserError

REQUEST_FILE = "request.json"


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("zoom", help="an endless-zoom video: each frame the last one zoomed in and painted on")
    p.add_argument("prompt", help='e.g. "a city" or a story over frames: "a forest ^ a forest on fire ^ ashes"')
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="video to write (.mp4); the frames go to a folder beside it (zoom-frames/ for zoom.mp4)")
    p.add_argument("--frames", type=int, default=120, help="frames in the video (120)")
    p.add_argument("--steps-per-frame", type=int, default=25, help="steps painted on each frame (25)")
    p.add_argument("--zoom", type=float, default=1.02, help="zoom in by this factor each frame (1.02)")
    p.add_argument("--rotate", type=float, default=0.0, metavar="DEG", help="turn this many degrees each frame")
    p.add_argument("--shift", type=float, nargs=2, default=(0.0, 0.0), metavar=("DX", "DY"),
                   help="move this many pixels each frame")
    p.add_argument("--init", type=Path, metavar="IMG", help="start from this picture instead of random codes")
    p.add_argument("--fps", type=int, default=24, help="video frames a second (24)")
    p.add_argument("--story-every", type=int, metavar="K",
                   help='a story ("a ^ b ^ c"): the next part every K frames (default: frames / parts)')
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its frames (the same frames it would have made)")
    add_paint_flags(p)


def frames_dir(output: Path) -> Path:
    """The frames' folder beside the video: ``zoom-frames/`` for ``zoom.mp4``."""
    return output.with_name(f"{output.stem}-frames")


def _saved(folder: Path) -> dict[str, Any]:
    """The interrupted run's request as it was saved (empty when there is none or it is unreadable)."""
    try:
        data = json.loads((folder / REQUEST_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _saved_seed(folder: Path) -> int | None:
    seed = _saved(folder).get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _check_same_run(saved: dict[str, Any], now: dict[str, Any]) -> None:
    """``--resume`` with other settings would join frames of two different runs: refuse it.
    More frames (or another fps) are fine: the frames made so far are the same."""
    def comparable(d: dict[str, Any]) -> dict[str, Any]:
        zoom = {k: v for k, v in (d.get("zoom") or {}).items() if k not in ("frames", "fps")}
        return {**{k: v for k, v in d.items() if k not in ("zoom", "inputs")}, "zoom": zoom}

    if not saved:
        return
    old, new = comparable(saved), comparable(now)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        raise UserError(f"--resume: {', '.join(changed)} differ from the interrupted run's; "
                        "give the same settings (or leave out --resume and remove its frames)")


def build_request(args: argparse.Namespace, cfg: Config) -> Any:
    """The run's request (``Request.zoom`` set), checked against the limits; no torch. The prompt may
    end with parameters (``engine.cli.prompting``), but makes one video: no sweep, no ``--steps``."""
    from engine.cli.prompting import one_job
    from engine.media.imageio import load_rgb
    from engine.spec import pinning as inputs
    from engine.spec.request import Request, check_limits

    io = io_limits(cfg)
    args, fields = one_job(args, cfg)
    args.keep_structure = args.keep_latent = args.steps = None  # not zoom options: request_flags reads them
    over = request_flags(args, io)
    over.update({k: v for k, v in fields.items() if v is not None})
    folder = frames_dir(args.output)
    if args.resume and args.seed is None:
        over["seed"] = _saved_seed(folder)
    if args.init:
        load_rgb(args.init, what="--init image", **io)
        over["init_image"] = str(args.init)
    zoom = {"frames": args.frames, "steps_per_frame": args.steps_per_frame, "zoom": args.zoom,
            "rotate": args.rotate, "shift": tuple(args.shift), "fps": args.fps}
    req = Request.from_config(cfg, prompt=args.prompt, zoom=zoom, **over)
    # a zoom keeps evolving: no pull back towards the start picture; each frame paints steps_per_frame steps
    req = req.with_changes(steps=req.zoom.steps_per_frame if req.zoom else req.steps,
                           keep_structure=0.0, keep_latent=0.0)
    if args.init:
        req = inputs.pin(req)
    req = with_model_flags(req, args)
    check_limits(req, cfg.limits)
    return req


def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.output.suffix.lower() != ".mp4":
        raise UserError(f"-o {args.output}: a zoom video is an .mp4")
    check_timelapse(args.output, args.fps, "-o")
    req = build_request(args, cfg)
    folder = frames_dir(args.output)
    if not args.resume and folder.is_dir() and any(folder.glob("*.png")):
        raise UserError(f"{folder} holds frames of an earlier run: give --resume to continue it, or remove it")
    if args.resume:
        _check_same_run(_saved(folder), req.to_metadata())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REQUEST_FILE).write_text(json.dumps(req.to_metadata(), sort_keys=True))

    from engine.media.frames import existing_frames
    from engine.media.timelapse import make_timelapse
    from engine.method.zoom import run_zoom
    from engine.models.loader import ModelCache

    start = existing_frames(folder) if args.resume else 0
    cache = ModelCache(cfg.models if not args.device else cfg.models.model_copy(update={"device": args.device}))
    models = cache.get(req.models)

    def on_frame(k: int, path: Path) -> None:
        print(f"frame {k}/{req.zoom.frames}: {path}", file=sys.stderr, flush=True)

    if start:
        print(f"resuming after frame {start}", file=sys.stderr)
    paths = run_zoom(models, req, req.zoom, folder, on_frame=on_frame, resume=args.resume)
    made = make_timelapse(paths, args.output, fps=req.zoom.fps, hold_s=0)  # every frame is content
    print(f"{made.path} (zoom, {made.frames} frames, {made.size[0]}x{made.size[1]}, seed {req.seed})")
    if made.note:
        print(f"note: {made.note}", file=sys.stderr)
    return 0
