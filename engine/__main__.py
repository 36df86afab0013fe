"""``python -m engine``: imagine, edit, rerun and models, without Discord.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict

from engine import __version__
from engine.config import Config, load_config
from engine.errors import UserError

if TYPE_CHECKING:
    from engine.generate import Progress
    from engine.request import Request
    from engine.timelapse import Timelapse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, type=Path, help="PNG file to write")
    p.add_argument("--steps", type=int)
    p.add_argument("--story-every", type=int, metavar="K",
                   help='a story ("a ^ b ^ c"): the next part every K steps (default: steps / parts)')
    _paint(p)
    p.add_argument("--keep-structure", type=float, help="pull cutouts towards the input's CLIP embedding")
    p.add_argument("--keep-latent", type=float, help="L2 pull of z towards the input's latent")
    p.add_argument("--save-every", type=int, help="write a progress image every N steps")
    p.add_argument("--progress-dir", type=Path, help="folder for the progress images")
    p.add_argument("--timelapse", type=Path, metavar="FILE",
                   help="also write the run as a timelapse: .mp4, .webp or .gif (its last frame is the result)")
    p.add_argument("--timelapse-fps", type=int, default=12, metavar="N", help="timelapse frames a second (12)")


def _paint(p: argparse.ArgumentParser) -> None:
    """The options every paint command takes (imagine, edit, vary, rerun, zoom)."""
    p.add_argument("--config", type=Path, help="config.toml (defaults for everything below)")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"))
    p.add_argument("--seed", type=int)
    p.add_argument("--cutouts", type=int)
    p.add_argument("--cut-pow", type=float)
    p.add_argument("--lr", type=float)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    _model_flags(p)
    p.add_argument("--image-prompt", action="append", default=[], metavar="IMG[:WEIGHT]")


def _model_flags(p: argparse.ArgumentParser) -> None:
    """Which VQGAN and CLIP models (an ensemble: repeat the CLIP flags): the paint commands and bench."""
    p.add_argument("--vqgan", help="preset name (python -m engine models lists them)")
    p.add_argument("--vqgan-config", type=Path)
    p.add_argument("--vqgan-checkpoint", type=Path)
    p.add_argument("--clip-model", action="append", metavar="NAME",
                   help="open_clip model; repeat for an ensemble (each adds its forward and backward pass)")
    p.add_argument("--clip-pretrained", action="append", metavar="TAG", help="its pretrained tag, once per --clip-model")
    p.add_argument("--clip-config", type=Path, action="append", help="a local CLIP's config JSON (repeatable)")
    p.add_argument("--clip-checkpoint", type=Path, action="append", help="its weights, once per --clip-config")
    p.add_argument("--clip-weight", type=float, action="append", metavar="W",
                   help="each CLIP model's weight in the loss, once per model in the same order (default equal)")


def _zoom_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
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
    _paint(p)


def _timelapse_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("timelapse", help="a timelapse (.mp4, .webp, .gif) from a folder of frame PNGs")
    p.add_argument("frames", type=Path, metavar="FRAMES_DIR",
                   help="PNGs taken in name order: a job's stored frames, or a --progress-dir")
    p.add_argument("-o", "--output", required=True, type=Path, help=".mp4, .webp or .gif to write")
    p.add_argument("--fps", type=int, default=12, help="frames a second (12)")
    p.add_argument("--max-bytes", type=int, metavar="N",
                   help="make it fit in N bytes (fewer frames, smaller, lower quality), e.g. 10485760")


def _bench_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``bench``'s options live here so that ``--help`` and usage errors never import torch."""
    p = sub.add_parser("bench", help="time a step against the plain reference loop",
                       description="Time a step of ours against the plain reference loop, with the configured "
                                   "models or those named by the model flags. With several CLIP models (an "
                                   "ensemble) it also times the first one alone: the difference is what each "
                                   "extra CLIP model costs.")
    p.add_argument("--config", help="config.toml (models, device)")
    p.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("W", "H"))
    p.add_argument("--cutouts", type=int, default=16)
    p.add_argument("--steps", type=int, help="timed steps per measurement (default 5 on CUDA, 1 on CPU)")
    p.add_argument("--repeats", type=int, help="measurements; the median is reported (default 5 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 2 on CUDA, 1 on CPU)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--jobs", help="concurrent jobs to measure, e.g. 1,2,4 ('' to skip; default 1,2,4 on CUDA, 1,2 on CPU)")
    _model_flags(p)
    p.add_argument("--random-weights", action="store_true",
                   help="random models of the real shapes, no weights needed: the --vqgan preset (default "
                        "imagenet_f16_16384) and each --clip-model (default ViT-B-32; tags are ignored), e.g. "
                        "--clip-model ViT-B-32 --clip-model RN50 for an ensemble")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; building it imports nothing heavy (no torch)."""
    from engine import cli_models, fleet_cli

    parser = _Parser(prog="python -m engine", description="VQGAN+CLIP: paint and edit images from text.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("imagine", help="make a new image from a text prompt")
    p.add_argument("prompt", help='e.g. "a forest rendered in low poly" or "a:1|b:-0.5"')
    _common(p)
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
    _common(p)
    p = sub.add_parser("vary", help="a similar but different picture from an image (its metadata's prompt)")
    p.add_argument("input", type=Path)
    p.add_argument("prompt", nargs="?", help="defaults to the prompt in the image's metadata")
    p.add_argument("--strength", type=float, help="fraction of the parent's steps to run (default from config)")
    _common(p)
    p = sub.add_parser("rerun", help="redo an image from the request in its PNG metadata")
    p.add_argument("input", type=Path)
    _common(p)
    cli_models.add_parser(sub)
    _bench_parser(sub)
    fleet_cli.add_parser(sub)
    _timelapse_parser(sub)
    _zoom_parser(sub)
    return parser


def _image_prompts(specs: list[str]) -> tuple[dict[str, Any], ...]:
    out = []
    for spec in specs:
        path, _, weight = spec.rpartition(":")
        try:
            out.append({"path": path, "weight": float(weight)} if path else {"path": spec})
        except ValueError:
            out.append({"path": spec})
    return tuple(out)


class _IoLimits(TypedDict):
    """``open_image``'s limits from ``config.toml``."""

    max_bytes: int
    max_pixels: int


