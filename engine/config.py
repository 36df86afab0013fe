"""The engine's sections of ``config.toml``, validated with pydantic.

The file is read once at start and passed down. An unknown key or a wrong type is a
``ConfigError`` naming the file and the key, e.g. ``config.toml: generation.stepz: unknown key``.
Front ends add their own sections by subclassing ``Config`` (see ``bot.config``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import UserError, error_line


class Section(BaseModel):
    """A config table: unknown keys are errors, values are validated strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelsConfig(Section):
    vqgan: str = "imagenet_f16_16384"
    vqgan_config: str = ""
    vqgan_checkpoint: str = ""
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "openai"
    clip_config: str = ""
    clip_checkpoint: str = ""
    cache_dir: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    max_loaded: int = Field(2, ge=1)


class GenerationConfig(Section):
    steps: int = Field(400, ge=1)
    width: int = Field(256, ge=16)
    height: int = Field(256, ge=16)
    cutouts: int = Field(32, ge=1)
    cut_pow: float = Field(1.0, gt=0)
    lr: float = Field(0.15, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    z_l2_weight: float = Field(0.1, ge=0)
    z_l2_decay: float = Field(0.005, ge=0, le=1)
    noise: float = Field(0.1, ge=0)
    augment: bool = True
    progress_every: int = Field(50, ge=1)


class EditingConfig(Section):
    feather: int = Field(4, ge=0)
    keep_structure: float = Field(0.5, ge=0)
    keep_latent: float = Field(0.05, ge=0)
    region_threshold: float = 0.5
    region_crops: int = Field(128, ge=8)
    seam: int = Field(8, ge=0)
    vary_strength: float = Field(0.3, gt=0, le=1)


class LimitsConfig(Section):
    max_steps: int = Field(1000, ge=1)
    max_width: int = Field(1024, ge=16)
    max_height: int = Field(1024, ge=16)
    max_pixels: int = Field(640 * 640, ge=256)
    max_cutouts: int = Field(128, ge=1)
    max_prompt_chars: int = Field(500, ge=1)
    max_image_prompts: int = Field(4, ge=0)
    max_input_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_input_pixels: int = Field(40_000_000, ge=256)


class QueueConfig(Section):
    batch_size: int = Field(4, ge=1)
    db_path: str = "data/jobs.sqlite3"
    results_dir: str = "data/results"
    per_owner_pending: int = Field(3, ge=1)
    max_pending: int = Field(50, ge=1)
    job_timeout_s: float = Field(1800.0, gt=0)
    oom_retry_smaller: bool = True
    keep_days: float = Field(30.0, gt=0)
    role_priority: dict[str, int] = Field(default_factory=dict)
    backend: Literal["local", "redis"] = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    worker_timeout_s: float = Field(60.0, gt=0)


class Config(Section):
    models: ModelsConfig = ModelsConfig()
    generation: GenerationConfig = GenerationConfig()
    editing: EditingConfig = EditingConfig()
    limits: LimitsConfig = LimitsConfig()
    queue: QueueConfig = QueueConfig()
    # Owned by the front end; ``bot.config.BotConfig`` replaces it with a validated model.
    discord: dict[str, Any] = Field(default_factory=dict)


class ConfigError(UserError):
    """The config file is missing, not TOML, or fails validation."""


C = TypeVar("C", bound=Config)


def _describe(err: ValidationError, path: Path) -> str:
    return "; ".join(f"{path}: {error_line(e, unknown='unknown key')}" for e in err.errors())


def load_config(path: str | os.PathLike[str] | None = None, model: type[C] = Config) -> C:  # type: ignore[assignment]
    """Read and validate a TOML file; ``None`` gives the built-in defaults."""
    if path is None:
        return model()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, p)) from None


def redis_url(cfg: QueueConfig, given: str | None = None) -> str:
    """``--redis`` beats ``$VQGAN_CLIP_REDIS_URL``, which beats ``queue.redis_url``."""
    return given or os.environ.get("VQGAN_CLIP_REDIS_URL") or cfg.redis_url


def cache_dir(cfg: ModelsConfig) -> Path:
    """Where model files live: config, then ``$VQGAN_CLIP_CACHE``, then XDG's cache home."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    if env := os.environ.get("VQGAN_CLIP_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vqgan-clip"
