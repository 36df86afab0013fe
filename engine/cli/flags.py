"""The flags and checks that several subcommands share (imagine, edit, vary, rerun, zoom, bench).

Building a parser or checking a flag imports nothing heavy, so ``--help`` and usage errors never load torch.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from engine.config import Config
from engine.errors import UserError

if TYPE_CHECKING:
    from engine.media.timelapse import Timelapse
    from engine.spec.request import Request


def add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, type=Path, help="PNG file to write")
    p.add_argument("--steps", type=int)
    p.add_argument("--story-every", type=int, metavar="K",
                   help='a story ("a ^ b ^ c"): the next part every K steps (default: steps / parts)')
    add_paint_flags(p)
    p.add_argument("--keep-structure", type=float, help="pull cutouts towards the input's CLIP embedding")
    p.add_argument("--keep-latent", type=float, help="L2 pull of z towards the input's latent")
    p.add_argument("--save-every", type=int, help="write a progress image every N steps")
    p.add_argument("--progress-dir", type=Path, help="folder for the progress images")
    p.add_argument("--timelapse", type=Path, metavar="FILE",
                   help="also write the run as a timelapse: .mp4, .webp or .gif (its last frame is the result)")
    p.add_argument("--timelapse-fps", type=int, default=12, metavar="N", help="timelapse frames a second (12)")


def add_paint_flags(p: argparse.ArgumentParser) -> None:
    """The options every paint command takes (imagine, edit, vary, rerun, zoom)."""
    p.add_argument("--config", type=Path, help="config.toml (defaults for everything below)")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"))
    p.add_argument("--seed", type=int)
    p.add_argument("--cutouts", type=int)
    p.add_argument("--cut-pow", type=float)
    p.add_argument("--lr", type=float)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    add_model_flags(p)
    p.add_argument("--image-prompt", action="append", default=[], metavar="IMG[:WEIGHT]")


def add_model_flags(p: argparse.ArgumentParser) -> None:
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


def image_prompts(specs: list[str]) -> tuple[dict[str, Any], ...]:
    out = []
    for spec in specs:
        path, _, weight = spec.rpartition(":")
        try:
            out.append({"path": path, "weight": float(weight)} if path else {"path": spec})
        except ValueError:
            out.append({"path": spec})
    return tuple(out)


class IoLimits(TypedDict):
    """``open_image``'s limits from ``config.toml``."""

    max_bytes: int
    max_pixels: int


def io_limits(cfg: Config) -> IoLimits:
    return {"max_bytes": cfg.limits.max_input_bytes, "max_pixels": cfg.limits.max_input_pixels}


def request_flags(args: argparse.Namespace, io: IoLimits) -> dict[str, Any]:
    """The request fields every subcommand takes from its flags (``None``: not given)."""
    from engine.media.imageio import load_rgb

    over: dict[str, Any] = dict(seed=args.seed, steps=args.steps, cutouts=args.cutouts, cut_pow=args.cut_pow,
                                lr=args.lr, keep_structure=args.keep_structure, keep_latent=args.keep_latent,
                                story_every=args.story_every)
    if args.size:
        over.update(width=args.size[0], height=args.size[1])
    for spec in image_prompts(args.image_prompt):
        load_rgb(spec["path"], what="image prompt", **io)
    if args.image_prompt:  # dicts, so that Request.parse validates the weights (finite, in range)
        over["image_prompts"] = image_prompts(args.image_prompt)
    return over


def with_model_flags(req: Request, args: argparse.Namespace) -> Request:
    """Models named on the command line beat the config's and the metadata's; their files must exist."""
    from engine.spec.choices import clip_spec
    from engine.spec.request import ModelSpec

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


def check_mask_shape_early(req: Request, io: IoLimits) -> None:
    """A mask of another shape than its image is refused now, not after the models have loaded."""
    from engine.media.imageio import check_mask_shape, open_image

    if req.init_image and req.mask:
        check_mask_shape(open_image(req.mask, what="mask", **io).size,
                         open_image(req.init_image, what="input image", **io).size)


def writable(path: Path, flag: str, *, folder: bool = False) -> None:
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


def check_timelapse(path: Path, fps: int, flag: str) -> None:
    """A timelapse's file name and rate, checked before any work."""
    from engine.media.timelapse import FORMATS, MAX_FPS

    if path.suffix.lower() not in FORMATS:
        raise UserError(f"{flag} {path}: a timelapse is .mp4, .webp or .gif")
    if not 1 <= fps <= MAX_FPS:
        raise UserError(f"{'--fps' if flag == '-o' else '--timelapse-fps'} must be from 1 to {MAX_FPS} (got {fps})")
    writable(path, flag)


def say_timelapse(made: Timelapse) -> None:
    print(f"{made.path} (timelapse, {made.frames} frames, {made.size[0]}x{made.size[1]})")
    if made.note:
        print(f"note: {made.note}", file=sys.stderr)


