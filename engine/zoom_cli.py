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

from engine.config import Config
from engine.errors import UserError

REQUEST_FILE = "request.json"


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
    """The run's request (``Request.zoom`` set), checked against the limits; no torch."""
    from engine import inputs
    from engine.__main__ import _flags, _io_limits, _with_model_flags
    from engine.imageio import load_rgb
    from engine.request import Request, check_limits

    io = _io_limits(cfg)
    args.keep_structure = args.keep_latent = args.steps = None  # not zoom options: _flags reads them
    over = _flags(args, io)
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
    req = _with_model_flags(req, args)
    check_limits(req, cfg.limits)
    return req


def run(args: argparse.Namespace, cfg: Config) -> int:
    from engine.__main__ import _check_timelapse

    if args.output.suffix.lower() != ".mp4":
        raise UserError(f"-o {args.output}: a zoom video is an .mp4")
    _check_timelapse(args.output, args.fps, "-o")
    req = build_request(args, cfg)
    folder = frames_dir(args.output)
    if not args.resume and folder.is_dir() and any(folder.glob("*.png")):
        raise UserError(f"{folder} holds frames of an earlier run: give --resume to continue it, or remove it")
    if args.resume:
        _check_same_run(_saved(folder), req.to_metadata())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REQUEST_FILE).write_text(json.dumps(req.to_metadata(), sort_keys=True))

    from engine.frames import existing_frames
    from engine.models.loader import ModelCache
    from engine.timelapse import make_timelapse
    from engine.zoom import run_zoom

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
