"""The engine's sections of ``config.toml``, validated with pydantic.

The file is read once at start and passed down. An unknown key or a wrong type is a
``ConfigError`` naming the file and the key, e.g. ``config.toml: generation.stepz: unknown key``.
Tables a front end owns (``FRONT_END_TABLES``) are left to it: the engine skips them, and the
front end validates them with ``read_toml`` and ``validate`` (see ``bot.config``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.errors import ConfigError, UserError, error_line

MAX_WEIGHT = 1000.0
"""Largest absolute prompt weight (and stop), and CLIP weight: generous, and far from float32's overflow."""


class Section(BaseModel):
    """A config table: unknown keys are errors, values are validated strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ClipSpec(Section):
    """One CLIP model of an ensemble: an open_clip name and pretrained tag, or local files."""

    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"
    clip_config: str | None = None
    clip_checkpoint: str | None = None

    @field_validator("clip_pretrained", "clip_config", "clip_checkpoint", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        return None if v == "" else v

    def key(self) -> str:
        if self.clip_config and self.clip_checkpoint:
            return f"file:{self.clip_config}|{self.clip_checkpoint}"
        return f"open_clip:{self.clip_model}|{self.clip_pretrained}"

    def choice(self) -> str:
        """The name users pick it by, e.g. ``ViT-B-32/openai``."""
        return f"{self.clip_model}/{self.clip_pretrained}" if self.clip_pretrained else self.clip_model


class ModelSpec(Section):
    """Which VQGAN and CLIP: preset names, or local files (files win when given). ``None`` is unset;
    ``""`` (TOML has no null: ``vqgan_config = ""`` in config.toml) means the same."""

    vqgan: str = "imagenet_f16_16384"
    vqgan_config: str | None = None
    vqgan_checkpoint: str | None = None
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"
    clip_config: str | None = None
    clip_checkpoint: str | None = None
    more_clips: tuple[ClipSpec, ...] = ()  # an ensemble: the CLIP models after the first
    clip_weights: tuple[Annotated[float, Field(ge=0, le=MAX_WEIGHT)], ...] = ()  # one per CLIP; () = equal

    @field_validator("vqgan_config", "vqgan_checkpoint", "clip_pretrained", "clip_config", "clip_checkpoint",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        return None if v == "" else v

    def vqgan_key(self) -> str:
        if self.vqgan_config and self.vqgan_checkpoint:
            return f"file:{self.vqgan_config}|{self.vqgan_checkpoint}"
        return f"preset:{self.vqgan}"

    def clips(self) -> list[ClipSpec]:
        """Every CLIP model, the first one first (a request made before ensembles has one)."""
        first = ClipSpec(**self.model_dump(include=set(ClipSpec.model_fields)))
        return [first, *self.more_clips]

    def weights(self) -> list[float]:
        """Each CLIP model's weight in the prompt loss: as given, or equal ones summing to 1."""
        n = len(self.more_clips) + 1
        if not self.clip_weights:
            return [1.0 / n] * n
        if len(self.clip_weights) != n:
            raise UserError(f"give one CLIP weight per CLIP model ({n} models, {len(self.clip_weights)} weights)")
        return list(self.clip_weights)

    def clip_key(self) -> str:
        """All CLIP models and their weights: jobs are batched only with the same set."""
        keys = [c.key() for c in self.clips()]
        return keys[0] if len(keys) == 1 else "+".join(keys) + f"@{self.weights()}"


class ModelsConfig(ModelSpec):
    """``[models]``: the default ``ModelSpec`` and how models are cached and run."""

    cache_dir: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    max_loaded: int = Field(2, ge=1)
    vqgan_choices: tuple[str, ...] = ()  # presets a request may pick; () = the configured one only
    clip_choices: tuple[str, ...] = ()  # "ViT-B-32/openai", ensembles "A/tag+B/tag"; () = the configured one
    offline: bool | Literal["auto"] = "auto"  # may models be downloaded? "auto": ask their hosts when one is missing

    def spec(self) -> ModelSpec:
        """Just the models (what a request records), without the caching and device settings."""
        return ModelSpec(**self.model_dump(include=set(ModelSpec.model_fields)))


