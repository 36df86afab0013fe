"""The fleet as its operators see it: each worker's latest heartbeat, and the queue's jobs per owner
(``python -m engine fleet`` and the moderators' ``/queue show:all``)."""

from __future__ import annotations

import time
from collections import Counter

from engine.fleet.streams import PAUSED, WORKERS, check_reachable, connect
from engine.fleet.wire import Heartbeat, decode


async def read_workers(url: str) -> list[dict]:
    """Each worker's latest heartbeat (as a dict), by name."""
    r = connect(url)
    try:
        await check_reachable(r, url)
        raw = await r.hgetall(WORKERS)
    finally:
        await r.aclose()
    beats = [decode(v, "fleet") for v in raw.values()]
    return sorted((hb.model_dump() for hb in beats if isinstance(hb, Heartbeat)), key=lambda h: h["worker"])


def describe_fleet(workers: list[dict] | None, jobs: list[tuple[str, str]], *, batch_size: int,
                   now: float | None = None) -> str:
    """The text of ``fleet`` and of the moderators' ``/queue all``. A worker's room is what the
    coordinator gives it: the capacity its heartbeat claims, at most ``batch_size`` (``queue.batch_size``)."""
    now = time.time() if now is None else now
    if workers is None:
        lines = ["workers: 1, in this process (queue.backend = \"local\")"]
        workers = []
    else:
        lines = [f"workers: {len(workers)}" + ("" if workers else f" ({PAUSED})")]
    for w in workers:
        models = ", ".join(w["models"]) or "none loaded"
        lines.append(f"  {w['worker']}  {w['device']}  jobs {len(w['leases'])}/{min(w['capacity'], batch_size)}  "
                     f"models: {models}  last heartbeat {max(0.0, now - w['sent_at']):.1f} s ago")
        survey = w.get("available") or {}
        if gone := [m["name"] for m in survey.get("models", ()) if m["state"] == "unreachable"]:
            lines.append(f"    {'offline' if survey.get('offline') else 'cannot download'}; "
                         f"not downloaded: {', '.join(gone)}")
    states = Counter(state for _owner, state in jobs)
    lines.append(f"queue: {states['queued']} waiting, {states['running']} running")
    per_owner: dict[str, Counter] = {}
    for owner, state in jobs:
        per_owner.setdefault(owner, Counter())[state] += 1
    for owner, c in sorted(per_owner.items()):
        lines.append(f"  {owner}: {c['queued']} waiting, {c['running']} running")
    return "\n".join(lines)
