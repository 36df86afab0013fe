"""Which offered models a worker can use now: on disk, downloadable, or neither (offline).

A model that is neither on disk nor downloadable would fail only when a worker loads it, after the
user waited their turn. So each worker surveys the models its config offers (``[models]`` and its
``*_choices``), and the coordinator refuses a request before queueing when every worker reports
one of its models as unreachable. The survey reads the model cache (cheap) and, only when some
offered model is missing, asks that file's URLs (HEAD requests in parallel, a few seconds at
most): an answer other than "not found" means it can be downloaded, and no answer at all from any
of them means the machine is offline. ``[models] offline`` skips the
question (true: never download; false: always assume the network is there). Surveys run on a
background thread and are kept for a while, so a heartbeat or a submission never waits for one.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from engine.config import ClipSpec, ModelsConfig, ModelSpec, cache_dir

log = logging.getLogger(__name__)

__all__ = ["ModelState", "Availability", "survey", "ask", "unavailable", "unreachable_names", "downloaded",
           "Surveyor"]

PROBE_TIMEOUT_S = 4.0
MAX_AGE_S = 300.0  # a survey older than this is redone in the background when next asked for

State = Literal["on_disk", "fetchable", "unreachable"]


class ModelState(BaseModel):
    """One offered model: ``key`` as ``ModelSpec.vqgan_key()`` / ``ClipSpec.key()``, ``name`` as users pick it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    name: str
    kind: Literal["vqgan", "clip"]
    state: State


class Availability(BaseModel):
    """A worker's survey of its offered models (travels in its heartbeat)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    models: tuple[ModelState, ...] = ()
    offline: bool = False  # some model was missing and no host answered (or ``[models] offline = true``)
    checked_at: float = 0.0  # time.time() on the worker

    def state(self, key: str) -> State | None:
        """The model's state, or None when this survey does not know it (then it is not refused)."""
        return next((m.state for m in self.models if m.key == key), None)

    def usable(self, kind: str) -> list[str]:
        """Names of the models of ``kind`` on disk or downloadable."""
        return [m.name for m in self.models if m.kind == kind and m.state != "unreachable"]


def _vqgans(cfg: ModelsConfig) -> list[ModelSpec]:
    from engine.spec.choices import vqgan_choices, with_choices

    return [with_choices(cfg.spec(), cfg, vqgan=name) for name in vqgan_choices(cfg)]


def _clips(cfg: ModelsConfig) -> list[ClipSpec]:
    from engine.spec.choices import clip_choices, parse_clip_choice

    specs = {c.key(): c for choice in clip_choices(cfg) for c in parse_clip_choice(choice, cfg)}
    return list(specs.values())


def _is_file(path: str | None) -> bool:
    return bool(path) and Path(str(path)).expanduser().is_file()


def _vqgan_source(spec: ModelSpec, cache: Path) -> tuple[bool, tuple[str, ...]]:
    """(on disk, URLs to fetch it from)."""
    if spec.vqgan_config and spec.vqgan_checkpoint:
        return _is_file(spec.vqgan_config) and _is_file(spec.vqgan_checkpoint), ()
    from engine.models.registry import PRESETS, preset_paths

    if spec.vqgan not in PRESETS:
        return False, ()
    return preset_paths(spec.vqgan, cache)[1].is_file(), PRESETS[spec.vqgan].checkpoint.urls


def _clip_source(spec: ClipSpec, cache: Path) -> tuple[bool, tuple[str, ...]]:
    if spec.clip_config and spec.clip_checkpoint:
        return _is_file(spec.clip_config) and _is_file(spec.clip_checkpoint), ()
    if not spec.clip_pretrained or _is_file(spec.clip_pretrained):
        return True, ()  # random weights, or a weights file given by path
    if ":" in spec.clip_model:  # e.g. "hf-hub:org/repo": open_clip fetches it itself; not surveyed
        return True, ()
    from engine.models.registry import clip_weights, hub_offline

    w = clip_weights(spec.clip_model, spec.clip_pretrained, (cache / "open_clip",))
    if w.cached_path is not None:
        return True, ()
    if hub_offline():
        return False, ()
    return False, tuple(url for url, _ in w.downloads)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is an answer: the file is somewhere (and HEAD would turn into GET)


_opener = urllib.request.build_opener(_NoRedirects)


def ask(url: str, timeout: float = PROBE_TIMEOUT_S) -> int | None:
    """The HTTP status ``url`` answers a HEAD request with (redirects not followed), or None when
    nothing answers: no network, an unknown host, a refused connection, a timeout."""
    try:
        req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "vqgan-clip-bot/0.1"})
        with _opener.open(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):  # URLError, timeouts, refused connections, unknown hosts
        return None


GONE = (404, 410)  # the file is not there; any other answer (a 403 or 405 to HEAD, say) may still download


def _answers(urls: Iterable[str], probe: Callable[[str], int | None]) -> dict[str, int | None]:
    """Each URL's answer, asked in parallel."""
    todo = list(dict.fromkeys(urls))
    if not todo:
        return {}
    with ThreadPoolExecutor(min(8, len(todo)), thread_name_prefix="models-probe") as pool:
        return dict(zip(todo, pool.map(probe, todo), strict=True))


