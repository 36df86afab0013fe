"""Job events -> Discord messages.

Everything needed to deliver a job lives in its ``Origin`` (``job.origin``, persisted by the queue), so a job
recovered after a restart is delivered like any other. Nothing here raises out of the listener:
a Discord error is logged, and the result goes to the next place that works (thread -> channel
-> the interaction's webhook while its token is fresh).

Each job is delivered in its own lane: its events in order, by a task of its own, so a slow Discord
call for one job (discord.py retries a 5xx for ~25 s) never holds another job's messages.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import discord

from bot.config import BotConfig
from bot.editing import is_collage
from bot.images import fit_png
from bot.limits import CONTENT, fit
from bot.origin import Origin, token_usable
from bot.replies import MENTIONS, QUIET
from bot.texts import (
    RELAX,
    position_line,
    request_words,
    result_facts,
    result_hint,
    short_prompt,
    status_text,
)
from bot.timelapse import render
from bot.views import finished_view, status_view
from engine import (
    Failed,
    Finished,
    Job,
    JobCancelled,
    JobProgress,
    JobQueue,
    Loading,
    Mailbox,
    Queued,
    Request,
    Started,
    UserError,
)

log = logging.getLogger(__name__)

POSITIONS_REFRESHED = 5  # waiting jobs whose status message is updated when the queue moves
CLOSE_FLUSH_S = 5.0  # at close, how long lanes get to deliver their last events
NOTE_CHARS = 300  # a result's note (from the worker) is cut to this, leaving room for the rest of the message
# Discord's codes for "this message cannot be edited (any more)": too many edits of a message older than an
# hour, another's message, a system message, an archived thread's. The status is then posted anew.
CANNOT_EDIT = frozenset({30046, 50005, 50021, 50083})
RESULT_RATE_WAIT_S = 600.0  # a result waits out a rate limit discord.py would not (max_ratelimit_timeout) up to this
# What a Discord call can end in besides success: an error answer, a rate limit longer than discord.py's
# max_ratelimit_timeout, or our own bound on waiting (``edit_wait_s``).
CallFailed = (discord.HTTPException, discord.RateLimited, TimeoutError)
# What a status or result can be posted in or edited in: channels that hold messages.
Sendable = (discord.TextChannel | discord.Thread | discord.VoiceChannel | discord.StageChannel | discord.DMChannel
            | discord.PartialMessageable)


def mask_caption(r: Request) -> str | None:
    """What the mask of a finished edit shows, or None when it is not worth a message (the person's own)."""
    if r.region:
        return f"🔍 where CLIP found *{short_prompt(r.region, 80)}* (white = repainted)"
    if is_collage(r):
        return "🧩 the holes and seams that were repainted (white)"
    return None


def webhook_of(bot: discord.Client, origin: Origin) -> discord.Webhook | None:
    """The job's interaction webhook (the last place a result can go) while its token is fresh."""
    token, app_id = origin.interaction_token, origin.application_id
    if not token or not app_id or not token_usable(origin.interaction_at, time.time()):
        return None
    return discord.Webhook.partial(app_id, token, client=bot)


@dataclass(frozen=True)
class Moved:
    """A waiting job's place in line changed because another one started (made here, not by the queue)."""

    job: Job
    position: int


Event = Queued | Started | Loading | JobProgress | Finished | Failed | JobCancelled | Moved


class Lanes:
    """One ``Mailbox`` per job (the engine's: in order, newest progress only when lagging), each drained by
    a task of its own: one job's trouble never delays another's."""

    def __init__(self, handle: Callable[[Event], Awaitable[None]]) -> None:
        self._handle = handle
        self._boxes: dict[str, Mailbox] = {}

    async def drained(self, key: str, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the lane of ``key`` has delivered what it holds."""
        box = self._boxes.get(key)
        if box is not None and box.busy and box.task is not None:
            await asyncio.wait([box.task], timeout=timeout)

    def put(self, key: str, event: Event) -> None:
        box = self._boxes.get(key)
        if box is None or not box.busy:
            box = self._boxes[key] = Mailbox(self._handle, name=f"delivery-{key}")
        box.put(event)
        for done in [k for k, b in self._boxes.items() if not b.busy and k != key]:
            del self._boxes[done]

    async def close(self, timeout: float) -> None:
        """Let the lanes finish for up to ``timeout`` seconds, then stop the rest."""
        tasks = [b.task for b in self._boxes.values() if b.busy and b.task is not None]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            log.warning("%d jobs' last messages were not delivered before closing", len(late))
            await asyncio.wait(late, timeout=1.0)


class Delivery:
    """A queue listener that posts status, progress and results to Discord, job by job.

    ``__call__`` only files the event into its job's lane (``Lanes``), so it returns at once;
    the lane's task does the Discord calls.
    """

    def __init__(self, bot: discord.Client, cfg: BotConfig, queue: JobQueue) -> None:
        self.bot = bot
        self.cfg = cfg
        self.queue = queue
        self._last_progress: dict[str, float] = {}
        self._noted: set[str] = set()  # jobs whose status shows a note (loading models) until their first picture
        self._shown_position: dict[str, int] = {}
        self._lanes = Lanes(self._deliver)
        self.closing = False  # set by the bot before it closes the queue (see ``__call__``)

    async def __call__(self, event: object) -> None:
        """Queue listener: file the event into its job's lane. While the queue closes (``closing``), a job's
        last event is awaited until delivered: the queue waits for its listeners before it closes its store,
        so the delivery is still recorded (else the next start would post that result again)."""
        if isinstance(event, Queued | Started | Loading | JobProgress | Finished | Failed | JobCancelled | Moved):
            self._lanes.put(event.job.id, event)
            if self.closing and isinstance(event, Finished | Failed | JobCancelled):
                await self._lanes.drained(event.job.id, CLOSE_FLUSH_S)

    async def close(self, timeout: float = CLOSE_FLUSH_S) -> None:
        await self._lanes.close(timeout)

    async def _deliver(self, event: Event) -> None:
        """One event of one job: never raises (a Discord error must not cost the job its delivery)."""
        try:
            await self._handle(event)
            if isinstance(event, Finished | Failed | JobCancelled):
                self._last_progress.pop(event.job.id, None)
                self._noted.discard(event.job.id)
                self._shown_position.pop(event.job.id, None)
                await self._retract_cancel(event.job)
        except Exception:
            log.exception("delivery of %s for job %s failed", type(event).__name__, event.job.id)

    async def _handle(self, event: Event) -> None:
        match event:
            case Queued():
                await self._on_queued(event)
            case Started():
                await self._on_started(event)
            case Loading():
                self._noted.add(event.job.id)
                await self._edit_status(event.job, f"⏳ {event.note}…")
            case JobProgress():
                await self._on_progress(event)
            case Finished():
                await self._on_finished(event)
            case Failed():
                await self._on_failed(event)
            case JobCancelled():
                await self._on_cancelled(event)
            case Moved():
                await self._on_moved(event)

    # ------------------------------------------------------------------ handlers

    async def _on_queued(self, ev: Queued) -> None:
        self._shown_position[ev.job.id] = ev.position
        paused = self.queue.paused()  # backend "redis" with no worker reachable
        line = position_line(ev.position) + (f" ({paused})" if paused else "")
        relaxed = self.queue.quota.lane_of(ev.job) == "relax"
        await self._edit_status(ev.job, line + (f"\n{RELAX}" if relaxed else ""))

    async def _on_started(self, ev: Started) -> None:
        self._shown_position.pop(ev.job.id, None)
        self._refresh_positions()
        await self._edit_status(ev.job, "🎨 painting…")

    def _refresh_positions(self) -> None:
        """Everyone moved up one: fix the shown place of the first few waiting jobs (few API calls),
        each in its own job's lane."""
        for job in self.queue.pending()[:POSITIONS_REFRESHED + 1]:
            pos = self.queue.position(job.id)
            if job.state != "queued" or pos is None or self._shown_position.get(job.id) == pos:
                continue
            self._shown_position[job.id] = pos
            self._lanes.put(job.id, Moved(job, pos))

    async def _on_moved(self, ev: Moved) -> None:
        if self._shown_position.get(ev.job.id) == ev.position:  # not started or moved again meanwhile
            await self._edit_status(ev.job, position_line(ev.position, self.queue.quota.lane_of(ev.job)))

    async def _on_progress(self, ev: JobProgress) -> None:
        job = ev.job
        if job.id in self._noted:  # its models loaded: painting now
            self._noted.discard(job.id)
            await self._edit_status(job, "🎨 painting…")
        every = 1 if job.request.zoom is not None else self.cfg.progress_every()  # a zoom: every new frame
        if ev.step % every and ev.step != ev.total:
            return
        now = time.monotonic()
        last = self._last_progress.get(job.id)
        if last is not None and now - last < self.cfg.discord.progress_interval_s:
            return
        self._last_progress[job.id] = now
        origin = self._origin(job)
        content = f"🎞️ frame {ev.step}/{ev.total}" if job.request.zoom else f"🖌️ step {ev.step}/{ev.total}"
        png = await asyncio.to_thread(fit_png, ev.png, self.cfg.discord.filesize_limit)

        def file() -> discord.File:
            return discord.File(io.BytesIO(png), filename=f"progress-{job.id}.png")

        msg_id, chan_id = origin.progress_message_id, origin.progress_channel_id
        if msg_id and chan_id:
            try:
                await self._bounded(self._channel(chan_id).get_partial_message(msg_id).edit(
                    content=content, attachments=[file()]))
                return
            except (discord.RateLimited, TimeoutError) as e:
                log.info("job %s: progress not shown (%s); the next one tries again", job.id, _why(e))
                return
            except discord.HTTPException as e:
                log.info("progress message of job %s not editable (%s); posting a new one", job.id, e)
        msg = await self._post(job, content=content, file_factory=file, use_webhook=False, patient=False)
        if msg is not None:
            await self._annotate(job, progress_message_id=msg.id, progress_channel_id=msg.channel.id)

    async def _on_finished(self, ev: Finished) -> None:
        job = ev.job
        png = await asyncio.to_thread(fit_png, ev.png, self.cfg.discord.filesize_limit)
        r = job.request
        ran = (ev.metadata or {}).get("request")
        ran = ran if isinstance(ran, dict) else {}  # checked by the queue (engine.jobs.results); never trusted here
        w, h = ran.get("width", r.width), ran.get("height", r.height)
        note = (ev.metadata or {}).get("note")
        note = fit(" ".join(note.split()), NOTE_CHARS) if isinstance(note, str) else None
        secs = ev.seconds if ev.seconds is not None else (job.seconds or 0.0)
        d = self.cfg.discord
        where = f" · in *{short_prompt(r.region, 80)}*" if r.region else ""
        facts = result_facts(r, w, h, secs)
        content = (f"<@{job.owner}> **{request_words(r, 1500)}**{where}\n{facts}"
                   + (f"\n⚠️ {note}" if note else "") + "\n" + result_hint(r, d.rerun_emoji, d.vary_emoji))

        def file() -> discord.File:
            return discord.File(io.BytesIO(png), filename=f"vqgan-{r.seed}.png")

        await self._post_mask(job, ev.mask_png)  # before the result, so that the result is the newest image
        msg, errors = await self._post_anywhere(job, content=content, file_factory=file, view=finished_view(job.id, r.grid))
        if msg is None and any(_refused(e) for e in errors):  # Discord refused what was sent: once more, plainly
            log.warning("job %s: Discord refused its result message; posting it with a plain line", job.id)
            msg, errors = await self._post_anywhere(job, content=f"<@{job.owner}> {facts}", file_factory=file,
                                                    view=finished_view(job.id, r.grid))
        if msg is None and errors and not all(isinstance(e, discord.Forbidden | discord.NotFound) for e in errors):
            log.error("job %s finished but posting its result failed (%s); it is sent again at the next start",
                      job.id, "; ".join(_why(e) for e in errors))
            await self._edit_status(job, "⚠️ done, but posting the image failed; I will try again when I restart",
                                    live=False)
            return  # not delivered: the next start sends it again
        if msg is None:
            log.error("job %s finished but its result could not be posted anywhere", job.id)
            await self._edit_status(job, "⚠️ done, but I could not post the image here", live=False)
            await self._delivered(job)  # nowhere the bot may post it: do not retry at every start
            return
        await self._annotate(job, result_message_id=msg.id, result_channel_id=msg.channel.id)
        await self._delivered(job)
        for emoji in (d.rerun_emoji,) if r.grid > 1 else (d.rerun_emoji, d.vary_emoji):  # a grid: V buttons
            try:
                await msg.add_reaction(emoji)
            except discord.HTTPException as e:
                log.info("could not add the %s reaction to %s: %s", emoji, msg.id, e)
        await self._edit_status(job, f"✅ done in {secs:.1f} s: {msg.jump_url}", live=False)
        if r.zoom is not None or self._origin(job).timelapse:
            await self._post_timelapse(job)

    async def _post_timelapse(self, job: Job) -> None:
        """``/imagine timelapse:True``: the frames as an MP4, right after the result; ``/zoom``: its video."""
        limit = self.cfg.discord.filesize_limit
        guild = self.bot.get_guild(self._origin(job).guild_id or 0)
        if guild is not None:  # the server's own upload limit (boosts raise it)
            limit = min(limit, guild.filesize_limit)
        zoom = job.request.zoom
        what = "zoom video" if zoom else "timelapse"
        try:
            clip = await render(self.queue, job.id, limit)  # a zoom's at its own fps
        except UserError as e:
            await self._post(job, content=f"🎞️ no {what}: {e}", use_webhook=False)
            return
        caption = (f"🎞️ zoom · {clip.frames} frames" + (f"\n-# {clip.note}" if clip.note else "")
                   if zoom else clip.caption())
        await self._post(job, content=caption, file_factory=clip.file)

    async def _post_mask(self, job: Job, mask_png: bytes | None) -> None:
        """Show the region CLIP found (or a collage's seams) in the thread, as a message of its own:
        the result message keeps a single image, so replying to it edits the picture, not the mask."""
        caption = mask_caption(job.request) if mask_png else None
        if caption is None or mask_png is None:
            return
        png = await asyncio.to_thread(fit_png, mask_png, self.cfg.discord.filesize_limit)

        def file() -> discord.File:
            return discord.File(io.BytesIO(png), filename=f"mask-{job.id}.png")

        msg = await self._post(job, content=caption, file_factory=file, use_webhook=False)
        if msg is not None:
            await self._annotate(job, mask_message_id=msg.id)

    async def _on_failed(self, ev: Failed) -> None:
        reason = str(ev.reason).splitlines()[0][:300] if ev.reason else "unknown error"
        await self._edit_status(ev.job, f"⚠️ failed: {reason}", live=False)
        if self._origin(ev.job).thread_id:
            await self._post(ev.job, content=f"<@{ev.job.owner}> ⚠️ that failed: {reason}", use_webhook=False,
                             channel_fallback=False)

    async def _on_cancelled(self, ev: JobCancelled) -> None:
        by = f" by <@{ev.by}>" if ev.by and str(ev.by) != str(ev.job.owner) else ""
        await self._edit_status(ev.job, f"🛑 cancelled{by}", live=False)

    # ------------------------------------------------------------------ plumbing

    def _origin(self, job: Job) -> Origin:
        """The freshest origin: annotations made after the event was built are in the store."""
        return Origin.read((self.queue.get(job.id) or job).origin, job.id)

    async def _delivered(self, job: Job) -> None:
        """Tell the queue the result is shown; a crash before this sends ``Finished`` again at start."""
        try:
            await self.queue.mark_delivered(job.id)
        except Exception:
            log.exception("could not mark job %s delivered", job.id)

    async def _annotate(self, job: Job, **keys: Any) -> None:
        try:
            await self.queue.annotate(job.id, **Origin.changes(**keys))
        except Exception:
            log.exception("could not annotate job %s with %s", job.id, keys)

    def _channel(self, channel_id: int) -> Sendable:
        """The cached channel when it holds messages (its messages then know their guild), else a
        partial one: sending and editing by id need no cache."""
        ch = self.bot.get_channel(channel_id)
        if isinstance(ch, Sendable):
            return ch
        return self.bot.get_partial_messageable(channel_id)

    async def _bounded(self, call: Awaitable[Any]) -> Any:
        """A call that may be given up on (a progress or status edit): it waits ``edit_wait_s`` at most,
        rate limits included, so that the job's later messages (its result) are not held behind it."""
        return await asyncio.wait_for(call, self.cfg.discord.edit_wait_s)

    async def _post(self, job: Job, *, content: str, file_factory: Callable[[], discord.File] | None = None,
                    use_webhook: bool = True, channel_fallback: bool = True,
                    view: discord.ui.View | None = None, patient: bool = True) -> discord.Message | None:
        """Send to the job's thread, else its channel, else the interaction webhook; None if all fail."""
        msg, _ = await self._post_anywhere(job, content=content, file_factory=file_factory, use_webhook=use_webhook,
                                           channel_fallback=channel_fallback, view=view, patient=patient)
        return msg

    async def _post_anywhere(self, job: Job, *, content: str, file_factory: Callable[[], discord.File] | None = None,
                             use_webhook: bool = True, channel_fallback: bool = True,
                             view: discord.ui.View | None = None, patient: bool = True,
                             ) -> tuple[discord.Message | None, list[Exception]]:
        """``_post``, and why each place failed. ``patient``: a rate limit longer than discord.py waits
        out (``max_ratelimit_timeout``) is waited out here, up to ``RESULT_RATE_WAIT_S``; otherwise the
        post waits ``edit_wait_s`` at most and gives up (a progress image: the next one comes)."""
        origin = self._origin(job)
        content = fit(content, CONTENT)
        targets = [origin.thread_id]
        if channel_fallback:
            targets.append(origin.channel_id)
        tried: set[int] = set()
        errors: list[Exception] = []
        for target in targets:
            if not target or target in tried:
                continue
            tried.add(target)
            kwargs: dict[str, Any] = {"content": content, "allowed_mentions": MENTIONS}
            if view is not None:
                kwargs["view"] = view
            try:
                return await self._send(self._channel(target).send, kwargs, file_factory, patient), errors
            except (discord.RateLimited, TimeoutError) as e:
                log.warning("job %s: not posted in %s (%s)", job.id, target, _why(e))
                return None, [*errors, e]  # a rate limit: the next place would not be quicker
            except discord.HTTPException as e:
                errors.append(e)
                log.warning("job %s: cannot post in %s (%s %s); trying the next place",
                            job.id, target, e.status, e.text)
                if target == origin.thread_id and isinstance(e, discord.NotFound | discord.Forbidden):
                    await self._annotate(job, thread_id=None)
        hook = webhook_of(self.bot, origin) if use_webhook else None
        if hook is not None:
            kwargs = {"content": content, "allowed_mentions": MENTIONS, "wait": True}
            if view is not None:
                kwargs["view"] = view
            try:
                return await self._send(hook.send, kwargs, file_factory, patient), errors
            except (discord.RateLimited, TimeoutError) as e:
                errors.append(e)
                log.warning("job %s: interaction followup not sent (%s)", job.id, _why(e))
            except discord.HTTPException as e:
                errors.append(e)
                log.warning("job %s: interaction followup failed too (%s)", job.id, e.status)
        return None, errors

    async def _send(self, send: Callable[..., Awaitable[Any]], kwargs: dict[str, Any],
                    file_factory: Callable[[], discord.File] | None, patient: bool) -> Any:
        """One send (a fresh file each try); see ``_post_anywhere`` for ``patient``."""
        def once() -> Awaitable[Any]:
            return send(**kwargs, **({"file": file_factory()} if file_factory else {}))

        if not patient:
            return await self._bounded(once())
        try:
            return await once()
        except discord.RateLimited as e:
            log.warning("rate limited for %.0f s; waiting before posting again", e.retry_after)
            await asyncio.sleep(min(e.retry_after, RESULT_RATE_WAIT_S))
            return await once()

    async def _retract_cancel(self, job: Job) -> None:
        """Take the bot's cancel reaction off a finished job's status message (best effort)."""
        origin = self._origin(job)
        msg_id, chan_id = origin.status_message_id, origin.status_channel_id
        if not msg_id or not chan_id or self.bot.user is None:
            return
        try:
            await self._channel(chan_id).get_partial_message(msg_id).remove_reaction(
                self.cfg.discord.cancel_emoji, self.bot.user)
        except discord.HTTPException:
            pass

    async def _edit_status(self, job: Job, line: str, *, live: bool = True) -> None:
        """Edit the job's status message; fall back to the interaction webhook; else give up quietly.
        ``live``: the job still waits or runs, so the message carries its Cancel button; once it has
        ended the button goes and the line says how it ended.

        An edit waits ``edit_wait_s`` at most. A message Discord will not let the bot edit (any more:
        ``CANNOT_EDIT``, e.g. 30046 for a message older than an hour edited too often), and the final
        line of a job whatever stopped it, get a new status message instead, used from then on."""
        origin = self._origin(job)
        msg_id, chan_id = origin.status_message_id, origin.status_channel_id or origin.channel_id
        if not msg_id:
            return
        content = fit(status_text(job, line, origin.note), CONTENT)
        view = status_view(job.id) if live else None
        stuck = False  # this message cannot be edited now: post the status anew
        if chan_id:
            try:
                await self._bounded(self._channel(chan_id).get_partial_message(msg_id).edit(
                    content=content, allowed_mentions=QUIET, view=view))
                return
            except discord.NotFound:
                log.info("job %s: its status message is gone; not editing it again", job.id)
                await self._annotate(job, status_message_id=None)
                return
            except CallFailed as e:
                stuck = _cannot_edit(e)
                log.info("job %s: status message not editable in channel (%s)", job.id, _why(e))
        hook = webhook_of(self.bot, origin)
        if hook is not None and not stuck:
            try:
                await self._bounded(hook.edit_message(msg_id, content=content, allowed_mentions=QUIET, view=view))
                return
            except CallFailed as e:
                stuck = _cannot_edit(e)
                log.info("job %s: status message not editable by webhook (%s)", job.id, _why(e))
        if (stuck or not live) and chan_id:
            await self._repost_status(job, chan_id, msg_id, content, view)

    async def _repost_status(self, job: Job, chan_id: int, old_id: int, content: str,
                             view: discord.ui.View | None) -> None:
        """A new status message (replying to the old one), recorded as the job's status message so
        that later edits and a restart use it; the old one loses its Cancel button where Discord
        allows it. A live job's new message gets the ❌ reaction, which moves with it."""
        channel = self._channel(chan_id)
        old = channel.get_partial_message(old_id)
        kwargs: dict[str, Any] = {"view": view} if view is not None else {}
        try:
            new = await channel.send(content, allowed_mentions=QUIET, mention_author=False,
                                     reference=old.to_reference(fail_if_not_exists=False), **kwargs)
        except discord.HTTPException as e:
            log.warning("job %s: cannot post a new status message in %s (%s %s)", job.id, chan_id, e.status, e.text)
            return
        log.info("job %s: its status continues in message %s", job.id, new.id)
        await self._annotate(job, status_message_id=new.id, status_channel_id=new.channel.id)
        emoji, me = self.cfg.discord.cancel_emoji, self.bot.user
        moved = fit(status_text(job, f"➡️ continued in {new.jump_url}"), CONTENT)
        tidy: list[Awaitable[Any]] = [old.edit(content=moved, allowed_mentions=QUIET, view=None)]
        if me is not None:
            tidy.append(old.remove_reaction(emoji, me))
        if view is not None:
            tidy.append(new.add_reaction(emoji))
        for call in tidy:  # best effort, each on its own
            try:
                await self._bounded(call)
            except CallFailed as e:
                log.info("job %s: tidying its old status message: %s", job.id, _why(e))


def _cannot_edit(e: BaseException) -> bool:
    """Whether Discord says this message cannot be edited (now), as opposed to a passing failure."""
    return isinstance(e, discord.HTTPException) and e.code in CANNOT_EDIT


def _refused(e: BaseException) -> bool:
    """Discord refused what was sent (400: e.g. a text over its limits), so the same again would fail."""
    return isinstance(e, discord.HTTPException) and e.status == 400


def _why(e: BaseException) -> str:
    if isinstance(e, discord.RateLimited):
        return f"rate limited for {e.retry_after:.0f} s"
    if isinstance(e, TimeoutError):
        return "no answer within edit_wait_s (rate limited?)"
    if isinstance(e, discord.HTTPException):
        return f"{e.status} {e.code or ''} {e.text}".strip()
    return str(e) or type(e).__name__
