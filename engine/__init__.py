"""VQGAN+CLIP: steer a pretrained VQGAN's latent through CLIP similarity.

The engine knows nothing of Discord. Its public API is importable from here, as open_clip's is, so
embedders (the bot) and tests never depend on where a module lives::

    from engine import JobQueue, Request, load_config

Names are looked up on first use (PEP 562), so ``import engine`` (and ``python -m engine --help``)
imports no torch; ``PUBLIC`` is the table, and the imports under ``TYPE_CHECKING`` say the same for mypy.
The rooms, in their one-way import order (docs/CONTRACTS.md, "The layers"): ``errors``, ``config``,
``spec`` (the request), ``media`` (files and pictures), ``models``, ``method`` (the optimisation),
``jobs`` (the coordinator and its port), ``workers``, ``fleet`` (Redis), ``queue``, ``cli``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.version import __version__

if TYPE_CHECKING:
    from engine.cli.main import main
    from engine.config import (
        GRID_SIZES,
        Config,
        ConfigError,
        GridSize,
        ModelsConfig,
        ModelSpec,
        Section,
        load_config,
        read_toml,
        validate,
    )
    from engine.errors import (
        BadImage,
        Cancelled,
        ModelsUnavailable,
        NotAllowed,
        OverQuota,
        QueueFull,
        StorageError,
        UserError,
        quoted,
        validation_message,
    )
    from engine.fleet.status import describe_fleet
    from engine.fleet.wire import (
        CancelMsg,
        FailedMsg,
        FinishedMsg,
        Heartbeat,
        JobMsg,
        ProgressMsg,
        ReturnedMsg,
        decode,
        encode,
    )
    from engine.jobs.bans import Ban, BanList
    from engine.jobs.events import (
        Event,
        Failed,
        Finished,
        JobCancelled,
        JobProgress,
        Listener,
        Loading,
        Mailbox,
        Queued,
        Started,
    )
    from engine.jobs.failures import FAILURE_KINDS, failure_kind
    from engine.jobs.job import PENDING, TERMINAL, Job, Lane, owner_limit
    from engine.jobs.listing import Listed
    from engine.jobs.preferences import (
        MAX_STYLE_NAME,
        Preferences,
        Style,
        UserSettings,
        new_style,
        style_name,
        with_style,
    )
    from engine.jobs.quota import Quota, Usage, format_seconds
    from engine.jobs.results import candidate_files
    from engine.media.collage import assemble, build, left_to_right
    from engine.media.files import write_atomic
    from engine.media.imageio import FORMATS as IMAGE_FORMATS
    from engine.media.imageio import (
        aspect_size,
        check_mask_shape,
        fit_size,
        load_mask,
        load_rgb,
        open_image,
        png_bytes,
        read_metadata,
    )
    from engine.media.timelapse import HOLD_S, Timelapse, frame_files, make_timelapse
    from engine.method.describe import Suggestion
    from engine.method.generate import Progress, Result, Run, generate, prepare, start, step_together
    from engine.models.availability import unreachable_names
    from engine.models.checkpoint import load_checkpoint
    from engine.models.clip import load_clip_files, load_clip_pretrained
    from engine.models.fetch import fetch
    from engine.models.loader import ModelCache
    from engine.models.registry import vqgan_factor
    from engine.models.vqgan import load_vqgan
    from engine.queue import JobQueue
    from engine.spec.choices import check_offered, clip_choices, vqgan_choices, with_choices
    from engine.spec.outpaint import Outpaint, check_canvas
    from engine.spec.outpaint import plan as plan_outpaint
    from engine.spec.parameters import Parameters, Planned, plan, split_parameters
    from engine.spec.prompts import parse_prompts, visible
    from engine.spec.request import (
        MAX_SEED,
        Request,
        ZoomSpec,
        candidate_request,
        check_limits,
        check_prompt_length,
        grid_shape,
        outpaint_of,
        upscale_of,
        variation_of,
    )
    from engine.workers.describer import Describer
    from engine.workers.runner import EngineRunner

PUBLIC: dict[str, tuple[str, str]] = {  # name -> (module, attribute)
    "Config": ("engine.config", "Config"),
    "ConfigError": ("engine.config", "ConfigError"),
    "GRID_SIZES": ("engine.config", "GRID_SIZES"),
    "GridSize": ("engine.config", "GridSize"),
    "ModelSpec": ("engine.config", "ModelSpec"),
    "ModelsConfig": ("engine.config", "ModelsConfig"),
    "Section": ("engine.config", "Section"),
    "load_config": ("engine.config", "load_config"),
    "read_toml": ("engine.config", "read_toml"),
    "validate": ("engine.config", "validate"),
    "BadImage": ("engine.errors", "BadImage"),
    "Cancelled": ("engine.errors", "Cancelled"),
    "ModelsUnavailable": ("engine.errors", "ModelsUnavailable"),
    "NotAllowed": ("engine.errors", "NotAllowed"),
    "OverQuota": ("engine.errors", "OverQuota"),
    "QueueFull": ("engine.errors", "QueueFull"),
    "StorageError": ("engine.errors", "StorageError"),
    "UserError": ("engine.errors", "UserError"),
    "quoted": ("engine.errors", "quoted"),
    "validation_message": ("engine.errors", "validation_message"),
    "MAX_SEED": ("engine.spec.request", "MAX_SEED"),
    "Request": ("engine.spec.request", "Request"),
    "ZoomSpec": ("engine.spec.request", "ZoomSpec"),
    "check_limits": ("engine.spec.request", "check_limits"),
    "check_prompt_length": ("engine.spec.request", "check_prompt_length"),
    "variation_of": ("engine.spec.request", "variation_of"),
    "outpaint_of": ("engine.spec.request", "outpaint_of"),
    "Outpaint": ("engine.spec.outpaint", "Outpaint"),
    "check_canvas": ("engine.spec.outpaint", "check_canvas"),
    "plan_outpaint": ("engine.spec.outpaint", "plan"),
    "Parameters": ("engine.spec.parameters", "Parameters"),
    "Planned": ("engine.spec.parameters", "Planned"),
    "plan": ("engine.spec.parameters", "plan"),
    "split_parameters": ("engine.spec.parameters", "split_parameters"),
    "candidate_request": ("engine.spec.request", "candidate_request"),
    "grid_shape": ("engine.spec.request", "grid_shape"),
    "upscale_of": ("engine.spec.request", "upscale_of"),
    "parse_prompts": ("engine.spec.prompts", "parse_prompts"),
    "visible": ("engine.spec.prompts", "visible"),
    "check_offered": ("engine.spec.choices", "check_offered"),
    "clip_choices": ("engine.spec.choices", "clip_choices"),
    "vqgan_choices": ("engine.spec.choices", "vqgan_choices"),
    "with_choices": ("engine.spec.choices", "with_choices"),
    "write_atomic": ("engine.media.files", "write_atomic"),
    "IMAGE_FORMATS": ("engine.media.imageio", "FORMATS"),
    "aspect_size": ("engine.media.imageio", "aspect_size"),
    "check_mask_shape": ("engine.media.imageio", "check_mask_shape"),
    "fit_size": ("engine.media.imageio", "fit_size"),
    "load_mask": ("engine.media.imageio", "load_mask"),
    "load_rgb": ("engine.media.imageio", "load_rgb"),
    "open_image": ("engine.media.imageio", "open_image"),
    "png_bytes": ("engine.media.imageio", "png_bytes"),
    "read_metadata": ("engine.media.imageio", "read_metadata"),
    "assemble": ("engine.media.collage", "assemble"),
    "build": ("engine.media.collage", "build"),
    "left_to_right": ("engine.media.collage", "left_to_right"),
    "HOLD_S": ("engine.media.timelapse", "HOLD_S"),
    "Timelapse": ("engine.media.timelapse", "Timelapse"),
    "frame_files": ("engine.media.timelapse", "frame_files"),
    "make_timelapse": ("engine.media.timelapse", "make_timelapse"),
    "load_checkpoint": ("engine.models.checkpoint", "load_checkpoint"),
    "load_clip_files": ("engine.models.clip", "load_clip_files"),
    "load_clip_pretrained": ("engine.models.clip", "load_clip_pretrained"),
    "load_vqgan": ("engine.models.vqgan", "load_vqgan"),
    "fetch": ("engine.models.fetch", "fetch"),
    "ModelCache": ("engine.models.loader", "ModelCache"),
    "vqgan_factor": ("engine.models.registry", "vqgan_factor"),
    "unreachable_names": ("engine.models.availability", "unreachable_names"),
    "Progress": ("engine.method.generate", "Progress"),
    "Result": ("engine.method.generate", "Result"),
    "Run": ("engine.method.generate", "Run"),
    "generate": ("engine.method.generate", "generate"),
    "prepare": ("engine.method.generate", "prepare"),
    "start": ("engine.method.generate", "start"),
    "step_together": ("engine.method.generate", "step_together"),
    "Ban": ("engine.jobs.bans", "Ban"),
    "BanList": ("engine.jobs.bans", "BanList"),
    "Suggestion": ("engine.method.describe", "Suggestion"),
    "PENDING": ("engine.jobs.job", "PENDING"),
    "TERMINAL": ("engine.jobs.job", "TERMINAL"),
    "Job": ("engine.jobs.job", "Job"),
    "owner_limit": ("engine.jobs.job", "owner_limit"),
    "FAILURE_KINDS": ("engine.jobs.failures", "FAILURE_KINDS"),
    "failure_kind": ("engine.jobs.failures", "failure_kind"),
    "Listed": ("engine.jobs.listing", "Listed"),
    "MAX_STYLE_NAME": ("engine.jobs.preferences", "MAX_STYLE_NAME"),
    "Preferences": ("engine.jobs.preferences", "Preferences"),
    "Style": ("engine.jobs.preferences", "Style"),
    "UserSettings": ("engine.jobs.preferences", "UserSettings"),
    "new_style": ("engine.jobs.preferences", "new_style"),
    "style_name": ("engine.jobs.preferences", "style_name"),
    "with_style": ("engine.jobs.preferences", "with_style"),
    "Lane": ("engine.jobs.job", "Lane"),
    "Quota": ("engine.jobs.quota", "Quota"),
    "Usage": ("engine.jobs.quota", "Usage"),
    "format_seconds": ("engine.jobs.quota", "format_seconds"),
    "candidate_files": ("engine.jobs.results", "candidate_files"),
    "Event": ("engine.jobs.events", "Event"),
    "Failed": ("engine.jobs.events", "Failed"),
    "Finished": ("engine.jobs.events", "Finished"),
    "JobCancelled": ("engine.jobs.events", "JobCancelled"),
    "JobProgress": ("engine.jobs.events", "JobProgress"),
    "Listener": ("engine.jobs.events", "Listener"),
    "Loading": ("engine.jobs.events", "Loading"),
    "Mailbox": ("engine.jobs.events", "Mailbox"),
    "Queued": ("engine.jobs.events", "Queued"),
    "Started": ("engine.jobs.events", "Started"),
    "JobQueue": ("engine.queue", "JobQueue"),
    "Describer": ("engine.workers.describer", "Describer"),
    "EngineRunner": ("engine.workers.runner", "EngineRunner"),
    "CancelMsg": ("engine.fleet.wire", "CancelMsg"),
    "FailedMsg": ("engine.fleet.wire", "FailedMsg"),
    "FinishedMsg": ("engine.fleet.wire", "FinishedMsg"),
    "Heartbeat": ("engine.fleet.wire", "Heartbeat"),
    "JobMsg": ("engine.fleet.wire", "JobMsg"),
    "ProgressMsg": ("engine.fleet.wire", "ProgressMsg"),
    "ReturnedMsg": ("engine.fleet.wire", "ReturnedMsg"),
    "decode": ("engine.fleet.wire", "decode"),
    "encode": ("engine.fleet.wire", "encode"),
    "describe_fleet": ("engine.fleet.status", "describe_fleet"),
    "main": ("engine.cli.main", "main"),
}
__all__ = sorted(PUBLIC)


def __getattr__(name: str) -> Any:
    try:
        module, attr = PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'engine' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *PUBLIC})
