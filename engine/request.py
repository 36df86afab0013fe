"""A generation request: everything needed to redo an image exactly.

The whole request goes into the output PNG's metadata, so it holds the hyperparameters too,
not just the prompt. Build one with ``Request.from_config(cfg, prompt=..., **overrides)``;
``check_limits`` applies the server owner's limits (bot and CLI both call it).
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.config import Config, LimitsConfig
from engine.errors import UserError
from engine.prompts import parse_prompts


class ModelSpec(BaseModel):
    """Which VQGAN and CLIP: preset names, or local files (files win when given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vqgan: str = "imagenet_f16_16384"
    vqgan_config: str | None = None
    vqgan_checkpoint: str | None = None
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"
    clip_config: str | None = None
    clip_checkpoint: str | None = None

    def vqgan_key(self) -> str:
        if self.vqgan_config and self.vqgan_checkpoint:
            return f"file:{self.vqgan_config}|{self.vqgan_checkpoint}"
        return f"preset:{self.vqgan}"

    def clip_key(self) -> str:
        if self.clip_config and self.clip_checkpoint:
            return f"file:{self.clip_config}|{self.clip_checkpoint}"
        return f"open_clip:{self.clip_model}|{self.clip_pretrained}"


class ImagePrompt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    weight: float = 1.0


class InputFile(BaseModel):
    """An input file as it was when the image was made, so that a rerun can find it and check it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str  # absolute
    sha256: str


class Request(BaseModel):
    """One image to make or edit. Paths point at files the engine may read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["imagine", "edit", "vary"] = "imagine"
    prompt: str
    seed: int = Field(default_factory=lambda: random.randrange(2**31))
    steps: int = Field(400, ge=1)
    width: int = Field(256, ge=16)
    height: int = Field(256, ge=16)
    cutouts: int = Field(32, ge=1)
    cut_pow: float = Field(1.0, gt=0)
    lr: float = Field(0.15, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    z_l2_weight: float = Field(0.1, ge=0)
    z_l2_decay: float = Field(0.005, ge=0, le=1)
    noise: float = Field(0.1, ge=0)
    augment: bool = True
    image_prompts: tuple[ImagePrompt, ...] = ()
    init_image: str | None = None
    mask: str | None = None
    region: str | None = None
    region_threshold: float = 0.5
    region_crops: int = Field(128, ge=8)
    feather: int = Field(4, ge=0)
    keep_structure: float = Field(0.0, ge=0)
    keep_latent: float = Field(0.0, ge=0)
    models: ModelSpec = ModelSpec()
    parent: str | None = None
    inputs: tuple[InputFile, ...] = ()  # init image, mask, image prompts: absolute path + sha256

    @field_validator("region")
    @classmethod
    def _region_text(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise UserError("the region phrase is empty: name what to change, e.g. 'jacket'")
        return v.strip() if v else None

    @field_validator("prompt")
    @classmethod
    def _prompt_parses(cls, v: str) -> str:
        parse_prompts(v)
        return v.strip()

    @classmethod
    def from_config(cls, cfg: Config, **overrides: Any) -> Request:
        """Defaults from config.toml, then the caller's overrides (``None`` means default)."""
        g, e, m = cfg.generation, cfg.editing, cfg.models
        base: dict[str, Any] = dict(
            steps=g.steps, width=g.width, height=g.height, cutouts=g.cutouts, cut_pow=g.cut_pow,
            lr=g.lr, betas=(g.beta1, g.beta2), z_l2_weight=g.z_l2_weight, z_l2_decay=g.z_l2_decay,
            noise=g.noise, augment=g.augment, feather=e.feather, region_threshold=e.region_threshold,
            region_crops=e.region_crops,
            models=ModelSpec(
                vqgan=m.vqgan, vqgan_config=m.vqgan_config or None,
                vqgan_checkpoint=m.vqgan_checkpoint or None, clip_model=m.clip_model,
                clip_pretrained=m.clip_pretrained or None, clip_config=m.clip_config or None,
                clip_checkpoint=m.clip_checkpoint or None,
            ),
        )
        if overrides.get("init_image"):  # edits and variations keep some of the original by default
            base.update(keep_structure=e.keep_structure, keep_latent=e.keep_latent)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls.parse(base)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Request:
        """Validate, turning pydantic's report into one ``UserError`` line."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise UserError(validation_message(e)) from None

    def with_changes(self, **changes: Any) -> Request:
        """A validated copy (``model_copy`` would skip validation)."""
        return self.parse({**self.model_dump(), **changes})

    def to_metadata(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def validation_message(err: ValidationError) -> str:
    """One short line from a pydantic error, e.g. ``steps: must be at least 1``."""
    e = err.errors()[0]
    field = ".".join(str(p) for p in e["loc"])
    msg = str(e["msg"]).removeprefix("Value error, ")
    if e["type"] == "greater_than_equal":
        msg = f"must be at least {e['ctx']['ge']}"
    elif e["type"] == "greater_than":
        msg = f"must be more than {e['ctx']['gt']}"
    elif e["type"] == "extra_forbidden":
        msg = "unknown option"
    return msg if field == "prompt" else f"{field}: {msg}"


def check_limits(req: Request, limits: LimitsConfig) -> None:
    """Refuse a request over the server's limits with a message that says what to change."""
    if len(req.prompt) > limits.max_prompt_chars:
        raise UserError(f"the prompt is {len(req.prompt)} characters; the limit is {limits.max_prompt_chars}")
    if req.steps > limits.max_steps:
        raise UserError(f"steps must be between 1 and {limits.max_steps} (got {req.steps})")
    if req.width > limits.max_width or req.height > limits.max_height or req.width * req.height > limits.max_pixels:
        raise UserError(
            f"size {req.width}x{req.height} is over the limit "
            f"({limits.max_width}x{limits.max_height}, {limits.max_pixels} pixels in all)"
        )
    if req.cutouts > limits.max_cutouts:
        raise UserError(f"cutouts must be at most {limits.max_cutouts} (got {req.cutouts})")
    if len(req.image_prompts) > limits.max_image_prompts:
        raise UserError(f"at most {limits.max_image_prompts} image prompts (got {len(req.image_prompts)})")
