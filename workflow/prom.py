"""Prometheus metrics (``prometheus_client``, ``workflow_`` namespace).

Two sources, one exposition:

* **Worker counters and histograms**, counted in the worker process by an engine ``Observer``
  (``WorkerMetrics``; ``runworkers`` installs it). Scrape each worker with
  ``runworkers --metrics-port PORT``; or, for several processes on one host, set
  ``PROMETHEUS_MULTIPROC_DIR`` for all of them (and the web server) and scrape the site's
  ``/metrics``, which then sums every process's files.
* **Database gauges**, read when ``/metrics`` is scraped, through indexes that do not grow with
  history (``DatabaseCollector``), within a time budget: a reader that runs out of it is
  skipped and ``workflow_scrape_collector_success{collector}`` says so.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections import Counter as CountOf
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from .engine.values import ClaimedStep, Outcome, StepState

log = logging.getLogger("workflow.metrics")

NAMESPACE = "workflow"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
SCRAPE_BUDGET_SECONDS = 2.0  # all database readers together (Prometheus' scrape timeout is 10 s by default)
FINISHED_WINDOW = timedelta(hours=1)  # workflow_runs/steps{state=<terminal>}: finished in the last hour
MAX_LABEL = 100


def _label(value: str | None) -> str:
    return (value or "")[:MAX_LABEL]


# -- worker side ---------------------------------------------------------------------------------
class _Labelled:
    """A metric's labelled children, each looked up once: ``labels()`` checks and locks on every call,
    which cost a tenth of a busy worker's loop."""

    __slots__ = ("children", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:  # two threads racing here get the same child from prometheus_client
            child = self.children[values] = self.metric.labels(*values)
        return child


class WorkerMetrics:
    """The engine ``Observer`` that counts what this worker process does."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        kw: dict[str, Any] = {"namespace": NAMESPACE, "registry": registry}
        self.claimed = Counter("steps_claimed_total", "Steps claimed (leased) by workers.", ["queue", "kind"], **kw)
        self.finished = Counter("steps_finished_total", "Attempts whose outcome committed, by outcome "
                                "(succeeded, retried, failed, expired).", ["queue", "kind", "outcome"], **kw)
        self.failures = Counter("step_failures_total", "Failed attempts (retried or final), by error code.",
                                ["queue", "kind", "error_code"], **kw)
        self.retries = Counter("step_retries_total", "Failed attempts that will run again.", ["queue", "kind"], **kw)
        self.duration = Histogram("step_duration_seconds", "Executor wall time of one attempt.", ["queue", "kind"],
                                  buckets=DURATION_BUCKETS, **kw)
        self.wait = Histogram("queue_wait_seconds", "Time from a step becoming claimable to its claim.", ["queue"],
                              buckets=WAIT_BUCKETS, **kw)
        self.throttled = Counter("queue_throttled_total", "Claims that took nothing from a queue because it was "
                                 "paused, at its cap, or out of rate-limit tokens.", ["queue", "reason"], **kw)
        self.rejected = Counter("commits_rejected_total", "Commits fenced off: the lease was lost or revoked, or "
                                "the run was canceled.", **kw)
        self.reclaimed = Counter("leases_reclaimed_total", "Expired leases turned into failed attempts.", **kw)
        self._claimed, self._finished, self._failures, self._retries, self._duration, self._wait = (
            _Labelled(m) for m in (self.claimed, self.finished, self.failures, self.retries, self.duration, self.wait)
        )

    def steps_claimed(self, steps: Sequence[ClaimedStep], now: datetime) -> None:
        for (queue, kind), n in CountOf((_label(s.queue), _label(s.kind)) for s in steps).items():
            self._claimed(queue, kind).inc(n)
        for step in steps:
            if step.available_at is not None:
                self._wait(_label(step.queue)).observe(max((now - step.available_at).total_seconds(), 0.0))

    def step_finished(self, outcome: Outcome) -> None:
        step = outcome.step
        queue, kind = _label(step.queue), _label(step.kind)
        self._finished(queue, kind, outcome.lease_outcome or str(outcome.next_state)).inc()
        if outcome.error is not None:
            self._failures(queue, kind, _label(outcome.error.code)).inc()
        if outcome.next_state == StepState.READY:
            self._retries(queue, kind).inc()
        if outcome.started_at and outcome.finished_at and outcome.lease_outcome != "expired":
            self._duration(queue, kind).observe(max((outcome.finished_at - outcome.started_at).total_seconds(), 0))

    def commit_rejected(self, outcome: Outcome) -> None:
        self.rejected.inc()

    def leases_reclaimed(self, count: int) -> None:
        if count:
            self.reclaimed.inc(count)

    def queue_throttled(self, queue: str, reason: str) -> None:
        self.throttled.labels(_label(queue), reason).inc()


_worker_metrics: WorkerMetrics | None = None
_lock = threading.Lock()


def worker_metrics() -> WorkerMetrics:
    """The process's one ``WorkerMetrics`` (its counters live in the default registry)."""
    global _worker_metrics
    with _lock:
        if _worker_metrics is None:
            _worker_metrics = WorkerMetrics()
        return _worker_metrics


def process_registry() -> CollectorRegistry:
    """What this process exposes: its own registry, or every process's files in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve this worker's metrics on ``port`` (prometheus_client's own HTTP server, a daemon thread)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=addr, registry=process_registry())


# -- database gauges ----------------------------------------------------------------------------------
class BudgetExceeded(Exception):
    pass


@contextmanager
def _deadline(using: str, seconds: float) -> Iterator[None]:
    """Abort the queries inside after ``seconds``: a statement timeout (PostgreSQL) or a progress handler (SQLite)."""
    connection = connections[using]
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        from django.db import transaction

        with transaction.atomic(using=using), connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = %s", [max(int(seconds * 1000), 1)])
            yield
        return
    if connection.vendor == "sqlite":
        raw = connection.connection
        stop_at = time.monotonic() + seconds
        raw.set_progress_handler(lambda: 1 if time.monotonic() > stop_at else 0, 10_000)
        try:
            yield
        finally:
            raw.set_progress_handler(None, 0)
        return
    yield


class DatabaseCollector:
    """Gauges read at scrape time from the dashboard's read models (``workflow.metrics``)."""

    def __init__(self, *, using: str | None = None, budget_seconds: float | None = None) -> None:
        from .conf import workflow_settings

        self.using = using or workflow_settings().get("DATABASE", "default")
        self.budget = SCRAPE_BUDGET_SECONDS if budget_seconds is None else budget_seconds

    def collect(self) -> Iterator[Metric]:
        readers: list[tuple[str, Callable[[datetime], list[Metric]]]] = [
            ("runs", self._runs), ("steps", self._steps), ("queues", self._queues), ("leases", self._leases),
            ("workers", self._workers),
        ]
        success = GaugeMetricFamily(f"{NAMESPACE}_scrape_collector_success",
                                    "1 if the database reader answered within the scrape budget.", labels=["collector"])
        started = time.monotonic()
        now = timezone.now()
        for name, reader in readers:
            left = self.budget - (time.monotonic() - started)
            try:
                if left <= 0:
                    raise BudgetExceeded(name)
                with _deadline(self.using, left):
                    families = reader(now)
            except (DatabaseError, BudgetExceeded) as exc:
                log.warning("metrics reader %s skipped: %s", name, exc)
                success.add_metric([name], 0)
                continue
            success.add_metric([name], 1)
            yield from families
        yield success
        took = GaugeMetricFamily(f"{NAMESPACE}_scrape_duration_seconds", "Time the database readers took.")
        took.add_metric([], time.monotonic() - started)
        yield took

    def _runs(self, now: datetime) -> list[Metric]:
        from .read import throughput

        counts = throughput.recent_run_state_counts(since=FINISHED_WINDOW, now=now)
        runs = GaugeMetricFamily(f"{NAMESPACE}_runs", "Runs by state: pending and running exactly; succeeded, "
                                 "failed and canceled that finished in the last hour.", labels=["state"])
        for state, n in counts.items():
            runs.add_metric([state], n)
        return [runs]

    def _steps(self, now: datetime) -> list[Metric]:
        from .read import throughput

        counts = throughput.step_state_counts(since=FINISHED_WINDOW, now=now)
        steps = GaugeMetricFamily(f"{NAMESPACE}_steps", "Steps by state: pending (of active runs), ready and running "
                                  "exactly; succeeded, failed and canceled that finished in the last hour.",
                                  labels=["state"])
        for state, n in counts.items():
            steps.add_metric([state], n)
        return [steps]

    def _queues(self, now: datetime) -> list[Metric]:
        from .read import queues

        ready = GaugeMetricFamily(f"{NAMESPACE}_queue_ready", "Ready steps due now.", labels=["queue"])
        running = GaugeMetricFamily(f"{NAMESPACE}_queue_running", "Running steps.", labels=["queue"])
        tokens = GaugeMetricFamily(f"{NAMESPACE}_queue_tokens", "Rate-limit tokens in the bucket now "
                                   "(rate-limited queues only).", labels=["queue"])
        oldest = GaugeMetricFamily(f"{NAMESPACE}_queue_oldest_ready_age_seconds", "Age of the oldest due ready step "
                                   "(0 when none).", labels=["queue"])
        paused = GaugeMetricFamily(f"{NAMESPACE}_queue_paused", "1 if the queue is paused.", labels=["queue"])
        for f in queues.queue_figures(now=now):
            name = _label(f.name)
            ready.add_metric([name], f.ready)
            running.add_metric([name], f.running)
            if f.tokens_now is not None:
                tokens.add_metric([name], f.tokens_now)
            oldest.add_metric([name], f.oldest_age_seconds or 0.0)
            paused.add_metric([name], 1 if f.paused else 0)
        return [ready, running, tokens, oldest, paused]

    def _leases(self, now: datetime) -> list[Metric]:
        from .read import engine_status

        counts = engine_status.lease_counts(now=now)
        leases = GaugeMetricFamily(f"{NAMESPACE}_leases", "Leases of running steps: active, or expired (a worker died "
                                   "or stalled; reclaimed soon).", labels=["state"])
        leases.add_metric(["active"], counts.active)
        leases.add_metric(["expired"], counts.expired)
        return [leases]

    def _workers(self, now: datetime) -> list[Metric]:
        from .read import engine_status

        seen = engine_status.workers(now=now, seen_within=timedelta(hours=1), limit=1000, per_worker=0)
        workers = GaugeMetricFamily(f"{NAMESPACE}_workers", "Worker processes seen in the last hour: live (recent "
                                    "heartbeat) or gone (stopped or silent).", labels=["state"])
        live = sum(1 for w in seen if w.is_live)
        workers.add_metric(["live"], live)
        workers.add_metric(["gone"], len(seen) - live)
        return [workers]


# -- the endpoint --------------------------------------------------------------------------------------
def _token() -> str:
    from .conf import workflow_settings
    from .engine.errors import ConfigurationError

    token = workflow_settings().get("METRICS_TOKEN") or ""
    if not isinstance(token, str):
        raise ConfigurationError("settings.WORKFLOW['METRICS_TOKEN'] must be a string")
    return token


def exposition() -> bytes:
    """This process's (or every process's) worker metrics, then the database gauges."""
    db = CollectorRegistry(auto_describe=False)
    db.register(DatabaseCollector())
    return generate_latest(process_registry()) + generate_latest(db)


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Open unless ``settings.WORKFLOW["METRICS_TOKEN"]`` is set; then ``Authorization: Bearer <it>``."""
    token = _token()
    if token:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            response = HttpResponse("metrics need 'Authorization: Bearer <METRICS_TOKEN>'\n", status=401,
                                    content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


app_name = "workflow_metrics"

urlpatterns = [path("metrics", metrics_view, name="metrics")]
