"""``python -m engine worker`` (a GPU worker serving jobs from Redis) and ``python -m engine fleet``
(the workers and the queue, as the operators see them)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import TypeVar

from engine.config import Config, redis_url
from engine.errors import UserError

_P = TypeVar("_P", bound=argparse.ArgumentParser)  # the main parser's class (engine.cli.parser.Parser)


def add_parser(sub: argparse._SubParsersAction[_P]) -> None:
    p = sub.add_parser("worker", help="serve jobs from Redis on one GPU (queue.backend = \"redis\")")
    p.add_argument("--config", help="config.toml (models, queue.batch_size, job_timeout_s, redis_url)")
    p.add_argument("--redis", help="Redis URL (beats $VQGAN_CLIP_REDIS_URL, which beats queue.redis_url)")
    p.add_argument("--device", help='e.g. "cuda:0" (default: models.device)')
    p.add_argument("--name", help="how `fleet` shows this worker (default: host name and process id)")
    p = sub.add_parser("fleet", help="the workers and the queue (queue.backend = \"redis\")")
    p.add_argument("--config", help="config.toml (queue.db_path, redis_url)")
    p.add_argument("--redis", help="Redis URL (beats $VQGAN_CLIP_REDIS_URL, which beats queue.redis_url)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    url = redis_url(cfg.queue, args.redis)
    if args.command == "worker":
        from engine.fleet.transport import run_worker

        logging.getLogger().setLevel(logging.INFO)
        return asyncio.run(run_worker(cfg, url, args.name, args.device))
    print(describe_fleet(asyncio.run(read_workers(url)), read_queue(cfg.queue.db_path),
                         batch_size=cfg.queue.batch_size))
    return 0


async def read_workers(url: str) -> list[dict]:
    """Each worker's latest heartbeat (as a dict), by name."""
    from engine.fleet.transport import WORKERS, check_reachable, connect
    from engine.fleet.wire import Heartbeat, decode

    r = connect(url)
    try:
        await check_reachable(r, url)
        raw = await r.hgetall(WORKERS)
    finally:
        await r.aclose()
    beats = [decode(v, "fleet") for v in raw.values()]
    return sorted((hb.model_dump() for hb in beats if isinstance(hb, Heartbeat)), key=lambda h: h["worker"])


def read_queue(db_path: str) -> list[tuple[str, str]]:
    """(owner, state) of every waiting or running job, read-only from the coordinator's store."""
    if not Path(db_path).is_file():
        return []
    try:
        db = sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True)
        try:
            return db.execute("SELECT owner, state FROM jobs WHERE state IN ('queued', 'running')").fetchall()
        finally:
            db.close()
    except sqlite3.Error as e:
        raise UserError(f"{db_path}: cannot read the job store: {e}") from None


def describe_fleet(workers: list[dict] | None, jobs: list[tuple[str, str]], *, batch_size: int,
                   now: float | None = None) -> str:
    """The text of ``fleet`` and of the moderators' ``/queue all``. A worker's room is what the
    coordinator gives it: the capacity its heartbeat claims, at most ``batch_size`` (``queue.batch_size``)."""
    now = time.time() if now is None else now
    if workers is None:
        lines = ["workers: 1, in this process (queue.backend = \"local\")"]
        workers = []
    else:
        lines = [f"workers: {len(workers)}" + ("" if workers else " (painting is paused: no worker reachable)")]
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
