"""``imagine``, ``edit``, ``vary``, ``outpaint``, ``upscale`` and ``rerun``: one picture from a request, written
as a PNG with the request in its metadata (and, with ``--timelapse``, the run as a video). ``imagine --grid N``
paints N candidates as one job: ``OUT.png`` is the grid, ``OUT-1.png`` ... each candidate alone."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli.flags import (
    IoLimits,
    add_output_flags,
    check_mask_shape_early,
    check_timelapse,
    io_limits,
    request_flags,
    say_timelapse,
    with_model_flags,
    writable,
)
from engine.config import Config
from engine.errors import UserError

if TYPE_CHECKING:
    from engine.method.generate import Progress
    from engine.models.loader import ModelCache
    from engine.spec.request import Request

COMMANDS = ("imagine", "edit", "vary", "outpaint", "upscale", "rerun")


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("imagine", help="make a new image from a text prompt")
    p.add_argument("prompt", help='e.g. "a forest rendered in low poly" or "a:1|b:-0.5"')
    _add_tile_flags(p)
    p.add_argument("--grid", type=int, metavar="N",
                   help="paint N candidates (1, 2, 4, 6 or 9; seeds S..S+N-1) as one job: OUT.png is the grid, "
                        "OUT-1.png ... each candidate (default 1)")
    add_output_flags(p)
    p = sub.add_parser("edit", help="change an image with a text prompt")
    p.add_argument("input", type=Path)
    p.add_argument("prompt")
    p.add_argument("--mask", type=Path, help="white = change, black = keep (same shape as the input)")
    p.add_argument("--region", help="let CLIP find what to change, e.g. --region jacket")
    p.add_argument("--save-mask", type=Path, help="write the mask that was used (e.g. the one CLIP found)")
    p.add_argument("--paste", action="append", default=[], metavar="IMG@X,Y",
                   help="paste an image onto the input (a collage); holes and seams are repainted")
    p.add_argument("--seam", type=int, help="collage: pixels each side of a seam to repaint")
    p.add_argument("--feather", type=int, help="pixels of soft edge outside the mask")
    _add_tile_flags(p)
    add_output_flags(p)
    p = sub.add_parser("vary", help="a similar but different picture from an image (its metadata's prompt)")
    p.add_argument("input", type=Path)
    p.add_argument("prompt", nargs="?", help="defaults to the prompt in the image's metadata")
    p.add_argument("--strength", type=float, help="fraction of the parent's steps to run (default from config)")
    add_output_flags(p)
    p = sub.add_parser("outpaint", help="zoom out or pan: a bigger canvas, only the new area painted",
                       intermixed=True)
    p.add_argument("input", type=Path)
    p.add_argument("prompt", nargs="?", help="defaults to the prompt in the image's metadata")
    p.add_argument("--zoom-out", type=float, metavar="F", help="the canvas F times the picture's size, e.g. 1.5")
    for side, where in (("left", "left of"), ("right", "right of"), ("up", "above"), ("down", "below")):
        p.add_argument(f"--{side}", type=int, default=0, metavar="PX", help=f"pixels to add {where} the picture")
    p.add_argument("--seam", type=int, help="pixels into the picture repainted along each side that grows "
                                            "(default [editing] outpaint_seam)")
    p.add_argument("--feather", type=int, help="pixels of soft edge beyond the seam")
    add_output_flags(p)
    p = sub.add_parser("upscale", help="a larger picture with more detail: enlarged, then painted on (its metadata's prompt)")
    p.add_argument("input", type=Path)
    p.add_argument("prompt", nargs="?", help="defaults to the prompt in the image's metadata")
    p.add_argument("--scale", type=float, default=2.0, help="how many times larger each side gets (default 2)")
    add_output_flags(p)
    p = sub.add_parser("rerun", help="redo an image from the request in its PNG metadata")
    p.add_argument("input", type=Path)
    add_output_flags(p)


def _add_tile_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tile", dest="tile", action="store_const", const="xy",
                   help="a seamless tile: the picture wraps around left to right and top to bottom")
    g.add_argument("--tile-x", dest="tile", action="store_const", const="x",
                   help="a seamless tile left to right only (a panorama)")


def _request(args: argparse.Namespace, cfg: Config, fields: dict[str, Any]) -> Request:
    """The request a subcommand asks for: its own builder, then the shared model flags and checks.
    ``fields``: what the prompt's parameters set (``engine.cli.prompting``)."""
    from engine.spec import pinning as inputs
    from engine.spec.request import check_limits

    io = io_limits(cfg)
    build = {"imagine": _imagine, "edit": _edit, "vary": _variation, "outpaint": _outpaint,
             "upscale": _upscale, "rerun": _rerun}[args.command]
    over = request_flags(args, io)
    over.update({k: v for k, v in fields.items() if v is not None})
    req = build(args, cfg, over, io)
    req = inputs.locate(req, args.input) if args.command == "rerun" else inputs.pin(req)
    check_mask_shape_early(req, io)
    req = with_model_flags(req, args)
    check_limits(req, cfg.limits)
    return req


