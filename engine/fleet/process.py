"""``python -m engine worker``: one worker process serving jobs from Redis until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys

from engine.config import Config
from engine.errors import UserError
from engine.fleet.source import RedisSource
from engine.fleet.streams import check_reachable, connect, safe_url
from engine.workers.loop import Worker
from engine.workers.protocols import Runner


async def run_worker(cfg: Config, url: str, name: str | None, device: str | None, runner: Runner | None = None) -> int:
    """``python -m engine worker``: serve jobs from Redis until SIGTERM or Ctrl-C."""
    r = connect(url)
    try:
        await check_reachable(r, url)
    except UserError:
        with contextlib.suppress(Exception):
            await r.aclose()
        raise
    dev = device or cfg.models.device
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {dev} was asked for, but no CUDA GPU is available")
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    if runner is None:
        from engine.workers.runner import EngineRunner  # torch, only now

        runner = EngineRunner(cfg, device=device)
    source = RedisSource(r, cfg.queue, name, dev, runner, cfg.models)
    await source.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, source.stop)
    print(f"worker {name} ({dev}) serving jobs from {safe_url(url)}", file=sys.stderr, flush=True)
    worker = Worker(cfg.queue, runner, source)
    try:
        await worker.serve()
    finally:
        await source.close()
    return 0
