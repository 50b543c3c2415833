"""Engine status: leases, live workers and row counts within a bound."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Count, Min, Q
from django.utils import timezone

from ..models import Lease, Step, Worker

LIVE_HEARTBEATS = 3


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
    from ..conf import build_config

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