def _imagine(args: argparse.Namespace, cfg: Config, over: dict[str, Any], io: IoLimits) -> Request:
    from engine.spec.request import Request

    return Request.from_config(cfg, prompt=args.prompt, **{**over, "tile": args.tile or over.get("tile"),
                                                            "grid": args.grid or over.get("grid")})


def _edit(args: argparse.Namespace, cfg: Config, over: dict[str, Any], io: IoLimits) -> Request:
    """The input (or a collage made on it), a mask or a region, at the input's aspect inside the limits."""
    from engine.media.imageio import fit_size, load_mask, load_rgb
    from engine.spec.request import Request

    img = load_rgb(args.input, what="input image", **io)
    over.update(kind="edit", init_image=str(args.input), feather=args.feather, region=args.region,
                tile=args.tile or over.get("tile"))
    if args.mask:
        load_mask(args.mask, **io)
        over["mask"] = str(args.mask)
    if collage := _collage(args, cfg, io):
        over.update(init_image=collage[0], mask=collage[1])
        img = load_rgb(collage[0])
    if not args.size:
        lim = cfg.limits
        over["width"], over["height"] = fit_size(*img.size, lim.max_width, lim.max_height, lim.max_pixels)
    return Request.from_config(cfg, prompt=args.prompt, **over)


def _rerun(args: argparse.Namespace, cfg: Config, over: dict[str, Any], io: IoLimits) -> Request:
    """The request in the PNG's metadata, with the flags given on top."""
    from engine.media.imageio import load_rgb
    from engine.spec.request import Request, check_files_beside

    load_rgb(args.input, what="input image", **io)  # refuse non-images first
    req = Request.parse(_parent_request(args, cfg, required=True))
    check_files_beside(req, args.input.parent, source=str(args.input))
    return req.with_changes(**{k: v for k, v in over.items() if v is not None})


def _check_outputs(args: argparse.Namespace) -> None:
    writable(args.output, "-o")
    if args.timelapse:
        check_timelapse(args.timelapse, args.timelapse_fps, "--timelapse")
    if args.save_every and args.progress_dir:
        writable(args.progress_dir, "--progress-dir", folder=True)
    if getattr(args, "save_mask", None):
        writable(args.save_mask, "--save-mask")


def _collage(args: argparse.Namespace, cfg: Config, io: IoLimits) -> tuple[str, str] | None:
    """A transparent input or ``--paste`` pieces -> canvas and mask files beside the output."""
    from engine.media import collage
    from engine.media.imageio import open_image

    seam = cfg.editing.seam if args.seam is None else args.seam
    if not 0 <= seam <= 128:
        raise UserError(f"--seam must be between 0 and 128 pixels (got {seam})")
    base = open_image(args.input, what="input image", **io)
    pieces = []
    for spec in args.paste:
        path, xy = collage.parse_paste(spec)
        pieces.append((open_image(path, what="pasted image", **io), xy))
    if (made := collage.assemble(pieces, seam, base=base)) is None:
        return None
    canvas, mask = made
    if args.mask:
        raise UserError("give either --mask or a collage (--paste, transparent holes), not both")
    stem = args.output.with_suffix("")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(f"{stem}-collage.png")
    mask.save(f"{stem}-collage-mask.png")
    return f"{stem}-collage.png", f"{stem}-collage-mask.png"


