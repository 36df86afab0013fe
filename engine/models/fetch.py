"""Download one model file safely: resumable, verified, atomic, one process at a time.

The file is written to ``<dest>.part`` and renamed onto ``dest`` only once its size and sha256
check out, so a ``dest`` that exists is always complete. An interrupted transfer leaves the
``.part`` behind and the next call resumes it with an HTTP Range request. ``flock`` on
``<dest>.lock`` keeps two processes (the bot and a CLI run, say) from writing the same file.
Only the standard library is used: the mirrors are plain HTTPS servers, not the HF hub.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from engine.errors import ModelFileMissing

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, the atomic rename still holds
    fcntl = None  # type: ignore[assignment]

__all__ = ["fetch", "FetchError", "sha256_of"]

TIMEOUT_S = 30.0  # per socket operation (connect, each read), not for the whole file
CHUNK = 1 << 20
USER_AGENT = "vqgan-clip-bot/0.1 (python urllib)"


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


def _recorded_sha(dest: Path) -> str | None:
    """The digest recorded at the first download of a file that has no published checksum."""
    try:
        text = _sidecar(dest).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    return text[0] if text and re.fullmatch(r"[0-9a-f]{64}", text[0]) else None


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


def _network_reason(err: BaseException) -> str:
    reason = getattr(err, "reason", err)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused; no network?"
    if isinstance(reason, socket.gaierror):
        return "host not found; no network?"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out; no network?"
    return f"{reason}; no network?"


def _download(url: str, part: Path, size: int | None, label: str, progress: bool) -> None:
    """Bring ``part`` up to the whole file from ``url``, resuming what is there."""
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start > size:
        part.unlink()
        start = 0
    if size is not None and start == size:
        return  # complete already; the caller verifies it
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and start:  # nothing after `start`: the part may already be whole
            return
        raise _Failed(f"HTTP {e.code}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _Failed(_network_reason(e)) from None
    with resp:
        status = getattr(resp, "status", None) or 200
        total: int | None
        if status == 206:
            m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", "").strip())
            if not m or int(m[1]) != start:
                part.unlink()  # a range we did not ask for: start over cleanly
                resp.close()
                return _download(url, part, size, label, progress)
            total = int(m[2]) if m[2] != "*" else None
            mode = "ab"
        else:  # 200: the server ignored Range (or there was none); restart from zero
            start = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        if resp.headers.get_content_type() == "text/html":
            raise _Failed("the server sent a web page, not the file")
        if size is not None and total is not None and total != size:
            raise _Failed(f"the server offers {total} bytes, expected {size}")
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
            try:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            except (http.client.HTTPException, OSError) as e:
                raise _Failed(
                    f"transfer broke off after {got} bytes ({type(e).__name__}); kept {part.name} to resume"
                ) from None
    if expected is not None and got < expected:
        raise _Failed(f"transfer ended after {got} of {expected} bytes; kept {part.name} to resume")


def _verify(part: Path, size: int | None, sha256: str | None) -> tuple[str | None, str]:
    """(problem or None, actual sha256)."""
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        return f"size mismatch: expected {size} bytes, got {actual_size}", ""
    digest = sha256_of(part)
    if sha256 is not None and digest != sha256.lower():
        return f"checksum mismatch: expected sha256 {sha256.lower()}, got {digest}", digest
    return None, digest


def fetch(
    urls: str | Sequence[str],
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
    *,
    label: str | None = None,
) -> Path:
    """Make sure ``dest`` exists, downloading it from the first URL that works.

    ``sha256``/``size`` are checked when given; with no published checksum the digest of the
    first download is recorded in ``<dest>.sha256`` and later downloads must match it.
    ``label`` names the file in messages (default: ``dest``'s name). Raises ``FetchError``.
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    dest = Path(dest)
    label = label or dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _locked(dest, label, progress):
        if dest.exists():  # present already, or another process finished it while we waited
            return dest
        expected_sha = sha256 or _recorded_sha(dest)
        failures: list[str] = []
        for url in url_list:
            for _ in range(2):  # a second, fresh try when a resumed file fails verification
                resumed = part.exists()
                try:
                    _download(url, part, size, label, progress)
                except _Failed as e:
                    failures.append(f"{url} ({e})")
                    break
                problem, digest = _verify(part, size, expected_sha)
                if problem is None:
                    if expected_sha is None:
                        _sidecar(dest).write_text(f"{digest}  {dest.name}\n", encoding="ascii")
                        print(
                            f"warning: {label}: no published checksum; recorded {digest} in {_sidecar(dest)}",
                            file=sys.stderr,
                        )
                    os.replace(part, dest)
                    return dest
                part.unlink(missing_ok=True)
                if not resumed:
                    failures.append(f"{url} ({problem})")
                    break
        tried = ", ".join(failures) or "no URL known"
        raise FetchError(
            f"could not download {label} from {tried}; download it yourself and save it as {dest}"
        )
