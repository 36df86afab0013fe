"""The VQGAN+CLIP optimisation loop (paper section 2), for one job or several at once.

z starts from random codebook entries (seeded) or from an encoded image; each step decodes the
straight-through-quantised z, takes N augmented cutouts, embeds them with CLIP and descends the
summed spherical distances to the prompts plus the decaying L2 on z, with Adam; after each step z
is clamped to the codebook's per-channel range (as the public notebooks do), so it cannot drift
far from every code. With a mask only the masked latent cells move (Paint by Word) and the result
is composited so that pixels outside the feathered mask are exactly the input's.

``prepare`` turns a request into tensors (reads the input, mask and image prompts, finds the region,
embeds the prompts); a ``Run`` holds one job's state (z, Adam, targets, its own RNG) and touches no file.
``step_together(runs)`` advances several runs of the same models by one step, each with the calls
(and shapes) of a solo run and its random cutouts from its own RNG, so a job gives the same picture,
bit for bit, alone or in a batch (``fused=True``: one decoder and one CLIP call for all, faster on a
GPU, not bit-reproducible). ``generate`` is the one-job loop.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.errors import Cancelled, UserError
from engine.media.canvas import grow
from engine.media.imageio import check_mask_shape, load_mask, load_rgb, png_bytes
from engine.method.cutouts import make_augment, make_cutouts, random_roll
from engine.method.losses import Targets, latent_anchor, prompt_loss, z_l2
from engine.method.masks import composite, feather, latent_mask
from engine.method.ops import clamp_with_grad, vector_quantize
from engine.method.region import clip_judges, region_mask
from engine.models.clip import Clip
from engine.models.loader import Models
from engine.models.tiling import tiled
from engine.spec.prompts import Prompt, parse_prompts, parse_story, part_at
from engine.spec.request import Request
from engine.version import __version__

NAN_CHECK_EVERY = 10  # steps between checks for a NaN loss on a GPU (each check waits for the GPU)


@dataclass
class Progress:
    """A look at the run; ``image`` is made from the frame only when someone asks for it."""

    step: int
    total: int
    loss: float
    frame: torch.Tensor  # (1, 3, H, W) uint8
    part: int = 0  # the story part (0-based) that was guiding this step

    @property
    def image(self) -> Image.Image:
        return to_image(self.frame)


@dataclass
class Result:
    image: Image.Image
    request: Request
    seconds: float
    losses: list[float] = field(default_factory=list)
    mask: Image.Image | None = None  # the edit mask used (white = changed), e.g. one CLIP found
    candidates: list[Result] = field(default_factory=list)  # a grid's pictures (``engine.method.grid``)
    _png: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def metadata(self) -> dict[str, Any]:
        return {"engine_version": __version__, "request": self.request.to_metadata(),
                "seconds": round(self.seconds, 3)}

    def png_bytes(self) -> bytes:
        """The picture as a PNG with the request in its metadata (encoded once)."""
        if self._png is None:
            self._png = png_bytes(self.image, self.metadata())
        return self._png


def to_tensor(img: Image.Image, device: torch.device) -> torch.Tensor:
    """PIL -> (1, C, H, W) float in [0, 1]."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    arr = arr[..., None] if arr.ndim == 2 else arr
    return arr.permute(2, 0, 1)[None].to(device=device, dtype=torch.float32) / 255


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8)


def to_image(x_u8: torch.Tensor) -> Image.Image:
    return Image.fromarray(x_u8[0].permute(1, 2, 0).cpu().numpy())


