"""A real ``redis-server`` and real worker processes for the fleet tests, always stopped by PID.

``RedisServer(tmp)`` starts ``redis-server`` on 127.0.0.1 on a free port (AOF on, no RDB
snapshots, its files in ``tmp``); ``kill()`` / ``start()`` stop and restart it (with its data unless
``wipe=True``). ``Workers`` starts ``python -m engine worker`` processes and kills any left at the end.
``FakeWorker`` plays a hostile or broken worker with redis-py alone; ``png_of`` / ``png_claiming`` make its
pictures (a real one, and a header that claims any size).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeRunner

ROOT = Path(__file__).resolve().parents[1]
needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, made with the ``openssl`` command (the certificate is its own CA)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


class RedisServer:
    """``tls``: serve TLS only (``rediss://``), with a self-signed certificate that ``url`` trusts."""

    def __init__(self, folder: Path, password: str | None = None, tls: bool = False) -> None:
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.cert: tuple[Path, Path] | None = self_signed(folder / "tls") if tls else None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.cert is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.cert[0]}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, wipe: bool = False) -> None:
        if wipe:
            for f in self.dir.iterdir():
                shutil.rmtree(f) if f.is_dir() else f.unlink()
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)]
        if self.cert is not None:
            cert, key = self.cert
            args[1:3] = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file",
                         str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


class Workers:
    """``python -m engine worker`` processes, by name; all of them killed by ``stop_all``."""

    def __init__(self, config: Path, url: str, logs: Path) -> None:
        self.config, self.url, self.logs = config, url, logs  # workers run in ``logs`` unless told
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.configs: dict[str, Path] = {}  # a worker started again keeps the config it first had

    def start(self, name: str, *extra: str, cwd: Path | None = None, config: Path | None = None) -> None:
        config = self.configs.setdefault(name, config or self.config)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("VQGAN_CLIP_REDIS_URL", None)
        env.setdefault("OMP_NUM_THREADS", "1")  # two workers on two cores: no thread fights
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "engine", "worker", "--config", str(config), "--redis", self.url,
             "--name", name, *extra], env=env, cwd=cwd or self.logs, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self, name: str, sig: int = signal.SIGKILL, wait: bool = True) -> None:
        """Send ``sig``; ``wait``: until the process has exited (a worker with torch takes a moment)."""
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        if wait:
            proc.wait(timeout=30)

    @contextlib.contextmanager
    def back_after(self, name: str) -> Iterator[None]:
        """Start worker ``name`` again when the block ends, however it ends (the next tests need it)."""
        try:
            yield
        finally:
            if (proc := self.procs.get(name)) is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            self.start(name)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


class OutOfMemoryRunner(FakeRunner):
    """A runner on a GPU that is too small for pictures wider than 32 pixels (a fake, for a worker
    process of its own): those raise CUDA's out-of-memory error; the others are painted at once."""

    def __call__(self, request, on_progress, should_stop):
        from types import SimpleNamespace

        from PIL import Image

        if request.width > 32:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        img = Image.new("RGB", (request.width, request.height), (1, 2, 3))

        def png() -> bytes:
            import io

            buf = io.BytesIO()
            img.save(buf, format="PNG")
            return buf.getvalue()

        return SimpleNamespace(image=img, request=request, seconds=0.0, losses=[], mask=None, png_bytes=png,
                               candidates=())


def run_small_gpu_worker(config: str, url: str, name: str) -> None:
    """The entry point of ``multiprocessing`` worker with ``OutOfMemoryRunner``."""

    from engine.config import load_config
    from engine.fleet.process import run_worker

    asyncio.run(run_worker(load_config(config), url, name, "cpu", runner=OutOfMemoryRunner()))


