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
    job = JobMsg(job_id="0123456789ab", lease="0123456789ab.1.ff", request=req, boot="b1")
    assert decode(encode(job)) == job
    done = FinishedMsg(worker="w1", job_id="0123456789ab", lease="0123456789ab.1.ff", png=b"\x89PNG\x00\xff", seconds=1.5,
                       metadata={"request": {}, "note": None})
    assert decode(encode(done)).png == b"\x89PNG\x00\xff"
    assert "origin" not in json.loads(encode(job)), "no Discord data travels"


@pytest.mark.parametrize("raw, why", [
    (b'{"v": 2, "kind": "returned", "worker": "w", "job_id": "0123456789ab"}', "lease"),  # a missing field
    (b'{"v": 1, "kind": "returned", "worker": "w", "job_id": "0123456789ab", "lease": "0123456789ab.1.ff"}', "v"),  # an older version
    (b'{"v": 2, "kind": "shell", "cmd": "rm -rf /"}', "kind"),  # a foreign message
    (bytes(range(256)), "malformed"),  # garbage
    (b"A" * (MAX_MESSAGE_BYTES + 1), "bytes"),  # too large
    (b'{"v": 2, "kind": "job", "job_id": "0123456789ab", "lease": "0123456789ab.1.ff", "boot": "b", "request": {"prompt": "", "steps": -1}}',
     "malformed"),  # a request that does not validate
    (None, "without"),
])
def test_a_bad_message_is_dropped_and_logged(raw, why, caplog):
    caplog.set_level(logging.WARNING)
    assert decode(raw, "test") is None
    assert any(why in m for m in caplog.messages), caplog.messages


@pytest.mark.parametrize("job_id", ["/home/bot/data", "../../../home/bot", "0123456789ab/..", "0123456789AB",
                                    "0123456789a", "0123456789ab\n", ""])
def test_a_job_id_that_is_not_the_coordinator_s_is_refused(job_id, caplog):
    # Job ids are the coordinator's own, 12 lowercase hex digits: anything else (a path) is malformed.
    caplog.set_level(logging.WARNING)
    req = Request.from_config(Config(), prompt="a lighthouse", steps=3, seed=7)
    good = json.loads(encode(JobMsg(job_id="0123456789ab", lease="0123456789ab.1.ff", request=req, boot="b1")))
    for kind in ("job", "cancel", "failed"):
        msg = {"v": 2, "kind": kind, "job_id": job_id, "lease": f"{job_id}.1.ff"}
        if kind == "job":
            msg = {**good, "job_id": job_id}
        elif kind == "failed":
            msg.update(worker="w1", reason="no")
        assert decode(json.dumps(msg).encode(), "test") is None
    assert len([m for m in caplog.messages if "job_id" in m]) == 3, caplog.messages


def test_no_job_id_becomes_a_path_outside_its_folder(tmp_path):
    # Defence in depth: whatever a caller checked, the one path builder takes plain names only.
    from engine.media.files import job_path
    from engine.media.frames import FrameStore

    assert job_path(tmp_path, "0123456789ab", ".png") == tmp_path / "0123456789ab.png"
    for bad in ("/etc", "../x", "a/b", "..", "", "x\0", "0123456789ab/../.."):
        with pytest.raises(ValueError, match="not a job id"):
            job_path(tmp_path, bad)
        with pytest.raises(ValueError, match="not a job id"):
            FrameStore(tmp_path, 10).remove(bad)