def survey(cfg: ModelsConfig, probe: Callable[[str], int | None] = ask) -> Availability:
    """The state of every model ``cfg`` offers. Asks the network only about missing models' URLs,
    and not at all when ``cfg.offline`` is set. A missing model is downloadable when one of its
    URLs answers with anything but "not found"; the machine is offline when no URL answers at all."""
    cache = cache_dir(cfg)
    found: list[tuple[str, str, Literal["vqgan", "clip"], bool, tuple[str, ...]]] = []
    for v in _vqgans(cfg):
        found.append((v.vqgan_key(), v.vqgan, "vqgan", *_vqgan_source(v, cache)))
    for c in _clips(cfg):
        found.append((c.key(), c.choice(), "clip", *_clip_source(c, cache)))
    wanted = [url for _, _, _, here, urls in found if not here for url in urls]
    if cfg.offline == "auto":
        answers = _answers(wanted, probe)
    else:
        answers = {u: None if cfg.offline else 200 for u in wanted}
    models = []
    for key, name, kind, here, urls in found:
        state: State = ("on_disk" if here else "fetchable"
                        if any(answers.get(u) is not None and answers[u] not in GONE for u in urls) else "unreachable")
        models.append(ModelState(key=key, name=name, kind=kind, state=state))
    offline = any(m.state == "unreachable" for m in models) and all(a is None for a in answers.values())
    return Availability(models=tuple(models), offline=offline, checked_at=time.time())


def unavailable(spec: ModelSpec, reports: Iterable[Availability | None], *, fleet: bool = False) -> str | None:
    """Why no worker can paint with ``spec``'s models now, or None if one can (or may: a worker
    that has not reported, or does not know a model, is given the benefit of the doubt).
    ``fleet``: the reports are remote workers' (the message speaks of them, not of this machine)."""
    reports = list(reports)
    if not reports:
        return None
    keys = [(spec.vqgan_key(), spec.vqgan), *[(c.key(), c.choice()) for c in spec.clips()]]
    lacking: list[str] = []
    for a in reports:
        if a is None:
            return None
        gone = [name for key, name in keys if a.state(key) == "unreachable"]
        if not gone:
            return None
        lacking += [n for n in gone if n not in lacking]
    a = reports[0]
    assert a is not None
    if fleet:
        where, why = " on any worker", "the workers are offline" if a.offline else "no download link has it now"
    else:
        where, why = "", "this machine is offline" if a.offline else "no download link has it now"
    vqgans, clips = ", ".join(a.usable("vqgan")) or "none", ", ".join(a.usable("clip")) or "none"
    return (f"{' and '.join(lacking)} {'is' if len(lacking) == 1 else 'are'} not downloaded{where}, and {why}; "
            f"available: model {vqgans}; clip {clips}")


def downloaded(cache: Path) -> str:
    """What the model cache holds, as a refusal lists it: "model A, B; clip C/tag" (presets whose
    checkpoint is there, and open_clip weights saved where ``fetch`` saves them)."""
    from engine.models.registry import PRESETS, preset_paths

    vqgans = [name for name in PRESETS if preset_paths(name, cache)[1].is_file()]
    clips = sorted(f"{tag.parent.name}/{tag.name}" for tag in (cache / "open_clip").glob("*/*")
                   if tag.is_dir() and any(f.is_file() and not f.name.endswith((".part", ".json", ".lock", ".sha256"))
                                           for f in tag.iterdir()))
    return f"model {', '.join(vqgans) or 'none'}; clip {', '.join(clips) or 'none'}"


def unreachable_names(reports: Iterable[Availability | None]) -> set[str]:
    """Names of the offered models that no worker can get now (none while a worker has not reported)."""
    reports = list(reports)
    if not reports or any(a is None for a in reports):
        return set()
    sets = [{m.name for m in a.models if m.state == "unreachable"} for a in reports if a is not None]
    return set.intersection(*sets)


class Surveyor:
    """The latest survey, redone on a background thread when stale: ``current()`` never waits."""

    def __init__(self, cfg: ModelsConfig, max_age_s: float = MAX_AGE_S,
                 probe: Callable[[str], int | None] = ask) -> None:
        self.cfg = cfg
        self.max_age_s = max_age_s
        self.probe = probe
        self._latest: Availability | None = None
        self._taken = 0.0  # time.monotonic() when the latest survey started
        self._epoch = 0  # bumped by ``stale()``: a survey started before it does not count as fresh
        self._lock = threading.Lock()
        self._running: threading.Thread | None = None

    def current(self) -> Availability | None:
        """The latest survey (None before the first one ends); starts a new one if it is stale."""
        with self._lock:
            stale = self._latest is None or time.monotonic() - self._taken > self.max_age_s
            if stale and self._running is None:
                self._running = threading.Thread(target=self._survey, name="models-survey", daemon=True)
                self._running.start()
            return self._latest

    def stale(self) -> None:
        """Something changed (a model was downloaded): survey again when next asked."""
        with self._lock:
            self._epoch += 1
            self._taken = -float("inf")

    def _survey(self) -> None:
        started = time.monotonic()
        with self._lock:
            epoch = self._epoch
        try:
            found = survey(self.cfg, self.probe)
        except Exception:
            log.exception("surveying the offered models failed")
            found = None
        with self._lock:
            if found is not None:
                self._latest = found
            if epoch == self._epoch:  # nothing changed meanwhile (a failure is not retried at once either)
                self._taken = started
            self._running = None
