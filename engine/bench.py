"""``python -m engine bench``: seconds per step and peak memory, ours against a plain reference loop.

The reference is the loop as the public notebooks write it: a Python loop of per-cutout crops
and resizes, augmentations applied one cutout at a time, the text embedded again every step,
fp32, and the loss read back every step. It lives here only, to keep the engine honest.
Both loops use the same models, size, cutouts and prompt, in the same process. Then several
jobs are stepped together (``step_together``, fused or not as ``queue.batch_fused`` says) to give jobs
per hour at 1, 2 and 4 at once.
With an ensemble (several CLIP models, named as for ``imagine``) both loops guide with every model,
and ours is also timed with the first CLIP alone, in turns with the others: the difference is the
cost of the extra models (each adds its forward and backward pass).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.choices import clip_spec
from engine.config import ClipSpec, Config
from engine.cutouts import make_augment
from engine.errors import UserError
from engine.generate import start, step_together
from engine.models.loader import ModelCache, Models, autocast_dtype, resolve_device
from engine.ops import clamp_with_grad, spherical_dist, vector_quantize
from engine.prompts import parse_prompts
from engine.request import ModelSpec, Request


def _random_spec(args: argparse.Namespace) -> ModelSpec:
    """The models ``--random-weights`` builds: the ``--vqgan`` preset and each ``--clip-model`` by name."""
    import open_clip

    from engine.models.registry import DEFAULT_PRESET, get_preset

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


def _random_models(spec: ModelSpec, device: torch.device) -> Models:
    """``spec``'s VQGAN (built from its shipped config) and CLIP models, randomly initialised: the real
    shapes, for timing on a machine without the weights (speed does not depend on values)."""
    import open_clip

    from engine.models.clip import wrap_clip
    from engine.models.registry import get_preset
    from engine.models.vqgan import read_config, vqgan_from_config

    config = read_config(get_preset(spec.vqgan).config)
    vq = vqgan_from_config(config).eval().requires_grad_(False).to(device)
    clips = [wrap_clip(open_clip.create_model(c.clip_model, pretrained=None, force_quick_gelu=True),
                       open_clip.get_tokenizer(c.clip_model)).to(device) for c in spec.clips()]
    return Models(vq, clips[0], device, None, tuple(clips[1:]), tuple(spec.weights()) if len(clips) > 1 else ())


def _models(args: argparse.Namespace, cfg: Config, device: torch.device) -> tuple[Models, ModelSpec, str]:
    """The models to time (the configured ones, with the model flags on top, or random ones), their
    spec and how the figures name them."""
    if args.random_weights:
        spec = _random_spec(args)
        return (_random_models(spec, device), spec,
                f"random {spec.vqgan} + " + " + ".join(c.clip_model for c in spec.clips()))
    from engine.__main__ import _with_model_flags  # the same flags and checks as imagine's

    spec = _with_model_flags(Request.from_config(cfg, prompt="x"), args).models
    mcfg = cfg.models.model_copy(update={"device": str(device)})
    return ModelCache(mcfg).get(spec, device), spec, f"{spec.vqgan_key()} + {spec.clip_key()}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class _Defaults:
    steps: int
    repeats: int
    warmup: int
    jobs: str


# Defaults per device: a CPU step at the real shapes takes seconds, so fewer of them (under 3 minutes in all).
_DEFAULTS = {"cuda": _Defaults(steps=5, repeats=5, warmup=2, jobs="1,2,4"),
             "cpu": _Defaults(steps=1, repeats=3, warmup=1, jobs="1,2")}


def _say(message: str) -> None:
    """One line per phase on stderr, so a long CPU run is visibly alive and the figures stay on stdout."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _once(step: Callable[[], None], n: int, device: torch.device) -> float:
    t = time.perf_counter()
    for _ in range(n):
        step()
    _sync(device)
    return (time.perf_counter() - t) / n


