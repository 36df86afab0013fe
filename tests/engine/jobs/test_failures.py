"""engine/jobs/failures.py: every way the engine words a failure falls in one kind of a short fixed set."""

from __future__ import annotations

import pytest

from engine import FAILURE_KINDS, failure_kind
from engine.jobs.job import STALE
from engine.jobs.results import MALFORMED


@pytest.mark.parametrize(("reason", "kind"), [
    ("it took longer than 1800 s and was stopped", "timeout"),
    ("frame 3 of the zoom took longer than 60 s and was stopped", "timeout"),
    ("ran out of GPU memory at 640x640 (and at 448x448); try a smaller size", "out_of_memory"),
    ("it could not be finished after 3 attempts", "crashed"),
    ("it stopped 3 workers, so it will not be tried again", "crashed"),
    (STALE, "stale"),
    (f"{MALFORMED}: request: not a JSON object", "malformed"),
    ("the worker sent back a 512x512 picture for a 64x64 request", "malformed"),
    ("model file 'x.ckpt' is not one this worker serves", "models"),
    ("model file not found: /m/x.ckpt; downloaded here: model none; clip none", "models"),
    ("the engine failed: ZeroDivisionError", "engine"),
    ("the job queue failed; see the log", "engine"),
    ("the loss became NaN at step 3; try a lower lr", "other"),
])
def test_each_failure_has_one_kind_of_a_fixed_set(reason: str, kind: str) -> None:
    assert failure_kind(reason) == kind and kind in FAILURE_KINDS
