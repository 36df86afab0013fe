"""Gateway resource: the websocket (zlib-stream) discord.py connects to: HELLO, IDENTIFY, RESUME, DISPATCH."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import zlib
from typing import Any

import aiohttp
from aiohttp import web

from .models import GatewayEvent, Reply, Request, Route, json_response
from .state import ALL_PERMISSIONS, State

log = logging.getLogger("fakediscord")


class _Session:
    def __init__(self, sid: str, intents: int) -> None:
        self.id, self.intents, self.seq = sid, intents, 0
        self.buffer: list[dict[str, Any]] = []  # sent payloads (for RESUME)


class _Conn:
    def __init__(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        self.ws = ws
        self.zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self.session: _Session | None = None
        self.lock = asyncio.Lock()

    async def send(self, obj: dict[str, Any]) -> None:
        raw = json.dumps(obj, ensure_ascii=False).encode()
        async with self.lock:
            if self.ws.closed:
                return
            try:
                if self.zlib is not None:
                    await self.ws.send_bytes(self.zlib.compress(raw) + self.zlib.flush(zlib.Z_SYNC_FLUSH))
                else:
                    await self.ws.send_str(raw.decode())
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:  # peer went away
                log.debug("gateway send failed: %s", exc)


class Gateway(State):
    """Bot sessions and their sockets; every event the fake dispatches is recorded in ``events``."""

    def __init__(self, *, heartbeat_interval_ms: int = 41250, **kwargs: Any) -> None:
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.events: list[GatewayEvent] = []
        self.identifies: list[
            dict[str, Any]
        ] = []  # IDENTIFY payloads ('d'), one per (re)connect without resume
        self.resumes: list[dict[str, Any]] = []
        # query of each gateway connect (v, encoding, compress)
        self.gateway_queries: list[dict[str, str]] = []
        self._sessions: dict[str, _Session] = {}
        self._conn: _Conn | None = None  # the connection events go to (the latest IDENTIFY/RESUME)
        self._conns: set[_Conn] = set()
        self.gateway_is_down = False  # ``gateway_down()``: sockets closed, new ones refused (REST still answers)
        super().__init__(**kwargs)

    def _gateway_routes(self) -> list[Route]:
        return [("GET", r"/gateway(?:/bot)?", self._r_gateway)]

    def _bot_intents(self) -> int:
        return self._conn.session.intents if self._conn and self._conn.session else ALL_PERMISSIONS

    # ------------------------------------------------------------------ sessions & dispatch
    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def dispatch(self, t: str, d: dict[str, Any], intent: int = 0) -> GatewayEvent:
        """Send a DISPATCH event to the bot session (buffered for RESUME if it is disconnected)."""
        loop = asyncio.get_running_loop()
        conn = self._conn
        session = conn.session if conn else None
        if session is None and self._sessions:
            session = list(self._sessions.values())[-1]
        if session is not None and intent and not session.intents & intent:
            ev = GatewayEvent(t, d, None, loop.time())  # filtered by intents
            self.events.append(ev)
            return ev
        seq = None
        if session is not None:
            session.seq += 1
            seq = session.seq
            payload = {"op": 0, "t": t, "s": seq, "d": d}
            session.buffer.append(payload)
            if conn is not None and conn.session is session:
                await conn.send(payload)
        ev = GatewayEvent(t, d, seq, loop.time())
        self.events.append(ev)
        return ev

    async def _dispatch_if_ready(self, t: str, d: dict[str, Any], intent: int = 0) -> None:
        if self._sessions:
            await self.dispatch(t, d, intent)

    # ------------------------------------------------------------------ the websocket
    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return json_response(200, {"url": self.gateway_url})
        if self.gateway_is_down:
            return json_response(503, {"message": "503: Service Unavailable", "code": 0})
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        self.gateway_queries.append(dict(request.query))
        conn = _Conn(ws, request.query.get("compress"))
        self._conns.add(conn)
        try:
            await conn.send(
                {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake"]}}
            )
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    data = json.loads(msg.data.decode())
                else:
                    continue
                await self._gateway_op(conn, data)
        finally:
            self._conns.discard(conn)
            if self._conn is conn:
                self._conn = None
        return ws

    async def _gateway_op(self, conn: _Conn, msg: dict[str, Any]) -> None:
        op: Any = msg.get("op")
        d: Any = msg.get("d")
        if op == 1:  # HEARTBEAT
            await conn.send({"op": 11})
        elif op == 2:  # IDENTIFY
            self.identifies.append(d)
            session = _Session(secrets.token_hex(16), int(d.get("intents", 0) or 0))
            self._sessions = {session.id: session}  # one bot session at a time; older ones can't resume
            conn.session = session
            self._conn = conn  # newest connection wins: older sockets get no more events
            session.seq += 1
            ready = {
                "v": 10,
                "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
                "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
                "session_id": session.id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.app_id), "flags": 1 << 19},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": [],
                "user_settings": {},
                "_trace": ["fake-gateway"],
            }
            payload = {"op": 0, "t": "READY", "s": session.seq, "d": ready}
            session.buffer.append(payload)
            await conn.send(payload)
            for g in list(self.guilds.values()):
                await self.dispatch("GUILD_CREATE", self.guild_payload(guild=g))
        elif op == 6:  # RESUME
            self.resumes.append(d)
            resumed = self._sessions.get(d.get("session_id"))
            if resumed is None:
                await conn.send({"op": 9, "d": False})
                return
            conn.session = session = resumed
            self._conn = conn
            last = int(d.get("seq") or 0)
            for p in session.buffer:
                if p["s"] > last:
                    await conn.send(p)
            session.seq += 1
            await conn.send({"op": 0, "t": "RESUMED", "s": session.seq, "d": {"_trace": ["fake"]}})
        elif op == 8:  # REQUEST_GUILD_MEMBERS
            g = self.guilds.get(int(d.get("guild_id") or self.guild_id), self.guild)
            members = [self.users[u].member_payload(guild=g) for u in g.members]
            uids = d.get("user_ids")
            if uids:
                uids = {int(x) for x in (uids if isinstance(uids, list) else [uids])}
                members = [m for m in members if int(m["user"]["id"]) in uids]
            chunk = {
                "guild_id": str(g.id),
                "members": members,
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
                "presences": [],
            }
            if d.get("nonce"):
                chunk["nonce"] = d["nonce"]
            await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    # ------------------------------------------------------------------ state & faults for tests
    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until a bot session got READY + GUILD_CREATE on a live connection."""
        await self.wait_for(
            lambda: self._conn is not None and not self._conn.ws.closed and self._conn.session is not None,
            timeout,
        )

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.ws.closed

    async def reconnect_gateway(self) -> None:
        """Send op 7 RECONNECT: discord.py reconnects and RESUMEs."""
        if self._conn:
            await self._conn.send({"op": 7, "d": None})

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close the bot's gateway socket with ``code`` (4000: discord.py reconnects and RESUMEs)."""
        if self._conn:
            await self._conn.ws.close(code=code)

    async def gateway_down(self) -> None:
        """Discord's gateway goes away: the bot's socket is closed (1001) and every new connect is refused
        (503) until ``gateway_up``; discord.py keeps trying to reconnect. REST keeps answering."""
        self.gateway_is_down = True
        for conn in list(self._conns):
            await conn.ws.close(code=1001)

    def gateway_up(self) -> None:
        self.gateway_is_down = False

    # ------------------------------------------------------------------ REST: GET /gateway
    async def _r_gateway(self, rec: Request) -> Reply:
        return 200, {
            "url": self.gateway_url.rstrip("/"),
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
        }
