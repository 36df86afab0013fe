"""``python -m engine describe IMG [-n 4]``: prompts that describe a picture, best first, with CLIP's score.

Each suggestion is a subject, a medium, an art movement, an artist and up to three flavours from the shipped
vocabularies, put together by CLIP (``engine.method.describe``). The first run with a model embeds the
vocabularies once (about a minute on a CPU) and caches them beside the model files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.errors import UserError


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("describe", help="suggest prompts for a picture (CLIP ranks subjects, media, art "
                                        "movements, artists and flavours)",
                       description="Print N prompts that describe the picture, best first, each after its CLIP "
                                   "score (cosine similarity: higher is closer). Paint one with "
                                   "python -m engine imagine \"PROMPT\" -o out.png.")
    p.add_argument("image", type=Path, metavar="IMG", help="the picture (PNG, JPEG, WebP, GIF or BMP)")
    p.add_argument("-n", type=int, default=4, metavar="N", help="how many prompts (default 4, at most 10)")
    p.add_argument("--vocab", type=Path, metavar="DIR",
                   help="your own word lists: a folder with any of subjects.txt, media.txt, movements.txt, "
                        "artists.txt, flavours.txt (one entry a line; the shipped list for each one missing)")
    p.add_argument("--config", type=Path, help="config.toml (models, cache folder, device)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--clip-model", metavar="NAME", help="open_clip model (default: the config's first CLIP)")
    p.add_argument("--clip-pretrained", metavar="TAG", help="its pretrained tag")
    p.add_argument("--clip-config", type=Path, help="a local CLIP's config JSON")
    p.add_argument("--clip-checkpoint", type=Path, help="its weights, with --clip-config")


def _models(args: argparse.Namespace, cfg: Config) -> Config:
    """The config with the CLIP named by the flags (the describing one) and the device."""
    update: dict[str, Any] = {"more_clips": (), "clip_weights": ()}
    if (args.clip_config is None) != (args.clip_checkpoint is None):
        raise UserError("--clip-config and --clip-checkpoint go together")
    if args.clip_config is not None:
        for path in (args.clip_config, args.clip_checkpoint):
            if not path.is_file():
                raise UserError(f"model file not found: {path}")
        update.update(clip_config=str(args.clip_config), clip_checkpoint=str(args.clip_checkpoint))
    elif args.clip_model or args.clip_pretrained:
        update.update(clip_config=None, clip_checkpoint=None, clip_model=args.clip_model or cfg.models.clip_model,
                      clip_pretrained=args.clip_pretrained or cfg.models.clip_pretrained)
    if args.device:
        update["device"] = args.device
    return cfg.model_copy(update={"models": cfg.models.model_copy(update=update)})


def run(args: argparse.Namespace, cfg: Config) -> int:
    if not args.image.is_file():
        raise UserError(f"picture {args.image}: file not found")
    cfg = _models(args, cfg)
    from engine.workers.describer import Describer

    told_once: list[str] = []

    def told(vocab: Any) -> None:
        if not told_once:
            print(f"describe: embedding the vocabularies with this CLIP model (once: they are cached in "
                  f"{describer.folder})", file=sys.stderr, flush=True)
        told_once.append(vocab.slot)

    describer = Describer(cfg, vocab_dir=args.vocab, on_compute=told)
    for s in describer.describe(args.image, args.n):
        print(f"{s.score:.4f}  {s.prompt}")
    return 0
