"""``python -m engine worker`` (a GPU worker serving jobs from Redis) and ``python -m engine fleet``
(the workers and the queue, as the operators see them)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import TypeVar

from engine.config import Config, redis_url

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
        from engine.fleet.process import run_worker

        logging.getLogger().setLevel(logging.INFO)
        return asyncio.run(run_worker(cfg, url, args.name, args.device))
    from engine.fleet.status import describe_fleet, read_workers
    from engine.jobs.store import read_pending

    print(describe_fleet(asyncio.run(read_workers(url)), read_pending(cfg.queue.db_path),
                         batch_size=cfg.queue.batch_size))
    return 0
