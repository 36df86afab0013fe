"""The bot's web server: ``GET /healthz``, ``GET /metrics`` and the gallery, on the bot's own event loop.

It shares the loop with the Discord client and the job queue, so no client may hold it: a connection
that has not sent a whole request head ``read_timeout_s`` after it opened (or after its last answer) is
closed (aiohttp's keep-alive timer, which also runs while a head is arriving, so a client sending its
headers byte by byte is dropped); each answer has ``handler_timeout_s``; request lines and headers are
capped (an oversized one is a 400) and no request may carry a body. Only ``GET`` is served (anything else
is a 405). Every answer carries a strict Content-Security-Policy and no cookie is ever set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from bot.config import HttpConfig
from bot.metrics import CONTENT_TYPE, Metrics
from engine import UserError

log = logging.getLogger(__name__)

MAX_LINE = 4096  # the request line and each header line
MAX_FIELD = 4096  # one header's value
MAX_HEADERS = 64
MAX_BODY = 1024  # nothing here reads a body
CSP = ("default-src 'none'; img-src 'self'; media-src 'self'; script-src 'self'; style-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answer(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain")


def _guard(timeout_s: float) -> Middleware:
    """The middleware every request passes: GET only, a time limit, the security headers on every answer."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        resp: web.StreamResponse
        if request.method != "GET":
            resp = _answer(405, "only GET is served here")
            resp.headers["Allow"] = "GET"
        else:
            try:
                async with asyncio.timeout(timeout_s):
                    resp = await handler(request)
            except web.HTTPException as e:  # the router's 404 / 405
                resp = _answer(e.status, e.reason)
            except TimeoutError:
                log.warning("web: %s took longer than %g s", request.path, timeout_s)
                resp = _answer(503, "that took too long; try again later")
            except Exception:  # a bug: the log has it, the client gets a plain 500 (with the headers below)
                log.exception("web: %s failed", request.path)
                resp = _answer(500, "something went wrong on the bot's side")
        for name, value in SECURITY_HEADERS.items():
            resp.headers.setdefault(name, value)
        resp.headers.setdefault("Cache-Control", "no-store")  # pages carry their link's token
        return resp

    return guard


class WebServer:
    """One aiohttp server for the bot: health, metrics and whatever ``routes`` (the gallery) add."""

    def __init__(self, cfg: HttpConfig, *, ready: Callable[[], bool], metrics: Metrics,
                 routes: list[web.RouteDef] | None = None) -> None:
        self.cfg = cfg
        self.ready = ready
        self.metrics = metrics
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[_guard(cfg.handler_timeout_s)])
        self.app.add_routes([web.get("/healthz", self.healthz, allow_head=False),
                             web.get("/metrics", self.scrape, allow_head=False), *(routes or [])])
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # the port it listens on once started

    async def start(self) -> None:
        """Listen on ``host:port``; a ``UserError`` naming the address when that is not possible."""
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None,
                               keepalive_timeout=self.cfg.read_timeout_s, max_line_size=MAX_LINE,
                               max_field_size=MAX_FIELD, max_headers=MAX_HEADERS, lingering_time=1.0,
                               shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.host, self.cfg.port)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise UserError(f"the web server cannot listen on {self.cfg.host}:{self.cfg.port} ({e.strerror or e}); "
                            "set another [http] port, or 0 for none") from None
        self._runner = runner
        self.port = self.cfg.port
        log.info("web server on http://%s:%d (/healthz, /metrics)", self.cfg.host, self.cfg.port)

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while the gateway session is up (``VQGANBot.connected``), 503 otherwise."""
        if self.ready():
            return _answer(200, "ok")
        return _answer(503, "not connected to Discord")

    async def scrape(self, request: web.Request) -> web.Response:
        resp = web.Response(body=self.metrics.exposition())
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp
