"""The web gallery: a person's results (a server's, and its status, for its moderators) behind signed links.

Routes: ``/gallery/<token>`` (the page), ``/gallery/<token>/<job id>.png`` and ``.mp4`` (a result and its
timelapse or zoom video), ``/static/<name>`` (the page's script and style, from the package). A token that
does not verify (malformed, altered, expired: ``bot.web.links``) is a 403 page. Files are served by job id
only: the id must be 12 lowercase hex digits, the job must be in the token's scope (its owner, or its
server), and its bytes come from the engine's listing (``JobQueue.result_png``), which reads only the job's
own plain file in the results folder; no part of the URL ever becomes a path.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jinja2
from aiohttp import web

from bot.access import guild_of
from bot.config import BotConfig
from bot.texts import models_text
from bot.timelapse import Video, render
from bot.web.links import Links, Scope
from engine import Job, JobQueue, Listed, UserError, format_seconds

FILE = re.compile(r"(?P<job>[0-9a-f]{12})\.(?P<ext>png|mp4)")
STATIC = {"gallery.js": "text/javascript", "gallery.css": "text/css"}
VIDEO_MAX_BYTES = 32 * 2**20
VIDEOS_KEPT = 4  # encoded videos kept in memory (the newest asked for)
Names = Callable[[str], str]  # a user id as people know it (their name, when the bot has it)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


class Gallery:
    """The gallery's handlers over one queue. ``names``: a user id -> a name to show."""

    def __init__(self, cfg: BotConfig, queue: JobQueue, *, names: Names | None = None) -> None:
        self.cfg = cfg
        self.queue = queue
        self.names: Names = names or (lambda owner: owner)
        self.links = Links(cfg.gallery.secret.get_secret_value(), cfg.gallery.link_ttl_s)
        self.templates = jinja2.Environment(loader=jinja2.PackageLoader("bot.web", "templates"),
                                            autoescape=True, undefined=jinja2.StrictUndefined)
        folder = importlib.resources.files("bot.web") / "static"
        self.static = {name: (folder / name).read_bytes() for name in STATIC}
        self._videos: OrderedDict[str, Video] = OrderedDict()
        self._encoding: dict[str, asyncio.Task[Video | None]] = {}
        self._encoder = asyncio.Semaphore(1)  # one encode at a time: a page of timelapses cannot load the CPU

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/gallery/{token}", self.page, allow_head=False),
                web.get("/gallery/{token}/{file}", self.file, allow_head=False),
                web.get("/static/{name}", self.asset, allow_head=False)]

    # -- pages --------------------------------------------------------------------------------------

    def _html(self, template: str, status: int = 200, **values: Any) -> web.Response:
        text = self.templates.get_template(template).render(static="../static/", **values)
        return web.Response(status=status, text=text, content_type="text/html", charset="utf-8")

    def _denied(self) -> web.Response:
        return self._html("error.html", 403, title="This link does not work",
                          message="This link is not valid: it has expired or was changed. Type /gallery in "
                                  "Discord for a new one.")

    def _missing(self) -> web.Response:
        return self._html("error.html", 404, title="Not found", message="There is no such picture here.")

    async def page(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        scope = self.links.verify(token)
        if scope is None:
            return self._denied()
        if scope.kind == "s":
            return self._status(scope)
        if scope.kind == "u":
            found = self.queue.results(owner=str(scope.subject))
            title = "Your pictures"
        else:
            found = self.queue.results(origin={"guild_id": scope.subject})
            title = "Pictures made on this server"
        shown = found[: self.cfg.gallery.per_page]
        videos = await asyncio.to_thread(lambda: {x.id for x in shown if self.queue.frames_dir(x.id) is not None})
        entries = [self._entry(token, x, x.id in videos, by=scope.kind == "g") for x in shown]
        return self._html("results.html", title=title, entries=entries, total=len(found), expires=_when(scope.expires))

    def _entry(self, token: str, x: Listed, video: bool, *, by: bool) -> dict[str, Any]:
        r = x.request
        vqgan, clip = models_text(r.models)
        return {
            "id": x.id, "prompt": r.prompt, "seed": r.seed, "width": r.width, "height": r.height,
            "steps": r.steps if r.zoom is None else f"{r.zoom.frames} frames x {r.zoom.steps_per_frame}",
            "model": f"{vqgan} · {clip}", "made": _when(x.finished_at),
            "by": self.names(x.owner) if by else None,
            "png": f"{token}/{x.id}.png", "video": f"{token}/{x.id}.mp4" if video else None,
            "video_label": "Zoom video" if r.zoom is not None else "Timelapse",
        }

    def _status(self, scope: Scope) -> web.Response:
        q, guild = self.queue, scope.subject
        pending = q.pending()
        lanes = list(q.quota.depth().items())
        here = [j for j in pending if guild_of(j) == guild]
        queue = [{"place": "now" if (p := q.position(j.id)) == 0 else f"#{p}" if p else "just asked", "id": j.id,
                  "prompt": j.request.prompt, "by": self.names(j.owner), "lane": q.quota.lane_of(j)} for j in here]
        fleet, now = q.fleet(), time.time()
        workers = None if fleet is None else [
            {"name": w.get("worker", "?"), "device": w.get("device", "?"),
             "jobs": f"{len(w.get('leases', ()))}/{min(int(w.get('capacity', 0)), self.cfg.queue.batch_size)}",
             "models": ", ".join(w.get("models", ())) or "none loaded",
             "age": f"{max(0.0, now - float(w.get('sent_at', now))):.1f} s ago"} for w in fleet]
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        today = {j.owner for j in here} | {x.owner for x in q.results(origin={"guild_id": guild})
                                          if x.finished_at >= midnight}
        usage = []  # the GPU time today of everyone who asked on this server today (engine.jobs.quota)
        for u in sorted((q.quota.usage(o) for o in today), key=lambda u: (-u.used_s, u.owner)):
            used = format_seconds(u.used_s) + (f" of {format_seconds(u.limit_s)}" if u.limit_s else "")
            usage.append({"by": self.names(u.owner), "used": used + (" (relax lane)" if u.over else "")})
        return self._html("status.html", title="Status of this server's painting", lanes=lanes, queue=queue,
                          workers=workers, usage=usage, paused=q.paused(), now=_when(now),
                          expires=_when(scope.expires))

    # -- files --------------------------------------------------------------------------------------

    def _may_see(self, scope: Scope, job: Job) -> bool:
        if scope.kind == "u":
            return job.owner == str(scope.subject)
        return scope.kind == "g" and guild_of(job) == scope.subject

    async def file(self, request: web.Request) -> web.Response:
        scope = self.links.verify(request.match_info["token"])
        if scope is None:
            return self._denied()
        m = FILE.fullmatch(request.match_info["file"])
        job = self.queue.get(m["job"]) if m is not None else None
        if m is None or job is None or not self._may_see(scope, job):
            return self._missing()
        if m["ext"] == "png":
            data = await asyncio.to_thread(self.queue.result_png, job.id)
            if data is None:
                return self._missing()
            return web.Response(body=data, content_type="image/png")
        video = await self._video(job)
        if video is None:
            return self._missing()
        resp = web.Response(body=video.data, content_type="video/mp4")
        resp.headers["Content-Disposition"] = f'inline; filename="{video.filename}"'
        return resp

    async def _video(self, job: Job) -> Video | None:
        """The job's timelapse (or zoom video), encoded once and kept for the next few asks. The encode goes
        on when the asker's request times out, so the next ask gets it."""
        if job.state != "finished":
            return None
        if (kept := self._videos.get(job.id)) is not None:
            self._videos.move_to_end(job.id)
            return kept
        task = self._encoding.get(job.id)
        if task is None:
            task = self._encoding[job.id] = asyncio.create_task(self._encode(job.id), name=f"gallery-video-{job.id}")
        return await asyncio.shield(task)

    async def _encode(self, job_id: str) -> Video | None:
        try:
            async with self._encoder:
                video = await render(self.queue, job_id, VIDEO_MAX_BYTES)
        except UserError:  # no frames kept
            return None
        finally:
            self._encoding.pop(job_id, None)
        self._videos[job_id] = video
        while len(self._videos) > VIDEOS_KEPT:
            self._videos.popitem(last=False)
        return video

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.static:
            return self._missing()
        resp = web.Response(body=self.static[name], content_type=STATIC[name], charset="utf-8")
        resp.headers["Cache-Control"] = "public, max-age=3600"
        return resp