def _io_limits(cfg: Config) -> _IoLimits:
    return {"max_bytes": cfg.limits.max_input_bytes, "max_pixels": cfg.limits.max_input_pixels}


def _request(args: argparse.Namespace, cfg: Config) -> Request:
    """The request a subcommand asks for: its own builder, then the shared model flags and checks."""
    from engine import inputs
    from engine.request import check_limits

    io = _io_limits(cfg)
    build = {"imagine": _imagine, "edit": _edit, "vary": _variation, "rerun": _rerun}[args.command]
    req = build(args, cfg, _flags(args, io), io)
    req = inputs.locate(req, args.input) if args.command == "rerun" else inputs.pin(req)
    _check_mask_shape(req, io)
    req = _with_model_flags(req, args)
    check_limits(req, cfg.limits)
    return req


def _flags(args: argparse.Namespace, io: _IoLimits) -> dict[str, Any]:
    """The request fields every subcommand takes from its flags (``None``: not given)."""
    from engine.imageio import load_rgb

    over: dict[str, Any] = dict(seed=args.seed, steps=args.steps, cutouts=args.cutouts, cut_pow=args.cut_pow,
                                lr=args.lr, keep_structure=args.keep_structure, keep_latent=args.keep_latent,
                                story_every=args.story_every)
    if args.size:
        over.update(width=args.size[0], height=args.size[1])
    for spec in _image_prompts(args.image_prompt):
        load_rgb(spec["path"], what="image prompt", **io)
    if args.image_prompt:  # dicts, so that Request.parse validates the weights (finite, in range)
        over["image_prompts"] = _image_prompts(args.image_prompt)
    return over


def _imagine(args: argparse.Namespace, cfg: Config, over: dict[str, Any], io: _IoLimits) -> Request:
    from engine.request import Request

    return Request.from_config(cfg, prompt=args.prompt, **over)


def _edit(args: argparse.Namespace, cfg: Config, over: dict[str, Any], io: _IoLimits) -> Request:
    """The input (or a collage made on it), a mask or a region, at the input's aspect inside the limits."""
    from engine.imageio import fit_size, load_mask, load_rgb
    from engine.request import Request

    img = load_rgb(args.input, what="input image", **io)
    over.update(kind="edit", init_image=str(args.input), feather=args.feather, region=args.region)
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


def _rerun(args: argparse.Namespace, cfg: Config, over: dict[str, Any], io: _IoLimits) -> Request:
    """The request in the PNG's metadata, with the flags given on top."""
    from engine.imageio import load_rgb
    from engine.request import Request, check_files_beside

    load_rgb(args.input, what="input image", **io)  # refuse non-images first
    req = Request.parse(_parent_request(args, cfg, required=True))
    check_files_beside(req, args.input.parent, source=str(args.input))
    return req.with_changes(**{k: v for k, v in over.items() if v is not None})


