"""The bot's numbers for Prometheus (``GET /metrics``): jobs, the queue, workers, Discord errors, refusals.

One ``Metrics`` per bot, with a ``CollectorRegistry`` of its own (never the process-wide one), so two bots
in one process, and the tests, never share a count. Job counters are fed by the engine's events (``observe``
is a queue listener, like the delivery); gauges (queue depth, workers) are read from the queue when scraped.
A count is of what happened in this process: an event about an earlier one (a job recovered at start, a
result sent again after a restart) is not counted twice.

Label values come from short fixed sets, never from free text: failure reasons are the engine's
``FAILURE_KINDS``, refusals are ``bot.refusals.REFUSAL_KINDS`` (counted there), lanes are the quota's,
Discord errors are HTTP statuses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bot.refusals import REFUSAL_KINDS, Refusals
from engine import FAILURE_KINDS, Failed, Finished, Job, JobCancelled, JobQueue, Queued, Started, failure_kind

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
WAIT_BUCKETS = (0.1, 1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200)
STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


def steps_of(job: Job) -> int:
    """The optimisation steps a job runs: a zoom's frames times its steps per frame."""
    zoom = job.request.zoom
    return zoom.frames * zoom.steps_per_frame if zoom is not None else job.request.steps


class Metrics:
    """The bot's collectors. ``observe`` is the queue listener; ``count_discord_error`` is called where
    that happens; refusals are the bot's ``Refusals``, read when scraped; ``ready`` tells whether the
    gateway is up."""

    def __init__(self, queue: JobQueue, refusals: Refusals, *, ready: Callable[[], bool] | None = None) -> None:
        self.queue = queue
        self.refusals = refusals
        self.ready = ready or (lambda: False)
        self.since = time.time()  # events about what happened before this process started are not counted
        self.registry = CollectorRegistry()
        r = self.registry
        self.submitted = Counter("vqgan_jobs_submitted", "Jobs put on the queue", registry=r)
        self.finished = Counter("vqgan_jobs_finished", "Jobs that finished with a picture", registry=r)
        self.failed = Counter("vqgan_jobs_failed", "Jobs that failed, by kind of reason", ["reason"], registry=r)
        self.cancelled = Counter("vqgan_jobs_cancelled", "Jobs cancelled by their owner or a moderator", registry=r)
        self.run_seconds = Histogram("vqgan_job_run_seconds", "Seconds a finished job ran on its worker",
                                     buckets=RUN_BUCKETS, registry=r)
        self.wait_seconds = Histogram("vqgan_job_wait_seconds", "Seconds from submission to a job's first start",
                                      buckets=WAIT_BUCKETS, registry=r)
        self.step_seconds = Histogram("vqgan_step_seconds", "Seconds per optimisation step of a finished job",
                                      buckets=STEP_BUCKETS, registry=r)
        self.discord_errors = Counter("vqgan_discord_api_errors", "Discord API answers with an error status",
                                      ["status"], registry=r)
        for reason in FAILURE_KINDS:
            self.failed.labels(reason=reason)
        r.register(_Live(self))

    # -- what happens ---------------------------------------------------------------------------

    def observe(self, event: object) -> None:
        """Queue listener: count the job events (each once, in the process where it happened)."""
        match event:
            case Queued(job=job) if job.created_at >= self.since:
                self.submitted.inc()
            case Started(job=job) if job.attempts == 1 and (job.started_at or 0.0) >= self.since:
                self.wait_seconds.observe(max(0.0, (job.started_at or 0.0) - job.created_at))
            case Finished(job=job, seconds=seconds) if self._now(job):
                self.finished.inc()
                self.run_seconds.observe(max(0.0, seconds))
                self.step_seconds.observe(max(0.0, seconds) / max(1, steps_of(job)))
            case Failed(job=job, reason=reason) if self._now(job):
                self.failed.labels(reason=failure_kind(reason)).inc()
            case JobCancelled(job=job) if self._now(job):
                self.cancelled.inc()

    def _now(self, job: Job) -> bool:
        return job.finished_at is None or job.finished_at >= self.since

    def count_discord_error(self, status: int) -> None:
        self.discord_errors.labels(status=str(status)).inc()

    def trace_config(self, trace: aiohttp.TraceConfig | None = None) -> aiohttp.TraceConfig:
        """For discord.py's HTTP session (``Client(http_trace=...)``; ``trace``: one given by the caller, which
        gets the hook too): every answer from Discord with an error status is counted, those discord.py
        retries itself (429, 5xx) included."""
        trace = trace or aiohttp.TraceConfig()

        async def on_end(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                         params: aiohttp.TraceRequestEndParams) -> None:
            if params.response.status >= 400:
                self.count_discord_error(params.response.status)

        trace.on_request_end.append(on_end)
        return trace

    def exposition(self) -> bytes:
        """The text exposition format, for ``GET /metrics`` (content type ``CONTENT_TYPE``)."""
        return generate_latest(self.registry)


class _Live:
    """What is read when scraped: queue depth per lane (the quota's), running jobs, workers, the gateway,
    the refusals by kind."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        q = self.m.queue
        depth = GaugeMetricFamily("vqgan_queue_depth", "Jobs waiting to start, per lane", labels=["lane"])
        for lane, waiting in q.quota.depth().items():  # every lane, 0 included
            depth.add_metric([lane], waiting)
        yield depth
        yield GaugeMetricFamily("vqgan_jobs_running", "Jobs running now",
                                value=sum(1 for j in q.pending() if j.state == "running"))
        fleet = q.fleet()
        now = time.time()
        beats = [("local", 0.0)] if fleet is None else [
            (str(w.get("worker", "?")), max(0.0, now - float(w.get("sent_at", now)))) for w in fleet]
        yield GaugeMetricFamily("vqgan_workers_alive", "Workers painting for this bot (local: the bot itself)",
                                value=len(beats))
        age = GaugeMetricFamily("vqgan_worker_heartbeat_age_seconds", "Seconds since each live worker's last "
                                "heartbeat (its own clock)", labels=["worker"])
        for name, seconds in beats:
            age.add_metric([name], seconds)
        yield age
        yield GaugeMetricFamily("vqgan_gateway_ready", "1 while the Discord gateway session is up",
                                value=1.0 if self.m.ready() else 0.0)
        refused = CounterMetricFamily("vqgan_refusals", "Requests the bot refused, by kind", labels=["kind"])
        counts = self.m.refusals.counts()
        for kind in REFUSAL_KINDS:
            refused.add_metric([kind], counts.get(kind, 0))
        yield refused
