"""The bot's web server (bot/web/server.py): /healthz follows the gateway, and no client can hold it."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest

from engine import UserError
from tests.bot.conftest import FakeRunner, run_bot, web_config, web_url


async def get(url: str, **kw) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as http, http.get(url, **kw) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def test_healthz_is_200_while_the_gateway_session_is_up_and_503_when_it_is_not(fake, tmp_path):
    cfg = web_config(tmp_path, fake, gallery=False)
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        await fake.wait_for(bot.connected)
        status, headers, text = await get(web_url(cfg, "/healthz"))
        assert (status, text) == (200, "ok\n")
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"
        assert "Set-Cookie" not in headers
        await fake.gateway_down()  # discord.py keeps trying to reconnect
        await fake.wait_for(lambda: not bot.connected(), timeout=3)
        status, _, text = await get(web_url(cfg, "/healthz"))
        assert (status, text) == (503, "not connected to Discord\n")
        fake.gateway_up()  # (closing a bot that is retrying takes a while)
    status = None
    try:
        status, _, _ = await get(web_url(cfg, "/healthz"))
    except aiohttp.ClientConnectionError:
        pass
    assert status is None, "the web server stops with the bot"


async def test_a_slow_or_oversized_request_never_holds_the_server(fake, tmp_path):
    cfg = web_config(tmp_path, fake, gallery=False, http={"read_timeout_s": 0.5})
    async with run_bot(fake, cfg, FakeRunner()):
        healthz = web_url(cfg, "/healthz")
        opened = time.monotonic()
        reader, writer = await asyncio.open_connection(cfg.http.host, cfg.http.port)

        async def dribble() -> None:  # a header one byte at a time, never finished
            try:
                for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 1000:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.02)
            except ConnectionError:
                pass

        slow = asyncio.create_task(dribble())
        try:
            for _ in range(3):  # meanwhile another client is answered at once
                t0 = time.monotonic()
                status, _, _ = await get(healthz)
                assert status == 200 and time.monotonic() - t0 < 2.0
            try:
                answer = await asyncio.wait_for(reader.read(), 5)
            except ConnectionResetError:  # closed with its bytes unread
                answer = b""
            assert answer == b"", "the slow client was not answered"
            assert 0.4 < time.monotonic() - opened < 4, "it is dropped after read_timeout_s"
        finally:
            slow.cancel()
            writer.close()

        assert (await get(healthz, headers={"X-Big": "b" * 10_000}))[0] == 400  # over max_field_size
        assert (await get(healthz + "?" + "q" * 10_000))[0] == 400  # a request line over max_line_size
        assert (await get(healthz, headers={f"X-H{i}": "1" for i in range(100)}))[0] == 400  # too many headers
        async with aiohttp.ClientSession() as http:
            async with http.post(healthz, data=b"x" * 100_000) as resp:
                assert resp.status == 405 and resp.headers["Allow"] == "GET"
            async with http.head(healthz) as resp:
                assert resp.status == 405
        status, headers, text = await get(web_url(cfg, "/nothing-here"))
        assert status == 404 and "Content-Security-Policy" in headers
        assert (await get(healthz))[0] == 200  # and it still answers


async def test_a_port_that_is_taken_stops_the_bot_at_start_with_one_line(fake, tmp_path):
    cfg = web_config(tmp_path, fake, gallery=False)
    with socket.socket() as taken:
        taken.bind((cfg.http.host, cfg.http.port))
        taken.listen()
        with pytest.raises(UserError, match=rf"the web server cannot listen on 127.0.0.1:{cfg.http.port} "):
            async with run_bot(fake, cfg, FakeRunner()):
                pass
