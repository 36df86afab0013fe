"""What ``python -m engine bench`` measures: seconds per step and peak memory, ours against a plain reference loop.

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

import dataclasses
import functools
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from engine.config import Config
from engine.method.cutouts import make_augment
from engine.method.generate import Result, start, step_together
from engine.method.grid import paint
from engine.method.ops import clamp_with_grad, spherical_dist, vector_quantize
from engine.models.loader import Models, autocast_dtype
from engine.spec.prompts import parse_prompts
from engine.spec.request import ModelSpec, Request


def random_models(spec: ModelSpec, device: torch.device) -> Models:
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def say(message: str) -> None:
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
        say(f"measuring, round {i + 1} of {repeats} ({n} step{'s' if n != 1 else ''} of each loop)")
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


def measure(cfg: Config, models: Models, spec: ModelSpec, label: str, *, size: tuple[int, int], cutouts: int,
            steps: int, repeats: int, warmup: int, job_counts: list[int]) -> dict[str, Any]:
    """Seconds per step and peak memory of ours and of the reference loop (and of the first CLIP alone for
    an ensemble, and of several jobs stepped together), on ``models`` as configured by ``cfg.models``."""
    mcfg, device, n = cfg.models, models.device, steps
    fast_models = dataclasses.replace(models, dtype=autocast_dtype(mcfg.precision))  # every CLIP of an ensemble
    req = Request.from_config(cfg, prompt="a forest rendered in low poly|fog:-0.3", seed=0, steps=10**6,
                              width=size[0], height=size[1], cutouts=cutouts, models=spec)
    clips = fast_models.clips()

    say(f"ours: {max(1, warmup)} warm-up step(s)")
    _peak_reset(device)
    ours_runs = [start(fast_models, req)]
    ours_step = lambda: step_together(ours_runs)  # noqa: E731
    _warm(ours_step, warmup, device)
    ours_peak = _peak(device)
    say(f"reference: {max(1, warmup)} warm-up step(s)")
    _peak_reset(device)
    ref_step = reference_step_fn(models, req)
    _warm(ref_step, warmup, device)
    ref_peak = _peak(device)
    loops = [ours_step, ref_step]
    if len(clips) > 1:  # the first CLIP alone, timed in turns with the ensemble
        say(f"ours with the first CLIP alone: {max(1, warmup)} warm-up step(s)")
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
            say(f"{b} jobs stepped together")
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
    return figures


def _whole(result: Result) -> None:
    """What a worker sends back: the picture's PNG, and a grid's candidates' PNGs."""
    for r in (result, *result.candidates):
        r.png_bytes()


def measure_grid(cfg: Config, models: Models, spec: ModelSpec, *, size: tuple[int, int], cutouts: int, steps: int,
                 repeats: int, grid: int) -> dict[str, Any]:
    """Wall time of a whole job (prepare, every step, the PNGs) painting one picture and painting a grid
    of ``grid`` of the same settings, in turns (median of ``repeats``), after one untimed job of each."""
    device = models.device
    one = Request.from_config(cfg, prompt="a forest rendered in low poly|fog:-0.3", seed=0, steps=steps,
                              width=size[0], height=size[1], cutouts=cutouts, models=spec)
    many = one.with_changes(grid=grid)
    loops = [lambda: _whole(paint(models, one)), lambda: _whole(paint(models, many))]
    say(f"a picture and a grid of {grid}, {steps} steps each: one untimed job of each")
    for loop in loops:
        _warm(loop, 1, device)
    alone, together = _time_turns(loops, 1, repeats, device)
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
            f"cpu ({torch.get_num_threads()} threads)", "size": f"{one.width}x{one.height}", "cutouts": cutouts,
            "steps": steps, "grid": grid, "repeats": repeats, "one_picture_s": alone, "grid_s": together,
            "grid_over_one": together / alone}