def _variation(args: argparse.Namespace, cfg: Config, over: dict[str, Any], io: IoLimits) -> Request:
    """A new seed from the parent's own image, with fewer steps and a pull towards the parent."""
    from engine.media.imageio import load_rgb
    from engine.spec.request import Request, variation_of

    img = load_rgb(args.input, what="input image", **io)
    parent = _parent_request(args, cfg, required=False)
    prompt = args.prompt or parent.get("prompt")
    if not prompt:
        raise UserError(f"{args.input} has no prompt in its metadata: give one, e.g. vary IN.png 'a castle'")
    strength = cfg.editing.vary_strength if args.strength is None else args.strength
    if not 0 < strength <= 1:
        raise UserError("--strength must be more than 0 and at most 1")
    parent_steps = parent.get("steps", cfg.generation.steps)
    if not isinstance(parent_steps, int) or isinstance(parent_steps, bool) or not 0 < parent_steps <= 10**6:
        raise UserError(f"{args.input}: its metadata's steps {str(parent_steps)[:20]!r} is not a number of steps")
    fields = {k: parent[k] for k in ("models", "cutouts", "cut_pow", "lr", "betas", "negative") if k in parent}
    made = Request.from_config(cfg, **fields, prompt=prompt, steps=parent_steps)
    return variation_of(made, str(args.input), img.size, cfg.editing, strength=strength,
                        parent=_parent_name(args.input, parent), **{k: v for k, v in over.items() if v is not None})


def _upscale(args: argparse.Namespace, cfg: Config, over: dict[str, Any], io: IoLimits) -> Request:
    """The picture enlarged ``--scale`` times and painted on (its metadata's prompt and seed, or PROMPT),
    refused before anything runs when that is over the limits."""
    from engine.media.imageio import load_rgb
    from engine.spec.request import Request, upscale_of

    img = load_rgb(args.input, what="input image", **io)
    if args.size:
        raise UserError("an upscale is --scale times the picture's size: leave out --size")
    parent = _parent_request(args, cfg, required=False)
    prompt = args.prompt or parent.get("prompt")
    if not prompt:
        raise UserError(f"{args.input} has no prompt in its metadata: give one, e.g. upscale IN.png 'a castle' -o OUT.png")
    fields = {k: parent[k] for k in ("models", "cutouts", "cut_pow", "lr", "betas", "seed", "negative") if k in parent}
    made = Request.from_config(cfg, **fields, prompt=prompt)
    return upscale_of(made, str(args.input), img.size, args.scale, cfg.editing, cfg.limits,
                      parent=_parent_name(args.input, parent), **{k: v for k, v in over.items() if v is not None})


def _parent_name(path: Path, parent: dict[str, Any]) -> str:
    """How a variation or an upscale names the picture it came from: its content's hash and seed."""
    import hashlib

    return f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]} seed:{parent.get('seed', '?')}"


def _outpaint(args: argparse.Namespace, cfg: Config, over: dict[str, Any], io: IoLimits) -> Request:
    """The picture on a canvas grown by ``--zoom-out`` or the margins (to whole VQGAN cells), its own
    prompt and settings (from its metadata), only the new area and the seam painted."""
    from engine.media.imageio import load_rgb
    from engine.models.registry import vqgan_factor
    from engine.spec.outpaint import check_canvas, plan
    from engine.spec.request import Request, outpaint_of

    if args.size:
        raise UserError("outpaint: the canvas follows --zoom-out or the margins; --size does not apply")
    img = load_rgb(args.input, what="input image", **io)
    parent = _parent_request(args, cfg, required=False)
    prompt = args.prompt or parent.get("prompt")
    if not prompt:
        raise UserError(f"{args.input} has no prompt in its metadata: give one, e.g. outpaint IN.png 'a castle'")
    fields = {k: parent[k] for k in ("models", "steps", "cutouts", "cut_pow", "lr", "betas", "negative")
              if k in parent}
    made = with_model_flags(Request.from_config(cfg, **fields, prompt=prompt), args)
    seam = cfg.editing.outpaint_seam if args.seam is None else args.seam
    margins = plan(img.size, vqgan_factor(made.models), seam=seam, zoom_out=args.zoom_out, left=args.left,
                   right=args.right, up=args.up, down=args.down)
    what = f"zooming out {args.zoom_out:g}x" if args.zoom_out else "these margins"
    check_canvas(margins.canvas(img.size), cfg.limits, what)
    changes = {k: v for k, v in {**over, "feather": args.feather}.items() if v is not None}
    return outpaint_of(made, str(args.input), img.size, margins,
                       parent=_parent_name(args.input, parent), **changes)


