"""Read-side aggregates for the operator consoles: throughput, failure groups, queue figures and
"why is this queue not moving", lease and worker summaries, engine row counts.

Nothing here writes. Each function issues a fixed number of queries, and each query reads
through an index that does not grow with finished history (the partial indexes on ready and
running steps, the ``finished_at`` index restricted to a time window, the event indexes), so the
consoles stay fast with millions of finished steps and events.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Count, F, Func, IntegerField, Max, Min, Q
from django.utils import timezone

from .engine.rules import bucket_refill, next_token_seconds
from .engine.values import ACTIVE_RUN_STATES, TERMINAL_STEP_STATES, RunState, StepState
from .jsontext import JsonText
from .models import Lease, Queue, Run, Step, Worker

# A worker that has not sent a heartbeat for this many heartbeat intervals is presumed gone.
LIVE_HEARTBEATS = 3


# -- windows -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """A chart window: how far back it looks and how wide each bar is."""

    key: str
    label: str
    span: timedelta
    bucket: timedelta

    @property
    def bucket_seconds(self) -> int:
        return int(self.bucket.total_seconds())

    @property
    def bucket_label(self) -> str:
        minutes = self.bucket_seconds // 60
        return "minute" if minutes == 1 else f"{minutes} minutes"


WINDOWS = {
    w.key: w
    for w in (
        Window(key="15m", label="15 minutes", span=timedelta(minutes=15), bucket=timedelta(minutes=1)),
        Window(key="1h", label="1 hour", span=timedelta(hours=1), bucket=timedelta(minutes=1)),
        Window(key="6h", label="6 hours", span=timedelta(hours=6), bucket=timedelta(minutes=5)),
        Window(key="24h", label="24 hours", span=timedelta(hours=24), bucket=timedelta(minutes=15)),
    )
}
DEFAULT_WINDOW = "1h"


def window(key: str | None) -> Window:
    return WINDOWS.get(key or "", WINDOWS[DEFAULT_WINDOW])


SINCE_CHOICES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


class EpochBucket(Func):
    """``floor(epoch seconds of the expression / size)``: the bucket number of a timestamp."""

    output_field = IntegerField()

    def __init__(self, expression: Any, size: int) -> None:
        super().__init__(expression)
        self.size = int(size)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(CAST(strftime('%%s', {sql}) AS INTEGER) / {self.size})", params

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"CAST(FLOOR(EXTRACT(EPOCH FROM {sql}) / {self.size}) AS BIGINT)", params

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> Any:  # other vendors: a best effort
        return self.as_postgresql(compiler, connection, **extra)


# -- throughput ----------------------------------------------------------------------------------
@dataclass(slots=True, kw_only=True)
class Bucket:
    start: datetime
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0
    claimed: int = 0  # attempts started (leases claimed) in the bucket
    retried: int = 0  # of those attempts, how many failed and were retried (or lost their lease)

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed


@dataclass(slots=True, kw_only=True)
class Throughput:
    window: Window
    start: datetime
    end: datetime
    buckets: list[Bucket]

    @property
    def succeeded(self) -> int:
        return sum(b.succeeded for b in self.buckets)

    @property
    def failed(self) -> int:
        return sum(b.failed for b in self.buckets)

    @property
    def claimed(self) -> int:
        return sum(b.claimed for b in self.buckets)

    @property
    def retried(self) -> int:
        return sum(b.retried for b in self.buckets)

    @property
    def peak(self) -> int:
        return max([b.finished for b in self.buckets] + [b.claimed for b in self.buckets] + [0])

    @property
    def per_minute(self) -> float:
        minutes = self.window.span.total_seconds() / 60
        return (self.succeeded + self.failed) / minutes if minutes else 0.0


def _bucket_bounds(win: Window, now: datetime) -> tuple[datetime, datetime, int]:
    """Align buckets to the epoch so a bar keeps its edges between refreshes."""
    size = win.bucket_seconds
    last = int(now.timestamp()) // size
    count = int(win.span.total_seconds()) // size
    first = last - count + 1
    start = datetime.fromtimestamp(first * size, tz=now.tzinfo or timezone.get_current_timezone())
    return start, now, first


def throughput(
    win: Window, *, now: datetime | None = None, queues: Iterable[str] | None = None
) -> dict[str | None, Throughput]:
    """Steps finished (from ``Step.finished_at``) and attempts claimed (from ``Lease.claimed_at``) per bucket.

    Returns one series for all queues under the key None and, when ``queues`` is given, one per
    queue. Two grouped queries, both bounded by the window through the time indexes.
    """
    now = now or timezone.now()
    start, end, first = _bucket_bounds(win, now)
    size = win.bucket_seconds
    count = int(win.span.total_seconds()) // size
    per_queue = queues is not None
    names = list(queues or [])

    def empty() -> list[Bucket]:
        return [Bucket(start=start + timedelta(seconds=i * size)) for i in range(count)]

    series: dict[str | None, list[Bucket]] = {None: empty()}
    for name in names:
        series[name] = empty()

    group = ["b", "state", "queue"] if per_queue else ["b", "state"]
    finished = (
        Step.objects.filter(finished_at__gte=start, finished_at__lte=end).order_by()
        .annotate(b=EpochBucket(F("finished_at"), size)).values(*group).annotate(n=Count("id"))
    )
    for row in finished:
        i = row["b"] - first
        if not 0 <= i < count:
            continue
        targets = [series[None]]
        if per_queue and row["queue"] in series:
            targets.append(series[row["queue"]])
        for buckets in targets:
            b = buckets[i]
            if row["state"] == StepState.SUCCEEDED:
                b.succeeded += row["n"]
            elif row["state"] == StepState.FAILED:
                b.failed += row["n"]
            elif row["state"] == StepState.CANCELED:
                b.canceled += row["n"]

    lease_group = ["b", "outcome", "step__queue"] if per_queue else ["b", "outcome"]
    claims = (
        Lease.objects.filter(claimed_at__gte=start, claimed_at__lte=end).order_by()
        .annotate(b=EpochBucket(F("claimed_at"), size)).values(*lease_group).annotate(n=Count("id"))
    )
    for row in claims:
        i = row["b"] - first
        if not 0 <= i < count:
            continue
        targets = [series[None]]
        if per_queue and row["step__queue"] in series:
            targets.append(series[row["step__queue"]])
        for buckets in targets:
            buckets[i].claimed += row["n"]
            if row["outcome"] in (Lease.Outcome.RETRIED, Lease.Outcome.EXPIRED):
                buckets[i].retried += row["n"]
    return {k: Throughput(window=win, start=start, end=end, buckets=v) for k, v in series.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Chart:
    """Geometry for the throughput SVG; the template draws it (and escapes every text)."""

    width: int
    height: int
    plot_top: int
    plot_bottom: int
    plot_left: int
    plot_right: int
    bars: list[dict[str, Any]]
    gridlines: list[dict[str, Any]]
    ticks: list[dict[str, Any]]
    claim_points: str
    summary: str


def chart(data: Throughput, *, width: int = 1100, height: int = 190, compact: bool = False) -> Chart:
    """Stacked bars (succeeded below, failed above) per bucket, and a line of attempts started."""
    left = 6 if compact else 40
    right = width - (6 if compact else 10)
    top = 6 if compact else 10
    bottom = height - (4 if compact else 22)
    n = max(len(data.buckets), 1)
    peak = data.peak
    scale_max = _nice_ceiling(peak)
    slot = (right - left) / n
    gap = min(2.0, slot * 0.2)
    plot_h = bottom - top

    def y(value: float) -> float:
        return bottom - (value / scale_max) * plot_h if scale_max else bottom

    bars = []
    points = []
    for i, b in enumerate(data.buckets):
        x = left + i * slot + gap / 2
        w = max(slot - gap, 1.0)
        ok_top = y(b.succeeded)
        fail_top = y(b.succeeded + b.failed)
        stamp = timezone.localtime(b.start).strftime("%H:%M")
        bars.append({
            "x": round(x, 2), "w": round(w, 2),
            "ok_y": round(ok_top, 2), "ok_h": round(bottom - ok_top, 2),
            "fail_y": round(fail_top, 2), "fail_h": round(ok_top - fail_top, 2),
            "hit_y": top, "hit_h": plot_h,
            "title": f"{stamp}: {b.succeeded} succeeded, {b.failed} failed, {b.claimed} started"
                     + (f", {b.retried} retried" if b.retried else ""),
            "bucket": b,
        })
        points.append(f"{round(x + w / 2, 2)},{round(y(b.claimed), 2)}")
    gridlines = []
    if scale_max and not compact:
        for frac in (0, 0.5, 1):
            value = scale_max * frac
            gridlines.append({"y": round(y(value), 2), "label": _short_number(value)})
    ticks = []
    if not compact and data.buckets:
        every = max(1, math.ceil(n / 6))
        for i in range(0, n, every):
            ticks.append({"x": round(left + i * slot + slot / 2, 2),
                          "label": timezone.localtime(data.buckets[i].start).strftime("%H:%M")})
    summary = (f"Over the last {data.window.label}: {data.succeeded} steps succeeded and {data.failed} failed "
               f"({data.per_minute:.1f} per minute); {data.claimed} attempts started, {data.retried} retried.")
    return Chart(width=width, height=height, plot_top=top, plot_bottom=bottom, plot_left=left, plot_right=right,
                 bars=bars, gridlines=gridlines, ticks=ticks, claim_points=" ".join(points), summary=summary)


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 0
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * exp:
            return m * exp
    return 10 * exp


def _short_number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


# -- counts ----------------------------------------------------------------------------------------
def step_state_counts(*, since: timedelta, now: datetime | None = None) -> dict[str, int]:
    """Steps by state: every active step, and the steps that finished within ``since``.

    Active states read the partial indexes (ready, running) or the active runs (pending);
    terminal states read the ``finished_at`` index over the window, never all of history.
    """
    now = now or timezone.now()
    counts = dict.fromkeys([s.value for s in StepState], 0)
    # Grouped by queue so SQLite reads the ready-only index (a bare count scans a covering index of all steps).
    counts[StepState.READY] = sum(Step.objects.filter(state=StepState.READY).order_by().values_list("queue")
                                  .annotate(n=Count("id")).values_list("n", flat=True))
    counts[StepState.RUNNING] = Step.objects.running().count()
    # One equality subquery per active state: with millions of finished runs, SQLite's planner scans the
    # whole run table for ``state IN (...)`` but seeks the state index for ``state = ...``.
    in_active_run = Q()
    for run_state in ACTIVE_RUN_STATES:
        in_active_run |= Q(run_id__in=Run.objects.filter(state=run_state).order_by().values("id"))
    counts[StepState.PENDING] = Step.objects.filter(in_active_run, state=StepState.PENDING).count()
    rows = (Step.objects.filter(finished_at__gte=now - since).order_by().values_list("state")
            .annotate(n=Count("id")))
    for state, n in rows:
        if state in TERMINAL_STEP_STATES:
            counts[state] = n
    return counts


RUN_COUNT_CAP = 100_000


def run_state_counts(*, cap: int | None = None) -> dict[str, tuple[int, bool]]:
    """Runs by state as (count, is_capped): one capped count per state through the state index.

    A count stops at ``cap`` rows (shown as "100,000+"), so the overview costs the same with ten
    million finished runs as with a hundred thousand (the remedy Mission Control uses).
    """
    cap = cap or RUN_COUNT_CAP
    out: dict[str, tuple[int, bool]] = {}
    for state in RunState:
        n = Run.objects.filter(state=state).order_by().values("state")[: cap + 1].count()  # COUNT over a LIMIT subquery
        out[state.value] = (min(n, cap), n > cap)
    return out


def recent_run_state_counts(*, since: timedelta, now: datetime | None = None) -> dict[str, int]:
    """Active runs by state, exactly; finished runs by state over the last ``since`` (the finished_at index).

    For /metrics: unlike ``run_state_counts`` it never counts finished history, so a scrape costs the
    same with ten million finished runs as with ten.
    """
    now = now or timezone.now()
    counts = dict.fromkeys([s.value for s in RunState], 0)
    for state in ACTIVE_RUN_STATES:
        counts[state] = Run.objects.filter(state=state).order_by().count()
    # Counted here, not with GROUP BY: grouping makes SQLite walk the whole state index instead of the window.
    recent = Counter(Run.objects.filter(finished_at__gte=now - since).order_by().values_list("state", flat=True))
    for state, n in recent.items():
        if state not in ACTIVE_RUN_STATES:
            counts[state] = n
    return counts


@dataclass(slots=True, kw_only=True)
class FailureGroup:
    code: str
    last_hour: int
    last_day: int
    runs: int
    last: datetime | None
    message: str = ""


def failure_groups(*, now: datetime | None = None, limit: int = 20) -> list[FailureGroup]:
    """Steps that failed in the last day, grouped by error code, with last-hour counts. One query."""
    now = now or timezone.now()
    hour = now - timedelta(hours=1)
    rows = (
        Step.objects.filter(finished_at__gte=now - timedelta(days=1), state=StepState.FAILED).order_by()
        .values(code=JsonText("error", "code"))
        .annotate(day=Count("id"), hour=Count("id", filter=Q(finished_at__gte=hour)),
                  runs=Count("run", distinct=True), last=Max("finished_at"), message=Max(JsonText("error", "message")))
        .order_by("-day", "code")[:limit]
    )
    return [FailureGroup(code=r["code"] or "", last_hour=r["hour"], last_day=r["day"], runs=r["runs"],
                         last=r["last"], message=r["message"] or "") for r in rows]


@dataclass(slots=True, kw_only=True)
class LeaseCounts:
    active: int
    expired: int
    oldest_expired: datetime | None


def lease_counts(*, now: datetime | None = None) -> LeaseCounts:
    """Running steps whose lease is live vs past its expiry (a worker died or stalled)."""
    now = now or timezone.now()
    agg = Step.objects.running().order_by().aggregate(
        active=Count("id", filter=Q(lease_expires_at__gte=now)),
        expired=Count("id", filter=Q(lease_expires_at__lt=now)),
        oldest=Min("lease_expires_at", filter=Q(lease_expires_at__lt=now)),
    )
    return LeaseCounts(active=agg["active"], expired=agg["expired"], oldest_expired=agg["oldest"])


# -- workers -------------------------------------------------------------------------------------
def liveness_window() -> timedelta:
    from .conf import build_config

    config = build_config()
    beat = min(config.effective_heartbeat, config.lease_duration / 3)
    return max(beat * LIVE_HEARTBEATS, timedelta(seconds=10))


@dataclass(slots=True, kw_only=True)
class WorkerView:
    worker: Worker
    is_live: bool
    leases: list[Lease] = field(default_factory=list)
    more: int = 0

    @property
    def status(self) -> str:
        if self.worker.stopped_at:
            return "stopped"
        return "live" if self.is_live else "silent"


def workers(*, now: datetime | None = None, seen_within: timedelta = timedelta(hours=1), limit: int = 50,
            per_worker: int = 5) -> list[WorkerView]:
    """Workers seen recently, newest heartbeat first, each with the attempts it holds now. Two queries."""
    now = now or timezone.now()
    live_after = now - liveness_window()
    rows = list(Worker.objects.filter(seen_at__gte=now - seen_within).order_by("-seen_at", "id")[:limit])
    views = {w.id: WorkerView(worker=w, is_live=w.stopped_at is None and w.seen_at >= live_after) for w in rows}
    if views:
        leases = (Lease.objects.live().filter(worker_id__in=list(views)).select_related("step")
                  .only("id", "worker_id", "attempt", "claimed_at", "expires_at", "run_id", "step__step_id",
                        "step__kind", "step__queue")
                  .order_by("claimed_at")[: limit * per_worker * 4])
        for lease in leases:
            view = views[lease.worker_id]
            if len(view.leases) < per_worker:
                view.leases.append(lease)
            else:
                view.more += 1
    return list(views.values())


def live_workers(*, now: datetime | None = None) -> list[Worker]:
    now = now or timezone.now()
    return list(Worker.objects.seen_since(now - liveness_window()).only("id", "queues", "site", "max_workers",
                                                                          "running", "seen_at", "stopped_at")[:500])


# -- queues ----------------------------------------------------------------------------------------
@dataclass(slots=True, kw_only=True)
class QueueFigures:
    """Everything the queue monitor shows for one queue, computed now from real rows."""

    name: str
    row: Queue | None
    ready: int = 0  # ready and due now
    waiting_backoff: int = 0  # ready but not due yet (retry backoff)
    next_due: datetime | None = None
    oldest_ready: datetime | None = None
    running: int = 0
    ready_by_site: dict[str, int] = field(default_factory=dict)
    tokens_now: float | None = None
    next_token_seconds: float | None = None
    live_workers: int = 0
    reasons: list[str] = field(default_factory=list)
    now: datetime | None = None

    @property
    def paused(self) -> bool:
        return bool(self.row and self.row.paused)

    @property
    def cap(self) -> int | None:
        return self.row.max_workers if self.row else None

    @property
    def rate(self) -> float | None:
        return self.row.rate if self.row else None

    @property
    def burst(self) -> int:
        return self.row.burst if self.row else 1

    @property
    def per_seconds(self) -> float:
        return self.row.per_seconds if self.row else 1.0

    @property
    def oldest_age_seconds(self) -> float | None:
        if self.oldest_ready is None or self.now is None:
            return None
        return max((self.now - self.oldest_ready).total_seconds(), 0.0)

    @property
    def cap_percent(self) -> float:
        return min(100.0, 100 * self.running / self.cap) if self.cap else 0.0

    @property
    def token_percent(self) -> float:
        if self.tokens_now is None or not self.burst:
            return 0.0
        return max(0.0, min(100.0, 100 * self.tokens_now / self.burst))

    @property
    def is_stalled(self) -> bool:
        return bool(self.reasons)

    @property
    def status(self) -> str:
        if self.paused:
            return "paused"
        if self.reasons:
            return "stalled"
        if self.running or self.ready:
            return "moving"
        if self.waiting_backoff:
            return "backing off"
        return "idle"

    @property
    def rate_text(self) -> str:
        if self.rate is None:
            return "unlimited"
        per = self.per_seconds
        unit = "s" if per == 1 else ("min" if per == 60 else ("h" if per == 3600 else f"{per:g} s"))
        return f"{self.rate:g} per {unit}, burst {self.burst}"


def bucket_level(row: Queue, now: datetime) -> tuple[float | None, float | None]:
    """The token bucket's level now and the seconds until the next whole token.

    The stored ``tokens`` is the level at ``refilled_at``; the engine refills lazily at claim
    time, so the level now is what the claim would compute (``rules.bucket_refill``).
    """
    if row.rate is None:
        return None, None
    per_second = row.rate / (row.per_seconds or 1.0)
    level = bucket_refill(tokens=row.tokens, burst=row.burst, per_second=per_second, refilled_at=row.refilled_at,
                          now=now)
    return level, next_token_seconds(level, per_second=per_second)


def queue_figures(*, now: datetime | None = None) -> list[QueueFigures]:
    """Every known queue (rows, configured, or holding steps) with its figures and stall reasons.

    Five queries whatever the number of queues and steps: queue rows, ready steps grouped by
    queue and site (ready-only index), running grouped by queue (running-only index), live workers.
    """
    from .conf import build_config

    now = now or timezone.now()
    rows = {q.name: q for q in Queue.objects.all()}
    names = set(rows) | set(build_config().queues)
    ready_rows = (Step.objects.filter(state=StepState.READY).order_by().values("queue", "site")
                  .annotate(due=Count("id", filter=Q(available_at__lte=now)),
                            later=Count("id", filter=Q(available_at__gt=now)),
                            oldest=Min("available_at", filter=Q(available_at__lte=now)),
                            next_due=Min("available_at", filter=Q(available_at__gt=now))))
    # Claimed but still waiting for a thread (prefetched) is not running yet.
    running = dict(Step.objects.filter(state=StepState.RUNNING, awaiting_thread_since__isnull=True).order_by()
                   .values_list("queue")
                   .annotate(n=Count("id")))
    figures: dict[str, QueueFigures] = {}

    def get(name: str) -> QueueFigures:
        if name not in figures:
            figures[name] = QueueFigures(name=name, row=rows.get(name), now=now)
        return figures[name]

    for name in names:
        get(name)
    for r in ready_rows:
        f = get(r["queue"])
        f.ready += r["due"]
        f.waiting_backoff += r["later"]
        if r["due"]:
            f.ready_by_site[r["site"] or ""] = f.ready_by_site.get(r["site"] or "", 0) + r["due"]
        if r["oldest"] and (f.oldest_ready is None or r["oldest"] < f.oldest_ready):
            f.oldest_ready = r["oldest"]
        if r["next_due"] and (f.next_due is None or r["next_due"] < f.next_due):
            f.next_due = r["next_due"]
    for name, n in running.items():
        get(name).running = n
    alive = live_workers(now=now)
    for f in figures.values():
        if f.row is not None:
            f.tokens_now, f.next_token_seconds = bucket_level(f.row, now)
        serving = [w for w in alive if not w.queues or f.name in w.queues]
        f.live_workers = len(serving)
        f.reasons = stall_reasons(f, serving)
    return sorted(figures.values(), key=lambda f: f.name)


def stall_reasons(f: QueueFigures, serving: list[Worker]) -> list[str]:
    """Why due ready steps of this queue are not being claimed, in plain words (empty if they can be)."""
    if not f.ready:
        return []
    reasons: list[str] = []
    steps = f"{f.ready} ready step{'s' if f.ready != 1 else ''}"
    if f.paused:
        reasons.append(f"Paused: {steps} wait until an operator resumes the queue.")
    if f.cap is not None and f.running >= f.cap:
        reasons.append(f"At its cap: {f.running} of {f.cap} allowed steps are running; the next starts when one finishes.")
    if f.tokens_now is not None and f.tokens_now < 1:
        when = f" (next token in {f.next_token_seconds:.1f} s)" if f.next_token_seconds is not None else ""
        reasons.append(f"Out of tokens: the rate limit ({f.rate_text}) allows no start right now{when}.")
    if not serving:
        reasons.append(f"No live worker serves queue {f.name!r}: {steps} wait for a worker process "
                       "(start one with manage.py runworkers).")
    else:
        sites = {w.site or "" for w in serving}
        for site, n in sorted(f.ready_by_site.items()):
            if site and site not in sites:
                reasons.append(f"No worker for site {site!r}: {n} ready step{'s' if n != 1 else ''} need a worker "
                               f"started with --site {site}, and none of the {len(serving)} live workers runs it.")
    return reasons


# -- engine status ----------------------------------------------------------------------------------
@dataclass(slots=True, kw_only=True)
class TableCount:
    label: str
    table: str
    count: int | None
    exact: bool
    note: str = ""


COUNT_CAP = 100_000


def _plural(model: Any) -> str:
    name = str(model._meta.verbose_name)
    return (name[:-1] + "ies" if name.endswith("y") else name + "s").capitalize()


_CAPPED_COUNT_SQL = "SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT {cap}) AS capped"
_PG_ESTIMATE_SQL = "SELECT reltuples::bigint FROM pg_class WHERE relname = %s"
_MAX_ID_SQL = "SELECT MAX({column}) FROM {table}"


def row_counts(models: Iterable[Any], *, using: str = "default") -> list[TableCount]:
    """Row counts that stay cheap on big tables: exact up to ``COUNT_CAP`` rows, estimated beyond.

    The estimate is the planner's (``pg_class.reltuples``) on PostgreSQL and ``max(id)`` on SQLite.
    """
    connection = connections[using]
    out: list[TableCount] = []
    with connection.cursor() as cursor:
        for m in models:
            table = connection.ops.quote_name(m._meta.db_table)
            cursor.execute(_CAPPED_COUNT_SQL.format(table=table, cap=COUNT_CAP + 1))
            n = cursor.fetchone()[0]
            label = _plural(m)
            if n <= COUNT_CAP:
                out.append(TableCount(label=label, table=m._meta.db_table, count=n, exact=True))
                continue
            estimate, note = _estimate(cursor, connection, m)
            out.append(TableCount(label=label, table=m._meta.db_table, count=max(estimate or 0, n), exact=False,
                                  note=note if estimate else f"more than {COUNT_CAP:,}; not counted further"))
    return out


def _estimate(cursor: Any, connection: Any, model: Any) -> tuple[int | None, str]:
    if connection.vendor == "postgresql":
        cursor.execute(_PG_ESTIMATE_SQL, [model._meta.db_table])
        row = cursor.fetchone()
        return (int(row[0]) if row and row[0] and row[0] > 0 else None), "planner estimate"
    pk = model._meta.pk
    if pk.get_internal_type() in ("AutoField", "BigAutoField", "IntegerField", "BigIntegerField"):
        table = connection.ops.quote_name(model._meta.db_table)
        cursor.execute(_MAX_ID_SQL.format(column=connection.ops.quote_name(pk.column), table=table))
        return cursor.fetchone()[0], "estimate from the highest id"
    return None, ""

