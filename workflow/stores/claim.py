"""Claiming ready steps under fenced leases, within queue caps, rate limits and pauses."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ..engine.rules import EventKind, LeaseOutcome, Severity, bucket_refill, next_token_seconds
from ..engine.store import ClaimResult
from ..engine.values import (
    ClaimedStep,
    ClaimRequest,
    ErrorInfo,
    LeaseInfo,
    Outcome,
    RetryPolicy,
    RunState,
    StepState,
)
from .rows import (
    _chunks,
    _lease_token_prefix,
    _loads,
    _marks,
    log,
)

# The claim reads through the ready-only partial index: the state is a literal in the text, so the
# planner can match the index's predicate. ``{columns}``, ``{index_hint}``, ``{sites}`` and
# ``{skip_locked}`` are filled per database and site count (``claim_sql``).
_CLAIM_SQL = (
    f"SELECT {{columns}} FROM workflow_step{{index_hint}} WHERE state = '{StepState.READY}' AND queue = %s"
    " AND available_at <= %s AND site IN ({sites}) ORDER BY priority DESC, available_at, id LIMIT %s{skip_locked}"
)
_CLAIM_COLUMNS = (
    "id, run_id, step_id, kind, queue, site, input, metadata, parent_step_id, retry, attempt,"
    " timeout_seconds, available_at, (SELECT r.state FROM workflow_run r WHERE r.id = workflow_step.run_id) AS run_state"
)
# PostgreSQL claims and leases in one round trip: the claim above picks and locks the rows, the
# update leases them (each token the claim's time-sorted random prefix plus the step's id, so it is
# unique), the insert writes their attempt rows. Rows come back in claim order (``rn``). Both claims
# read the run's state, so a claim of an already running run's step skips the start-run update.
_CLAIM_AND_LEASE_SQL = (
    "WITH c AS MATERIALIZED ({claim}), n AS (SELECT id, run_state, row_number() OVER () AS rn FROM c),"
    f" u AS (UPDATE workflow_step s SET state = '{StepState.RUNNING}', attempt = s.attempt + 1,"
    " lease_token = %s || to_hex(s.id), lease_owner = %s, lease_expires_at = %s,"
    " started_at = COALESCE(s.started_at, %s), awaiting_thread_since = CASE WHEN n.rn <= %s THEN NULL ELSE %s END,"
    " updated_at = %s FROM n WHERE s.id = n.id RETURNING n.rn, s.id, s.run_id, s.step_id, s.kind, s.queue, s.site,"
    " s.input, s.metadata, s.parent_step_id, s.retry, s.attempt, s.timeout_seconds, s.available_at, s.lease_token,"
    " n.run_state),"
    " l AS (INSERT INTO workflow_lease (step_id, run_id, attempt, worker_id, token, claimed_at, expires_at, outcome,"
    " error_code, error_message, log) SELECT id, run_id, attempt, %s, lease_token, %s, %s, '', '', '', '' FROM u)"
    " SELECT u.id, u.run_id, u.step_id, u.kind, u.queue, u.site, u.input, u.metadata, u.parent_step_id, u.retry,"
    " u.attempt, u.timeout_seconds, u.available_at, u.lease_token, u.run_state FROM u ORDER BY u.rn"
)
_SPEND_TOKENS_SQL = "UPDATE workflow_queue SET tokens = %s WHERE name = %s"
_LOCK_LIMITED_QUEUES_SQL = (
    "SELECT name, max_workers, rate, per_seconds, burst, tokens, refilled_at FROM workflow_queue"
    " WHERE name IN ({names}) ORDER BY name"
)
_ANY_DUE_SQL = (
    f"SELECT 1 FROM workflow_step WHERE state = '{StepState.READY}' AND queue = %s AND available_at <= %s"
    " AND site IN ({sites}) LIMIT 1"
)
_RECENT_THROTTLES_SQL = (
    f"SELECT payload FROM workflow_event WHERE kind = '{EventKind.QUEUE_THROTTLED}' AND queue = %s AND created_at > %s"
    " ORDER BY id DESC LIMIT 10"
)
_RUNNING_IN_QUEUE_SQL = (
    f"SELECT COUNT(*), MIN(lease_expires_at) FROM workflow_step WHERE state = '{StepState.RUNNING}' AND queue = %s"
)
_REFILL_SQL = "UPDATE workflow_queue SET tokens = %s, refilled_at = %s WHERE name = %s"
# When a claim that could take more should look again: the next due step of the queues that can
# start one, and the first lease to expire in the queues it serves (one round trip for both).
_NEXT_DUE_SQL = (
    f"SELECT MIN(available_at) FROM workflow_step WHERE state = '{StepState.READY}' AND queue IN ({{names}})"
    " AND site IN ({sites})"
)
_NEXT_LEASE_EXPIRY_SQL = (
    f"SELECT MIN(lease_expires_at) FROM workflow_step WHERE state = '{StepState.RUNNING}' AND queue IN ({{names}})"
    " AND site IN ({sites})"
)
_NEXT_WAKE_SQL = "SELECT ({due}), ({expiry})"
# SQLite claims and leases one queue's due steps in one statement too: the update picks its rows
# with the claim query above, each token is the claim's prefix plus the step's id (as on
# PostgreSQL). RETURNING gives no order: the priority and due time come back to sort by. Every row
# is leased as started; those past the first ``start_now`` by claim order are then marked waiting
# for a thread (``_AWAIT_THREAD_SQL``), which a chain hop (one row) never needs. In RETURNING,
# SQLite looks the run up by its key only if the step's column is cast to the key's type (uncast:
# a scan of every run, per row).
_CLAIM_AND_LEASE_SQLITE_SQL = (
    f"UPDATE workflow_step SET state = '{StepState.RUNNING}', attempt = attempt + 1,"
    " lease_token = %s || printf('%%x', id), lease_owner = %s, lease_expires_at = %s,"
    " started_at = COALESCE(started_at, %s), awaiting_thread_since = NULL, updated_at = %s"
    " WHERE id IN ({claim}) RETURNING id, run_id, step_id, kind, queue, site, input, metadata, parent_step_id, retry,"
    " attempt, timeout_seconds, available_at, lease_token,"
    " (SELECT r.state FROM workflow_run r WHERE r.id = CAST(workflow_step.run_id AS TEXT)), priority"
)
_AWAIT_THREAD_SQL = "UPDATE workflow_step SET awaiting_thread_since = %s WHERE id IN ({pks})"
_INSERT_LEASES_SQL = (
    "INSERT INTO workflow_lease (step_id, run_id, attempt, worker_id, token, claimed_at, expires_at, outcome,"
    " error_code, error_message, log) VALUES (%s, %s, %s, %s, %s, %s, %s, '', '', '', '')"
)
# Runs the claim read as pending. PostgreSQL re-checks the state (another worker may have started
# the run, or an operator canceled it, since the claim's snapshot). SQLite needs no re-check: this
# transaction holds the write lock since before it read the state. And SQLite must not see one: it
# would walk every pending run through run_state_newest_idx instead of looking the ids up.
_START_RUNS_SQL = (
    f"UPDATE workflow_run SET state = '{RunState.RUNNING}', started_at = %s, updated_at = %s WHERE id IN ({{runs}})"
)
_STILL_PENDING = f" AND state = '{RunState.PENDING}'"


def _seconds_from(now: datetime, moment: datetime | None) -> float | None:
    return None if moment is None else max((moment - now).total_seconds(), 0.0)


class ClaimStore:
    """Claiming ready steps under fenced leases, within queue caps, rate limits and pauses."""

    # -- claim --------------------------------------------------------------------------------
    def _claim(self, cursor: Any, req: ClaimRequest, now: datetime) -> tuple[ClaimResult, list[Outcome], set[str]]:
        """Claim up to ``req.limit`` due steps; return them, the outcomes of rows that cannot run, and the
        runs this claim keeps running (they were pending or running, and now hold a step it leased).

        Queue rows are locked in one global order (by name) whatever the rotated claim order, so
        two claims can never wait on each other's queue rows: a deadlock there cost whole commits.
        """
        queues = self._queue_rows(cursor)
        wanted = list(req.queues or sorted(queues))
        paused = [n for n in wanted if n in queues and queues[n][5]]
        names = [n for n in wanted if n not in paused]
        if names:
            self._round_robin = (self._round_robin + 1) % len(names)
            names = names[self._round_robin :] + names[: self._round_robin]
        sites = ["", req.site] if req.site else [""]
        claim_sql = self.claim_sql(len(sites))
        remaining = req.limit
        # Stamped when the claim runs, not when the transaction began: the commit before it may have
        # waited for row locks, meanwhile another worker's lease on a step it claims here has ended.
        lease_now = self._locked_now(req, now)
        limited_names = sorted(n for n in names if n in queues and (queues[n][1] is not None or queues[n][2] is not None))
        # Two or more limited queues: lock them all now, in name order. A single one is locked only
        # if the claim reaches it, so a claim filled by other queues does not wait for its row.
        limited = self._lock_limited_queues(cursor, limited_names) if len(limited_names) > 1 else {}
        leased: list[tuple[Any, ...]] = []  # claimed and leased, one statement per queue
        hints: list[float] = []
        blocked: list[tuple[str, str]] = [(n, "paused") for n in paused]
        open_names: list[str] = []  # queues that could start a step now: their due time sets the wake-up
        for name in names:
            if remaining <= 0:
                open_names.append(name)
                continue
            allowance = remaining
            tokens = 0.0
            if name in limited_names:
                if name not in limited:
                    limited.update(self._lock_limited_queues(cursor, [name]))
                if name not in limited:
                    continue  # its row was deleted meanwhile
                allowance, tokens, hint, claim_now, reason = self._queue_allowance(
                    cursor, limited[name], name, allowance, now, req
                )
                lease_now = max(lease_now, claim_now)
                if allowance <= 0:
                    blocked.append((name, reason))
                    if hint is not None:
                        hints.append(hint)
                    continue
            open_names.append(name)
            got = self._claim_and_lease(cursor, claim_sql, [name, self._dt(now), *sites, allowance], req, lease_now,
                                        len(leased))
            if name in limited and limited[name][1] is not None and got:
                cursor.execute(_SPEND_TOKENS_SQL, [tokens - len(got), name])
            leased.extend(got)
            remaining -= len(got)
        if leased and not self.is_postgres:  # PostgreSQL's claim statement wrote the attempt rows
            self._insert_attempt_rows(cursor, leased, req)
        claimed, unreadable, running = self._claimed_steps(cursor, leased, req) if leased else ((), [], set())
        if blocked:
            self._throttle_events(cursor, blocked, queues, now, sites)
        wake_in: float | None = 0.0
        if remaining > 0 and req.start_now is not None and len(leased) >= req.start_now:
            # Every free thread got a step: nothing can start before one of them ends, and its
            # outcome claims again. So no wake-up to look for (a statement saved on every chain hop).
            wake_in = min(hints) if hints else None
        elif remaining > 0:
            # Only queues that can start a step now count: a due step behind a full cap, an empty
            # bucket or a pause waits for its queue's hint, or for the poll (a worker must not spin).
            wake_in, expiry = self._next_wake(cursor, open_names, names, sites, now)
            if hints:
                wake_in = min(hints + ([wake_in] if wake_in is not None else []))
            if wake_in is None:
                # Nothing ready, but a step another worker holds may come back when its lease expires
                # (that worker may be dead): --burst must wait for it, not strand it.
                wake_in = expiry
        return ClaimResult(steps=claimed, wake_in=wake_in, throttled=tuple(blocked)), unreadable, running

    def _lock_limited_queues(self, cursor: Any, names: list[str]) -> dict[str, tuple[Any, ...]]:
        """Lock the rows of these (sorted) limited queues in one statement, in name order."""
        if not names:
            return {}
        cursor.execute(_LOCK_LIMITED_QUEUES_SQL.format(names=_marks(len(names))) + self._lock_suffix(), names)
        return {r[0]: r[1:] for r in cursor.fetchall()}

    THROTTLE_EVENT_SECONDS = 60.0  # at most one queue_throttled event per queue and reason this often

    def _throttle_events(
        self, cursor: Any, blocked: list[tuple[str, str]], queues: Mapping[str, tuple[Any, ...]], now: datetime,
        sites: list[str],
    ) -> None:
        """Write ``queue_throttled`` for queues holding back due steps, at most once a minute each.

        A process-local timer keeps the check off most claims; the last such event in the database
        decides across processes (a limited queue's row is locked here, so two claims cannot both
        write one).
        """
        clock = time.monotonic()
        events = []
        for name, reason in blocked:
            key = (name, reason)
            if clock < self._throttle_checked.get(key, 0.0):
                continue
            self._throttle_checked[key] = clock + 5.0  # nothing waits: look again in a few seconds
            cursor.execute(_ANY_DUE_SQL.format(sites=_marks(len(sites))), [name, self._dt(now), *sites])
            if cursor.fetchone() is None:
                continue
            self._throttle_checked[key] = clock + self.THROTTLE_EVENT_SECONDS
            since = now - timedelta(seconds=self.THROTTLE_EVENT_SECONDS)
            cursor.execute(_RECENT_THROTTLES_SQL, [name, self._dt(since)])
            if any((_loads(p) or {}).get("reason") == reason for (p,) in cursor.fetchall()):
                continue
            row = queues.get(name)
            max_workers, rate, per_seconds = (row[1], row[2], row[3]) if row else (None, None, None)
            message = {
                "at_cap": f"queue {name} is at its cap of {max_workers} running steps; due steps wait for a slot",
                "rate_limited": f"queue {name} is rate limited to {rate} per {per_seconds}s; due steps wait for a token",
                "paused": f"queue {name} is paused; due steps wait until it is resumed",
            }[reason]
            events.append(self._event_row(now, EventKind.QUEUE_THROTTLED, severity=Severity.INFO, queue=name, message=message,
                                          payload={"reason": reason}))
        self._insert_events(cursor, events)

    def claim_sql(self, site_count: int) -> str:
        """The claim query: oldest due ready steps of one queue, read through the ready-only index.

        SQLite is told the index (``INDEXED BY``): after an ANALYZE taken while every row was
        ready it would otherwise scan history. PostgreSQL skips rows other workers are claiming.
        """
        index_hint = "" if self.is_postgres else " INDEXED BY step_ready_idx"
        skip_locked = " FOR UPDATE SKIP LOCKED" if self.is_postgres else ""
        columns = _CLAIM_COLUMNS if self.is_postgres else "id"  # SQLite's claim statement returns the rest
        return _CLAIM_SQL.format(columns=columns, index_hint=index_hint, sites=_marks(site_count), skip_locked=skip_locked)

    def _retry_policy(self, raw: Any) -> RetryPolicy:
        """Parse a step's retry policy once per distinct JSON text: a run's steps mostly share one."""
        policy = self._policies.get(raw)
        if policy is None:
            if len(self._policies) > 1000:
                self._policies.clear()
            policy = self._policies[raw] = RetryPolicy.from_json(_loads(raw))
        return policy

    def _retry_policy_or_default(self, raw: Any) -> RetryPolicy:
        """A reclaim must end even a step whose stored policy cannot be read."""
        try:
            return self._retry_policy(raw)
        except Exception:
            return RetryPolicy()

    @staticmethod
    def _locked_now(req: ClaimRequest, now: datetime) -> datetime:
        return max(now, req.clock()) if req.clock else now

    def _queue_allowance(
        self, cursor: Any, row: tuple[Any, ...], name: str, wanted: int, now: datetime, req: ClaimRequest
    ) -> tuple[int, float, float | None, datetime, str]:
        """For a limited queue whose row we hold locked, return (steps it may start, tokens left,
        wake hint, claim time, what limits it: ``at_cap`` or ``rate_limited``).

        The claim time is never earlier than the bucket's last refill: a worker that waited for
        the lock must not stamp its leases before the tokens it spends existed.
        """
        max_workers, rate, per_seconds, burst, tokens, refilled_at = row
        now = self._locked_now(req, now)
        allowance = wanted
        hint = None
        reason = "at_cap"
        if max_workers is not None:
            cursor.execute(_RUNNING_IN_QUEUE_SQL, [name])
            running, first_expiry = cursor.fetchone()
            allowance = min(allowance, max_workers - running)
            if allowance <= 0:
                # A slot frees when a step commits (its worker, or NOTIFY, wakes us) or its lease expires.
                expiry = self._parse_dt(first_expiry)
                seconds = (expiry - now).total_seconds() if expiry else 0.0
                hint = seconds if seconds > 0 else 0.5
        last = self._parse_dt(refilled_at)
        if last is not None and last > now:
            now = last
        if rate is not None:
            per_second = rate / per_seconds
            tokens = bucket_refill(tokens=tokens, burst=burst, per_second=per_second, refilled_at=last, now=now)
            cursor.execute(_REFILL_SQL, [tokens, self._dt(now), name])
            if tokens < 1 and allowance > 0:
                reason = "rate_limited"
                hint = next_token_seconds(tokens, per_second=per_second)
            allowance = min(allowance, int(math.floor(tokens)))
        return allowance, tokens, hint, now, reason

    def _next_wake(
        self, cursor: Any, open_names: list[str], names: list[str], sites: list[str], now: datetime
    ) -> tuple[float | None, float | None]:
        """Seconds until the next due step of ``open_names``, and until the first lease of ``names`` expires."""
        if not names:
            return None, None
        site_marks = _marks(len(sites))
        due = (_NEXT_DUE_SQL.format(names=_marks(len(open_names)), sites=site_marks) if open_names else "NULL")
        expiry = _NEXT_LEASE_EXPIRY_SQL.format(names=_marks(len(names)), sites=site_marks)
        params = [*open_names, *sites] if open_names else []
        cursor.execute(_NEXT_WAKE_SQL.format(due=due, expiry=expiry), [*params, *names, *sites])
        next_due, first_expiry = (self._parse_dt(v) for v in cursor.fetchone())
        return _seconds_from(now, next_due), _seconds_from(now, first_expiry)

    def _claim_and_lease(
        self, cursor: Any, claim_sql: str, params: list[Any], req: ClaimRequest, now: datetime, position: int
    ) -> list[tuple[Any, ...]]:
        """Claim and lease one queue's due steps in one statement; the leased rows, in claim order.

        ``position`` is how many steps this claim already took from other queues: the first
        ``req.start_now`` of the whole claim start now, the rest wait for a thread.
        """
        expires = now + req.lease_duration
        now_db, expires_db = self._dt(now), self._dt(expires)
        limit = params[-1]
        start = limit if req.start_now is None else max(0, req.start_now - position)
        if self.is_postgres:
            cursor.execute(_CLAIM_AND_LEASE_SQL.format(claim=claim_sql), [
                *params, _lease_token_prefix(), req.worker_id, expires_db, now_db, start, now_db, now_db,
                req.worker_id, now_db, expires_db,
            ])
            return [(*row, now) for row in cursor.fetchall()]
        cursor.execute(_CLAIM_AND_LEASE_SQLITE_SQL.format(claim=claim_sql), [
            _lease_token_prefix(), req.worker_id, expires_db, now_db, now_db, *params,
        ])
        rows = cursor.fetchall()
        rows.sort(key=lambda r: (-r[15], r[12], r[0]))  # priority first, then due time, then id
        for chunk in _chunks([row[0] for row in rows[start:]]):
            cursor.execute(_AWAIT_THREAD_SQL.format(pks=_marks(len(chunk))), [now_db, *chunk])
        return [(*row[:15], now) for row in rows]

    def _insert_attempt_rows(self, cursor: Any, leased: list[tuple[Any, ...]], req: ClaimRequest) -> None:
        """SQLite: the attempt rows of the steps just leased (no step_claimed event: the row records the claim)."""
        stamps = {now: (self._dt(now), self._dt(now + req.lease_duration)) for *_, now in leased}  # one per queue
        cursor.executemany(_INSERT_LEASES_SQL, [
            (pk, run_id, attempt, req.worker_id, token, *stamps[now])
            for pk, run_id, _, _, _, _, _, _, _, _, attempt, _, _, token, _, now in leased
        ])

    def _claimed_steps(
        self, cursor: Any, rows: list[tuple[Any, ...]], req: ClaimRequest
    ) -> tuple[tuple[ClaimedStep, ...], list[Outcome], set[str]]:
        """Turn leased rows into steps to run; start their pending runs; fail the unreadable ones.

        A row that cannot be turned into a ``ClaimedStep`` (a retry policy or input no code can
        read) fails permanently with ``invalid_step``, in this transaction: one bad row must not
        stop every claim of every worker.
        """
        claimed: list[ClaimedStep] = []
        unreadable: list[Outcome] = []
        pending_runs: dict[str, datetime] = {}
        for (pk, run_id, step_id, kind, queue, site, raw_input, metadata, parent, retry, attempt, timeout, available,
             token, run_state, now) in rows:
            if run_state == RunState.PENDING:
                pending_runs.setdefault(run_id, now)
            lease = LeaseInfo(token=token, worker_id=req.worker_id, attempt=attempt, claimed_at=now,
                              expires_at=now + req.lease_duration)
            try:
                claimed.append(ClaimedStep(
                    pk=pk, run_id=run_id, step_id=step_id, kind=kind, queue=queue, site=site,
                    input=_loads(raw_input), metadata=_loads(metadata) or {}, parent_id=parent,
                    retry=self._retry_policy(retry), lease=lease,
                    timeout=None if timeout is None else timedelta(seconds=timeout),
                    available_at=self._parse_dt(available),
                ))
            except Exception as exc:
                log.error("unreadable step failed run=%s step=%s error=%s: %s", run_id, step_id, type(exc).__name__, exc)
                step = ClaimedStep(pk=pk, run_id=run_id, step_id=step_id, kind=kind, queue=queue, site=site, input=None,
                                   metadata={}, parent_id=parent, retry=RetryPolicy(max_attempts=1), lease=lease)
                error = ErrorInfo(code="invalid_step", retryable=False,
                                  message=f"the stored step cannot be read: {type(exc).__name__}: {exc}")
                unreadable.append(Outcome(step=step, next_state=StepState.FAILED, error=error, started_at=now,
                                          finished_at=now, lease_outcome=LeaseOutcome.FAILED))
        # Only runs the claim saw pending: a running run's steps (every chain hop) skip this update.
        run_ids = sorted(pending_runs)
        for chunk in _chunks(run_ids):
            now_db = self._dt(max(pending_runs[r] for r in chunk))
            sql = _START_RUNS_SQL.format(runs=_marks(len(chunk))) + (_STILL_PENDING if self.is_postgres else "")
            cursor.execute(sql, [now_db, now_db, *chunk])
        running = {c.run_id for c in claimed} & {r[1] for r in rows if r[14] in (RunState.PENDING, RunState.RUNNING)}
        return tuple(claimed), unreadable, running