def _parent_request(args: argparse.Namespace, cfg: Config, *, required: bool) -> dict[str, Any]:
    """The request in the input PNG's metadata, as untrusted data: its models may name only presets
    and the configured models (a model chosen on the command line replaces the metadata's)."""
    from engine.media.imageio import read_metadata
    from engine.models.trust import trusted_models

    meta = read_metadata(args.input, what="input image") or {}
    parent = meta.get("request")
    if parent is None and not required:
        return {}
    if not isinstance(parent, dict):
        raise UserError(f"{args.input}: no vqgan-clip request in this PNG's metadata")
    replaced = {g for g, flags in (("vqgan", ("vqgan", "vqgan_config", "vqgan_checkpoint")),
                                   ("clip", ("clip_model", "clip_pretrained", "clip_config", "clip_checkpoint")))
                if any(getattr(args, f) for f in flags)}
    return {**parent, "models": trusted_models(parent.get("models"), cfg.models, source=str(args.input),
                                               replaced=replaced)}


def candidate_paths(output: Path, n: int) -> list[Path]:
    """Where a grid's candidates go beside ``OUT.png``: ``OUT-1.png`` ... ``OUT-n.png``."""
    return [output.with_name(f"{output.stem}-{i}{output.suffix or '.png'}") for i in range(1, n + 1)]


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Every job the prompt asks for (one, or a sweep's and ``--repeat``'s in order), all checked before
    the first is painted."""
    from engine.cli.prompting import jobs
    from engine.models.loader import ModelCache

    _check_outputs(args)
    todo = [(one, _request(one, cfg, fields)) for one, fields in jobs(args, cfg)]
    cache = ModelCache(cfg.models if not args.device else cfg.models.model_copy(update={"device": args.device}))
    for one, req in todo:
        _paint(one, cfg, req, cache, says_prompt=len(todo) > 1)
    return 0


def _paint(args: argparse.Namespace, cfg: Config, req: Request, cache: ModelCache, *, says_prompt: bool) -> None:
    from tqdm import tqdm

    from engine.media.frames import FrameStore, frame_name
    from engine.media.imageio import png_bytes
    from engine.method.grid import paint
    from engine.spec.request import grid_shape

    models = cache.get(req.models)
    if (req.width, req.height) != (req.width // models.vqgan.factor * models.vqgan.factor,
                                   req.height // models.vqgan.factor * models.vqgan.factor):
        print(f"note: size rounded down to a multiple of {models.vqgan.factor} pixels", file=sys.stderr)
    if args.progress_dir and args.save_every:
        args.progress_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=req.steps, unit="step", disable=not sys.stderr.isatty(), desc=req.prompt[:30])
    with tempfile.TemporaryDirectory(prefix="vqgan-clip-frames-") as tmp:
        frames = FrameStore(Path(tmp), cfg.timelapse.max_frames or 100) if args.timelapse else None

        def on_progress(p: Progress) -> None:
            bar.update(p.step - bar.n)
            bar.set_postfix(loss=f"{p.loss:.4f}")
            if args.save_every and args.progress_dir and p.step % args.save_every == 0:
                p.image.save(args.progress_dir / frame_name(p.step))
            if frames is not None and frames.wants("run", p.step, p.total):
                frames.add("run", p.step, p.total, png_bytes(p.image))

        every = 1 if (bar.disable is False or args.save_every or frames) else req.steps
        result = paint(models, req, on_progress=on_progress, progress_every=every)
        bar.close()
        png = result.png_bytes()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        for path, candidate in zip(candidate_paths(args.output, len(result.candidates)), result.candidates,
                                   strict=True):
            path.write_bytes(candidate.png_bytes())
        args.output.write_bytes(png)
        made = None
        if frames is not None:
            from engine.media.timelapse import frame_files, make_timelapse

            frames.final("run", req.steps, png)  # the result itself is the last frame
            made = make_timelapse(frame_files(frames.folder("run")), args.timelapse, fps=args.timelapse_fps)
    if getattr(args, "save_mask", None):
        if result.mask is None:
            print("note: no mask was used, so none was saved", file=sys.stderr)
        else:
            result.mask.save(args.save_mask)
    if result.candidates:
        rows, cols = grid_shape(len(result.candidates))
        cell = result.candidates[0].image
        print(f"{args.output} ({rows}x{cols} grid of {len(result.candidates)} pictures of {cell.width}x{cell.height}, "
              f"{req.steps} steps, {result.seconds:.1f} s)" + (f": {req.prompt}" if says_prompt else ""))
        for path, candidate in zip(candidate_paths(args.output, len(result.candidates)), result.candidates,
                                   strict=True):
            print(f"{path} (seed {candidate.request.seed})")
    else:
        print(f"{args.output} ({result.image.width}x{result.image.height}, seed {req.seed}, "
              f"{req.steps} steps, {result.seconds:.1f} s)" + (f": {req.prompt}" if says_prompt else ""))
    if made is not None:
        say_timelapse(made)


