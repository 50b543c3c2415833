"""The engine's store on Django's database connection: the one place that writes engine rows.

The hot paths (claim, commit, heartbeat) are raw SQL batched with ``executemany`` on Django's
own connection, because per-row ORM updates cost an order of magnitude more (see
``shared/toolchain.md``). Everything else uses the ORM. The same SQL serves SQLite and
PostgreSQL; where they differ (row locks, ``INDEXED BY``) the difference is named here.

Fencing: a commit applies only to steps that are still ``running`` under the committing
attempt's lease token, and (except for a reclaim) whose lease has not expired.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)
from django.db.models import Count
from django.utils.dateparse import parse_datetime

from .engine.builder import validate_graph
from .engine.errors import InvalidGraph, InvalidState, NotFound, RunConflict, StoreUnavailable
from .engine.store import ClaimResult, WorkerInfo
from .engine.values import (
    TERMINAL_STEP_STATES,
    ClaimedStep,
    ClaimRequest,
    CommitReport,
    ErrorInfo,
    LeaseInfo,
    NewRun,
    Outcome,
    QueueConfig,
    RecordInfo,
    RetryPolicy,
    RunHandle,
    RunInfo,
    RunState,
    StepResult,
    StepSpec,
    StepState,
)
from .models import Queue, Record, Run, Step, Worker

log = logging.getLogger("workflow.store")

CHUNK = 500
_EVENT_SQL = (
    "INSERT INTO workflow_event (created_at, kind, severity, run_id, step_id, queue, worker_id, actor, message, payload)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(n: int) -> str:
    return ", ".join(["%s"] * n)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _lease_token() -> str:
    """A unique fencing token that sorts by time: its unique index grows at the right edge, so
    inserting one stays cheap however many leases history holds (a random uuid4 would land on
    a random page of that index)."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


def _loads(value: Any) -> Any:
    if isinstance(value, (str, bytes, bytearray)):
        return json.loads(value)
    return value


