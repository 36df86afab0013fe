"""Redis, as the fleet uses it: the streams and keys, the connection, and reading a stream.

Redis Streams with consumer groups carry the messages of ``engine.fleet.wire``:

* ``vqgan-clip:jobs:<worker>`` (group ``worker``): job and cancel messages for one worker. The
  coordinator writes a job there only when that worker has room (its heartbeat announces its
  capacity; the coordinator counts what it handed out), so Redis never holds a queue deep enough
  to override the coordinator's fair order;
* ``vqgan-clip:events`` (group ``coordinator``): finished, failed and returned jobs; an entry is
  acknowledged and deleted only once the coordinator has written the picture and recorded it, so
  a coordinator killed meanwhile reads it again at its next start;
* ``vqgan-clip:progress`` (group ``coordinator``): progress images, trimmed (``MAXLEN ~``);
* ``vqgan-clip:workers`` (hash): each worker's latest heartbeat.

Every hand-out has a lease (``<job id>.<attempt>.<nonce>``); an outcome that quotes another lease
(a worker that was given up on, a hand-out that was taken back) is dropped, so each result is
recorded, and delivered, once. SQLite stays the coordinator's record of truth.

A worker is trusted with no more than it needs: it gets at most the coordinator's ``queue.batch_size``
jobs at a time (whatever capacity it claims), a job still held ``job_timeout_s`` + ``worker_timeout_s``
after it was handed out (for a zoom: after its newest frame) is taken back and cancelled there, and
every picture it sends must have a size the request can be painted at (read from the PNG header,
before anything decodes it). A worker in turn opens only the files that came with its job, under
a folder of its own named by the (validated) job id, and loads only presets and the models of its own
``[models]`` (``unserved``).

The coordinator's end is ``engine.fleet.link``, a remote worker's ``engine.fleet.source``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.errors import UserError

log = logging.getLogger(__name__)


PREFIX = "vqgan-clip"


WORKERS = f"{PREFIX}:workers"


EVENTS = f"{PREFIX}:events"


PROGRESS = f"{PREFIX}:progress"


EVENTS_MAXLEN = 10_000


PROGRESS_MAXLEN = 1_000


JOBS_MAXLEN = 1_000


PAUSED = "painting is paused: no worker reachable"


DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def jobs_stream(worker: str) -> str:
    return f"{PREFIX}:jobs:{worker}"


def connect(url: str) -> aioredis.Redis:
    """A client for ``url`` (``redis://`` or ``rediss://``); ``UserError`` if the URL is not one."""
    try:
        return aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    except ValueError as e:
        raise UserError(f"not a Redis URL: {safe_url(url)} ({e})") from None


def safe_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def stream_entries(resp: object) -> list[tuple[Any, Any, bytes | str | None]]:
    """(stream, entry id, message) of each entry of an XREADGROUP reply (``[[stream, [(id, fields),
    ...]], ...]``; None when it timed out). An entry trimmed away (``MAXLEN ~``) while still pending
    comes back without fields: its message is None, which ``decode`` drops with a warning."""
    if not isinstance(resp, list):
        return []
    return [(stream, entry_id, (fields or {}).get(b"m")) for stream, entries in resp for entry_id, fields in entries]


async def ensure_group(r: aioredis.Redis, stream: str, group: str) -> None:
    with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
        await r.xgroup_create(stream, group, id="0", mkstream=True)


async def check_reachable(r: aioredis.Redis, url: str) -> None:
    """One line (``UserError``) when Redis cannot be used: wrong password, unreachable host."""
    try:
        await r.ping()
    except RedisError as e:
        raise UserError(f"cannot use Redis at {safe_url(url)}: {e}") from None
    except OSError as e:
        raise UserError(f"cannot reach Redis at {safe_url(url)}: {e}") from None


async def cancel_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait until each has ended (whatever it raised)."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task
