"""Why a job failed, as one of a short fixed set of kinds (an operator's metrics count failures by them).

A ``Failed.reason`` is a line for a person, worded where the failure happens (the worker loop, the fleet
link, the coordinator); this is the one place that knows those wordings and sorts them into kinds. A new
way to fail that is not listed here counts as "other".
"""

from __future__ import annotations

from engine.jobs.job import STALE
from engine.jobs.results import MALFORMED

FAILURE_KINDS = ("timeout", "out_of_memory", "crashed", "stale", "malformed", "models", "engine", "other")
_WORDS: tuple[tuple[str, str], ...] = (
    ("took longer than", "timeout"),  # engine.workers.loop and engine.fleet.link: job_timeout_s
    ("ran out of GPU memory", "out_of_memory"),
    ("could not be finished after", "crashed"),  # the coordinator: MAX_ATTEMPTS starts
    ("so it will not be tried again", "crashed"),  # the fleet: it stopped every worker it went to
    (STALE, "stale"),
    (MALFORMED, "malformed"),
    ("the worker sent back", "malformed"),  # a picture of the wrong size
    ("is not one this worker serves", "models"),
    ("; downloaded here:", "models"),  # engine.models.loader: a model file missing and not fetched
    ("the engine failed", "engine"),  # a bug: the log has the traceback
    ("the job queue failed", "engine"),
)


def failure_kind(reason: str) -> str:
    """Which of ``FAILURE_KINDS`` a failure ``reason`` is: "other" for the rest (what a person asked for
    could not be painted, e.g. an unreadable image, a loss that became NaN, a picture too large to send)."""
    return next((kind for words, kind in _WORDS if words in reason), "other")
