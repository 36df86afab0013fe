"""The fleet's wire messages: what one process sends, the other reads back; anything else is dropped."""

from __future__ import annotations

import json
import logging

import pytest

from engine.config import Config
from engine.fleet.wire import MAX_MESSAGE_BYTES, FinishedMsg, JobMsg, decode, encode
from engine.spec.request import Request


def test_a_job_and_a_result_cross_the_wire_unchanged():
    req = Request.from_config(Config(), prompt="a lighthouse", steps=3, seed=7)
    job = JobMsg(job_id="abc", lease="abc.1.ff", request=req, boot="b1")
    assert decode(encode(job)) == job
    done = FinishedMsg(worker="w1", job_id="abc", lease="abc.1.ff", png=b"\x89PNG\x00\xff", seconds=1.5,
                       metadata={"request": {}, "note": None})
    assert decode(encode(done)).png == b"\x89PNG\x00\xff"
    assert "origin" not in json.loads(encode(job)), "no Discord data travels"


@pytest.mark.parametrize("raw, why", [
    (b'{"v": 1, "kind": "returned", "worker": "w", "job_id": "x"}', "lease"),  # a missing field
    (b'{"v": 2, "kind": "returned", "worker": "w", "job_id": "x", "lease": "l"}', "v"),  # another version
    (b'{"v": 1, "kind": "shell", "cmd": "rm -rf /"}', "kind"),  # a foreign message
    (bytes(range(256)), "malformed"),  # garbage
    (b"A" * (MAX_MESSAGE_BYTES + 1), "bytes"),  # too large
    (b'{"v": 1, "kind": "job", "job_id": "x", "lease": "l", "boot": "b", "request": {"prompt": "", "steps": -1}}',
     "malformed"),  # a request that does not validate
    (None, "without"),
])
def test_a_bad_message_is_dropped_and_logged(raw, why, caplog):
    caplog.set_level(logging.WARNING)
    assert decode(raw, "test") is None
    assert any(why in m for m in caplog.messages), caplog.messages
