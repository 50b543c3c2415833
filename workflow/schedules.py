"""Schedules in the database: store what code declares, and fire due ticks from every worker.

Every ``runworkers`` process calls ``tick_schedules`` about once a second (a periodic hook on
its runtime). No leader: a tick's run id is derived from the schedule and the instant, so a
second worker firing the same tick gets the same run back from the idempotent ``start_run``;
the schedule row is moved under its lock (``SELECT ... FOR UPDATE`` on PostgreSQL, the
``IMMEDIATE`` write lock on SQLite) in the same transaction as the runs it starts, so its
counts and events are written once too, and a worker killed mid-way leaves the tick to the next.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.utils import timezone as djtz

from .engine.errors import ConfigurationError, NotFound, WorkflowError
from .engine.registry import Registry, schedule_problems
from .engine.runtime import Runtime
from .engine.schedules import ScheduleSpec, ScheduleState, iso_instant, plan
from .engine.values import ACTIVE_RUN_STATES
from .models import Event, Run, Schedule

log = logging.getLogger("workflow.schedules")

CHECK_INTERVAL = timedelta(seconds=1)


def spec_of(row: Schedule) -> ScheduleSpec:
    return ScheduleSpec(
        name=row.name, package=row.package, cron=row.cron, timezone=row.timezone, input=row.input,
        catch_up=row.catch_up, overlap=row.overlap, enabled=row.enabled,
        catch_up_window=timedelta(seconds=row.catch_up_window_seconds),
        late_after=timedelta(seconds=row.late_after_seconds),
    )


def _definition(spec: ScheduleSpec) -> dict[str, Any]:
    return {
        "cron": spec.cron, "timezone": spec.timezone, "input": spec.input, "catch_up": spec.catch_up,
        "overlap": spec.overlap, "enabled": spec.enabled,
        "catch_up_window_seconds": spec.catch_up_window.total_seconds(),
        "late_after_seconds": spec.late_after.total_seconds(),
    }


def _event(kind: str, row: Schedule, now: datetime, message: str, *, run_id: str | None = None, actor: str = "",
           severity: str = "info", **payload: Any) -> Event:
    return Event(created_at=now, kind=kind, severity=severity, run_id=run_id, actor=actor, message=message,
                 payload={"schedule": row.key, **payload})


# -- start-up ------------------------------------------------------------------------------------
@dataclass
class ReconcileReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def reconcile(registry: Registry, *, now: datetime | None = None, using: str = "default") -> ReconcileReport:
    """Store the schedules declared in code; mark stored ones no longer declared as removed.

    Raises ``ConfigurationError`` listing every problem (the system check reports the same),
    and then stores nothing. Safe when several workers start at once.
    """
    problems = schedule_problems(registry)
    if problems:
        raise ConfigurationError("; ".join(problems))
    now = now or djtz.now()
    report = ReconcileReport()
    declared = {(spec.package, spec.name): spec for spec in registry.schedules()}
    for spec in declared.values():
        _store(spec, now, using, report)
    for row in Schedule.objects.using(using).filter(removed_at__isnull=True):
        if (row.package, row.name) in declared:
            continue
        with transaction.atomic(using=using):
            if Schedule.objects.using(using).filter(pk=row.pk, removed_at__isnull=True).update(
                removed_at=now, next_fire_at=None, buffered_at=None, updated_at=now
            ):
                _event("schedule_removed", row, now, f"schedule {row.key} is no longer declared in code: "
                       "kept, disabled, never fires again", severity="warning").save(using=using)
                report.removed.append(row.key)
    return report


def _store(spec: ScheduleSpec, now: datetime, using: str, report: ReconcileReport) -> None:
    definition = _definition(spec)
    objects = Schedule.objects.using(using)
    with transaction.atomic(using=using):
        row = objects.select_for_update().filter(package=spec.package, name=spec.name).first()
        if row is None:
            try:
                with transaction.atomic(using=using):
                    objects.create(package=spec.package, name=spec.name, cursor_at=now,
                                   next_fire_at=spec.next_tick(now), created_at=now, updated_at=now, **definition)
                report.created.append(spec.key)
            except IntegrityError:  # another worker stored it first
                pass
            return
        changed = {k: v for k, v in definition.items() if getattr(row, k) != v}
        revived = row.removed_at is not None
        if not changed and not revived:
            return
        fields: dict[str, Any] = {**changed, "updated_at": now}
        if revived:  # declared again: starts afresh, ticks from its absence are not caught up
            fields.update(removed_at=None, cursor_at=now, buffered_at=None)
        if revived or {"cron", "timezone", "enabled"} & set(changed):
            fields["next_fire_at"] = spec.next_tick(now if revived else max(now, row.cursor_at))
            if not revived:
                fields["cursor_at"] = max(now, row.cursor_at)
        objects.filter(pk=row.pk).update(**fields)
        report.updated.append(spec.key)


def install(runtime: Runtime) -> ReconcileReport:
    """At worker start-up: store the declared schedules, then look for due ticks on every loop."""
    using = runtime_using(runtime)
    report = reconcile(runtime.registry, using=using)

    def tick_hook(now: datetime) -> int:
        try:
            return tick_schedules(runtime, now)
        except DatabaseError:
            connections[using].close()  # a broken connection must not break the next look
            raise

    runtime.add_periodic_hook(tick_hook, interval=CHECK_INTERVAL)
    return report


def runtime_using(runtime: Runtime) -> str:
    return getattr(runtime.store, "using", "default")


# -- firing ------------------------------------------------------------------------------------------
def tick_schedules(runtime: Runtime, now: datetime | None = None) -> int:
    """Fire every due tick; returns how many runs were started. One indexed query when nothing is due."""
    using = runtime_using(runtime)
    now = now or runtime.clock()
    started = 0
    for row in Schedule.objects.using(using).due(now):
        waiting = row.next_fire_at is None or row.next_fire_at > now
        if waiting and row.buffered_at is not None and _run_is_active(row.last_run_id, using):
            continue  # the buffered tick waits for its run; nothing to lock
        try:
            started += _fire(runtime, row.pk, now, using)
        except WorkflowError:
            log.exception("schedule %s could not be evaluated", row.key)
    return started


def _run_is_active(run_id: str, using: str) -> bool:
    return bool(run_id) and Run.objects.using(using).filter(pk=run_id, state__in=ACTIVE_RUN_STATES).exists()


def _fire(runtime: Runtime, pk: int, now: datetime, using: str) -> int:
    objects = Schedule.objects.using(using)
    with transaction.atomic(using=using):
        row = objects.select_for_update().filter(pk=pk).first()
        if row is None or row.removed_at is not None or row.paused or not row.enabled:
            return 0
        due = row.next_fire_at is not None and row.next_fire_at <= now
        if not due and row.buffered_at is None:
            return 0  # another worker handled it since we looked
        spec = spec_of(row)
        state = ScheduleState(cursor=row.cursor_at, previous_active=_run_is_active(row.last_run_id, using),
                              buffered=row.buffered_at)
        decision = plan(spec, state, now)
        if not due and not decision.fire and decision.buffered == row.buffered_at:
            return 0
        events: list[Event] = []
        fired = 0
        last_run_id = row.last_run_id
        for instant in decision.fire:
            run_id = _start(runtime, row, spec, instant, now, events)
            if run_id:
                last_run_id = run_id
                fired += 1
        if decision.missed:
            events.append(_event(
                "schedule_missed", row, now,
                f"{decision.missed} tick(s) of {row.key} were missed while no worker ran it; "
                f"catch_up={spec.catch_up}: {decision.skipped_missed} skipped, "
                f"{decision.missed - decision.skipped_missed} run",
                severity="warning", missed=decision.missed, skipped=decision.skipped_missed,
            ))
        for instant in decision.skipped_overlap:
            events.append(_event(
                "schedule_skipped", row, now,
                f"tick {iso_instant(instant)} of {row.key} skipped: run {last_run_id} is still active "
                f"(overlap={spec.overlap})",
                run_id=last_run_id or None, scheduled_at=iso_instant(instant),
            ))
        if decision.buffered is not None and decision.buffered != row.buffered_at:
            events.append(_event(
                "schedule_buffered", row, now,
                f"tick {iso_instant(decision.buffered)} of {row.key} waits for run {last_run_id} to finish "
                "(overlap=buffer_one)",
                run_id=last_run_id or None, scheduled_at=iso_instant(decision.buffered),
            ))
        objects.filter(pk=row.pk).update(
            cursor_at=decision.cursor, next_fire_at=decision.next_due, buffered_at=decision.buffered,
            last_fired_at=max(decision.fire) if decision.fire else row.last_fired_at, last_run_id=last_run_id,
            fired_count=row.fired_count + fired, missed_count=row.missed_count + decision.missed,
            skipped_count=row.skipped_count + decision.skipped, updated_at=now,
        )
        Event.objects.using(using).bulk_create(events)
    return fired


def _start(runtime: Runtime, row: Schedule, spec: ScheduleSpec, instant: datetime, now: datetime,
           events: list[Event]) -> str:
    """Start the run of one tick; an engine refusal becomes an error event instead of a retry loop."""
    run_id = spec.run_id(instant)
    metadata = {"schedule": row.key, "scheduled_at": iso_instant(instant), "trigger": "schedule"}
    try:
        with transaction.atomic(using=runtime_using(runtime)):
            runtime.start_run(spec.package, spec.input, run_id=run_id, metadata=metadata)
    except WorkflowError as exc:
        events.append(_event("schedule_error", row, now,
                             f"tick {iso_instant(instant)} of {row.key} could not start: {exc}",
                             severity="error", scheduled_at=iso_instant(instant), error=str(exc)))
        return ""
    return run_id


# -- operator actions (called through workflow.operator) ----------------------------------------------
def _row(key: str, using: str) -> Schedule:
    package, _, name = key.partition(":")
    row = Schedule.objects.using(using).filter(package=package, name=name).first()
    if row is None:
        raise NotFound(f"unknown schedule {key!r}")
    return row


def set_paused(runtime: Runtime, key: str, paused: bool, *, actor: str) -> bool:
    """Pause or resume; returns whether it changed. Resuming does not catch up the paused ticks."""
    using = runtime_using(runtime)
    now = runtime.clock()
    with transaction.atomic(using=using):
        row = _row(key, using)
        if row.removed_at is not None:
            raise NotFound(f"schedule {key!r} was removed from code")
        fields: dict[str, Any] = {"paused": paused, "updated_at": now}
        if not paused:
            fields.update(cursor_at=now, next_fire_at=spec_of(row).next_tick(now), buffered_at=None)
        changed = Schedule.objects.using(using).filter(pk=row.pk, paused=not paused).update(**fields)
        if changed:
            verb = "paused" if paused else "resumed"
            _event(f"schedule_{verb}", row, now, f"schedule {row.key} {verb} by {actor or 'someone'}",
                   actor=actor).save(using=using)
    return bool(changed)


def run_now(runtime: Runtime, key: str, *, actor: str) -> str:
    """Start one run of the schedule at once, outside its cron; audited. Returns the run id."""
    using = runtime_using(runtime)
    now = runtime.clock()
    row = _row(key, using)
    if row.removed_at is not None:
        raise NotFound(f"schedule {key!r} was removed from code")
    spec = spec_of(row)
    metadata = {"schedule": row.key, "scheduled_at": iso_instant(now), "trigger": "manual"}
    if actor:
        metadata["started_by"] = actor
    with transaction.atomic(using=using):
        started = runtime.start_run(spec.package, spec.input, run_id=f"{spec.run_id(now)}:manual",
                                    metadata=metadata).id
        Schedule.objects.using(using).filter(pk=row.pk).update(last_run_id=started, updated_at=now)
        _event("schedule_run_now", row, now, f"schedule {row.key} run now by {actor or 'someone'}: {started}",
               run_id=started, actor=actor).save(using=using)
    return started


# -- reading, for the dashboard ------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleView:
    row: Schedule
    description: str
    next_fires: list[datetime]
    recent_runs: list[Run]


def schedule_views(*, now: datetime | None = None, runs_per_schedule: int = 5, fires: int = 5,
                   rows: Iterable[Schedule] | None = None) -> list[ScheduleView]:
    """Each stored schedule with its cron in words, next fire times and latest runs (newest first)."""
    now = now or djtz.now()
    views = []
    for row in rows if rows is not None else Schedule.objects.all():
        spec = spec_of(row)
        recent = list(
            Run.objects.filter(id__startswith=spec.run_id_prefix()).only("id", "state", "created_at", "metadata")
            .order_by("-id")[:runs_per_schedule]
        )
        fire_times = spec.next_ticks(now, fires) if row.status == "active" else []
        views.append(ScheduleView(row=row, description=spec.describe(), next_fires=fire_times, recent_runs=recent))
    return views