def working_size(req: Request, factor: int) -> tuple[int, int]:
    """The request's size rounded down to whole VQGAN cells."""
    return max(factor, req.width // factor * factor), max(factor, req.height // factor * factor)


def autocast(models: Models) -> contextlib.AbstractContextManager:
    """Mixed precision for the decoder and CLIP where the models ask for it (CUDA by default)."""
    if models.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(models.device.type, dtype=models.dtype)


def synth(models: Models, z: torch.Tensor, tile: str = "none") -> torch.Tensor:
    """z -> quantise (straight-through) -> decode -> image in [0, 1] with a gradient-keeping clamp;
    ``tile`` ("x", "xy"): the decoder wraps around in those directions (a seamless tile)."""
    zq = vector_quantize(z, models.vqgan.codebook)
    with tiled(models.vqgan, tile), autocast(models):
        x = models.vqgan.decode(zq)
    return clamp_with_grad(x.float().add(1).div(2), 0, 1)


def embed(models: Models, cuts: torch.Tensor, clip: Clip | None = None) -> torch.Tensor:
    """Cutouts -> CLIP image embeddings, with ``clip`` (default: the first CLIP model)."""
    with autocast(models):
        return (clip or models.clip).encode_image(cuts).float()


def codebook_range(models: Models) -> tuple[torch.Tensor, torch.Tensor]:
    """The codebook's per-channel min and max, shaped (1, C, 1, 1): the box z is clamped to."""
    book = models.vqgan.codebook
    return book.min(0).values[None, :, None, None], book.max(0).values[None, :, None, None]


def random_z(models: Models, h: int, w: int) -> torch.Tensor:
    """Random codebook entries on an (h, w) grid: a start that is already on the code manifold."""
    book = models.vqgan.codebook
    idx = torch.randint(book.shape[0], (h * w,), device=book.device)
    return book[idx].T.reshape(1, book.shape[1], h, w).clone()


@dataclass(frozen=True)
class Edit:
    """A masked edit's tensors at the working size: they exist together or not at all."""

    original: torch.Tensor  # (1, 3, H, W) in [0, 1]: the input picture
    pixels: torch.Tensor  # (1, 1, H, W) binary, 1 = may change (the mask shown with the result)
    cells: torch.Tensor  # (1, 1, H/f, W/f): the latent cells that learn
    soft: torch.Tensor  # the pixel mask feathered: how much of the generated picture shows

    def composite(self, image: torch.Tensor) -> torch.Tensor:
        """The generated picture inside the mask, the input's own pixels outside it."""
        return composite(self.original, image, self.soft)


@dataclass(frozen=True)
class Inputs:
    """A request's files as tensors, ready to optimise: ``prepare`` makes them, ``Run`` steps them."""

    req: Request  # at the working size actually painted
    z0: torch.Tensor  # the start: random codes, or the encoded input picture
    targets: Targets  # the first story part's (the only part's, without a story)
    augment: torch.nn.Module | None
    edit: Edit | None  # a masked edit (mask file, region phrase, or both)
    rng: list[torch.Tensor]  # the random state after preparing under the request's seed: the run goes on from it
    started: float  # time.perf_counter() when preparing began (a result's seconds count from here)
    story: tuple[Targets, ...] = ()  # every story part's targets, embedded once (empty: no story)
    more_targets: tuple[tuple[Targets, ...], ...] = ()  # an ensemble: each further CLIP model's targets, per part


def _rng_devices(models: Models) -> list[torch.device]:
    return [models.device] if models.device.type == "cuda" else []


def _rng_state(devices: list[torch.device]) -> list[torch.Tensor]:
    return [torch.get_rng_state()] + [torch.cuda.get_rng_state(d) for d in devices]


def prepare(models: Models, req: Request) -> Inputs:
    """Read the request's files (input, mask, image prompts), find its region and embed its prompts.

    Runs on the worker thread (it reads files and calls the models), under the request's seed, so a
    job gives the same picture alone or in a batch.
    """
    started = time.perf_counter()
    f, dev = models.vqgan.factor, models.device
    w, h = working_size(req, f)
    if (w, h) != (req.width, req.height):  # record the size actually painted
        req = req.with_changes(width=w, height=h)
    devices = _rng_devices(models)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(req.seed)
        augment = make_augment(req.noise).to(dev) if req.augment else None
        original, edit = None, None
        if req.init_image:
            src = load_rgb(req.init_image, what="input image")
            pixels = None
            if req.outpaint is not None:  # the picture on its grown canvas; the margins and seam are the mask
                src, grown = grow(src, req.outpaint)
                pixels = (to_tensor(grown.resize((w, h), Image.Resampling.NEAREST), dev) > 0.5).float()
            original = to_tensor(src.resize((w, h), Image.Resampling.LANCZOS), dev)
            with torch.no_grad(), tiled(models.vqgan, req.tile):
                z0 = models.vqgan.encode(original * 2 - 1)
            if req.mask:
                pixels = _load_mask(req.mask, src.size, (w, h), dev)
            if req.region:
                found = region_mask(original, clip_judges(models.clips(), req.region),  # every CLIP, weighted
                                    n_crops=req.region_crops, threshold=req.region_threshold, seed=req.seed)
                pixels = found if pixels is None else pixels * found  # both: the region inside the mask
            if pixels is not None:
                edit = Edit(original, pixels, latent_mask(pixels, f), feather(pixels, req.feather))
        else:
            z0 = random_z(models, h // f, w // f)
        per_model = [_targets(models, req, augment, original, clip) for clip, _ in models.clips()]  # [model][part]
        rng = _rng_state(devices)
    story = per_model[0]
    return Inputs(req, z0, story[0], augment, edit, rng, started, tuple(story) if len(story) > 1 else (),
                  tuple(tuple(m) for m in per_model[1:]))


def _load_mask(path: str, input_size: tuple[int, int], size: tuple[int, int], dev: torch.device) -> torch.Tensor:
    mask = load_mask(path)
    check_mask_shape(mask.size, input_size)
    return (to_tensor(mask.resize(size, Image.Resampling.NEAREST), dev) > 0.5).float()


def _embed_image(models: Models, req: Request, augment: torch.nn.Module | None, img: torch.Tensor,
                 clip: Clip) -> torch.Tensor:
    """A target for an image: the mean embedding of its augmented cutouts, like the candidate's."""
    with torch.no_grad():
        cuts = make_cutouts(img, req.cutouts, clip.size, req.cut_pow, augment)
        return F.normalize(embed(models, cuts, clip).mean(0), dim=-1)


def _targets(models: Models, req: Request, augment: torch.nn.Module | None,
             original: torch.Tensor | None, clip: Clip) -> list[Targets]:
    """Each story part's text prompts, plus the image prompts and (when keeping structure) the original
    that every part shares, as one set of rows per part (one part without a story), embedded by ``clip``
    (each model of an ensemble has its own)."""
    shared: list[tuple[torch.Tensor, float, float]] = []
    for ip in req.image_prompts:
        img = load_rgb(ip.path, what="image prompt").resize((req.width, req.height), Image.Resampling.LANCZOS)
        shared.append((_embed_image(models, req, augment, to_tensor(img, models.device), clip), ip.weight,
                       float("-inf")))
    if original is not None and req.keep_structure > 0:
        shared.append((_embed_image(models, req, augment, original, clip), req.keep_structure, float("-inf")))
    keep_out = [Prompt(n, -1.0) for n in req.negative]  # --no: pushed away from, in every part
    out = []
    for part in parse_story(req.prompt) if req.prompt else [""]:  # no words: image prompts alone
        prompts = (parse_prompts(part) if part else []) + keep_out
        rows: list[tuple[torch.Tensor, float, float]] = []
        if prompts:
            text = clip.encode_text([p.text for p in prompts])
            rows = [(text[i], p.weight, p.stop) for i, p in enumerate(prompts)]
        out.append(Targets.stack(rows + shared, models.device))
    return out


class Run:
    """One job's optimisation state, from prepared tensors (``prepare``); ``start`` does both."""

    def __init__(self, models: Models, inputs: Inputs, *, on_progress: Callable[[Progress], None] | None = None,
                 progress_every: int = 50, should_stop: Callable[[], bool] | None = None) -> None:
        self.models, self.req = models, inputs.req
        self.on_progress, self.progress_every, self.should_stop = on_progress, progress_every, should_stop
        self.t0 = inputs.started
        self.step_no = 0
        self.losses: list[float] = []
        self.error: str | None = None  # why the run broke down, if it did
        self._rng_devices = _rng_devices(models)
        self._rng = list(inputs.rng)
        self.augment, self.targets, self.edit = inputs.augment, inputs.targets, inputs.edit
        self.story = inputs.story
        self.more_targets = inputs.more_targets  # an ensemble: each further CLIP model's targets, per part
        self.z0 = inputs.z0
        self.z = inputs.z0.clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.z], lr=self.req.lr, betas=self.req.betas)
        self.z_min, self.z_max = codebook_range(models)
        self._final: torch.Tensor | None = None

    @contextlib.contextmanager
    def rng(self) -> Iterator[None]:
        """Draw from this run's own random stream, whatever else happens in the process."""
        with torch.random.fork_rng(devices=self._rng_devices):
            torch.set_rng_state(self._rng[0])
            for d, s in zip(self._rng_devices, self._rng[1:], strict=True):
                torch.cuda.set_rng_state(s, d)
            yield
            self._rng = _rng_state(self._rng_devices)

    @property
    def done(self) -> bool:
        return self.step_no >= self.req.steps or self.error is not None

    def _diverged(self, loss: torch.Tensor) -> bool:
        """A NaN or infinite loss never recovers (Adam spreads it into z): stop the run with a message
        instead of painting black to the end. On a GPU the check waits for the GPU, so it runs every
        ``NAN_CHECK_EVERY`` steps there; on a CPU it is free and runs every step."""
        n = self.step_no
        if self.z.device.type != "cpu" and n % NAN_CHECK_EVERY and n != self.req.steps:
            return False
        value = float(loss.detach())
        if math.isfinite(value):
            return False
        self.error = (f"the picture broke down at step {n} (the loss became {value}): "
                      "try smaller prompt weights or a smaller learning rate")
        return True

    def check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"stopped at step {self.step_no}")

    def cutouts(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The cutouts of one candidate image for each CLIP model, each at that model's input size."""
        if self.edit is not None:
            image = self.edit.composite(image)
        with self.rng():
            if self.req.tile != "none":  # a tile has no edges: any place may be the middle of a cutout
                image = random_roll(image, self.req.tile)
            return [make_cutouts(image, self.req.cutouts, clip.size, self.req.cut_pow, self.augment)
                    for clip, _ in self.models.clips()]

    @property
    def part(self) -> int:
        """The story part guiding the step about to be taken (0 without a story)."""
        if not self.story:
            return 0
        return part_at(self.step_no, self.req.steps, len(self.story), self.req.story_every)

    def loss(self, embeds: list[torch.Tensor]) -> torch.Tensor:
        """The weighted sum over CLIP models of each one's prompt loss on its own cutouts' ``embeds``
        (the current story part's targets), plus the regularisation of z."""
        req = self.req
        part = self.part
        first = self.story[part] if self.story else self.targets
        if len(embeds) == 1:
            loss = prompt_loss(embeds[0], first)  # one model: weight 1, as before ensembles
        else:
            targets = [first, *(m[part] for m in self.more_targets)]
            weights = [w for _, w in self.models.clips()]
            loss = sum((w * prompt_loss(e, t) for w, e, t in zip(weights, embeds, targets, strict=True)),
                       torch.zeros((), device=embeds[0].device))
        if req.z_l2_weight > 0 and not req.init_image:  # an edit starts from a picture, not from 0
            loss = loss + z_l2(self.z, req.z_l2_weight, req.z_l2_decay, self.step_no)
        if req.keep_latent > 0:
            loss = loss + latent_anchor(self.z, self.z0, req.keep_latent)
        return loss

    def update(self, loss: torch.Tensor, image: torch.Tensor) -> None:
        if self.edit is not None and self.z.grad is not None:
            self.z.grad.mul_(self.edit.cells)  # only the masked cells learn
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self._clamp()
        part = self.part
        self.step_no += 1
        n = self.step_no
        if self._diverged(loss):
            return
        if self.on_progress is not None and (n % self.progress_every == 0 or n in (1, self.req.steps)):
            value = float(loss.detach())  # the only host sync, at progress steps
            self.losses.append(value)
            if n == self.req.steps:
                frame = self.final_frame()  # the last progress image is the result
            elif self.edit is not None:
                frame = to_uint8(self.edit.composite(image))
            else:
                frame = to_uint8(image)
            self.on_progress(Progress(n, self.req.steps, value, frame, part))

    @torch.no_grad()
    def _clamp(self) -> None:
        """Keep z inside the codebook's per-channel range; cells outside a mask stay as they are."""
        clamped = torch.maximum(torch.minimum(self.z, self.z_max), self.z_min)
        if self.edit is not None:
            clamped = torch.where(self.edit.cells > 0, clamped, self.z)
        self.z.copy_(clamped)

    @torch.no_grad()
    def final_frame(self) -> torch.Tensor:
        """The picture of the current z as a (1, 3, H, W) uint8 frame, exactly the input's outside a mask."""
        final = to_uint8(synth(self.models, self.z, self.req.tile))
        if self.edit is not None:
            blended = to_uint8(self.edit.composite(final.float() / 255))
            final = torch.where(self.edit.soft > 0, blended, to_uint8(self.edit.original))
        if self.done:
            self._final = final
        return final

    def result(self) -> Result:
        """The final image; a ``UserError`` when the run broke down (NaN loss)."""
        if self.error is not None:
            raise UserError(self.error)
        final = self._final if self._final is not None else self.final_frame()
        mask = None if self.edit is None else to_image(to_uint8(self.edit.pixels.expand(-1, 3, -1, -1))).convert("L")
        return Result(to_image(final), self.req, time.perf_counter() - self.t0, self.losses, mask)


def step_together(runs: list[Run], *, fused: bool = False) -> None:
    """One optimisation step for each run of a batch (they share the loaded models and this loop).

    By default each run's forward and backward pass has exactly the shapes of a solo run, so a job's
    arithmetic, and its picture, is bit for bit the same alone or in any batch (one batched call
    rounds differently: other GEMM/conv blocking, and the optimisation amplifies a last-bit
    difference within a few steps). ``fused`` (``queue.batch_fused``) takes one decoder call and one
    CLIP call for all runs instead: faster where per-call overhead dominates (small pictures on a
    GPU), but not reproducible against a solo rerun. Runs must share models and working size. A run
    whose ``should_stop`` fires raises ``Cancelled`` before anything is computed; the caller drops it
    and steps the rest.
    """
    for run in runs:
        run.check_stop()
    if not fused or len(runs) == 1:
        for run in runs:
            _step_alone(run)
        return
    models = runs[0].models
    images = synth(models, torch.cat([r.z for r in runs]), runs[0].req.tile)  # a batch shares its tiling (batch_key)
    cuts = [r.cutouts(images[i : i + 1]) for i, r in enumerate(runs)]  # [run][model]
    per_model = []  # [model][run]: one CLIP call per model for all runs
    for m, (clip, _) in enumerate(models.clips()):
        mine = [c[m] for c in cuts]
        per_model.append(embed(models, torch.cat(mine), clip).split([len(c) for c in mine]))
    losses = [r.loss([e[i] for e in per_model]) for i, r in enumerate(runs)]
    torch.stack(losses).sum().backward()  # each loss depends on its own z only
    for i, (run, loss) in enumerate(zip(runs, losses, strict=True)):
        run.update(loss, images[i : i + 1])


def _step_alone(run: Run) -> None:
    """One step of one run with its own decoder and CLIP calls: the shapes of a solo job."""
    image = synth(run.models, run.z, run.req.tile)
    cuts = run.cutouts(image)
    loss = run.loss([embed(run.models, c, clip) for c, (clip, _) in zip(cuts, run.models.clips(), strict=True)])
    loss.backward()
    run.update(loss, image)


def start(models: Models, req: Request, *, on_progress: Callable[[Progress], None] | None = None,
          progress_every: int = 50, should_stop: Callable[[], bool] | None = None) -> Run:
    """``prepare`` the request's inputs and make a ``Run`` of them."""
    return Run(models, prepare(models, req), on_progress=on_progress, progress_every=progress_every,
               should_stop=should_stop)


def generate(models: Models, req: Request, *, on_progress: Callable[[Progress], None] | None = None,
             progress_every: int = 50, should_stop: Callable[[], bool] | None = None) -> Result:
    """Run one request for ``req.steps`` steps and return the final image."""
    run = start(models, req, on_progress=on_progress, progress_every=progress_every, should_stop=should_stop)
    while not run.done:
        step_together([run])
    return run.result()
