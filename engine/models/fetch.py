"""Download one model file safely: resumable, verified, atomic, one process at a time.

The file is written to ``<dest>.part`` and renamed onto ``dest`` only once it is complete (its
length matches Content-Length / the Content-Range total), its checksum matches a published one and
it passes the caller's ``check`` (it opens as the checkpoint or config it should be). So a ``dest``
that exists is always whole. ``<dest>.part.json`` says where the ``.part`` came from: it is
resumed (HTTP Range + If-Range) only from the same URL and, where the server gave them, the same
ETag / Last-Modified; anything else starts from zero, and so does a 416. With no published
checksum, the sha256 of what was installed is recorded in ``<dest>.sha256`` for the user to see
and compare (``python -m engine models``); the record goes with its file: once the file is gone
(deleted because it was corrupt, say) the record is dropped, not held against the next download.
``flock`` on ``<dest>.lock`` keeps two processes (the bot and a CLI run) from writing the same
file. Only the standard library talks HTTP: the mirrors are plain HTTPS servers, not the HF hub.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ValidationError
from tqdm import tqdm

from engine.errors import ModelFileMissing
from engine.media.files import write_atomic

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, the atomic rename still holds
    fcntl = None  # type: ignore[assignment]  # the module's name, bound to None where it does not exist

__all__ = ["fetch", "FetchError", "sha256_of", "recorded_sha256", "Check"]

TIMEOUT_S = 30.0  # per socket operation (connect, each read), not for the whole file
STALL_S = 60.0  # a transfer that brings fewer than STALL_BYTES in this long is given up...
STALL_BYTES = 64 * 1024  # ...so a server that trickles a byte now and then cannot hang us
MAX_REDIRECTS = 10
CHUNK = 1 << 20
USER_AGENT = "vqgan-clip-bot/0.1 (python urllib)"

Check = Callable[[Path], str | None]
"""Looks at a downloaded file before it is installed: ``None`` if usable, else why not."""


class FetchError(ModelFileMissing):
    """A model file could not be downloaded from any of its URLs; says where to put it by hand."""


class _Failed(Exception):
    """One URL did not work; the message is the reason shown in parentheses."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _source_file(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def recorded_sha256(dest: str | os.PathLike[str]) -> str | None:
    """The sha256 recorded when ``dest`` was installed without a published checksum; ``None``
    when there is none, or when ``dest`` is gone (a record outlives its file only by accident)."""
    dest = Path(dest)
    if not dest.is_file():
        return None
    try:
        text = _sidecar(dest).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    return text[0] if text and re.fullmatch(r"[0-9a-f]{64}", text[0]) else None


class PartSource(BaseModel):
    """Where a ``.part`` came from, so that it is only ever resumed from the same file."""

    url: str  # the URL as listed, not where it redirected to (signed redirect URLs change)
    etag: str | None = None
    last_modified: str | None = None
    total: int | None = None  # the whole file's length, when the server said


def _read_source(dest: Path) -> PartSource | None:
    try:
        return PartSource.model_validate_json(_source_file(dest).read_bytes())
    except (OSError, ValueError, ValidationError):
        return None


def _discard_part(dest: Path) -> None:
    _part(dest).unlink(missing_ok=True)
    _source_file(dest).unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text, encoding="ascii" if path.suffix == ".sha256" else "utf-8")


