"""``python -m engine bench``: the flags, the models to time, and the figures printed.

The measuring itself (and the plain reference loop it compares against) is ``engine.method.benchmark``;
it is imported only when the command runs, so ``--help`` never loads torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.cli.flags import add_model_flags, with_model_flags
from engine.config import GRID_SIZES, ClipSpec, Config
from engine.errors import UserError

if TYPE_CHECKING:
    import torch

    from engine.models.loader import Models
    from engine.spec.request import ModelSpec


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
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
    add_model_flags(p)
    p.add_argument("--random-weights", action="store_true",
                   help="random models of the real shapes, no weights needed: the --vqgan preset (default "
                        "imagenet_f16_16384) and each --clip-model (default ViT-B-32; tags are ignored), e.g. "
                        "--clip-model ViT-B-32 --clip-model RN50 for an ensemble")
    p.add_argument("--grid", type=int, metavar="N",
                   help="instead: the wall time of a whole job painting a grid of N against one picture of the same "
                        "settings (--steps: each job's steps, default generation.steps)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


@dataclass(frozen=True)
class _Defaults:
    steps: int
    repeats: int
    warmup: int
    jobs: str


# Defaults per device: a CPU step at the real shapes takes seconds, so fewer of them (under 3 minutes in all).
_DEFAULTS = {"cuda": _Defaults(steps=5, repeats=5, warmup=2, jobs="1,2,4"),
             "cpu": _Defaults(steps=1, repeats=3, warmup=1, jobs="1,2")}


def _random_spec(args: argparse.Namespace) -> ModelSpec:
    """The models ``--random-weights`` builds: the ``--vqgan`` preset and each ``--clip-model`` by name."""
    import open_clip

    from engine.models.registry import DEFAULT_PRESET, get_preset
    from engine.spec.choices import clip_spec
    from engine.spec.request import ModelSpec

    if args.vqgan_config or args.vqgan_checkpoint or args.clip_config or args.clip_checkpoint:
        raise UserError("--random-weights builds models by name: give --vqgan and --clip-model, not model files")
    vqgan = args.vqgan or DEFAULT_PRESET
    get_preset(vqgan)  # an unknown preset is refused with the list
    names = args.clip_model or ["ViT-B-32"]
    known = open_clip.list_models()
    for name in names:
        if name not in known:
            raise UserError(f"unknown CLIP model {name!r}; available: {', '.join(known)}")
    clips = [ClipSpec(clip_model=n, clip_pretrained=None) for n in names]
    return ModelSpec(vqgan=vqgan, **clip_spec(clips, tuple(args.clip_weight or ())))


def _models(args: argparse.Namespace, cfg: Config, device: torch.device) -> tuple[Models, ModelSpec, str]:
    """The models to time (the configured ones, with the model flags on top, or random ones), their
    spec and how the figures name them."""
    if args.random_weights:
        spec = _random_spec(args)
        from engine.method.benchmark import random_models

        return (random_models(spec, device), spec,
                f"random {spec.vqgan} + " + " + ".join(c.clip_model for c in spec.clips()))
    from engine.models.loader import ModelCache
    from engine.spec.request import Request

    spec = with_model_flags(  # the same flags and checks as imagine's
        Request.from_config(cfg, prompt="x"), args).models
    mcfg = cfg.models.model_copy(update={"device": str(device)})
    return ModelCache(mcfg).get(spec, device), spec, f"{spec.vqgan_key()} + {spec.clip_key()}"


def _grid(args: argparse.Namespace, cfg: Config, models: Models, spec: ModelSpec, label: str, repeats: int) -> int:
    """``bench --grid N``: a grid's job against one picture's, printed."""
    from engine.method.benchmark import measure_grid

    f = measure_grid(cfg, models, spec, size=tuple(args.size), cutouts=args.cutouts,
                     steps=args.steps or cfg.generation.steps, repeats=repeats, grid=args.grid)
    if args.json:
        print(json.dumps({**f, "models": label}, indent=2))
        return 0
    print(f"device {f['device']}, {f['size']}, {f['cutouts']} cutouts, {f['steps']} steps a job, {label}")
    print(f"  one picture  {f['one_picture_s']:8.2f} s a job")
    print(f"  grid of {f['grid']}    {f['grid_s']:8.2f} s a job: {f['grid_over_one']:.2f}x one picture "
          f"(median of {f['repeats']}, in turns)")
    return 0


def run(args: argparse.Namespace, cfg: Config) -> int:
    from engine.method.benchmark import measure, say
    from engine.models.loader import resolve_device

    if args.grid is not None and args.grid not in GRID_SIZES:
        raise UserError(f"--grid must be one of {', '.join(map(str, GRID_SIZES))}")
    mcfg = cfg.models.model_copy(update={k: v for k, v in
                                         {"device": args.device, "precision": args.precision}.items() if v})
    device = resolve_device(mcfg.device)
    d = _DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    n: int = d.steps if args.steps is None else args.steps
    repeats: int = d.repeats if args.repeats is None else args.repeats
    warmup: int = d.warmup if args.warmup is None else args.warmup
    job_counts = [int(x) for x in (d.jobs if args.jobs is None else args.jobs).split(",") if x.strip()]
    say(f"loading models on {device} ({'random weights' if args.random_weights else 'from the config'})")
    cfg = cfg.model_copy(update={"models": mcfg})
    models, spec, label = _models(args, cfg, device)
    if args.grid is not None:
        return _grid(args, cfg, models, spec, label, repeats)
    figures = measure(cfg, models, spec, label, size=tuple(args.size), cutouts=args.cutouts, steps=n,
                      repeats=repeats, warmup=warmup, job_counts=job_counts)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"device {figures['device']}, {figures['size']}, {args.cutouts} cutouts, {figures['precision']}, {figures['models']}")
    f = figures
    ours, ref, jobs = f["ours_s_per_step"], f["reference_s_per_step"], f["jobs_per_hour"]
    print(f"  ours       {ours * 1000:9.1f} ms/step   peak {f['ours_peak_mib']:8.0f} MiB")
    print(f"  reference  {ref * 1000:9.1f} ms/step   peak {f['reference_peak_mib']:8.0f} MiB")
    print(f"  speedup    {ref / ours:9.2f}x (median of {repeats} x {n} steps, the loops in turns)")
    if "first_clip_alone_s_per_step" in f:
        solo, extra = f["first_clip_alone_s_per_step"], f["each_extra_clip_s_per_step"]
        print(f"  ours with {f['clip_models'][0]} alone {solo * 1000:9.1f} ms/step: each extra CLIP model adds "
              f"{extra * 1000:.1f} ms/step ({extra / solo:+.0%})")
    for b, jph in jobs.items():
        print(f"  {b} job(s) at once: {jph:8.1f} jobs/hour ({cfg.generation.steps} steps each"
              + (", one call for the batch: queue.batch_fused)" if f["batch_fused"] and b != "1" else ")")
              + (f", {jph / jobs['1']:.2f}x one at a time" if "1" in jobs and b != "1" else ""))
    sys.stdout.flush()
    return 0
