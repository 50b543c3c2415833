"""Events as the operator sees them: stored event rows, plus the routine ones read from attempt rows.

A claim and a success are not stored as events (they would be two of the hot path's writes per step):
every attempt's lease row already holds when it was claimed, by whom, and how it ended. Here they
become ``step_claimed`` / ``step_succeeded`` entries again (unsaved ``Event`` objects, their ``id``
the attempt's): merged by time into a run's or a step's event panel, and served from attempt rows
when the events console or the API filters on one of those kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db.models import QuerySet

from ..engine.rules import ROUTINE_KINDS, EventKind, LeaseOutcome, Severity
from ..models import Event, Lease, Run

DERIVED_KINDS = tuple(k.value for k in ROUTINE_KINDS)
_SEVERITY = {EventKind.STEP_CLAIMED.value: Severity.DEBUG.value, EventKind.STEP_SUCCEEDED.value: Severity.INFO.value}
_LEASE_FIELDS = ("id", "run_id", "attempt", "worker_id", "claimed_at", "started_at", "released_at", "outcome",
                 "step__step_id", "step__queue")


def _leases() -> QuerySet[Lease]:
    return Lease.objects.select_related("step").only(*_LEASE_FIELDS)


def claimed_event(lease: Lease) -> Event:
    return Event(id=lease.id, created_at=lease.claimed_at, kind=EventKind.STEP_CLAIMED.value,
                 severity=_SEVERITY[EventKind.STEP_CLAIMED.value], run_id=lease.run_id, step_id=lease.step.step_id,
                 queue=lease.step.queue, worker_id=lease.worker_id, payload={"attempt": lease.attempt})


def succeeded_event(lease: Lease) -> Event:
    payload: dict[str, Any] = {"attempt": lease.attempt}
    if lease.started_at and lease.released_at:
        payload["duration_ms"] = round((lease.released_at - lease.started_at).total_seconds() * 1000, 3)
    return Event(id=lease.id, created_at=lease.released_at, kind=EventKind.STEP_SUCCEEDED.value,
                 severity=_SEVERITY[EventKind.STEP_SUCCEEDED.value], run_id=lease.run_id, step_id=lease.step.step_id,
                 queue=lease.step.queue, worker_id=lease.worker_id, message="step succeeded", payload=payload)


def attempt_events(leases: Iterable[Lease]) -> list[Event]:
    """Each attempt's claim, and its success if it succeeded."""
    out = []
    for lease in leases:
        out.append(claimed_event(lease))
        if lease.outcome == LeaseOutcome.SUCCEEDED and lease.released_at is not None:
            out.append(succeeded_event(lease))
    return out


def _newest_first(stored: list[Event], derived: list[Event], limit: int) -> list[Event]:
    # Stored rows first on a tie: a claim and the events of its commit share one transaction's clock.
    merged = sorted(stored + derived, key=lambda e: e.created_at, reverse=True)
    return merged[:limit]


def run_events(run: Run, *, limit: int = 50) -> list[Event]:
    """The newest ``limit`` events of a run, the routine ones read from its attempts."""
    stored = list(Event.objects.filter(run=run).order_by("-id")[:limit])
    leases = {le.id: le for le in _leases().filter(run=run).order_by("-claimed_at", "-id")[:limit]}
    # A long attempt can succeed after many later claims: its success is among the newest too.
    for le in _leases().filter(run=run, outcome=LeaseOutcome.SUCCEEDED).order_by("-released_at")[:limit]:
        leases.setdefault(le.id, le)
    return _newest_first(stored, attempt_events(leases.values()), limit)


def step_events(run: Run, step_id: str, *, limit: int = 100) -> list[Event]:
    stored = list(Event.objects.filter(run=run, step_id=step_id).order_by("-id")[:limit])
    leases = _leases().filter(run=run, step__step_id=step_id).order_by("-claimed_at", "-id")[:limit]
    return _newest_first(stored, attempt_events(leases), limit)


def console_source(filters: Any) -> tuple[QuerySet[Any], tuple[str, ...], tuple[bool, ...],
                                         Callable[[list[Any]], list[Event]]]:
    """The rows the events console and API page through, their keyset order, and how they become events.

    ``filters`` is ``forms.EventFilters``, which lets a routine kind (``step_claimed`` /
    ``step_succeeded``) be chosen only alone: that pages through attempt rows (by claim or by
    success), newest or oldest first; every other choice pages through stored events in its sort.
    """
    kinds = [k for k in filters.kind if k in DERIVED_KINDS]
    if not kinds:
        fields, directions = filters.order
        return filters.apply(Event.objects.all()), fields, directions, list
    kind = kinds[0]
    qs = _leases()
    at = "claimed_at"
    convert: Callable[[Lease], Event] = claimed_event
    if kind == EventKind.STEP_SUCCEEDED:
        qs, at, convert = qs.filter(outcome=LeaseOutcome.SUCCEEDED, released_at__isnull=False), "released_at", succeeded_event
    if filters.severity and _SEVERITY[kind] not in filters.severity:
        qs = qs.none()
    if filters.run:
        qs = qs.filter(run_id=filters.run)
    if filters.step:
        qs = qs.filter(step__step_id=filters.step)
    if filters.queue:
        qs = qs.filter(step__queue=filters.queue)
    if filters.worker:
        qs = qs.filter(worker_id=filters.worker)
    if filters.since_at:
        qs = qs.filter(**{f"{at}__gte": filters.since_at})
    if filters.until_at:
        qs = qs.filter(**{f"{at}__lt": filters.until_at})
    return qs, ("id",), (filters.sort != "oldest",), lambda rows: [convert(le) for le in rows]
