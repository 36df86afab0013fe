"""Errors a user can act on, kept apart from bugs.

A ``UserError`` carries one short line meant for a person (CLI: stderr and exit 2;
bot: an ephemeral message). Anything else is a bug and keeps its traceback.
``validation_message`` and ``error_line`` are the one place pydantic's reports become such lines
(requests, config files, the bot's inputs, messages between processes); ``quoted`` is how a line
repeats what the person typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

_BOUNDS = {"greater_than_equal": ("ge", "must be at least {}"), "greater_than": ("gt", "must be more than {}"),
           "less_than_equal": ("le", "must be at most {}"), "less_than": ("lt", "must be less than {}")}
_WORDS = {"finite_number": "must be a finite number", "int_parsing_size": "is far too large"}
_RANGE = ("greater_than_equal", "less_than_equal", "greater_than", "less_than", "int_parsing_size")


def error_line(e: ErrorDetails, *, unknown: str = "unknown option", ranges: Mapping[str, str] | None = None) -> str:
    """``field: message`` for one pydantic error, e.g. ``steps: must be at least 1``.

    ``unknown`` words an unexpected key; ``ranges`` gives a field's own words for any range error
    (e.g. ``seed: must be a whole number from 0 to ...``).
    """
    field = ".".join(str(p) for p in e["loc"])
    kind, ctx = e["type"], e.get("ctx") or {}
    msg = str(e["msg"]).removeprefix("Value error, ")
    if ranges and field in ranges and kind in _RANGE:
        msg = ranges[field]
    elif kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        msg = words.format(_number(ctx.get(key)))
    elif kind in _WORDS:
        msg = _WORDS[kind]
    elif kind == "extra_forbidden":
        msg = unknown
    return f"{field}: {msg}" if field and field != "prompt" else msg


def validation_message(err: ValidationError, *, ranges: Mapping[str, str] | None = None) -> str:
    """One short line for a pydantic ``ValidationError``: its first error (or a ``UserError`` it wraps)."""
    for e in err.errors():
        inner = (e.get("ctx") or {}).get("error")
        if isinstance(inner, UserError):
            return str(inner)
    return error_line(err.errors()[0], ranges=ranges)


QUOTE_CHARS = 40
"""How much of a person's input a message repeats."""


def quoted(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` quoted for a one-line message: its first ``limit`` characters, then "…". A message
    that repeats a huge input must stay short (the bot's answers have a length limit)."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _number(v: Any) -> Any:
    """1000.0 -> 1000 in messages."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


class UserError(Exception):
    """Bad input or a missing resource: the message is shown to the user as is."""


class BadImage(UserError):
    """A file that is not a readable image, or one over the size limits."""


class ModelFileMissing(UserError):
    """A model file is not on disk and could not be fetched."""


class UnsafeCheckpoint(UserError):
    """A checkpoint whose pickle would run code and holds no loadable tensors."""


class ConfigError(UserError):
    """The config file is missing, not TOML, or fails validation."""


class CorruptCheckpoint(UserError):
    """The file is not a readable checkpoint (truncated download, wrong format, impossible sizes)."""


class StorageError(UserError):
    """The job store or results folder cannot be used: one line naming the path and the fix."""


class QueueFull(UserError):
    """The owner or the whole queue is at its pending limit."""


class OverQuota(UserError):
    """The person has used today's GPU time (``[limits] daily_gpu_seconds``) and ``relax`` is off."""


class ModelsUnavailable(UserError):
    """No worker can use the request's models: they are not downloaded and cannot be now (offline)."""


class NotAllowed(UserError):
    """Someone other than the owner or a moderator tried to act on a job."""


class MalformedResult(UserError):
    """A worker's result that cannot be shown: one line, starting with "the worker's result was malformed"."""


class Cancelled(Exception):
    """Raised inside a generation when its ``should_stop`` callback says so (not a user error: the
    person asked for it). The queue's event for a cancelled job is ``engine.jobs.events.JobCancelled``."""
