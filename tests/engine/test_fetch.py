"""fetch() against a loopback HTTP server: success, resume, checksum, 404, fallback, no network."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.errors import ModelFileMissing, UserError
from engine.models import fetch as fetch_mod
from engine.models.fetch import FetchError, fetch

DATA = bytes(range(256)) * 40  # 10240 bytes
SHA = hashlib.sha256(DATA).hexdigest()


@dataclass
class Route:
    body: bytes = DATA
    status: int = 200
    truncate_times: int = 0  # first N full responses stop halfway and close the connection
    honour_range: bool = True
    content_type: str = "application/octet-stream"


@dataclass
class Server:
    base: str
    routes: dict[str, Route]
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)

    def url(self, path: str) -> str:
        return self.base + path


class _Handler(http.server.BaseHTTPRequestHandler):
    server_state: Server  # set per server

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        state = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        state.requests.append((self.path, rng))
        route = state.routes.get(self.path)
        if route is None or route.status == 404:
            self.send_error(404, "Not Found")
            return
        body, start = route.body, 0
        if rng and route.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if route.truncate_times > 0:
            route.truncate_times -= 1
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(chunk)


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = Server(f"http://127.0.0.1:{httpd.server_address[1]}", {})
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_mod, "TIMEOUT_S", 5.0)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_success_with_checksum(server: Server, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route()
    dest = tmp_path / "cache" / "preset" / "last.ckpt"
    assert fetch([server.url("/m.ckpt")], dest, SHA, len(DATA), progress=False) == dest
    assert dest.read_bytes() == DATA
    assert not dest.with_name("last.ckpt.part").exists()
    # Present already: no second request.
    fetch([server.url("/m.ckpt")], dest, SHA, len(DATA), progress=False)
    assert len(server.requests) == 1


def test_checksum_mismatch_leaves_nothing(server: Server, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route()
    dest = tmp_path / "last.ckpt"
    wrong = "0" * 64
    with pytest.raises(FetchError) as err:
        fetch(server.url("/m.ckpt"), dest, wrong, None, progress=False)
    msg = str(err.value)
    assert "checksum mismatch" in msg and wrong in msg and SHA in msg and str(dest) in msg
    assert not dest.exists() and not dest.with_name("last.ckpt.part").exists()
    assert isinstance(err.value, ModelFileMissing) and isinstance(err.value, UserError)


def test_size_mismatch_is_refused_before_writing(server: Server, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route()
    dest = tmp_path / "last.ckpt"
    with pytest.raises(FetchError, match="expected 999"):
        fetch(server.url("/m.ckpt"), dest, None, 999, progress=False)
    assert not dest.exists()


def test_truncated_transfer_resumes(server: Server, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route(truncate_times=1)
    dest = tmp_path / "last.ckpt"
    part = dest.with_name("last.ckpt.part")
    with pytest.raises(FetchError, match="resume") as err:
        fetch(server.url("/m.ckpt"), dest, SHA, len(DATA), progress=False)
    assert str(dest) in str(err.value)
    assert not dest.exists()
    assert part.stat().st_size == len(DATA) // 2

    fetch(server.url("/m.ckpt"), dest, SHA, len(DATA), progress=False)

    assert dest.read_bytes() == DATA and not part.exists()
    assert server.requests[-1] == ("/m.ckpt", f"bytes={len(DATA) // 2}-")


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route(honour_range=False)
    dest = tmp_path / "last.ckpt"
    part = dest.with_name("last.ckpt.part")
    part.write_bytes(b"garbage that must not stay in front")
    fetch(server.url("/m.ckpt"), dest, SHA, len(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert server.requests[0][1] is not None  # it asked for a range, got a 200, started over


def test_bad_resumed_part_is_retried_fresh(server: Server, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route()
    dest = tmp_path / "last.ckpt"
    dest.with_name("last.ckpt.part").write_bytes(b"\xff" * 100)  # wrong bytes, right position
    fetch(server.url("/m.ckpt"), dest, SHA, len(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert [r for _, r in server.requests] == ["bytes=100-", None]


def test_404_names_url_and_destination(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "imagenet_f16_16384" / "last.ckpt"
    url = server.url("/missing.ckpt")
    with pytest.raises(FetchError) as err:
        fetch([url], dest, SHA, None, progress=False, label="vqgan_imagenet_f16_16384.ckpt")
    msg = str(err.value)
    assert msg.startswith("could not download vqgan_imagenet_f16_16384.ckpt from ")
    assert f"{url} (HTTP 404)" in msg
    assert msg.endswith(f"download it yourself and save it as {dest}")
    assert "\n" not in msg


def test_falls_back_to_second_url(server: Server, tmp_path: Path) -> None:
    server.routes["/good.ckpt"] = Route()
    dest = tmp_path / "last.ckpt"
    fetch([server.url("/gone.ckpt"), server.url("/good.ckpt")], dest, SHA, len(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert [p for p, _ in server.requests] == ["/gone.ckpt", "/good.ckpt"]


def test_html_page_is_not_taken_for_the_file(server: Server, tmp_path: Path) -> None:
    server.routes["/login"] = Route(body=b"<html>sign in</html>", content_type="text/html")
    with pytest.raises(FetchError, match="web page"):
        fetch(server.url("/login"), tmp_path / "last.ckpt", None, None, progress=False)


def test_no_network_message(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_unused_port()}/vqgan.ckpt"
    dest = tmp_path / "cache" / "last.ckpt"
    with pytest.raises(FetchError) as err:
        fetch([url], dest, None, None, progress=False, label="vqgan_imagenet_f16_16384.ckpt")
    msg = str(err.value)
    assert url in msg and "no network?" in msg and str(dest) in msg


def test_no_checksum_records_first_download(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.routes["/m.ckpt"] = Route()
    dest = tmp_path / "last.ckpt"
    fetch(server.url("/m.ckpt"), dest, None, None, progress=False)
    err = capsys.readouterr().err
    assert f"no published checksum; recorded {SHA}" in err
    assert dest.with_name("last.ckpt.sha256").read_text().split()[0] == SHA

    # A later re-download must match what was recorded.
    dest.unlink()
    server.routes["/m.ckpt"] = Route(body=DATA[::-1])
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch(server.url("/m.ckpt"), dest, None, None, progress=False)


def test_concurrent_fetches_download_once(server: Server, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route()
    dest = tmp_path / "last.ckpt"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fetch(server.url("/m.ckpt"), dest, SHA, len(DATA), progress=False)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert dest.read_bytes() == DATA
    assert len(server.requests) == 1


def test_progress_bar_goes_to_stderr(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.routes["/m.ckpt"] = Route()
    fetch(server.url("/m.ckpt"), tmp_path / "last.ckpt", SHA, len(DATA), progress=True, label="demo.ckpt")
    out = capsys.readouterr()
    assert out.out == "" and "demo.ckpt" in out.err