class DjangoStore:
    """Implements ``workflow.engine.store.Store`` on a Django database alias."""

    def __init__(self, using: str = "default") -> None:
        self.using = using
        self._known_queues: set[str] = set()
        self._round_robin = 0
        self._dt_memo: tuple[Any, Any] = (None, None)
        self._policies: dict[Any, RetryPolicy] = {}

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def connection(self) -> Any:
        return connections[self.using]

    @property
    def is_postgres(self) -> bool:
        return self.connection.vendor == "postgresql"

    def _dt(self, value: datetime | None) -> Any:
        """A datetime as the database driver takes it; the last one is memoised (``now`` repeats)."""
        if value is None:
            return None
        memo = self._dt_memo
        if memo[0] is value:
            return memo[1]
        adapted = self.connection.ops.adapt_datetimefield_value(value)
        self._dt_memo = (value, adapted)
        return adapted

    @staticmethod
    def _parse_dt(value: Any) -> datetime | None:
        """Read a timestamp from a raw row: SQLite returns naive UTC text, PostgreSQL aware datetimes."""
        if value is None:
            return None
        parsed = value if isinstance(value, datetime) else parse_datetime(value)
        if parsed is not None and parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """One atomic block; a lost or locked database becomes ``StoreUnavailable``."""
        try:
            with transaction.atomic(using=self.using):
                # A plain cursor even under DEBUG: logging every hot-path query costs more than the SQL.
                conn = self.connection
                with conn.make_cursor(conn.create_cursor()) as cursor:
                    yield cursor
        except (OperationalError, InterfaceError) as exc:
            self._reset_connection()
            raise StoreUnavailable(str(exc)) from exc

    def _reset_connection(self) -> None:
        try:
            self.connection.close()
        except DatabaseError:
            pass

    def _lock_suffix(self, mode: str = "UPDATE") -> str:
        return f" FOR {mode}" if self.is_postgres else ""

    def after_step(self) -> None:
        for conn in connections.all(initialized_only=True):
            conn.close_if_unusable_or_obsolete()

    def _insert_events(self, cursor: Any, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            cursor.executemany(_EVENT_SQL, rows)

    def _event_row(
        self,
        now: datetime,
        kind: str,
        *,
        severity: str = "info",
        run_id: str | None = None,
        step_id: str | None = None,
        queue: str = "",
        worker_id: str = "",
        actor: str = "",
        message: str = "",
        payload: Mapping[str, Any] | None = None,
    ) -> tuple[Any, ...]:
        return (self._dt(now), kind, severity, run_id, step_id, queue, worker_id, actor, message,
                _dumps(dict(payload or {})))

    def record_event(self, kind: str, *, severity: str = "info", message: str = "", **fields: Any) -> None:
        from django.utils import timezone

        now = fields.pop("now", None) or timezone.now()
        with self._transaction() as cursor:
            self._insert_events(cursor, [self._event_row(now, kind, severity=severity, message=message, **fields)])

    # -- runs -----------------------------------------------------------------------------
    def create_run(self, run: NewRun, now: datetime) -> RunHandle:
        try:
            with transaction.atomic(using=self.using):
                if Run.objects.using(self.using).filter(pk=run.id).exists():
                    raise RunConflict(f"run {run.id!r} already exists")
                Run.objects.using(self.using).create(
                    id=run.id, package=run.package, name=run.name, input=run.input, metadata=dict(run.metadata),
                    state=RunState.PENDING, created_at=now, updated_at=now,
                )
                with self.connection.cursor() as cursor:
                    self._ensure_queues(cursor, {s.queue for s in run.steps}, now)
                    self._insert_steps(cursor, run.id, run.steps, existing={}, now=now)
                    self._notify(cursor)
                    self._insert_events(cursor, [self._event_row(
                        now, "run_created", run_id=run.id, message=f"run created with {len(run.steps)} steps",
                        payload={"package": run.package, "steps": len(run.steps)},
                    )])
        except IntegrityError as exc:
            raise RunConflict(f"run {run.id!r} already exists") from exc
        except (OperationalError, InterfaceError) as exc:
            self._reset_connection()
            raise StoreUnavailable(str(exc)) from exc
        return RunHandle(id=run.id, package=run.package, name=run.name)

    def _insert_steps(
        self, cursor: Any, run_id: str, specs: Sequence[StepSpec], *, existing: Mapping[str, tuple[int, str]],
        now: datetime,
    ) -> int:
        """Insert steps and their edges; ``existing`` maps step ids already in the run to (pk, state).

        Returns how many were inserted ready.
        """
        states: dict[str, str] = {}
        pending: dict[str, int] = {}
        for spec in specs:
            unmet = sum(
                1 for dep in spec.depends_on if dep.step_id not in existing or not dep.is_met_by(existing[dep.step_id][1])
            )
            pending[spec.id] = unmet
            states[spec.id] = StepState.READY if unmet == 0 else StepState.PENDING
        # Multi-row INSERT ... RETURNING: one statement per 500 steps, and the new ids come back with it.
        now_db = self._dt(now)
        retry_json: dict[Any, str] = {}
        rows = []
        for s_ in specs:
            retry = retry_json.get(s_.retry) or retry_json.setdefault(s_.retry, _dumps(s_.retry.to_json()) or "{}")
            rows.append((
                run_id, s_.id, s_.kind, s_.queue, s_.site, s_.parent_id, s_.dedup_key, _dumps(s_.input),
                _dumps(dict(s_.metadata)), retry, str(states[s_.id]), s_.retry.max_attempts, pending[s_.id],
                now_db, now_db, now_db,
            ))
        pks: dict[str, int] = {}
        columns = (
            "run_id, step_id, kind, queue, site, parent_step_id, dedup_key, input, metadata, retry, state,"
            " max_attempts, pending_deps, available_at, created_at, updated_at, attempt"
        )
        row_marks = "(" + ", ".join(["%s"] * 16) + ", 0)"
        for chunk in _chunks(rows):
            cursor.execute(
                f"INSERT INTO workflow_step ({columns}) VALUES {', '.join([row_marks] * len(chunk))}"
                " RETURNING id, step_id",
                [value for row in chunk for value in row],
            )
            pks.update((sid, pk) for pk, sid in cursor.fetchall())
        edges = []
        for spec in specs:
            for dep in spec.depends_on:
                if dep.step_id in existing:
                    target_pk, state = existing[dep.step_id]
                    satisfied = dep.is_met_by(state)
                else:
                    target_pk, satisfied = pks[dep.step_id], False
                edges.append((run_id, pks[spec.id], target_pk, dep.required, satisfied))
        if edges:
            cursor.executemany(
                "INSERT INTO workflow_dependency (run_id, step_id, depends_on_id, required, satisfied)"
                " VALUES (%s, %s, %s, %s, %s)",
                edges,
            )
        return sum(1 for s in states.values() if s == StepState.READY)

    def find_run(self, run_id: str) -> RunInfo | None:
        run = Run.objects.using(self.using).filter(pk=run_id).first()
        return None if run is None else self._run_info(run, {})

    def run_info(self, run_id: str, *, with_counts: bool = False) -> RunInfo:
        run = Run.objects.using(self.using).filter(pk=run_id).first()
        if run is None:
            raise NotFound(f"run {run_id!r} does not exist")
        counts: dict[str, int] = {}
        if with_counts:
            rows = Step.objects.using(self.using).filter(run_id=run_id).values("state").annotate(n=Count("id"))
            counts = {r["state"]: r["n"] for r in rows.order_by()}
        return self._run_info(run, counts)

    @staticmethod
    def _run_info(run: Run, counts: dict[str, int]) -> RunInfo:
        return RunInfo(
            id=run.id, package=run.package, name=run.name, state=RunState(run.state), input=run.input,
            metadata=run.metadata, created_at=run.created_at, started_at=run.started_at,
            finished_at=run.finished_at, step_counts=counts,
        )

    def step_result(self, run_id: str, step_id: str) -> StepResult | None:
        step = Step.objects.using(self.using).filter(run_id=run_id, step_id=step_id).first()
        if step is None:
            return None
        return StepResult(
            run_id=run_id, step_id=step_id, state=StepState(step.state), data=step.result,
            error=ErrorInfo.from_json(step.error) if step.error else None, attempt=step.attempt,
            finished_at=step.finished_at,
        )

    def get_record(self, collection: str, key: str) -> RecordInfo | None:
        row = Record.objects.using(self.using).filter(collection=collection, key=key).first()
        return None if row is None else self._record(row)

    def list_records(self, collection: str, *, after_key: str = "", limit: int = 100) -> list[RecordInfo]:
        rows = Record.objects.using(self.using).filter(collection=collection, key__gt=after_key).order_by("key")
        return [self._record(r) for r in rows[:limit]]

    @staticmethod
    def _record(row: Record) -> RecordInfo:
        return RecordInfo(collection=row.collection, key=row.key, data=row.data, run_id=row.run_id,
                          step_id=row.step_id, updated_at=row.updated_at)

    # -- queues -----------------------------------------------------------------------------
    def _ensure_queues(self, cursor: Any, names: Iterable[str], now: datetime) -> None:
        missing = set(names) - self._known_queues
        if not missing:
            return
        Queue.objects.using(self.using).bulk_create(
            [Queue(name=n, updated_at=now) for n in sorted(missing)], ignore_conflicts=True
        )
        self._known_queues |= missing

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
                self._known_queues.add(name)
                if actor:
                    self._insert_events(cursor, [self._event_row(
                        now, "queue_configured", queue=name, actor=actor,
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
                now, f"queue_{verb}", severity="warning" if paused else "info", queue=name, actor=actor,
                message=f"queue {name} {verb}" + (f" by {actor}" if actor else ""),
            )])

    def _queue_rows(self, cursor: Any) -> dict[str, tuple[Any, ...]]:
        cursor.execute("SELECT name, max_workers, rate, per_seconds, burst, paused, tokens, refilled_at FROM workflow_queue")
        rows = {r[0]: r for r in cursor.fetchall()}
        self._known_queues |= set(rows)
        return rows

    # -- claim --------------------------------------------------------------------------------
    def _claim(self, cursor: Any, req: ClaimRequest, now: datetime) -> ClaimResult:
        queues = self._queue_rows(cursor)
        wanted = req.queues or sorted(queues)
        throttled = [(n, "paused") for n in wanted if n in queues and queues[n][5]]
        names = [n for n in wanted if not (n in queues and queues[n][5])]
        if names:
            self._round_robin = (self._round_robin + 1) % len(names)
            names = names[self._round_robin :] + names[: self._round_robin]
        sites = ["", req.site] if req.site else [""]
        claim_sql = self.claim_sql(len(sites))
        remaining = req.limit
        lease_now = self._locked_now(req, now) if not self.is_postgres else now  # SQLite: BEGIN IMMEDIATE holds the lock
        rows: list[tuple[Any, ...]] = []
        hints: list[float] = []
        for name in names:
            if remaining <= 0:
                break
            allowance = remaining
            row = queues.get(name)
            limited = row is not None and (row[1] is not None or row[2] is not None)
            tokens = 0.0
            if limited:
                allowance, tokens, hint, claim_now = self._queue_allowance(cursor, name, allowance, now, req)
                lease_now = max(lease_now, claim_now)
                if hint is not None:
                    hints.append(hint)
                if allowance <= 0:
                    throttled.append((name, "rate" if row is not None and row[2] is not None and tokens < 1
                                      else "cap"))
                    continue
            cursor.execute(claim_sql, [name, self._dt(now), *sites, allowance])
            got = cursor.fetchall()
            if limited and row is not None and row[2] is not None and got:
                cursor.execute("UPDATE workflow_queue SET tokens = %s WHERE name = %s", [tokens - len(got), name])
            rows.extend(got)
            remaining -= len(got)
        claimed = self._lease(cursor, rows, req, lease_now) if rows else ()
        wake_in: float | None = 0.0
        if remaining > 0:
            wake_in = self._next_due(cursor, names, sites, now)
            if hints:
                wake_in = min([h for h in hints] + ([wake_in] if wake_in is not None else []))
        return ClaimResult(steps=claimed, wake_in=wake_in, throttled=tuple(throttled))

    def claim_sql(self, site_count: int) -> str:
        """The claim query: oldest due ready steps of one queue, read through the ready-only index.

        SQLite is told the index (``INDEXED BY``): after an ANALYZE taken while every row was
        ready it would otherwise scan history. PostgreSQL skips rows other workers are claiming.
        """
        index_hint = "" if self.is_postgres else " INDEXED BY step_ready_idx"
        skip_locked = " FOR UPDATE SKIP LOCKED" if self.is_postgres else ""
        return (
            "SELECT id, run_id, step_id, kind, queue, site, input, metadata, parent_step_id, retry, attempt, available_at"
            f" FROM workflow_step{index_hint} WHERE state = 'ready' AND queue = %s AND available_at <= %s"
            f" AND site IN ({_marks(site_count)}) ORDER BY available_at, id LIMIT %s{skip_locked}"
        )

    def _retry_policy(self, raw: Any) -> RetryPolicy:
        """Parse a step's retry policy once per distinct JSON text: a run's steps mostly share one."""
        policy = self._policies.get(raw)
        if policy is None:
            if len(self._policies) > 1000:
                self._policies.clear()
            policy = self._policies[raw] = RetryPolicy.from_json(_loads(raw))
        return policy

    @staticmethod
    def _locked_now(req: ClaimRequest, now: datetime) -> datetime:
        return max(now, req.clock()) if req.clock else now

    def _queue_allowance(
        self, cursor: Any, name: str, wanted: int, now: datetime, req: ClaimRequest
    ) -> tuple[int, float, float | None, datetime]:
        """Lock a limited queue's row; return (steps it may start, tokens left, wake hint, claim time).

        The claim time is never earlier than the bucket's last refill: a worker that waited for
        the lock must not stamp its leases before the tokens it spends existed.
        """
        cursor.execute(
            "SELECT max_workers, rate, per_seconds, burst, tokens, refilled_at FROM workflow_queue WHERE name = %s"
            + self._lock_suffix(),
            [name],
        )
        max_workers, rate, per_seconds, burst, tokens, refilled_at = cursor.fetchone()
        now = self._locked_now(req, now)
        allowance = wanted
        hint = None
        if max_workers is not None:
            cursor.execute("SELECT COUNT(*) FROM workflow_step WHERE state = 'running' AND queue = %s", [name])
            allowance = min(allowance, max_workers - cursor.fetchone()[0])
        last = self._parse_dt(refilled_at)
        if last is not None and last > now:
            now = last
        if rate is not None:
            per_second = rate / per_seconds
            elapsed = (now - last).total_seconds() if last else math.inf
            tokens = min(float(burst), (tokens or 0.0) + elapsed * per_second)
            cursor.execute(
                "UPDATE workflow_queue SET tokens = %s, refilled_at = %s WHERE name = %s", [tokens, self._dt(now), name]
            )
            allowance = min(allowance, int(math.floor(tokens)))
            if tokens < 1:
                hint = (1 - tokens) / per_second
        return allowance, tokens, hint, now

    def _next_due(self, cursor: Any, names: list[str], sites: list[str], now: datetime) -> float | None:
        if not names:
            return None
        cursor.execute(
            f"SELECT MIN(available_at) FROM workflow_step WHERE state = 'ready' AND queue IN ({_marks(len(names))})"
            f" AND site IN ({_marks(len(sites))})",
            [*names, *sites],
        )
        due = self._parse_dt(cursor.fetchone()[0])
        if due is None:
            return None
        return max((due - now).total_seconds(), 0.0)

    def _lease(self, cursor: Any, rows: list[tuple[Any, ...]], req: ClaimRequest, now: datetime) -> tuple[ClaimedStep, ...]:
        expires = now + req.lease_duration
        now_db, expires_db = self._dt(now), self._dt(expires)
        claimed: list[ClaimedStep] = []
        step_updates, lease_rows, events = [], [], []
        for pk, run_id, step_id, kind, queue, site, raw_input, metadata, parent, retry, attempt, available in rows:
            token = _lease_token()
            attempt += 1
            step_updates.append((token, req.worker_id, expires_db, now_db, now_db, pk))
            lease_rows.append((pk, run_id, attempt, req.worker_id, token, now_db, expires_db))
            events.append(self._event_row(now, "step_claimed", severity="debug", run_id=run_id, step_id=step_id,
                                          queue=queue, worker_id=req.worker_id, payload={"attempt": attempt}))
            claimed.append(ClaimedStep(
                pk=pk, run_id=run_id, step_id=step_id, kind=kind, queue=queue, site=site, input=_loads(raw_input),
                metadata=_loads(metadata) or {}, parent_id=parent, retry=self._retry_policy(retry),
                lease=LeaseInfo(token=token, worker_id=req.worker_id, attempt=attempt, claimed_at=now,
                                expires_at=expires),
                available_at=self._parse_dt(available),
            ))
        cursor.executemany(
            "UPDATE workflow_step SET state = 'running', attempt = attempt + 1, lease_token = %s, lease_owner = %s,"
            " lease_expires_at = %s, started_at = COALESCE(started_at, %s), updated_at = %s WHERE id = %s",
            step_updates,
        )
        cursor.executemany(
            "INSERT INTO workflow_lease (step_id, run_id, attempt, worker_id, token, claimed_at, expires_at, outcome,"
            " error_code, error_message, log) VALUES (%s, %s, %s, %s, %s, %s, %s, '', '', '', '')",
            lease_rows,
        )
        self._insert_events(cursor, events)
        run_ids = sorted({c.run_id for c in claimed})
        for chunk in _chunks(run_ids):
            cursor.execute(
                f"UPDATE workflow_run SET state = 'running', started_at = %s, updated_at = %s"
                f" WHERE id IN ({_marks(len(chunk))}) AND state = 'pending'",
                [now_db, now_db, *chunk],
            )
        return tuple(claimed)

    # -- commit ----------------------------------------------------------------------------
    def complete_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimRequest | None, now: datetime
    ) -> tuple[CommitReport, ClaimResult]:
        # Lock order, the same in every transaction so concurrent workers cannot deadlock:
        # own steps -> dependents (sorted) -> queue rows -> run rows. So runs settle last.
        with self._transaction() as cursor:
            report, touched = self._commit(cursor, outcomes, now) if outcomes else (CommitReport(), [])
            claimed = self._claim(cursor, claim, now) if claim else ClaimResult(steps=(), wake_in=None)
            if touched:
                report = replace(report, runs_finished=tuple(self._settle_runs(cursor, touched, now)))
        return report, claimed

    def _commit(self, cursor: Any, outcomes: Sequence[Outcome], now: datetime) -> tuple[CommitReport, list[str]]:
        """Apply the outcomes still holding their lease; return the report and the runs to settle."""
        now_db = self._dt(now)
        live: set[tuple[int, str]] = set()
        pks = sorted({o.step.pk for o in outcomes})
        for chunk in _chunks(pks):
            cursor.execute(
                f"SELECT id, lease_token, lease_expires_at FROM workflow_step WHERE id IN ({_marks(len(chunk))})"
                " AND state = 'running' ORDER BY id" + self._lock_suffix(),
                list(chunk),
            )
            for pk, token, expires in cursor.fetchall():
                expired = (self._parse_dt(expires) or now) < now
                live.add((pk, token, expired))  # type: ignore[arg-type]
        valid: list[Outcome] = []
        fenced: list[Outcome] = []
        for outcome in outcomes:
            key = (outcome.step.pk, outcome.step.lease.token)
            reclaim = outcome.lease_outcome == "expired"
            if (*key, False) in live or (reclaim and (*key, True) in live):
                valid.append(outcome)
            else:
                fenced.append(outcome)
        resolved: dict[str, tuple[list[StepSpec], dict[str, tuple[int, str]]]] = {}
        valid = [self._with_children_checked(cursor, o, resolved) for o in valid]
        events: list[tuple[Any, ...]] = []
        step_updates, lease_updates = [], []
        succeeded = retried = failed = 0
        for o in valid:
            state = o.next_state
            terminal = state in TERMINAL_STEP_STATES
            error = o.error.to_json() if o.error else None
            step_updates.append((
                str(state), _dumps(o.result) if state == StepState.SUCCEEDED else None, _dumps(error),
                self._dt(o.available_at or now), now_db if terminal else None, now_db, o.step.pk,
            ))
            lease_updates.append((
                now_db, o.lease_outcome or str(state), o.error.code if o.error else "",
                o.error.message[:10000] if o.error else "", o.log, self._dt(o.started_at), o.step.lease.token,
            ))
            events.append(self._outcome_event(o, now))
            if state == StepState.SUCCEEDED:
                succeeded += 1
            elif state == StepState.READY:
                retried += 1
            else:
                failed += 1
        if step_updates:
            cursor.executemany(
                "UPDATE workflow_step SET state = %s, result = %s, error = %s, available_at = %s, finished_at = %s,"
                " updated_at = %s, lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL WHERE id = %s",
                step_updates,
            )
            cursor.executemany(
                "UPDATE workflow_lease SET released_at = %s, outcome = %s, error_code = %s, error_message = %s,"
                " log = %s, started_at = %s WHERE token = %s",
                lease_updates,
            )
        already = self._already_committed(cursor, fenced)
        for o in fenced:
            if o.lease_outcome == "expired" or o.step.lease.token in already:
                # The worker committed first (a reclaim lost the race), or this very commit went
                # through before the connection dropped and is being retried: nothing to reject.
                continue
            events.append(self._event_row(
                now, "commit_rejected", severity="warning", run_id=o.step.run_id, step_id=o.step.step_id,
                queue=o.step.queue, worker_id=o.step.lease.worker_id,
                message="late commit discarded: the lease had expired, was revoked, or the run was canceled",
                payload={"attempt": o.step.attempt, "token": o.step.lease.token, "would_be": str(o.next_state)},
            ))
            cursor.execute(
                "UPDATE workflow_lease SET log = %s, released_at = COALESCE(released_at, %s),"
                " outcome = CASE WHEN outcome = '' THEN 'discarded' ELSE outcome END WHERE token = %s",
                [o.log, now_db, o.step.lease.token],
            )
        made_ready = 0
        for o in valid:
            if o.next_state == StepState.SUCCEEDED:
                made_ready += self._write_products(cursor, o, now, resolved.get(o.step.lease.token))
        made_ready += self._release_dependents(cursor, valid, now)
        self._insert_events(cursor, events)
        if made_ready:
            self._notify(cursor)
        rejected = frozenset(
            o.step.lease.token for o in fenced if o.lease_outcome != "expired" and o.step.lease.token not in already
        )
        report = CommitReport(
            committed=len(valid),
            discarded=len(rejected),
            rejected=rejected,
            succeeded=succeeded, retried=retried, failed=failed, made_ready=made_ready,
        )
        return report, sorted({o.step.run_id for o in valid})

    @staticmethod
    def _already_committed(cursor: Any, fenced: Sequence[Outcome]) -> set[str]:
        """Tokens whose lease row already records this very outcome (a retried, applied commit)."""
        wanted = {o.step.lease.token: o.lease_outcome for o in fenced if o.lease_outcome != "expired"}
        found: set[str] = set()
        tokens = sorted(wanted)
        for chunk in _chunks(tokens):
            cursor.execute(f"SELECT token, outcome FROM workflow_lease WHERE token IN ({_marks(len(chunk))})", list(chunk))
            found.update(token for token, outcome in cursor.fetchall() if outcome and outcome == wanted[token])
        return found

    # -- wake-ups (PostgreSQL LISTEN/NOTIFY) -----------------------------------------------------
    CHANNEL = "workflow_ready"

    def _notify(self, cursor: Any) -> None:
        """Tell idle workers on other hosts that steps became ready (delivered at commit)."""
        if self.is_postgres:
            cursor.execute("SELECT pg_notify(%s, '')", [self.CHANNEL])

    def listen(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake`` whenever another process makes steps ready; return a function that stops it.

        PostgreSQL only (None elsewhere). The listener has its own connection and reconnects
        with backoff when the server goes away.
        """
        if not self.is_postgres:
            return None
        import psycopg

        params = self.connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        stopped = threading.Event()

        def loop() -> None:
            delay = 0.1
            while not stopped.is_set():
                try:
                    with psycopg.connect(**params, autocommit=True) as conn:
                        conn.execute(f"LISTEN {self.CHANNEL}")
                        delay = 0.1
                        wake()  # anything made ready while we were not listening
                        while not stopped.is_set():
                            for _ in conn.notifies(timeout=1.0, stop_after=1):
                                wake()
                except Exception as exc:  # the server restarted or the network blinked
                    log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                    stopped.wait(delay)
                    delay = min(delay * 2, 10.0)

        thread = threading.Thread(target=loop, name="workflow-listen", daemon=True)
        thread.start()
        return stopped.set

    def start_checkpointer(self, interval: float = 1.0) -> Callable[[], None] | None:
        """SQLite: checkpoint the WAL from a side thread, so no commit on the loop pays for it.

        Left to SQLite, every thousandth page written makes one commit copy the WAL back into
        the database, which is most of a chain's p99 latency. PostgreSQL: nothing to do (None).
        """
        if self.connection.vendor != "sqlite":
            return None
        import sqlite3

        with self.connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        path = self.connection.settings_dict["NAME"]
        stopped = threading.Event()

        def loop() -> None:
            conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
            try:
                while not stopped.wait(interval):
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error as exc:  # busy or locked: the next round catches up
                        log.debug("checkpoint skipped: %s", exc)
            finally:
                conn.close()

        threading.Thread(target=loop, name="workflow-checkpoint", daemon=True).start()
        return stopped.set

    def _outcome_event(self, o: Outcome, now: datetime) -> tuple[Any, ...]:
        step = o.step
        payload: dict[str, Any] = {"attempt": step.attempt, "max_attempts": step.retry.max_attempts}
        if o.started_at and o.finished_at:
            payload["duration_ms"] = round((o.finished_at - o.started_at).total_seconds() * 1000, 3)
        if o.error:
            payload.update(code=o.error.code, message=o.error.message[:2000], retryable=o.error.retryable)
        if o.next_state == StepState.SUCCEEDED:
            kind, severity, message = "step_succeeded", "info", "step succeeded"
            if o.children:
                payload["emitted"] = len(o.children)
        elif o.next_state == StepState.READY:
            payload["next_attempt_at"] = o.available_at.isoformat() if o.available_at else None
            kind = "lease_expired" if o.lease_outcome == "expired" else "step_retrying"
            severity, message = "warning", f"attempt {step.attempt} failed with {o.error.code if o.error else '?'}; will retry"
        else:
            kind = "lease_expired" if o.lease_outcome == "expired" else "step_failed"
            severity, message = "error", f"step failed with {o.error.code if o.error else '?'}"
        return self._event_row(now, kind, severity=severity, run_id=step.run_id, step_id=step.step_id,
                               queue=step.queue, worker_id=step.lease.worker_id, message=message, payload=payload)

    def _with_children_checked(self, cursor: Any, o: Outcome, resolved: dict[str, Any]) -> Outcome:
        """Check emitted children against the run; a bad graph fails the step, never the worker."""
        if o.next_state != StepState.SUCCEEDED or not o.children:
            return o
        try:
            resolved[o.step.lease.token] = self._resolve_children(cursor, o)
        except InvalidGraph as exc:
            error = ErrorInfo(code="invalid_graph", message=str(exc), retryable=False)
            return Outcome(step=o.step, next_state=StepState.FAILED, error=error, log=o.log, started_at=o.started_at,
                           finished_at=o.finished_at, lease_outcome="failed")
        return o

    def _resolve_children(self, cursor: Any, o: Outcome) -> tuple[list[StepSpec], dict[str, tuple[int, str]]]:
        run_id = o.step.run_id
        children = list(o.children)
        wanted = {c.id for c in children} | {d.step_id for c in children for d in c.depends_on}
        dedup_keys = {c.dedup_key for c in children if c.dedup_key}
        existing: dict[str, tuple[int, str]] = {}
        by_dedup: dict[str, str] = {}
        names = sorted(wanted)
        for chunk in _chunks(names):
            cursor.execute(
                f"SELECT id, step_id, state, dedup_key FROM workflow_step WHERE run_id = %s AND step_id IN"
                f" ({_marks(len(chunk))})" + self._lock_suffix("SHARE"),
                [run_id, *chunk],
            )
            for pk, sid, state, dedup in cursor.fetchall():
                existing[sid] = (pk, state)
                if dedup:
                    by_dedup[dedup] = sid
        keys = sorted(dedup_keys - set(by_dedup))
        for chunk in _chunks(keys):
            cursor.execute(
                f"SELECT id, step_id, state, dedup_key FROM workflow_step WHERE run_id = %s AND dedup_key IN"
                f" ({_marks(len(chunk))})" + self._lock_suffix("SHARE"),
                [run_id, *chunk],
            )
            for pk, sid, state, dedup in cursor.fetchall():
                existing[sid] = (pk, state)
                by_dedup[dedup] = sid
        # A child whose dedup key already exists in the run is the existing step: skip it.
        alias: dict[str, str] = {}
        fresh: list[StepSpec] = []
        for child in children:
            if child.dedup_key and child.dedup_key in by_dedup:
                alias[child.id] = by_dedup[child.dedup_key]
            else:
                fresh.append(child)
        if alias:
            from .engine.values import Dependency as Dep

            fresh = [
                replace(c, depends_on=tuple(Dep(step_id=alias.get(d.step_id, d.step_id), required=d.required)
                                            for d in c.depends_on))
                for c in fresh
            ]
        validate_graph(fresh, existing=set(existing))
        return fresh, existing

    def _write_products(self, cursor: Any, o: Outcome, now: datetime, children: Any) -> int:
        """Insert the (resolved) children, records and artifacts of a succeeded attempt.

        Returns how many children were inserted ready.
        """
        made_ready = 0
        now_db = self._dt(now)
        if children:
            fresh, existing = children
            if fresh:
                self._ensure_queues(cursor, {c.queue for c in fresh}, now)
                made_ready = self._insert_steps(cursor, o.step.run_id, fresh, existing=existing, now=now)
        if o.records:
            cursor.executemany(
                'INSERT INTO workflow_record (collection, "key", data, run_id, step_id, updated_at)'
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (collection, \"key\") DO UPDATE SET data = excluded.data,"
                " run_id = excluded.run_id, step_id = excluded.step_id, updated_at = excluded.updated_at",
                [(r.collection, r.key, _dumps(r.data), o.step.run_id, o.step.step_id, now_db) for r in o.records],
            )
        if o.artifacts:
            cursor.executemany(
                "INSERT INTO workflow_artifact (id, run_id, step_id, name, kind, content_type, size, sha256, body,"
                " storage_key, metadata, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(a.id, o.step.run_id, o.step.pk, a.name, a.kind, a.content_type, a.size, a.sha256, a.body,
                  a.storage_key, _dumps(dict(a.metadata)), now_db) for a in o.artifacts],
            )
        return made_ready

    def _release_dependents(self, cursor: Any, valid: Sequence[Outcome], now: datetime) -> int:
        """Satisfy edges out of steps that just ended; dependents with none left become ready."""
        succeeded = sorted(o.step.pk for o in valid if o.next_state == StepState.SUCCEEDED)
        ended = sorted(o.step.pk for o in valid if o.next_state in (StepState.FAILED, StepState.CANCELED))
        counts: Counter[int] = Counter()
        for pks, only_optional in ((succeeded, False), (ended, True)):
            for chunk in _chunks(pks):
                cursor.execute(
                    "UPDATE workflow_dependency SET satisfied = %s WHERE satisfied = %s"
                    + (" AND required = %s" if only_optional else "")
                    + f" AND depends_on_id IN ({_marks(len(chunk))}) RETURNING step_id",
                    [True, False, *([False] if only_optional else []), *chunk],
                )
                counts.update(r[0] for r in cursor.fetchall())
        if not counts:
            return 0
        dependents = sorted(counts)  # a fixed lock order: concurrent commits cannot deadlock here
        cursor.executemany(
            "UPDATE workflow_step SET pending_deps = pending_deps - %s WHERE id = %s",
            [(counts[pk], pk) for pk in dependents],
        )
        made_ready = 0
        now_db = self._dt(now)
        for chunk in _chunks(dependents):
            cursor.execute(
                "UPDATE workflow_step SET state = 'ready', available_at = %s, updated_at = %s"
                f" WHERE id IN ({_marks(len(chunk))}) AND state = 'pending' AND pending_deps = 0",
                [now_db, now_db, *chunk],
            )
            made_ready += cursor.rowcount
        return made_ready

    def _settle_runs(self, cursor: Any, run_ids: Sequence[str], now: datetime) -> list[str]:
        """Recompute each touched run's state from a few index probes (not a scan of its steps).

        On PostgreSQL the run row is locked first, so two workers committing a run's last steps
        at once cannot both miss that it ended.
        """
        finished: list[str] = []
        now_db = self._dt(now)
        events = []
        for run_id in run_ids:
            cursor.execute("SELECT state FROM workflow_run WHERE id = %s" + self._lock_suffix(), [run_id])
            row = cursor.fetchone()
            if row is None or row[0] == RunState.CANCELED:
                continue
            cursor.execute(
                "SELECT"
                " EXISTS(SELECT 1 FROM workflow_step WHERE run_id = %s AND state = 'ready'),"
                " EXISTS(SELECT 1 FROM workflow_step WHERE run_id = %s AND state = 'running'),"
                " EXISTS(SELECT 1 FROM workflow_step WHERE run_id = %s AND state = 'pending'),"
                " EXISTS(SELECT 1 FROM workflow_step WHERE run_id = %s AND state = 'failed')",
                [run_id] * 4,
            )
            ready, running, pending, failed = (bool(v) for v in cursor.fetchone())
            if ready or running:
                state = RunState.RUNNING
            elif failed or pending:
                state = RunState.FAILED  # blocked: nothing can move until an operator retries
            else:
                state = RunState.SUCCEEDED
            if state == row[0]:
                continue
            terminal = state.is_terminal
            cursor.execute(
                "UPDATE workflow_run SET state = %s, finished_at = %s, updated_at = %s WHERE id = %s",
                [str(state), now_db if terminal else None, now_db, run_id],
            )
            if terminal:
                finished.append(run_id)
                events.append(self._event_row(
                    now, f"run_{state}", severity="error" if state == RunState.FAILED else "info", run_id=run_id,
                    message=f"run {state}",
                ))
        self._insert_events(cursor, events)
        return finished

    # -- leases -----------------------------------------------------------------------------
    def expired_leases(self, now: datetime, limit: int) -> list[ClaimedStep]:
        with self._transaction() as cursor:
            cursor.execute(
                "SELECT id, run_id, step_id, kind, queue, site, retry, attempt, lease_token, lease_owner,"
                " lease_expires_at FROM workflow_step WHERE state = 'running' AND lease_expires_at < %s"
                " ORDER BY lease_expires_at LIMIT %s",
                [self._dt(now), limit],
            )
            rows = cursor.fetchall()
        return [
            ClaimedStep(
                pk=pk, run_id=run_id, step_id=step_id, kind=kind, queue=queue, site=site, input=None, metadata={},
                parent_id=None, retry=RetryPolicy.from_json(_loads(retry)),
                lease=LeaseInfo(token=token, worker_id=owner or "", attempt=attempt, claimed_at=now,
                                expires_at=self._parse_dt(expires) or now),
            )
            for pk, run_id, step_id, kind, queue, site, retry, attempt, token, owner, expires in rows
        ]

    def heartbeat(self, tokens: Sequence[str], now: datetime, expires_at: datetime) -> set[str]:
        live: set[str] = set()
        with self._transaction() as cursor:
            for chunk in _chunks(list(tokens)):
                cursor.execute(
                    f"UPDATE workflow_step SET lease_expires_at = %s WHERE lease_token IN ({_marks(len(chunk))})"
                    " AND state = 'running' AND lease_expires_at >= %s RETURNING lease_token",
                    [self._dt(expires_at), *chunk, self._dt(now)],
                )
                live.update(r[0] for r in cursor.fetchall())
            alive = sorted(live)
            for chunk in _chunks(alive):
                cursor.execute(
                    f"UPDATE workflow_lease SET heartbeat_at = %s, expires_at = %s WHERE token IN ({_marks(len(chunk))})",
                    [self._dt(now), self._dt(expires_at), *chunk],
                )
        return live

    def live_tokens(self, tokens: Sequence[str]) -> set[str]:
        live: set[str] = set()
        with self.connection.cursor() as cursor:
            for chunk in _chunks(list(tokens)):
                cursor.execute(
                    f"SELECT lease_token FROM workflow_step WHERE lease_token IN ({_marks(len(chunk))})"
                    " AND state = 'running'",
                    list(chunk),
                )
                live.update(r[0] for r in cursor.fetchall())
        return live

    def leased_to(self, worker_id: str) -> set[str]:
        """Tokens of the steps this worker holds, as the database sees it."""
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT lease_token FROM workflow_step WHERE state = 'running' AND lease_owner = %s", [worker_id]
            )
            return {r[0] for r in cursor.fetchall()}

    def hand_back(self, tokens: Sequence[str], now: datetime) -> int:
        """Return unfinished steps to ready at shutdown; the attempt does not count."""
        handed = 0
        now_db = self._dt(now)
        with self._transaction() as cursor:
            for chunk in _chunks(list(tokens)):
                marks = _marks(len(chunk))
                cursor.execute(
                    f"SELECT run_id, step_id, queue, lease_owner FROM workflow_step WHERE lease_token IN ({marks})"
                    " AND state = 'running'",
                    list(chunk),
                )
                rows = cursor.fetchall()
                cursor.execute(
                    "UPDATE workflow_step SET state = 'ready', attempt = attempt - 1, available_at = %s,"
                    " lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = %s"
                    f" WHERE lease_token IN ({marks}) AND state = 'running'",
                    [now_db, now_db, *chunk],
                )
                handed += cursor.rowcount
                self._notify(cursor)
                cursor.execute(
                    f"UPDATE workflow_lease SET released_at = %s, outcome = 'abandoned' WHERE token IN ({marks})"
                    " AND released_at IS NULL",
                    [now_db, *chunk],
                )
                self._insert_events(cursor, [
                    self._event_row(now, "step_handed_back", severity="warning", run_id=r[0], step_id=r[1],
                                    queue=r[2], worker_id=r[3] or "", message="worker stopped before the step finished")
                    for r in rows
                ])
        return handed

    # -- operator actions -------------------------------------------------------------------
    def retry_step(self, run_id: str, step_id: str, *, actor: str, now: datetime) -> None:
        with self._transaction() as cursor:
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
            Step.objects.using(self.using).filter(pk=step.pk, state=StepState.FAILED).update(
                state=StepState.READY, attempt=0, available_at=now, finished_at=None, updated_at=now,
            )
            if run.state != RunState.RUNNING:
                Run.objects.using(self.using).filter(pk=run_id).update(
                    state=RunState.RUNNING, finished_at=None, updated_at=now
                )
            self._notify(cursor)
            self._insert_events(cursor, [self._event_row(
                now, "step_retried", severity="info", run_id=run_id, step_id=step_id, queue=step.queue, actor=actor,
                message=f"retried by {actor}" if actor else "retried",
                payload={"previous_error": step.error_code},
            )])

    def cancel_run(self, run_id: str, *, actor: str, now: datetime) -> int:
        with self._transaction() as cursor:
            cursor.execute("SELECT state FROM workflow_run WHERE id = %s" + self._lock_suffix(), [run_id])
            row = cursor.fetchone()
            if row is None:
                raise NotFound(f"run {run_id!r} does not exist")
            if RunState(row[0]).is_terminal:
                raise InvalidState(f"run {run_id!r} is already {row[0]}; only an active run can be canceled")
            now_db = self._dt(now)
            cursor.execute(
                "UPDATE workflow_step SET state = 'canceled', lease_token = NULL, lease_owner = NULL,"
                " lease_expires_at = NULL, finished_at = %s, updated_at = %s"
                " WHERE run_id = %s AND state IN ('pending', 'ready', 'running')",
                [now_db, now_db, run_id],
            )
            canceled = cursor.rowcount
            cursor.execute(
                "UPDATE workflow_lease SET released_at = %s, outcome = 'canceled' WHERE run_id = %s AND released_at IS NULL",
                [now_db, run_id],
            )
            cursor.execute(
                "UPDATE workflow_run SET state = 'canceled', finished_at = %s, updated_at = %s WHERE id = %s",
                [now_db, now_db, run_id],
            )
            self._insert_events(cursor, [self._event_row(
                now, "run_canceled", severity="warning", run_id=run_id, actor=actor,
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
        self.record_event("worker_started", worker_id=info.worker_id, now=now,
                          message=f"worker started on {info.host} (pid {info.pid})")

    def worker_seen(self, worker_id: str, running: int, now: datetime) -> None:
        Worker.objects.using(self.using).filter(pk=worker_id).update(seen_at=now, running=running)

    def worker_stopped(self, worker_id: str, now: datetime) -> None:
        Worker.objects.using(self.using).filter(pk=worker_id).update(seen_at=now, running=0, stopped_at=now)
        self.record_event("worker_stopped", worker_id=worker_id, now=now, message="worker stopped")