def _with_model_flags(req: Request, args: argparse.Namespace) -> Request:
    """Models named on the command line beat the config's and the metadata's; their files must exist."""
    from engine.choices import clip_spec
    from engine.request import ModelSpec

    files = {k: str(v) for k, v in {
        "vqgan_config": args.vqgan_config, "vqgan_checkpoint": args.vqgan_checkpoint}.items() if v}
    if ("vqgan_config" in files) != ("vqgan_checkpoint" in files):
        raise UserError("--vqgan-config and --vqgan-checkpoint go together")
    changes: dict[str, Any] = dict(files)
    if args.vqgan:  # a preset named on the command line wins over model files
        changes.update(vqgan=args.vqgan, vqgan_config=None, vqgan_checkpoint=None)
    clips = _clip_flags(args, req.models)
    if clips:
        changes.update(clip_spec(clips, tuple(args.clip_weight or ())))
    elif args.clip_weight:
        n = len(req.models.clips())
        if len(args.clip_weight) != n:
            raise UserError(f"give --clip-weight once per CLIP model ({n} models, {len(args.clip_weight)} weights)")
        changes.update(clip_weights=tuple(args.clip_weight) if n > 1 else ())
    if changes:
        req = req.with_changes(models=ModelSpec(**{**req.models.model_dump(), **changes}).model_dump())
    for path in (req.models.vqgan_config, req.models.vqgan_checkpoint,
                 *(p for c in req.models.clips() for p in (c.clip_config, c.clip_checkpoint))):
        if path and not Path(path).is_file():
            raise UserError(f"model file not found: {path}")
    return req


def _clip_flags(args: argparse.Namespace, current: Any) -> list[Any]:
    """The CLIP models named on the command line, in order: ``--clip-model``s (with their
    ``--clip-pretrained`` tags), then ``--clip-config``/``--clip-checkpoint`` pairs; [] = none named."""
    from engine.config import ClipSpec

    names, tags = args.clip_model or [], args.clip_pretrained or []
    configs, ckpts = args.clip_config or [], args.clip_checkpoint or []
    if len(configs) != len(ckpts):
        raise UserError("--clip-config and --clip-checkpoint go together, once each per model")
    if tags and not names:
        if len(tags) != 1:
            raise UserError("give --clip-model once per --clip-pretrained")
        names = [current.clip_model]
    if tags and len(tags) != len(names):
        raise UserError("give --clip-pretrained once per --clip-model (or not at all)")
    out = [ClipSpec(clip_model=n, clip_pretrained=tags[i] if tags else current.clip_pretrained)
           for i, n in enumerate(names)]
    _check_known_clips(out)
    return out + [ClipSpec(clip_config=str(c), clip_checkpoint=str(k)) for c, k in zip(configs, ckpts, strict=True)]


def _check_known_clips(clips: list[Any]) -> None:
    """An open_clip name/tag pair it does not know is refused before any download, with the choices."""
    if not clips:
        return
    import open_clip

    known = open_clip.list_pretrained()
    for c in clips:
        if ":" in c.clip_model or (c.clip_pretrained and Path(c.clip_pretrained).is_file()):
            continue  # a hub name or a weights file: open_clip checks it when loading
        if (c.clip_model, c.clip_pretrained) not in known:
            tags = [t for m, t in known if m == c.clip_model]
            if tags:
                raise UserError(f"unknown CLIP model {c.choice()!r}; available tags for {c.clip_model}: "
                                f"{', '.join(tags)}")
            names = ", ".join(sorted({m for m, _ in known}))
            raise UserError(f"unknown CLIP model {c.clip_model!r}; available: {names}")


def _check_mask_shape(req: Request, io: _IoLimits) -> None:
    """A mask of another shape than its image is refused now, not after the models have loaded."""
    from engine.imageio import check_mask_shape, open_image

    if req.init_image and req.mask:
        check_mask_shape(open_image(req.mask, what="mask", **io).size,
                         open_image(req.init_image, what="input image", **io).size)


def _writable(path: Path, flag: str, *, folder: bool = False) -> None:
    """Fail now, with the option's name, if ``path`` cannot be written (not after the whole run)."""
    if folder:
        if path.exists() and not path.is_dir():
            raise UserError(f"{flag} {path}: not a folder")
        target = path
    else:
        if path.is_dir():
            raise UserError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'out.png'}")
        if path.exists() and not os.access(path, os.W_OK):
            raise UserError(f"{flag} {path}: the file exists and cannot be overwritten")
        target = path.parent
    existing = target.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write in {existing} ({e.strerror})") from None


def _check_outputs(args: argparse.Namespace) -> None:
    _writable(args.output, "-o")
    if args.timelapse:
        _check_timelapse(args.timelapse, args.timelapse_fps, "--timelapse")
    if args.save_every and args.progress_dir:
        _writable(args.progress_dir, "--progress-dir", folder=True)
    if getattr(args, "save_mask", None):
        _writable(args.save_mask, "--save-mask")