@contextlib.contextmanager
def _locked(dest: Path, label: str, progress: bool) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(dest.with_name(dest.name + ".lock"), "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"waiting for another process that is downloading {label} ...", file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows HTTP(S) redirects only, never from HTTPS down to plain HTTP (or to ftp:)."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: http.client.HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        old = urllib.parse.urlsplit(req.full_url).scheme
        new = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl)).scheme
        if new not in ("http", "https") or (old == "https" and new != "https"):
            fp.close()
            raise _Failed(f"redirected to a {new}: URL, which is refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _network_reason(err: BaseException) -> str:
    reason = getattr(err, "reason", err)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused; no network?"
    if isinstance(reason, socket.gaierror):
        return "host not found; no network?"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out connecting; no network?"
    return f"{reason}; no network?"


def _open(url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    """The response to a GET, or ``_Failed`` with why not. A 416 comes back as ``HTTPError``."""
    opener = urllib.request.build_opener(_Redirects())
    try:
        return opener.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416:
            raise
        if 300 <= e.code < 400:
            looped = "infinite loop" in str(e.msg)
            raise _Failed(
                f"redirect loop (gave up after {MAX_REDIRECTS} redirects)"
                if looped
                else f"HTTP {e.code} redirect that says nowhere to go"
            ) from None
        raise _Failed(f"HTTP {e.code}") from None
    except urllib.error.URLError as e:  # connecting failed
        raise _Failed(_network_reason(e)) from None
    except TimeoutError:  # connected, then no status line: a hung server
        raise _Failed(f"the server did not answer within {TIMEOUT_S:g} s") from None
    except (OSError, http.client.HTTPException) as e:
        raise _Failed(f"{type(e).__name__}: {e}".rstrip(": ")) from None


def _same_file(src: PartSource, etag: str | None, last_modified: str | None, total: int | None) -> bool:
    """Whether a response is for the file the ``.part`` holds the start of."""
    return (
        (src.etag is None or etag == src.etag)
        and (src.last_modified is None or last_modified == src.last_modified)
        and (src.total is None or total is None or total == src.total)
    )


def _download(url: str, dest: Path, size: int | None, label: str, progress: bool,
              max_size: int | None = None) -> None:
    """Bring ``<dest>.part`` up to the whole file from ``url``, resuming only a ``.part`` that
    came from the same URL and the same version of the file; otherwise start from zero."""
    part = _part(dest)
    src = _read_source(dest)
    start = part.stat().st_size if part.exists() else 0
    if start and (
        src is None
        or src.url != url
        or (src.total is not None and start > src.total)
        or (size is not None and start > size)
    ):
        _discard_part(dest)  # not ours to resume: another mirror, an old layout, or junk
        start, src = 0, None
    if src is not None and start and start == (src.total if src.total is not None else size):
        return  # whole already (the transfer ended before it was verified); the caller verifies
    while True:
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if start and src is not None:
            headers["Range"] = f"bytes={start}-"
            validator = src.etag if src.etag and not src.etag.startswith("W/") else src.last_modified
            if validator:
                headers["If-Range"] = validator  # a server that honours it sends all of a changed file
        try:
            resp = _open(url, headers)
        except urllib.error.HTTPError:  # 416: the .part does not fit the file there now
            if not start:
                raise _Failed("HTTP 416") from None
            _discard_part(dest)
            start, src = 0, None
            continue
        if _transfer(url, dest, resp, start, src, size, label, progress, max_size):
            return
        start, src = 0, None  # the file changed on the server since the .part was begun


def _transfer(
    url: str,
    dest: Path,
    resp: http.client.HTTPResponse,
    start: int,
    src: PartSource | None,
    size: int | None,
    label: str,
    progress: bool,
    max_size: int | None = None,
) -> bool:
    """Write one response into the ``.part``. False: it is a different file from the one the
    ``.part`` was begun from, which was dropped, so the caller starts over from zero."""
    part = _part(dest)
    with resp:
        status = getattr(resp, "status", None) or 200
        etag, last_modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
        if resp.headers.get_content_type() == "text/html":
            raise _Failed("the server sent a web page, not the file")
        total: int | None
        if status == 206:
            content_range = resp.headers.get("Content-Range", "").strip()
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range)
            total = int(m[3]) if m and m[3] != "*" else None
            asked = bool(start)  # a 206 with no Range sent was not asked for either
            if not asked or not m or int(m[1]) != start or (total is not None and int(m[2]) != total - 1):
                _discard_part(dest)
                raise _Failed(
                    f"the server sent {content_range or 'a partial answer'!r} for a request of "
                    + (f"bytes={start}-" if asked else "the whole file")
                )
            if src is None or not _same_file(src, etag, last_modified, total):
                _discard_part(dest)
                return False
            mode = "ab"
        elif status == 200:  # the whole file: no Range asked, or the server ignored it
            start = 0
            length = resp.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            mode = "wb"
        else:
            raise _Failed(f"HTTP {status}")
        if size is not None and total is not None and total != size:
            raise _Failed(f"the server offers {total} bytes, expected {size}")
        if max_size is not None and total is not None and total > max_size:
            raise _Failed(f"the server offers {total} bytes, more than this file can be ({max_size})")
        if mode == "wb":  # a new .part: say where it comes from before its first byte
            _discard_part(dest)
            _write_text(
                _source_file(dest),
                PartSource(url=url, etag=etag, last_modified=last_modified, total=total).model_dump_json(),
            )
        expected = total if total is not None else size
        got = start
        with (
            open(part, mode) as f,
            tqdm(
                total=expected,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
                file=sys.stderr,
            ) as bar,
        ):
            window_start, window_bytes = time.monotonic(), 0
            try:
                while chunk := resp.read1(CHUNK):  # returns what has arrived, so stalls are seen
                    f.write(chunk)
                    got += len(chunk)
                    if max_size is not None and got > max_size:
                        f.close()
                        _discard_part(dest)
                        raise _Failed(f"the server sent more than {max_size} bytes, more than this file can be")
                    bar.update(len(chunk))
                    window_bytes += len(chunk)
                    if time.monotonic() - window_start >= STALL_S:
                        if window_bytes < STALL_BYTES:
                            raise _Failed(
                                f"the server stalled: {window_bytes} bytes in {STALL_S:g} s, "
                                f"after {got} bytes; kept {part.name} to resume"
                            )
                        window_start, window_bytes = time.monotonic(), 0
            except TimeoutError:
                raise _Failed(
                    f"the server sent nothing for {TIMEOUT_S:g} s after {got} bytes; kept {part.name} to resume"
                ) from None
            except (http.client.HTTPException, OSError) as e:
                raise _Failed(
                    f"transfer broke off after {got} bytes ({type(e).__name__}); kept {part.name} to resume"
                ) from None
    if expected is not None and got != expected:
        raise _Failed(f"transfer ended after {got} of {expected} bytes; kept {part.name} to resume")
    return True


def _verify(part: Path, size: int | None, sha256: str | None, check: Check | None) -> tuple[str | None, str]:
    """(problem or None, actual sha256)."""
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        return f"size mismatch: expected {size} bytes, got {actual_size}", ""
    digest = sha256_of(part)
    if sha256 is not None and digest != sha256.lower():
        return f"checksum mismatch: expected sha256 {sha256.lower()}, got {digest}", digest
    if check is not None and (problem := check(part)):
        return problem, digest
    return None, digest


def fetch(
    urls: str | Sequence[str],
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
    *,
    label: str | None = None,
    check: Check | None = None,
    force: bool = False,
    max_size: int | None = None,
) -> Path:
    """Make sure ``dest`` exists, downloading it from the first URL that works.

    ``sha256``/``size`` are checked when given, and ``check`` (e.g. "opens as a checkpoint with
    the expected weights") before anything is installed. With no published checksum the digest
    of what was installed is recorded in ``<dest>.sha256`` (see ``recorded_sha256``).
    ``force`` downloads again from zero even when ``dest`` exists, and replaces it (and its
    record) only once the new download is whole and usable. ``label`` names the file in
    messages (default: ``dest``'s name). ``max_size`` (when no exact ``size`` is published): a
    server that offers or sends more bytes than this is given up, its ``.part`` deleted, so a
    broken or hostile mirror cannot fill the disk. Raises ``FetchError``.
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    dest = Path(dest)
    label = label or dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part(dest)
    with _locked(dest, label, progress):
        if dest.exists() and not force:  # present already, or another process finished it while we waited
            return dest
        if not dest.exists():
            _sidecar(dest).unlink(missing_ok=True)  # the record of a file that was deleted
        if force:
            _discard_part(dest)
        failures: list[str] = []
        for url in url_list:
            for _ in range(2):  # a second, fresh try when a resumed file fails verification
                resumed = part.exists()
                try:
                    _download(url, dest, size, label, progress, max_size)
                except _Failed as e:
                    failures.append(f"{url} ({e})")
                    break
                problem, digest = _verify(part, size, sha256, check)
                if problem is None:
                    if sha256 is None:
                        _write_text(_sidecar(dest), f"{digest}  {dest.name}\n")
                        print(
                            f"warning: {label}: no published checksum; recorded {digest} in {_sidecar(dest)}",
                            file=sys.stderr,
                        )
                    else:
                        _sidecar(dest).unlink(missing_ok=True)
                    os.replace(part, dest)
                    _source_file(dest).unlink(missing_ok=True)
                    return dest
                _discard_part(dest)
                if not resumed:
                    failures.append(f"{url} ({problem})")
                    break
        tried = ", ".join(failures) or "no URL known"
        raise FetchError(
            f"could not download {label} from {tried}; download it yourself and save it as {dest}"
        )
