"""fetch() against a loopback HTTP server: success, resume, checksum, 404, fallback, no network,
and the servers that misbehave: changed files, stray ranges, redirect loops, hangs."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.errors import ModelFileMissing, UserError
from engine.models import fetch as fetch_mod
from engine.models.fetch import FetchError, fetch, recorded_sha256

DATA = bytes(range(256)) * 40  # 10240 bytes
SHA = hashlib.sha256(DATA).hexdigest()
OTHER = bytes(reversed(DATA))  # another file of the same length: another mirror's, or a new version


@dataclass
class Route:
    body: bytes = DATA
    status: int = 200
    truncate_times: int = 0  # first N full responses stop halfway and close the connection
    honour_range: bool = True
    content_type: str = "application/octet-stream"
    send_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    etag: str | None = None
    last_modified: str | None = None
    range_from: int | None = None  # answer every GET with a 206 starting here, asked or not
    redirect_to: str | None = None
    hang: str | None = None  # "silent": never answer; "drip": a byte every 50 ms


@dataclass
class Server:
    base: str
    routes: dict[str, Route]
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)

    def url(self, path: str) -> str:
        return self.base + path


class _Handler(http.server.BaseHTTPRequestHandler):
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
        if route.hang == "silent":
            self.connection.settimeout(10)
            try:
                self.connection.recv(1)  # until the client gives up
            except OSError:
                pass
            return
        if route.redirect_to:
            self.send_response(302)
            self.send_header("Location", route.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, start = route.body, 0
        if route.range_from is not None:
            start = route.range_from
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        elif rng and route.honour_range:
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
        if route.send_length:
            self.send_header("Content-Length", str(len(chunk)))
        else:
            self.close_connection = True
        for name, value in (("ETag", route.etag), ("Last-Modified", route.last_modified)):
            if value:
                self.send_header(name, value)
        self.end_headers()
        if route.hang == "drip":
            for i in range(200):  # 10 s at most; stops when the client hangs up
                time.sleep(0.05)
                try:
                    self.wfile.write(chunk[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    return
            return
        if route.truncate_times > 0:
            route.truncate_times -= 1
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up reading (e.g. past its size cap)
            self.close_connection = True


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = Server(f"http://127.0.0.1:{httpd.server_address[1]}", {})
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
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
    server.routes["/m.ckpt"] = Route(truncate_times=1)
    dest = tmp_path / "last.ckpt"
    with pytest.raises(FetchError, match="resume"):
        fetch(server.url("/m.ckpt"), dest, SHA, len(DATA), progress=False)
    server.routes["/m.ckpt"].honour_range = False
    fetch(server.url("/m.ckpt"), dest, SHA, len(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert server.requests[1][1] is not None  # it asked for a range, got a 200, started over


def test_bad_resumed_part_is_retried_fresh(server: Server, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route(truncate_times=1)
    dest = tmp_path / "last.ckpt"
    part = dest.with_name("last.ckpt.part")
    with pytest.raises(FetchError, match="resume"):
        fetch(server.url("/m.ckpt"), dest, SHA, len(DATA), progress=False)
    part.write_bytes(b"\xff" * part.stat().st_size)  # wrong bytes, right position
    fetch(server.url("/m.ckpt"), dest, SHA, len(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert [r for _, r in server.requests] == [None, f"bytes={len(DATA) // 2}-", None]


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

    assert recorded_sha256(dest) == SHA


def test_deleting_a_file_clears_its_recorded_hash(server: Server, tmp_path: Path) -> None:
    # The first download was bad (the loader said "delete it and fetch it again"): the user
    # deletes it, and the good file the mirror now serves must be accepted and recorded.
    server.routes["/m.ckpt"] = Route(body=OTHER)
    dest = tmp_path / "last.ckpt"
    fetch(server.url("/m.ckpt"), dest, None, None, progress=False)
    dest.unlink()

    server.routes["/m.ckpt"] = Route(body=DATA)
    fetch(server.url("/m.ckpt"), dest, None, None, progress=False)

    assert dest.read_bytes() == DATA
    assert recorded_sha256(dest) == SHA


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


# --- Nothing is installed or recorded that is not the whole file, from one source. ---


def _interrupted(server: Server, path: str, dest: Path) -> None:
    """A first download from ``path`` that broke off halfway, leaving a .part to resume."""
    with pytest.raises(FetchError, match="resume"):
        fetch(server.url(path), dest, None, None, progress=False)
    assert dest.with_name(dest.name + ".part").stat().st_size == len(server.routes[path].body) // 2


def test_junk_part_as_long_as_the_file_is_not_taken_for_it(server: Server, tmp_path: Path) -> None:
    # A .part nobody can vouch for (left by a crash, another tool, an old version) is at least
    # as long as the file: a Range request for it gets 416, which does not mean "complete".
    server.routes["/m.ckpt"] = Route()
    dest = tmp_path / "last.ckpt"
    dest.with_name("last.ckpt.part").write_bytes(b"\x00" * (len(DATA) + 5))

    fetch(server.url("/m.ckpt"), dest, None, None, progress=False)

    assert dest.read_bytes() == DATA and recorded_sha256(dest) == SHA


def test_416_when_the_file_shrank_starts_over(server: Server, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route(body=DATA + DATA, truncate_times=1)
    dest = tmp_path / "last.ckpt"
    _interrupted(server, "/m.ckpt", dest)
    server.routes["/m.ckpt"] = Route(body=DATA[:-10])  # the mirror now has a shorter file

    fetch(server.url("/m.ckpt"), dest, None, None, progress=False)

    assert dest.read_bytes() == DATA[:-10]
    assert [r for _, r in server.requests] == [None, f"bytes={len(DATA)}-", None]


def test_part_from_one_mirror_is_not_resumed_from_another(server: Server, tmp_path: Path) -> None:
    server.routes["/a/m.ckpt"] = Route(body=DATA, truncate_times=1)
    server.routes["/b/m.ckpt"] = Route(body=OTHER)  # same name and length, other bytes
    dest = tmp_path / "last.ckpt"

    fetch([server.url("/a/m.ckpt"), server.url("/b/m.ckpt")], dest, None, None, progress=False)

    assert dest.read_bytes() == OTHER  # not half of one and half of the other
    assert server.requests == [("/a/m.ckpt", None), ("/b/m.ckpt", None)]


@pytest.mark.parametrize(
    ("header", "old", "new"),
    [
        ("etag", '"v1"', '"v2"'),
        ("last_modified", "Mon, 01 Jan 2024 00:00:00 GMT", "Tue, 02 Jan 2024 00:00:00 GMT"),
    ],
)
def test_part_of_an_older_version_is_not_resumed(
    server: Server, tmp_path: Path, header: str, old: str, new: str
) -> None:
    server.routes["/m.ckpt"] = Route(body=DATA, truncate_times=1, **{header: old})
    dest = tmp_path / "last.ckpt"
    _interrupted(server, "/m.ckpt", dest)
    server.routes["/m.ckpt"] = Route(body=OTHER, **{header: new})  # replaced on the server

    fetch(server.url("/m.ckpt"), dest, None, None, progress=False)

    assert dest.read_bytes() == OTHER
    assert [r for _, r in server.requests][-1] is None  # the resume was dropped for a fresh start


def test_same_version_is_resumed(server: Server, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route(body=DATA, truncate_times=1, etag='"v1"')
    dest = tmp_path / "last.ckpt"
    _interrupted(server, "/m.ckpt", dest)

    fetch(server.url("/m.ckpt"), dest, SHA, None, progress=False)

    assert dest.read_bytes() == DATA
    assert [r for _, r in server.requests] == [None, f"bytes={len(DATA) // 2}-"]


def test_a_file_the_check_refuses_is_neither_installed_nor_recorded(server: Server, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route(body=b"<!doctype html><p>please log in</p>")  # as octet-stream
    dest = tmp_path / "last.ckpt"

    def check(path: Path) -> str | None:
        return None if path.read_bytes().startswith(b"PK") else "not a zip checkpoint"

    with pytest.raises(FetchError) as err:
        fetch(server.url("/m.ckpt"), dest, None, None, progress=False, check=check)

    assert f"{server.url('/m.ckpt')} (not a zip checkpoint)" in str(err.value)
    assert not dest.exists() and recorded_sha256(dest) is None
    assert not dest.with_name("last.ckpt.sha256").exists() and not dest.with_name("last.ckpt.part").exists()


def test_force_downloads_again_and_records_the_new_hash(server: Server, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route(body=OTHER)
    dest = tmp_path / "last.ckpt"
    fetch(server.url("/m.ckpt"), dest, None, None, progress=False)
    server.routes["/m.ckpt"] = Route(body=DATA)

    fetch(server.url("/m.ckpt"), dest, None, None, progress=False, force=True)

    assert dest.read_bytes() == DATA and recorded_sha256(dest) == SHA


def test_failed_force_keeps_the_installed_file(server: Server, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route()
    dest = tmp_path / "last.ckpt"
    fetch(server.url("/m.ckpt"), dest, None, None, progress=False)
    server.routes["/m.ckpt"] = Route(status=404)

    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(server.url("/m.ckpt"), dest, None, None, progress=False, force=True)

    assert dest.read_bytes() == DATA and recorded_sha256(dest) == SHA


# --- Misbehaving servers are one line, and quick. ---


def _one_line_failure(urls: str | list[str], dest: Path) -> str:
    with pytest.raises(FetchError) as err:
        fetch(urls, dest, None, None, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith(f"save it as {dest}")
    assert not dest.exists()
    return msg


@pytest.mark.parametrize("resuming", [False, True])
def test_206_for_a_range_not_asked_for(server: Server, tmp_path: Path, resuming: bool) -> None:
    dest = tmp_path / "last.ckpt"
    if resuming:
        server.routes["/m.ckpt"] = Route(truncate_times=1)
        _interrupted(server, "/m.ckpt", dest)
    server.routes["/m.ckpt"] = Route(range_from=100)

    msg = _one_line_failure(server.url("/m.ckpt"), dest)

    asked = f"bytes={len(DATA) // 2}-" if resuming else "the whole file"
    assert f"the server sent 'bytes 100-{len(DATA) - 1}/{len(DATA)}' for a request of {asked}" in msg


def test_redirect_loop(server: Server, tmp_path: Path) -> None:
    server.routes["/a"] = Route(redirect_to="/b")
    server.routes["/b"] = Route(redirect_to="/a")
    msg = _one_line_failure(server.url("/a"), tmp_path / "last.ckpt")
    assert f"{server.url('/a')} (redirect loop" in msg


def test_redirect_to_another_scheme_is_refused(server: Server, tmp_path: Path) -> None:
    server.routes["/a"] = Route(redirect_to="ftp://127.0.0.1/m.ckpt")
    msg = _one_line_failure(server.url("/a"), tmp_path / "last.ckpt")
    assert "redirected to a ftp: URL, which is refused" in msg


def test_server_that_never_answers(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch_mod, "TIMEOUT_S", 0.5)
    server.routes["/m.ckpt"] = Route(hang="silent")
    t0 = time.monotonic()
    msg = _one_line_failure(server.url("/m.ckpt"), tmp_path / "last.ckpt")
    assert time.monotonic() - t0 < 3
    assert "the server did not answer within 0.5 s" in msg and "no network" not in msg


def test_server_that_trickles(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A byte every 50 ms never trips the per-read timeout, but it is no download either.
    monkeypatch.setattr(fetch_mod, "STALL_S", 0.5, raising=False)  # absent before #10
    server.routes["/m.ckpt"] = Route(hang="drip")
    t0 = time.monotonic()
    msg = _one_line_failure(server.url("/m.ckpt"), tmp_path / "last.ckpt")
    assert time.monotonic() - t0 < 3
    assert "the server stalled" in msg


@pytest.mark.parametrize("send_length", [True, False])
def test_a_mirror_sending_more_than_the_file_can_be_does_not_fill_the_disk(
        server: Server, tmp_path: Path, send_length: bool) -> None:
    server.routes["/huge.ckpt"] = Route(body=DATA * 200, send_length=send_length)  # 2 MB where 10 KB is expected
    dest = tmp_path / "last.ckpt"
    with pytest.raises(FetchError, match="more than this file can be") as e:
        fetch(server.url("/huge.ckpt"), dest, progress=False, max_size=len(DATA) * 2)
    assert str(e.value).count("\n") == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("last.ckpt")) in (
        [], ["last.ckpt.lock"])  # no file, no .part to resume
    from engine.models.registry import PRESETS

    # every preset's download is capped at twice its approximate size (no mirror publishes an exact one)
    assert all(p.checkpoint.max_size == 2 * p.checkpoint.approx_size for p in PRESETS.values())