def _warm(step: Callable[[], None], k: int, device: torch.device) -> None:
    """Untimed steps (at least one, so that the peak memory is that of a step)."""
    for _ in range(max(1, k)):
        step()
    _sync(device)


def _time(step: Callable[[], None], n: int, warmup: int, repeats: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    return statistics.median(_once(step, n, device) for _ in range(repeats))


def _time_turns(loops: list[Callable[[], None]], n: int, repeats: int, device: torch.device) -> list[float]:
    """Median seconds per step of each loop, measured in turns so that other load on the machine hits all alike."""
    times: list[list[float]] = [[] for _ in loops]
    for i in range(repeats):
        _say(f"measuring, round {i + 1} of {repeats} ({n} step{'s' if n != 1 else ''} of each loop)")
        for t, loop in zip(times, loops, strict=True):
            t.append(_once(loop, n, device))
    return [statistics.median(t) for t in times]


def reference_step_fn(models: Models, req: Request) -> Callable[[], None]:
    """One step of the notebook loop: per-cutout crop/resize/augment, text re-embedded, loss read, z clamped.
    An ensemble: the same for each CLIP model at its own input size, the losses summed by weight."""
    torch.manual_seed(req.seed)
    f = models.vqgan.factor
    w, h = req.width // f * f, req.height // f * f
    book = models.vqgan.codebook
    z = book[torch.randint(len(book), ((h // f) * (w // f),), device=models.device)]
    z = z.T.reshape(1, -1, h // f, w // f).clone().requires_grad_(True)
    z_min, z_max = book.min(0).values[None, :, None, None], book.max(0).values[None, :, None, None]
    opt = torch.optim.Adam([z], lr=req.lr, betas=req.betas)
    augment = make_augment(req.noise).to(models.device)
    prompts = parse_prompts(req.prompt)

    def step() -> None:
        img = clamp_with_grad(models.vqgan.decode(vector_quantize(z, book)).add(1).div(2), 0, 1)
        loss = req.z_l2_weight * z.pow(2).mean()
        for clip, weight in models.clips():
            texts = clip.encode_text([p.text for p in prompts])
            size = cut = clip.size
            max_size, min_size = min(w, h), min(w, h, cut)
            cuts = []
            for _ in range(req.cutouts):
                s = int(torch.rand([]) ** req.cut_pow * (max_size - min_size) + min_size)
                ox, oy = int(torch.randint(0, w - s + 1, ())), int(torch.randint(0, h - s + 1, ()))
                c = F.adaptive_avg_pool2d(img[:, :, oy : oy + s, ox : ox + s], size)
                cuts.append(augment(c))
            emb = clip.encode_image(torch.cat(cuts))
            loss = loss + weight * sum(p.weight * spherical_dist(emb, texts[i][None]).mean()
                                       for i, p in enumerate(prompts))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            z.copy_(z.maximum(z_min).minimum(z_max))
        loss.item()

    return step


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float:
    """Peak GPU memory (CUDA) or peak resident set size of the process (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args: argparse.Namespace, cfg: Config) -> int:
    mcfg = cfg.models.model_copy(update={k: v for k, v in
                                         {"device": args.device, "precision": args.precision}.items() if v})
    device = resolve_device(mcfg.device)
    d = _DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    n: int = d.steps if args.steps is None else args.steps
    repeats: int = d.repeats if args.repeats is None else args.repeats
    warmup: int = d.warmup if args.warmup is None else args.warmup
    job_counts = [int(x) for x in (d.jobs if args.jobs is None else args.jobs).split(",") if x.strip()]
    _say(f"loading models on {device} ({'random weights' if args.random_weights else 'from the config'})")
    models, spec, label = _models(args, cfg.model_copy(update={"models": mcfg}), device)
    fast_models = dataclasses.replace(models, dtype=autocast_dtype(mcfg.precision))  # every CLIP of an ensemble
    req = Request.from_config(cfg, prompt="a forest rendered in low poly|fog:-0.3", seed=0, steps=10**6,
                              width=args.size[0], height=args.size[1], cutouts=args.cutouts, models=spec)
    clips = fast_models.clips()

    _say(f"ours: {max(1, warmup)} warm-up step(s)")
    _peak_reset(device)
    ours_runs = [start(fast_models, req)]
    ours_step = lambda: step_together(ours_runs)  # noqa: E731
    _warm(ours_step, warmup, device)
    ours_peak = _peak(device)
    _say(f"reference: {max(1, warmup)} warm-up step(s)")
    _peak_reset(device)
    ref_step = reference_step_fn(models, req)
    _warm(ref_step, warmup, device)
    ref_peak = _peak(device)
    loops = [ours_step, ref_step]
    if len(clips) > 1:  # the first CLIP alone, timed in turns with the ensemble
        _say(f"ours with the first CLIP alone: {max(1, warmup)} warm-up step(s)")
        first = spec.model_copy(update={"more_clips": (), "clip_weights": ()})
        solo_runs = [start(dataclasses.replace(fast_models, more_clips=(), weights=()), req.with_changes(
            models=first.model_dump()))]
        solo_step = lambda: step_together(solo_runs)  # noqa: E731
        _warm(solo_step, warmup, device)
        loops.append(solo_step)
    ours, ref, *solo = _time_turns(loops, n, repeats, device)
    ours_runs.clear()

    jobs: dict[int, float] = {}
    for b in job_counts:
        if b == 1:
            per_step = ours  # one job at once is the step just measured
        else:
            _say(f"{b} jobs stepped together")
            runs = [start(fast_models, req.with_changes(seed=i)) for i in range(b)]
            per_step = _time(functools.partial(step_together, runs, fused=cfg.queue.batch_fused), n, 1, repeats,
                             device)
        jobs[b] = 3600 / (cfg.generation.steps * per_step / b)

    names = [c.clip_config if c.clip_config and c.clip_checkpoint else c.choice() for c in spec.clips()]
    figures = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "size": f"{req.width}x{req.height}", "cutouts": req.cutouts, "precision": mcfg.precision,
        "models": label, "clip_models": names, "clip_weights": [w for _, w in clips],
        "ours_s_per_step": ours, "reference_s_per_step": ref, "speedup": ref / ours,
        "ours_peak_mib": ours_peak, "reference_peak_mib": ref_peak,
        "jobs_per_hour": {str(k): v for k, v in jobs.items()}, "batch_fused": cfg.queue.batch_fused,
        "steps_per_job": cfg.generation.steps,
        "timed_steps": n, "repeats": repeats,
    }
    if solo:
        extra = (ours - solo[0]) / (len(clips) - 1)
        figures.update(first_clip_alone_s_per_step=solo[0], each_extra_clip_s_per_step=extra)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"device {figures['device']}, {figures['size']}, {req.cutouts} cutouts, {mcfg.precision}, {label}")
    print(f"  ours       {ours * 1000:9.1f} ms/step   peak {ours_peak:8.0f} MiB")
    print(f"  reference  {ref * 1000:9.1f} ms/step   peak {ref_peak:8.0f} MiB")
    print(f"  speedup    {ref / ours:9.2f}x (median of {repeats} x {n} steps, the loops in turns)")
    if solo:
        print(f"  ours with {names[0]} alone {solo[0] * 1000:9.1f} ms/step: each extra CLIP model adds "
              f"{extra * 1000:.1f} ms/step ({extra / solo[0]:+.0%})")
    for b, jph in jobs.items():
        print(f"  {b} job(s) at once: {jph:8.1f} jobs/hour ({cfg.generation.steps} steps each"
              + (", one call for the batch: queue.batch_fused)" if cfg.queue.batch_fused and b > 1 else ")")
              + (f", {jph / jobs[1]:.2f}x one at a time" if 1 in jobs and b != 1 else ""))
    sys.stdout.flush()
    return 0
