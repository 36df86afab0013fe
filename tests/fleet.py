"""A real ``redis-server`` and real worker processes for the fleet tests, always stopped by PID.

``RedisServer(tmp)`` starts ``redis-server`` on 127.0.0.1 on a free port (AOF on, no RDB
snapshots, its files in ``tmp``); ``kill()`` / ``start()`` stop and restart it (with its data unless
``wipe=True``). ``Workers`` starts ``python -m engine worker`` processes and kills any left at the end;
``HandWorker`` is a worker of another version (or a broken one) answering jobs with what a test gives.
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

import pytest

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


class OutOfMemoryRunner:
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

        return SimpleNamespace(image=img, request=request, seconds=0.0, losses=[], mask=None, png_bytes=png)


def run_small_gpu_worker(config: str, url: str, name: str) -> None:
    """The entry point of ``multiprocessing`` worker with ``OutOfMemoryRunner``."""
    import asyncio

    from engine.config import load_config
    from engine.redis_transport import run_worker

    asyncio.run(run_worker(load_config(config), url, name, "cpu", runner=OutOfMemoryRunner()))


class HandWorker:
    """A worker of another version, or a broken one: it speaks the wire protocol by hand (no torch, no
    ``engine.worker``). It heartbeats as ``name``, takes each job handed to it and answers with a
    finished message whose picture and metadata ``answer(job message)`` gives (``png``, ``metadata``).
    ``async with HandWorker(url, answer):`` runs it in a task of the test's loop."""

    def __init__(self, url: str, answer, name: str = "hand") -> None:
        self.url, self.answer, self.name = url, answer, name
        self.answered: list[str] = []  # job ids
        self._task = None

    async def __aenter__(self) -> HandWorker:
        self._task = asyncio.create_task(self._run(), name=f"hand-worker-{self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        import secrets

        import redis.asyncio as aioredis

        from engine.redis_transport import EVENTS, WORKERS, jobs_stream
        from engine.wire import FinishedMsg, Heartbeat, JobMsg, decode, encode

        r = aioredis.Redis.from_url(self.url)
        boot, seq, last = secrets.token_hex(4), 0, "0"
        try:
            while True:
                seq += 1
                hb = Heartbeat(worker=self.name, boot=boot, seq=seq, device="cpu", capacity=1, leases=[],
                               models=[], sent_at=time.time())
                await r.hset(WORKERS, self.name, encode(hb))
                for _stream, entries in await r.xread({jobs_stream(self.name): last}, count=10, block=200) or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        msg = decode(fields.get(b"m"))
                        if not isinstance(msg, JobMsg):
                            continue
                        done = FinishedMsg(worker=self.name, job_id=msg.job_id, lease=msg.lease, seconds=1.0,
                                           **self.answer(msg))
                        await r.xadd(EVENTS, {"m": encode(done)})
                        self.answered.append(msg.job_id)
        finally:
            await r.aclose()