def _check_timelapse(path: Path, fps: int, flag: str) -> None:
    """A timelapse's file name and rate, checked before any work."""
    from engine.timelapse import FORMATS, MAX_FPS

    if path.suffix.lower() not in FORMATS:
        raise UserError(f"{flag} {path}: a timelapse is .mp4, .webp or .gif")
    if not 1 <= fps <= MAX_FPS:
        raise UserError(f"{'--fps' if flag == '-o' else '--timelapse-fps'} must be from 1 to {MAX_FPS} (got {fps})")
    _writable(path, flag)


def _timelapse(args: argparse.Namespace) -> int:
    """``timelapse FRAMES_DIR -o OUT``: any folder of frame PNGs, in name order."""
    from engine.timelapse import frame_files, make_timelapse

    _check_timelapse(args.output, args.fps, "-o")
    if args.max_bytes is not None and args.max_bytes < 1:
        raise UserError("--max-bytes must be at least 1")
    made = make_timelapse(frame_files(args.frames), args.output, fps=args.fps, max_bytes=args.max_bytes)
    _say_timelapse(made)
    return 0


def _say_timelapse(made: Timelapse) -> None:
    print(f"{made.path} (timelapse, {made.frames} frames, {made.size[0]}x{made.size[1]})")
    if made.note:
        print(f"note: {made.note}", file=sys.stderr)


def _collage(args: argparse.Namespace, cfg: Config, io: _IoLimits) -> tuple[str, str] | None:
    """A transparent input or ``--paste`` pieces -> canvas and mask files beside the output."""
    from engine import collage
    from engine.imageio import open_image

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


def _variation(args: argparse.Namespace, cfg: Config, over: dict[str, Any], io: _IoLimits) -> Request:
    """A new seed from the parent's own image, with fewer steps and a pull towards the parent."""
    import hashlib

    from engine.imageio import load_rgb
    from engine.request import Request, variation_of

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
    digest = hashlib.sha256(args.input.read_bytes()).hexdigest()[:16]
    fields = {k: parent[k] for k in ("models", "cutouts", "cut_pow", "lr", "betas") if k in parent}
    made = Request.from_config(cfg, **fields, prompt=prompt, steps=parent_steps)
    return variation_of(made, str(args.input), img.size, cfg.editing, strength=strength,
                        parent=f"sha256:{digest} seed:{parent.get('seed', '?')}",
                        **{k: v for k, v in over.items() if v is not None})


def _parent_request(args: argparse.Namespace, cfg: Config, *, required: bool) -> dict[str, Any]:
    """The request in the input PNG's metadata, as untrusted data: its models may name only presets
    and the configured models (a model chosen on the command line replaces the metadata's)."""
    from engine.imageio import read_metadata
    from engine.request import trusted_models

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


def _run(args: argparse.Namespace, cfg: Config) -> int:
    from tqdm import tqdm

    from engine.frames import FrameStore
    from engine.generate import generate
    from engine.models.loader import ModelCache

    _check_outputs(args)
    req = _request(args, cfg)
    cache = ModelCache(cfg.models if not args.device else cfg.models.model_copy(update={"device": args.device}))
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
                p.image.save(args.progress_dir / f"{p.step:05d}.png")
            if frames is not None and frames.wants("run", p.step, p.total):
                frames.add("run", p.step, p.total, _png(p.image))

        every = 1 if (bar.disable is False or args.save_every or frames) else req.steps
        result = generate(models, req, on_progress=on_progress, progress_every=every)
        bar.close()
        png = result.png_bytes()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_bytes(png)
        made = None
        if frames is not None:
            from engine.timelapse import frame_files, make_timelapse

            frames.final("run", req.steps, png)  # the result itself is the last frame
            made = make_timelapse(frame_files(frames.folder("run")), args.timelapse, fps=args.timelapse_fps)
    if getattr(args, "save_mask", None):
        if result.mask is None:
            print("note: no mask was used, so none was saved", file=sys.stderr)
        else:
            result.mask.save(args.save_mask)
    print(f"{args.output} ({result.image.width}x{result.image.height}, seed {req.seed}, "
          f"{req.steps} steps, {result.seconds:.1f} s)")
    if made is not None:
        _say_timelapse(made)
    return 0


def _png(image: Any) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "timelapse":  # needs no config
            return _timelapse(args)
        cfg = load_config(args.config) if getattr(args, "config", None) else _default_config()
        if args.command == "bench":
            from engine import bench

            return bench.run(args, cfg)
        if args.command in ("worker", "fleet"):
            from engine import fleet_cli

            return fleet_cli.run(args, cfg)
        if args.command == "zoom":
            from engine import zoom_cli

            return zoom_cli.run(args, cfg)
        if args.command == "models":
            from engine import cli_models

            return cli_models.run(args, cfg)
        return _run(args, cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _default_config() -> Config:
    """``./config.toml`` when there is one, else built-in defaults."""
    return load_config("config.toml") if Path("config.toml").is_file() else load_config(None)


if __name__ == "__main__":
    sys.exit(main())
