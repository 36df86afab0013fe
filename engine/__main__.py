"""``python -m engine``: imagine, edit, rerun and models, without Discord.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

from engine import __version__
from engine.config import Config, load_config
from engine.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, type=Path, help="PNG file to write")
    p.add_argument("--config", type=Path, help="config.toml (defaults for everything below)")
    p.add_argument("--steps", type=int)
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"))
    p.add_argument("--seed", type=int)
    p.add_argument("--cutouts", type=int)
    p.add_argument("--cut-pow", type=float)
    p.add_argument("--lr", type=float)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--vqgan", help="preset name (python -m engine models lists them)")
    p.add_argument("--vqgan-config", type=Path)
    p.add_argument("--vqgan-checkpoint", type=Path)
    p.add_argument("--clip-model")
    p.add_argument("--clip-pretrained")
    p.add_argument("--clip-config", type=Path)
    p.add_argument("--clip-checkpoint", type=Path)
    p.add_argument("--image-prompt", action="append", default=[], metavar="IMG[:WEIGHT]")
    p.add_argument("--keep-structure", type=float, help="pull cutouts towards the input's CLIP embedding")
    p.add_argument("--keep-latent", type=float, help="L2 pull of z towards the input's latent")
    p.add_argument("--save-every", type=int, help="write a progress image every N steps")
    p.add_argument("--progress-dir", type=Path, help="folder for the progress images")


def build_parser() -> argparse.ArgumentParser:
    from engine import bench, cli_models

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
    p.add_argument("--feather", type=int, help="pixels of soft edge outside the mask")
    _common(p)
    p = sub.add_parser("rerun", help="redo an image from the request in its PNG metadata")
    p.add_argument("input", type=Path)
    _common(p)
    cli_models.add_parser(sub)
    bench.add_parser(sub)
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


def _request(args: argparse.Namespace, cfg: Config):
    from engine.imageio import fit_size, load_mask, load_rgb, read_metadata
    from engine.request import ImagePrompt, ModelSpec, Request, check_limits

    lim = cfg.limits
    io_limits = {"max_bytes": lim.max_input_bytes, "max_pixels": lim.max_input_pixels}
    over: dict[str, Any] = dict(seed=args.seed, steps=args.steps, cutouts=args.cutouts, cut_pow=args.cut_pow,
                                lr=args.lr, keep_structure=args.keep_structure, keep_latent=args.keep_latent)
    if args.size:
        over.update(width=args.size[0], height=args.size[1])
    for spec in _image_prompts(args.image_prompt):
        load_rgb(spec["path"], what="image prompt", **io_limits)
    if args.image_prompt:
        over["image_prompts"] = tuple(ImagePrompt(**s) for s in _image_prompts(args.image_prompt))

    if args.command == "rerun":
        load_rgb(args.input, what="input image", **io_limits)  # refuse non-images first
        meta = read_metadata(args.input)
        if not meta or "request" not in meta:
            raise UserError(f"{args.input}: no vqgan-clip request in this PNG's metadata")
        req = Request.parse(meta["request"]).with_changes(**{k: v for k, v in over.items() if v is not None})
    else:
        if args.command == "edit":
            img = load_rgb(args.input, what="input image", **io_limits)
            over.update(kind="edit", init_image=str(args.input), feather=args.feather)
            if not args.size:
                over["width"], over["height"] = fit_size(*img.size, lim.max_width, lim.max_height, lim.max_pixels)
            if args.mask:
                load_mask(args.mask, **io_limits)
                over["mask"] = str(args.mask)
        req = Request.from_config(cfg, prompt=args.prompt, **over)

    m = req.models
    files = {k: str(v) for k, v in {
        "vqgan_config": args.vqgan_config, "vqgan_checkpoint": args.vqgan_checkpoint,
        "clip_config": args.clip_config, "clip_checkpoint": args.clip_checkpoint}.items() if v}
    for a, b in (("vqgan_config", "vqgan_checkpoint"), ("clip_config", "clip_checkpoint")):
        if (a in files) != (b in files):
            raise UserError(f"--{a.replace('_', '-')} and --{b.replace('_', '-')} go together")
    named = {k: v for k, v in {"vqgan": args.vqgan, "clip_model": args.clip_model,
                               "clip_pretrained": args.clip_pretrained}.items() if v}
    if named.keys() & {"vqgan"}:
        files.update(vqgan_config=None, vqgan_checkpoint=None)  # a preset named on the command line wins
    if named.keys() & {"clip_model", "clip_pretrained"}:
        files.update(clip_config=None, clip_checkpoint=None)
    if files or named:
        req = req.with_changes(models=ModelSpec(**{**m.model_dump(), **named, **files}).model_dump())
    for name in ("vqgan_config", "vqgan_checkpoint", "clip_config", "clip_checkpoint"):
        path = getattr(req.models, name)
        if path and not Path(path).is_file():
            raise UserError(f"model file not found: {path}")
    check_limits(req, lim)
    return req


def _run(args: argparse.Namespace, cfg: Config) -> int:
    from tqdm import tqdm

    from engine.generate import generate
    from engine.models.loader import ModelCache

    req = _request(args, cfg)
    cache = ModelCache(cfg.models if not args.device else cfg.models.model_copy(update={"device": args.device}))
    models = cache.get(req.models)
    if (req.width, req.height) != (req.width // models.vqgan.factor * models.vqgan.factor,
                                   req.height // models.vqgan.factor * models.vqgan.factor):
        print(f"note: size rounded down to a multiple of {models.vqgan.factor} pixels", file=sys.stderr)
    if args.progress_dir and args.save_every:
        args.progress_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=req.steps, unit="step", disable=not sys.stderr.isatty(), desc=req.prompt[:30])

    def on_progress(p) -> None:
        bar.update(p.step - bar.n)
        bar.set_postfix(loss=f"{p.loss:.4f}")
        if args.save_every and args.progress_dir and p.step % args.save_every == 0:
            p.image.save(args.progress_dir / f"{p.step:05d}.png")

    every = 1 if (bar.disable is False or args.save_every) else req.steps
    result = generate(models, req, on_progress=on_progress, progress_every=every)
    bar.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(result.png_bytes())
    print(f"{args.output} ({result.image.width}x{result.image.height}, seed {req.seed}, "
          f"{req.steps} steps, {result.seconds:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config) if getattr(args, "config", None) else _default_config()
        if args.command == "bench":
            from engine import bench

            return bench.run(args, cfg)
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