# The bounds of each painting setting, shared by ``config.toml``'s defaults and ``Request``: a config
# value a request would refuse is refused when the config is read. Every number must stay inside a range
# that float32 tensors and Adam survive.
Steps = Annotated[int, Field(ge=1)]
Side = Annotated[int, Field(ge=16)]
Cutouts = Annotated[int, Field(ge=1)]
CutPow = Annotated[float, Field(gt=0, le=100)]
Lr = Annotated[float, Field(gt=0, le=10)]
Beta = Annotated[float, Field(ge=0, lt=1)]
Weight = Annotated[float, Field(ge=0, le=MAX_WEIGHT)]
Decay = Annotated[float, Field(ge=0, le=1)]
Noise = Annotated[float, Field(ge=0, le=10)]
Feather = Annotated[int, Field(ge=0, le=1024)]
Threshold = Annotated[float, Field(ge=-100, le=100)]
Crops = Annotated[int, Field(ge=8, le=4096)]

GRID_SIZES = (1, 2, 4, 6, 9)
"""How many candidates a grid may have (rows x columns as near square as possible: 1x2, 2x2, 2x3, 3x3)."""


def _grid_size(n: int) -> int:
    if n not in GRID_SIZES:
        raise ValueError("must be " + ", ".join(map(str, GRID_SIZES[:-1])) + f" or {GRID_SIZES[-1]}")
    return n


GridSize = Annotated[int, AfterValidator(_grid_size)]


class GenerationConfig(Section):
    steps: Steps = 400
    width: Side = 256
    height: Side = 256
    cutouts: Cutouts = 32
    cut_pow: CutPow = 1.0
    lr: Lr = 0.15
    beta1: Beta = 0.9
    beta2: Beta = 0.999
    z_l2_weight: Weight = 0.1
    z_l2_decay: Decay = 0.005
    noise: Noise = 0.1
    augment: bool = True
    progress_every: int = Field(50, ge=1)


class EditingConfig(Section):
    feather: Feather = 4
    keep_structure: Weight = 0.5
    keep_latent: Weight = 0.05
    region_threshold: Threshold = 0.5
    region_crops: Crops = 128
    seam: int = Field(8, ge=0)
    outpaint_seam: int = Field(16, ge=0, le=128)  # zoom out / pan: pixels into the old picture repainted
    vary_strength: float = Field(0.3, gt=0, le=1)
    upscale_steps: Steps = 60  # an upscale: steps painted on the enlarged picture (CLI --steps, the bot's U buttons)


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
    max_frames: int = Field(240, ge=1)  # zoom videos: frames per video
    max_video_steps: int = Field(10_000, ge=1)  # zoom videos: frames x steps per frame
    # GPU seconds a person's jobs may run per UTC day (engine.jobs.quota); 0 = unlimited.
    daily_gpu_seconds: float = Field(0.0, ge=0, allow_inf_nan=False)
    relax: bool = True  # over it: new jobs wait in the relax lane (True) or are refused (False)
    moderators_exempt: bool = False  # moderators' jobs are never relaxed nor refused for it
    max_repeat: int = Field(8, ge=1)  # jobs from one prompt: --repeat N and sweeps ({a, b}) together


class QueueConfig(Section):
    batch_size: int = Field(4, ge=1)
    batch_fused: bool = False  # one decoder/CLIP call per batch step: faster on a GPU, not bit-reproducible
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


class TimelapseConfig(Section):
    """``[timelapse]``: each job's progress frames kept beside its result (for timelapses)."""

    max_frames: int = Field(100, ge=0)  # 0 = keep none; otherwise at least the first and the last


class Config(Section):
    models: ModelsConfig = ModelsConfig()
    generation: GenerationConfig = GenerationConfig()
    editing: EditingConfig = EditingConfig()
    limits: LimitsConfig = LimitsConfig()
    queue: QueueConfig = QueueConfig()
    timelapse: TimelapseConfig = TimelapseConfig()


FRONT_END_TABLES = ("discord", "moderation", "http", "gallery")  # tables of config.toml that a front end validates (bot.config), not the engine


M = TypeVar("M", bound=BaseModel)


def _describe(err: ValidationError, path: Path | None, table: str = "") -> str:
    where = f"{path or 'config'}: {table + '.' if table else ''}"
    return "; ".join(where + error_line(e, unknown="unknown key") for e in err.errors())


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The tables of a TOML file, unvalidated; ``ConfigError`` if it is missing or not TOML."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None


def validate(model: type[M], data: dict[str, Any], path: str | os.PathLike[str] | None, table: str = "") -> M:
    """``model`` from ``data`` (the file's tables, or the one named ``table``); ``ConfigError`` naming
    the file and the key, e.g. ``config.toml: discord.rerun_emoj: unknown key``."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, None if path is None else Path(path), table)) from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the engine's tables of a TOML file; ``None`` gives the built-in defaults."""
    if path is None:
        return Config()
    data = read_toml(path)
    return validate(Config, {k: v for k, v in data.items() if k not in FRONT_END_TABLES}, path)


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
