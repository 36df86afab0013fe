"""A small fake Discord (REST + gateway + CDN) that a real discord.py 2.x client can connect to.

See README.md in this folder for the API. Any number of guilds, one bot, users, channels and threads.
This module composes the resources (gateway.py, rest.py, interactions.py, cdn.py, faults.py over the shared
state.py) into one aiohttp server and routes each REST call to the resource that owns its path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote

import aiohttp
import yarl
from aiohttp import web

from .cdn import Cdn
from .faults import Faults
from .gateway import Gateway
from .interactions import Callback, Interaction, Interactions
from .models import ApiError, GatewayEvent, Handler, Request, UploadedFile, json_response
from .rest import Rest
from .state import permission_bits

__all__ = [
    "ApiError",
    "Callback",
    "FakeDiscord",
    "GatewayEvent",
    "Interaction",
    "Request",
    "UploadedFile",
    "permission_bits",
    "point_discord_at",
]

log = logging.getLogger("fakediscord")


class FakeDiscord(Interactions, Rest, Gateway, Faults, Cdn):
    """Fake Discord API + gateway + CDN on 127.0.0.1. Use ``async with FakeDiscord() as server``."""

    def __init__(self, *, guild_name: str = "Test Guild", heartbeat_interval_ms: int = 41250) -> None:
        self.requests: list[Request] = []
        self.unknown_routes: list[Request] = []
        self._runner: web.AppRunner | None = None
        self._route_table: list[tuple[str, re.Pattern[str], Handler]] | None = None
        super().__init__(guild_name=guild_name, heartbeat_interval_ms=heartbeat_interval_ms)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=1024**3)
        app.router.add_get("/", self._gateway)
        app.router.add_route("*", "/api/{version}/{tail:.*}", self._rest)
        app.router.add_get("/{tail:.*}", self._cdn)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001)
        for t in list(self._tasks):
            t.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.asynccontextmanager
    async def running(
        self, client: Any, token: str = "fake-token", timeout: float = 10.0, fast_ready: bool = True
    ) -> AsyncIterator[Any]:
        """Start ``client`` (``client.start(token)`` in a task), wait until it is ready, close it on exit.

        fast_ready lowers discord.py's guild_ready_timeout (2 s by default) to 0.05 s.
        """
        if fast_ready:
            client._connection.guild_ready_timeout = min(client._connection.guild_ready_timeout, 0.05)
        task = asyncio.create_task(client.start(token), name="fakediscord-client")
        try:
            await self.wait_for(lambda: client.is_ready() or task.done(), timeout)
            if task.done():
                task.result()  # raise the start error
                raise RuntimeError("client.start() returned before READY")
            yield client
        finally:
            await client.close()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 5)

    # ------------------------------------------------------------------ REST plumbing
    # (record each call, answer an injected fault, else route it to the resource that owns the path)
    def requests_to(self, method: str, path_regex: str) -> list[Request]:
        rx = re.compile(path_regex)
        return [r for r in self.requests if r.method == method.upper() and rx.search(r.path)]

    async def _read_body(self, request: web.Request) -> tuple[Any, list[UploadedFile]]:
        ctype = request.headers.get("Content-Type", "")
        files: list[UploadedFile] = []
        body: Any = None
        if ctype.startswith("multipart/"):
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                assert isinstance(part, aiohttp.BodyPartReader), "discord.py sends flat multipart bodies"
                name = part.name or ""
                if name == "payload_json":
                    body = json.loads(await part.text())
                elif name.startswith("files[") or part.filename:
                    m = re.match(r"files\[(\d+)\]", name)
                    idx = int(m.group(1)) if m else len(files)
                    files.append(
                        UploadedFile(
                            idx,
                            part.filename or name,
                            bytes(await part.read()),
                            part.headers.get("Content-Type"),
                        )
                    )
                else:
                    body = body or {}
                    body[name] = await part.text()
        else:
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
        return body, files

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        segs = raw_path.split("/")[3:]  # drop '', 'api', 'v10'
        path = "/" + "/".join(unquote(s) for s in segs)
        body, files = await self._read_body(request)
        loop = asyncio.get_running_loop()
        rec = Request(request.method, path, dict(request.query), body, files, loop.time())
        self.requests.append(rec)
        fault = self._fault_for(request.method, path)
        if fault is not None:
            status, out, headers = self._fault_response(fault)
            rec.status, rec.response = status, out
            self._note_interaction_request(path, rec)
            return json_response(status, out, headers)
        status, out = 404, {"message": "404: Not Found", "code": 0}
        for method, rx, handler in self._routes():
            if method != request.method:
                continue
            m = rx.fullmatch(path)
            if m is None:
                continue
            try:
                status, out = await handler(rec, *m.groups())
            except ApiError as e:
                status, out = e.status, e.body()
            break
        else:
            self.unknown_routes.append(rec)
            log.warning("fakediscord: unknown route %s %s", request.method, path)
        rec.status, rec.response = status, out
        self._note_interaction_request(path, rec)
        return json_response(status, out)

    def _note_interaction_request(self, path: str, rec: Request) -> None:
        m = re.match(r"/(?:interactions/\d+|webhooks/\d+)/([^/]+)", path)
        if m:
            for i in self.interactions:
                if i.token == m.group(1):
                    i.requests.append(rec)

    def _routes(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        """Every resource's routes, compiled once; patterns never overlap, so the order is free."""
        if self._route_table is None:
            table = self._rest_routes() + self._gateway_routes() + self._interaction_routes()
            self._route_table = [(m, re.compile(p), h) for m, p, h in table]
        return self._route_table


def point_discord_at(target: FakeDiscord | str) -> Callable[[], None]:
    """Point discord.py's REST, gateway and CDN base URLs at the fake server. Returns an undo function.

    Webhook/interaction followups use discord.http.Route too, so Route.BASE covers them.
    """
    import discord
    import discord.asset
    import discord.gateway
    import discord.http

    api_base = target.api_base if isinstance(target, FakeDiscord) else target.rstrip("/")
    ws = api_base.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/"
    old = (
        discord.http.Route.BASE,
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
        discord.asset.Asset.BASE,
    )
    discord.http.Route.BASE = f"{api_base}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(ws)
    discord.asset.Asset.BASE = api_base

    def undo() -> None:
        (
            discord.http.Route.BASE,
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            discord.asset.Asset.BASE,
        ) = old

    return undo
