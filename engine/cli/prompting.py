"""The parameters and sweeps in a command line's prompt, as one set of flags per job.

``imagine "a {red, blue} car --ar 16:9 --seed 7" -o car.png`` is two jobs; each gets a copy of the
command line's flags with the parameters filled in where no flag of the same name was given (flags
win), and its own outputs: ``car-1.png``, ``car-2.png`` in the order of the sweep. Imports nothing
heavy.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from engine.cli.flags import image_prompts
from engine.config import Config
from engine.errors import UserError
from engine.media.imageio import aspect_size
from engine.spec.parameters import Parameters, Planned, plan
from engine.spec.request import MAX_SEED

NO_STYLES = ("--style: styles are kept per Discord user, so the command line has none; "
             "write the style's words into the prompt")


def numbered(path: Path, k: int) -> Path:
    """``out.png`` -> ``out-3.png``: job ``k`` of several."""
    return path.with_name(f"{path.stem}-{k}{path.suffix}")


def jobs(args: argparse.Namespace, cfg: Config) -> list[tuple[argparse.Namespace, dict[str, Any]]]:
    """One (flags, request fields the parameters set) per job, in order; one job without a prompt."""
    prompt = getattr(args, "prompt", None)
    if not prompt:
        return [(args, {})]
    planned = plan(prompt, cfg.limits)
    base = random.randrange(MAX_SEED + 1)
    out = []
    for k, job in enumerate(planned, 1):
        one = _flags(args, cfg, job, base)
        if len(planned) > 1:
            _number_outputs(one, k)
        out.append((one, _fields(args, job.params)))
    return out


def one_job(args: argparse.Namespace, cfg: Config) -> tuple[argparse.Namespace, dict[str, Any]]:
    """``jobs`` for a command that makes one thing (a zoom video): no sweep, no ``--repeat``, and its
    own steps (``--steps-per-frame``), not ``--steps``."""
    made = jobs(args, cfg)
    if len(made) > 1:
        raise UserError(f"a zoom video is one job, and this prompt makes {len(made)} (a sweep or --repeat); "
                        "sweeps are for imagine and edit")
    [(one, fields)] = made
    if getattr(one, "steps", None) is not None:
        raise UserError("--steps: a zoom paints --steps-per-frame steps on each frame")
    return one, fields


def _fields(args: argparse.Namespace, p: Parameters) -> dict[str, Any]:
    """The request fields the parameters set that no flag sets (seed and steps go through the flags;
    a ``--grid``/``--tile``/``--tile-x`` flag, where the command has one, wins over the parameter)."""
    fields = {k: v for k, v in p.fields().items() if k not in ("seed", "steps")}
    if getattr(args, "grid", None) is not None:
        fields.pop("grid", None)
    if getattr(args, "tile", None) or getattr(args, "tile_x", None):
        fields.pop("tile", None)
    return fields


def _flags(args: argparse.Namespace, cfg: Config, job: Planned, base: int) -> argparse.Namespace:
    """A copy of the flags with the parameters where no flag was given."""
    p: Parameters = job.params
    if p.style is not None:
        raise UserError(NO_STYLES)
    one = argparse.Namespace(**vars(args))
    one.prompt = p.prompt
    first = args.seed if args.seed is not None else p.seed
    one.seed = job.seed(first) if first is not None else job.seed(base) if job.of > 1 else None
    if getattr(one, "steps", None) is None:
        one.steps = p.steps
    if not one.size and p.aspect:
        one.size = list(aspect_size(p.aspect, cfg.generation, cfg.limits))
    if p.model and not (one.vqgan or one.vqgan_config):
        one.vqgan = p.model
    if p.clip and not (one.clip_model or one.clip_config or one.clip_pretrained):
        names = [part.partition("/") for part in p.clip.split("+")]
        one.clip_model = [n for n, _, _ in names]
        one.clip_pretrained = [t or (cfg.models.clip_pretrained or "") for _, _, t in names]
    if p.image_weight is not None:
        if not one.image_prompt:
            raise UserError("--iw weighs the image prompts, and there are none (add --image-prompt IMG)")
        one.image_prompt = [s if "weight" in image_prompts([s])[0] else f"{s}:{p.image_weight:g}"
                            for s in one.image_prompt]
    return one


def _number_outputs(one: argparse.Namespace, k: int) -> None:
    for name in ("output", "timelapse", "save_mask"):
        if getattr(one, name, None):
            setattr(one, name, numbered(getattr(one, name), k))
    if getattr(one, "progress_dir", None):
        one.progress_dir = one.progress_dir / str(k)
