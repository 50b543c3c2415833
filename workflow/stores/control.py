"""Operator and fleet control: queues, pause, retry, cancel, worker registry."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.db import (
    transaction,
)
from django.db.models import Q

from ..engine.errors import InvalidState, NotFound
from ..engine.rules import EventKind, LeaseOutcome, Severity
from ..engine.store import WorkerInfo
from ..engine.values import (
    QueueConfig,
    RunState,
    StepState,
)
from ..models import Queue, Run, Step, Worker
from .rows import (
    log,
)

_STRANDED_QUEUES_SQL = (
    f"SELECT DISTINCT queue FROM workflow_step WHERE state = '{StepState.READY}'"
    " AND queue NOT IN (SELECT name FROM workflow_queue)"
)
_QUEUE_ROWS_SQL = "SELECT name, max_workers, rate, per_seconds, burst, paused, tokens, refilled_at FROM workflow_queue"
EDIT_PAYLOAD_MAX_CHARS = 64 * 1024  # an edit event copies both inputs up to this size, else only the diff
EDIT_DIFF_MAX_LINES = 200
_RUN_STATE_SQL = "SELECT state FROM workflow_run WHERE id = %s"
_CANCEL_STEPS_SQL = (
    f"UPDATE workflow_step SET state = '{StepState.CANCELED}', lease_token = NULL, lease_owner = NULL,"
    " lease_expires_at = NULL, finished_at = %s, updated_at = %s"
    f" WHERE run_id = %s AND state IN ('{StepState.PENDING}', '{StepState.READY}', '{StepState.RUNNING}')"
)
_CANCEL_LEASES_SQL = (
    f"UPDATE workflow_lease SET released_at = %s, outcome = '{LeaseOutcome.CANCELED}'"
    " WHERE run_id = %s AND released_at IS NULL"
)
_CANCEL_RUN_SQL = f"UPDATE workflow_run SET state = '{RunState.CANCELED}', finished_at = %s, updated_at = %s WHERE id = %s"


def _fresh_budget(step: Step) -> tuple[dict[str, Any], int]:
    """The retry policy after an operator retry, and its budget.

    The budget resets, the numbering does not: the next lease is attempt N+1, and the policy
    (read by every claim) now allows its own max_attempts more from here.
    """
    policy = dict(step.retry or {})
    budget = int(policy.get("budget", policy.get("max_attempts", step.max_attempts)))
    policy.update(budget=budget, max_attempts=step.attempt + budget)
    return policy, budget


def _what_changed(old: Any, new: Any) -> str:
    """A few words for the edit event's message: the top-level keys that changed, when both are objects."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return ": the whole value replaced" if old != new else ": unchanged"
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, _MISSING) != new.get(k, _MISSING))
    if not keys:
        return ": unchanged"
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return f": {shown} changed"


_MISSING = object()


