"""The overview's figures: throughput buckets, counts by state, failures by error code."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, F, Func, IntegerField, Max, Q
from django.utils import timezone

from ..engine.values import ACTIVE_RUN_STATES, TERMINAL_STEP_STATES, RunState, StepState
from ..jsontext import JsonText
from ..models import Lease, Run, Step


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
    # Running means executing: a step a worker claimed ahead (prefetch) waits for a thread, counted apart.
    counts[StepState.RUNNING] = Step.objects.running().filter(awaiting_thread_since__isnull=True).count()
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


def claimed_awaiting_thread() -> int:
    """Steps a worker has leased but not yet started: its threads are all busy (prefetch)."""
    return Step.objects.running().filter(awaiting_thread_since__isnull=False).count()


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