class FakeWorker:
    """A "worker" written with redis-py alone, to play a hostile or broken one against a real coordinator.

    A thread of its own announces ``capacity`` in a heartbeat every 0.3 s (the leases it holds) and reads
    its job stream. Each job goes to ``answer(job)`` and each cancel to ``cancelled(cancel, job)``: the
    wire messages they return are posted back (progress to the progress stream, outcomes to the events
    stream; raw bytes go to the events stream as they are, e.g. JSON no encoder writes); a job answered by an
    outcome is no longer held. By default it answers nothing: it hoards.
    ``jobs`` and ``cancels`` are (time.monotonic(), message) as received; ``most_held`` the most it held at once.
    """

    def __init__(self, url: str, name: str, capacity: int = 1, answer: Any = None, cancelled: Any = None) -> None:
        import secrets
        import threading

        import redis

        self.r = redis.Redis.from_url(url)
        self.name, self.capacity, self.boot = name, capacity, secrets.token_hex(4)
        self.answer, self.cancelled = answer, cancelled
        self.jobs: list[tuple[float, Any]] = []
        self.cancels: list[tuple[float, Any]] = []
        self.held: dict[str, str] = {}  # job id -> lease
        self.most_held = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"fake-worker-{name}")

    def __enter__(self) -> FakeWorker:
        self._beat(0)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.r.hdel("vqgan-clip:workers", self.name)
        self.r.delete(f"vqgan-clip:jobs:{self.name}")

    def _beat(self, seq: int) -> None:
        from engine.fleet.wire import Heartbeat, encode

        hb = Heartbeat(worker=self.name, boot=self.boot, seq=seq, device="cpu", capacity=self.capacity,
                       leases=list(self.held.values()), models=[], sent_at=time.time())
        self.r.hset("vqgan-clip:workers", self.name, encode(hb))

    def _post(self, msgs: list[Any]) -> None:
        import json

        from engine.fleet.wire import ProgressMsg, encode

        for msg in msgs:
            if isinstance(msg, bytes):
                self.r.xadd("vqgan-clip:events", {"m": msg})
                self.held.pop(json.loads(msg).get("job_id"), None)
                continue
            self.r.xadd("vqgan-clip:progress" if isinstance(msg, ProgressMsg) else "vqgan-clip:events",
                        {"m": encode(msg)})
            if not isinstance(msg, ProgressMsg):
                self.held.pop(msg.job_id, None)

    def _run(self) -> None:
        from engine.fleet.wire import CancelMsg, JobMsg, decode

        last, seq, beat_at, by_id = "0-0", 0, 0.0, {}
        while not self._stop.is_set():
            if time.monotonic() - beat_at > 0.3:
                seq += 1
                self._beat(seq)
                beat_at = time.monotonic()
            resp = self.r.xread({f"vqgan-clip:jobs:{self.name}": last}, count=16, block=100) or []
            for _stream, entries in resp:
                for entry_id, fields in entries:
                    last = entry_id
                    msg = decode(fields.get(b"m"), f"fake worker {self.name}")
                    if isinstance(msg, JobMsg):
                        self.jobs.append((time.monotonic(), msg))
                        by_id[msg.job_id] = msg
                        self.held[msg.job_id] = msg.lease
                        self.most_held = max(self.most_held, len(self.held))
                        self._post(self.answer(msg) if self.answer else [])
                    elif isinstance(msg, CancelMsg):
                        self.cancels.append((time.monotonic(), msg))
                        if self.held.get(msg.job_id) == msg.lease:
                            self.held.pop(msg.job_id)
                        if self.cancelled:
                            self._post(self.cancelled(msg, by_id.get(msg.job_id)))


def png_of(width: int, height: int, color: tuple[int, int, int] = (0, 0, 0), mode: str = "RGB") -> bytes:
    """A real PNG of that size (mode "1" keeps a huge one cheap to make)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (width, height), color if mode == "RGB" else 0).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small file whose PNG header claims ``width`` x ``height`` (1-bit grey): a decompression bomb's
    shape without its cost; only a reader that decodes it would find its data short."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b""))