class ControlStore:
    """Operator and fleet control: queues, pause, retry, cancel, worker registry."""

    # -- queues -----------------------------------------------------------------------------
    def _ensure_queues(self, cursor: Any, names: Iterable[str], now: datetime) -> None:
        missing = set(names) - self._known_queues
        if not missing:
            return
        if not transaction.get_connection(self.using).in_atomic_block:
            raise RuntimeError("queue rows are created in an atomic block: this transaction was opened lean")
        Queue.objects.using(self.using).bulk_create(
            [Queue(name=n, updated_at=now) for n in sorted(missing)], ignore_conflicts=True
        )
        self._remember_queues(missing)

    def _remember_queues(self, names: set[str]) -> None:
        """Add to the known-queues cache once the current transaction commits (never if it rolls back).

        Outside an atomic block (a lean commit, which never creates a queue row) the rows were
        read, not made, by this transaction: they are known at once.
        """
        known = self._known_queues
        if transaction.get_connection(self.using).in_atomic_block:
            transaction.on_commit(lambda: known.update(names), using=self.using)
        else:
            known.update(names)

    def configure_queues(self, queues: Mapping[str, QueueConfig], now: datetime, *, actor: str = "") -> None:
        with self._transaction() as cursor:
            for name, config in queues.items():
                rate = config.rate_limit
                row, created = Queue.objects.using(self.using).get_or_create(
                    name=name, defaults={"updated_at": now, "tokens": float(rate.burst) if rate else 0.0}
                )
                row.max_workers = config.max_workers
                row.rate = rate.rate if rate else None
                row.per_seconds = rate.per.total_seconds() if rate else 1.0
                row.burst = rate.burst if rate else 1
                row.tokens = min(row.tokens, float(row.burst)) if not created else row.tokens
                row.updated_at = now
                row.save(using=self.using)
                self._remember_queues({name})
                if actor:
                    self._insert_events(cursor, [self._event_row(
                        now, EventKind.QUEUE_CONFIGURED, queue=name, actor=actor,
                        message=f"queue {name} set to max_workers={config.max_workers}, rate={row.rate}/{row.per_seconds}s"
                                f" burst={row.burst} by {actor}",
                    )])

    def set_queue_paused(self, name: str, paused: bool, *, actor: str, now: datetime) -> None:
        with self._transaction() as cursor:
            updated = Queue.objects.using(self.using).filter(name=name).update(paused=paused, updated_at=now)
            if not updated:
                raise NotFound(f"queue {name!r} does not exist")
            verb = "paused" if paused else "resumed"
            if not paused:
                self._notify(cursor)
            self._insert_events(cursor, [self._event_row(
                now, EventKind.QUEUE_PAUSED if paused else EventKind.QUEUE_RESUMED,
                severity=Severity.WARNING if paused else Severity.INFO, queue=name, actor=actor,
                message=f"queue {name} {verb}" + (f" by {actor}" if actor else ""),
            )])

    def adopt_queues(self, now: datetime) -> list[str]:
        """Create the queue row of every queue that holds ready steps but has none; return their names.

        Every insert of a step creates its queue row in the same transaction, so this finds only
        steps stranded by older versions (or rows written by hand): an all-queues worker claims by
        the queue table, and would otherwise never look at them. One pass over the ready-only index.
        """
        with self._transaction() as cursor:
            cursor.execute(_STRANDED_QUEUES_SQL)
            missing = sorted(r[0] for r in cursor.fetchall())
            if missing:
                Queue.objects.using(self.using).bulk_create(
                    [Queue(name=n, updated_at=now) for n in missing], ignore_conflicts=True
                )
                log.warning("created queue rows for ready steps no worker saw: %s", ", ".join(missing))
        return missing

    def _queue_rows(self, cursor: Any) -> dict[str, tuple[Any, ...]]:
        cursor.execute(_QUEUE_ROWS_SQL)
        rows = {r[0]: r for r in cursor.fetchall()}
        new = set(rows) - self._known_queues
        if new:
            self._remember_queues(new)
        self._capped_queues = {name for name, r in rows.items() if r[1] is not None}
        return rows

    # -- operator actions -------------------------------------------------------------------
    def retry_step(self, run_id: str, step_id: str, *, actor: str, now: datetime) -> None:
        with self._transaction() as cursor:
            run, step = self._failed_step(run_id, step_id)
            event = self._retry_row(step, now, actor=actor)
            if event is None:
                raise InvalidState(f"step {step_id!r} is no longer failed; only a failed step can be retried")
            self._rerun(cursor, {run_id} if run.state != RunState.RUNNING else set(), now)
            self._insert_events(cursor, [event])

    def retry_steps(self, pairs: Sequence[tuple[str, str]], *, actor: str, now: datetime,
                    payload: Mapping[str, Any] | None = None) -> tuple[int, list[str]]:
        """Retry each failed (run id, step id) in one transaction: one event per step, naming ``actor``.

        The batch's rows are locked in id order (PostgreSQL; SQLite's write lock covers the whole
        transaction), so the checks hold until commit; then one update per group of steps sharing
        an attempt count and retry policy (usually one group), one update of the runs that run
        again and one insert of the events. A step that is not failed, or whose run is canceled,
        is skipped with the reason.
        """
        wanted = list(dict.fromkeys(pairs))
        if not wanted:
            return 0, []
        skipped: list[str] = []
        events: list[tuple[Any, ...]] = []
        rerun: set[str] = set()
        groups: dict[tuple[int, str], list[Step]] = {}
        with self._transaction() as cursor:
            by_run: dict[str, list[str]] = {}
            for run_id, step_id in wanted:
                by_run.setdefault(run_id, []).append(step_id)
            exact = Q()  # one term per run: the batch's exact pairs, never a cross product of runs and ids
            for run_id, step_ids in by_run.items():
                exact |= Q(run_id=run_id, step_id__in=step_ids)
            rows = Step.objects.using(self.using).filter(exact).only("id", "run_id", "step_id", "queue", "state", "attempt", "max_attempts", "retry", "error").order_by("id")
            if self.is_postgres:
                rows = rows.select_for_update(of=("self",))
            found = {(row.run_id, row.step_id): row for row in rows}
            run_states = dict(Run.objects.using(self.using).filter(pk__in={r for r, _ in found})
                              .values_list("id", "state"))
            for run_id, step_id in wanted:
                step = found.get((run_id, step_id))
                if step is None:
                    skipped.append(f"step {step_id!r} does not exist in run {run_id!r}")
                elif run_states.get(run_id) == RunState.CANCELED:
                    skipped.append(f"step {step_id!r}: run {run_id!r} is canceled; its steps cannot be retried")
                elif step.state != StepState.FAILED:
                    skipped.append(f"step {step_id!r} of run {run_id!r} is {step.state}; only a failed step can be retried")
                else:
                    key = (step.attempt, json.dumps(step.retry or {}, sort_keys=True))
                    groups.setdefault(key, []).append(step)
                    if run_states.get(run_id) != RunState.RUNNING:
                        rerun.add(run_id)
            for (attempt, _), steps in groups.items():
                policy, budget = _fresh_budget(steps[0])
                Step.objects.using(self.using).filter(pk__in=[st.pk for st in steps], state=StepState.FAILED).update(
                    state=StepState.READY, max_attempts=attempt + budget, retry=policy, available_at=now,
                    started_at=None, finished_at=None, updated_at=now,
                )
                events.extend(self._retried_event(st, now, actor=actor, budget=budget, payload=payload) for st in steps)
            if events:
                self._rerun(cursor, rerun, now)
                self._insert_events(cursor, events)
        return len(events), skipped

    def retry_step_with_input(self, run_id: str, step_id: str, new_input: Any, *, actor: str, now: datetime) -> None:
        """Retry a failed step with ``new_input``: the input it was made with is kept, the edit audited.

        ``original_input`` holds the step's first input (``{"input": ..., "edits": n, ...}``, so a null
        input is told from no edit); each edit writes a ``step_input_edited`` event carrying the input it
        replaced (when small) and a line diff, then the usual ``step_retried`` event.
        """
        with self._transaction() as cursor:
            run, step = self._failed_step(run_id, step_id)
            previous = step.input
            kept = dict(step.original_input) if isinstance(step.original_input, dict) else {"input": previous, "edits": 0}
            kept.update(edits=int(kept.get("edits", 0)) + 1, edited_by=actor, edited_at=now.isoformat())
            event = self._retry_row(step, now, actor=actor, payload={"input_edited": True},
                                    extra={"input": new_input, "original_input": kept})
            if event is None:
                raise InvalidState(f"step {step_id!r} is no longer failed; only a failed step can be retried")
            self._rerun(cursor, {run_id} if run.state != RunState.RUNNING else set(), now)
            old_text = json.dumps(previous, indent=2, sort_keys=True, ensure_ascii=False)
            new_text = json.dumps(new_input, indent=2, sort_keys=True, ensure_ascii=False)
            diff = list(difflib.unified_diff(old_text.splitlines(), new_text.splitlines(), "before", "after",
                                             lineterm="", n=1))[2:]
            small = len(old_text) <= EDIT_PAYLOAD_MAX_CHARS and len(new_text) <= EDIT_PAYLOAD_MAX_CHARS
            self._insert_events(cursor, [self._event_row(
                now, EventKind.STEP_INPUT_EDITED, severity=Severity.WARNING, run_id=run_id, step_id=step_id,
                queue=step.queue, actor=actor,
                message=(f"input edited by {actor}" if actor else "input edited") + _what_changed(previous, new_input),
                payload={"previous_input": previous if small else None, "input": new_input if small else None,
                         "too_large_to_copy": not small, "diff": diff[:EDIT_DIFF_MAX_LINES],
                         "diff_truncated": len(diff) > EDIT_DIFF_MAX_LINES, "edits": kept["edits"]},
            ), event])

    def _failed_step(self, run_id: str, step_id: str) -> tuple[Run, Step]:
        run = Run.objects.using(self.using).filter(pk=run_id).first()
        if run is None:
            raise NotFound(f"run {run_id!r} does not exist")
        step = Step.objects.using(self.using).filter(run_id=run_id, step_id=step_id).first()
        if step is None:
            raise NotFound(f"step {step_id!r} does not exist in run {run_id!r}")
        if step.state != StepState.FAILED:
            raise InvalidState(f"step {step_id!r} is {step.state}; only a failed step can be retried")
        if run.state == RunState.CANCELED:
            raise InvalidState(f"run {run_id!r} is canceled; its steps cannot be retried")
        return run, step

    def _retry_row(self, step: Step, now: datetime, *, actor: str, payload: Mapping[str, Any] | None = None,
                   extra: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        """Move one failed step back to ready (compare-and-set); its event row, or None if it was not failed."""
        policy, budget = _fresh_budget(step)
        updated = Step.objects.using(self.using).filter(pk=step.pk, state=StepState.FAILED).update(
            state=StepState.READY, max_attempts=step.attempt + budget, retry=policy, available_at=now,
            started_at=None, finished_at=None, updated_at=now, **(extra or {}),
        )
        if not updated:
            return None
        return self._retried_event(step, now, actor=actor, budget=budget, payload=payload)

    def _retried_event(self, step: Step, now: datetime, *, actor: str, budget: int,
                       payload: Mapping[str, Any] | None) -> tuple[Any, ...]:
        return self._event_row(
            now, EventKind.STEP_RETRIED, severity=Severity.INFO, run_id=step.run_id, step_id=step.step_id,
            queue=step.queue, actor=actor, message=f"retried by {actor}" if actor else "retried",
            payload={"previous_error": step.error_code, "next_attempt": step.attempt + 1,
                     "max_attempts": step.attempt + budget, **(payload or {})},
        )

    def _rerun(self, cursor: Any, run_ids: set[str], now: datetime) -> None:
        """The runs of retried steps are running again; wake idle workers on other hosts."""
        if run_ids:
            Run.objects.using(self.using).filter(pk__in=run_ids).exclude(state=RunState.CANCELED).update(
                state=RunState.RUNNING, finished_at=None, updated_at=now
            )
        self._notify(cursor)

    def cancel_run(self, run_id: str, *, actor: str, now: datetime) -> int:
        with self._transaction() as cursor:
            cursor.execute(_RUN_STATE_SQL + self._lock_suffix(), [run_id])
            row = cursor.fetchone()
            if row is None:
                raise NotFound(f"run {run_id!r} does not exist")
            if RunState(row[0]).is_terminal:
                raise InvalidState(f"run {run_id!r} is already {row[0]}; only an active run can be canceled")
            now_db = self._dt(now)
            cursor.execute(_CANCEL_STEPS_SQL, [now_db, now_db, run_id])
            canceled = cursor.rowcount
            cursor.execute(_CANCEL_LEASES_SQL, [now_db, run_id])
            cursor.execute(_CANCEL_RUN_SQL, [now_db, now_db, run_id])
            self._insert_events(cursor, [self._event_row(
                now, EventKind.RUN_CANCELED, severity=Severity.WARNING, run_id=run_id, actor=actor,
                message=(f"canceled by {actor}" if actor else "canceled") + f"; {canceled} steps canceled",
                payload={"steps_canceled": canceled},
            )])
        return canceled

    # -- workers ------------------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo, now: datetime) -> None:
        Worker.objects.using(self.using).update_or_create(
            id=info.worker_id,
            defaults={
                "host": info.host, "pid": info.pid, "queues": list(info.queues) if info.queues else None,
                "site": info.site or "", "max_workers": info.max_workers, "running": 0, "started_at": now,
                "seen_at": now, "stopped_at": None,
            },
        )
        self.record_event(EventKind.WORKER_STARTED, worker_id=info.worker_id, now=now,
                          message=f"worker started on {info.host} (pid {info.pid})")

    def worker_seen(self, worker_id: str, running: int, now: datetime) -> None:
        Worker.objects.using(self.using).filter(pk=worker_id).update(seen_at=now, running=running)

    def worker_stopped(self, worker_id: str, now: datetime) -> None:
        Worker.objects.using(self.using).filter(pk=worker_id).update(seen_at=now, running=0, stopped_at=now)
        self.record_event(EventKind.WORKER_STOPPED, worker_id=worker_id, now=now, message="worker stopped")
