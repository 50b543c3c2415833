"""Committing attempts: fencing, results, children, records, artifacts, dependents, run states."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..engine.builder import validate_graph
from ..engine.errors import InvalidGraph, InvalidInput
from ..engine.rules import (
    EventKind,
    LeaseOutcome,
    Severity,
    outcome_report,
    run_finished_event,
    run_state_from_steps,
)
from ..engine.store import ClaimResult
from ..engine.validation import check_json_text, storable_text
from ..engine.values import (
    TERMINAL_STEP_STATES,
    ClaimedStep,
    ClaimRequest,
    CommitReport,
    ErrorInfo,
    Outcome,
    RunState,
    StepSpec,
    StepState,
)
from .rows import (
    _chunks,
    _dumps,
    _marks,
)

# Each live step's token, and whether its lease has expired (compared in SQL: no timestamp to parse).
_LOCK_LIVE_STEPS_SQL = (
    f"SELECT id, lease_token, lease_expires_at < %s FROM workflow_step WHERE id IN ({{pks}})"
    f" AND state = '{StepState.RUNNING}' ORDER BY id"
)
_FINISH_STEPS_SQL = (
    "UPDATE workflow_step SET state = %s, result = %s, error = %s, available_at = %s, finished_at = %s,"
    " updated_at = %s, lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL WHERE id = %s"
)
_RELEASE_LEASES_SQL = (
    "UPDATE workflow_lease SET released_at = %s, outcome = %s, error_code = %s, error_message = %s,"
    " log = %s, started_at = %s WHERE token = %s"
)
# PostgreSQL: the step and its attempt row in one statement.
_FINISH_AND_RELEASE_SQL = f"WITH f AS ({_FINISH_STEPS_SQL}) {_RELEASE_LEASES_SQL}"
# PostgreSQL, a batch: every step and attempt row in one statement, each column's values an array
# (``unnest``), so the server runs one statement for the batch, not one per outcome. The steps are
# locked already (``_LOCK_LIVE_STEPS_SQL``); the commit time is the same for every row.
_FINISH_AND_RELEASE_MANY_PG_SQL = (
    "WITH v AS (SELECT * FROM unnest({array}::bigint[], {array}::text[], {array}::jsonb[], {array}::jsonb[],"
    " {array}::timestamptz[], {array}::timestamptz[], {array}::text[], {array}::text[], {array}::text[],"
    " {array}::text[], {array}::text[], {array}::timestamptz[])"
    " AS v(id, state, result, error, available_at, finished_at, token, outcome, error_code, error_message, log,"
    " started_at)),"
    " f AS (UPDATE workflow_step s SET state = v.state, result = v.result, error = v.error,"
    " available_at = v.available_at, finished_at = v.finished_at, updated_at = %s, lease_token = NULL,"
    " lease_owner = NULL, lease_expires_at = NULL FROM v WHERE s.id = v.id)"
    " UPDATE workflow_lease l SET released_at = %s, outcome = v.outcome, error_code = v.error_code,"
    " error_message = v.error_message, log = v.log, started_at = v.started_at FROM v WHERE l.token = v.token"
)
# One routine outcome: the fence is the finishing UPDATE's own condition (the step is running under
# this token, its lease not expired), so no locking read comes first. PostgreSQL releases the attempt
# row in the same statement, only if the step row was finished, and says whether it was.
_FINISH_IF_LIVE_SQL = (
    f"{_FINISH_STEPS_SQL} AND state = '{StepState.RUNNING}' AND lease_token = %s AND lease_expires_at >= %s"
)
_FINISH_AND_RELEASE_IF_LIVE_PG_SQL = (
    f"WITH f AS ({_FINISH_IF_LIVE_SQL} RETURNING id),"
    f" l AS ({_RELEASE_LEASES_SQL} AND EXISTS (SELECT 1 FROM f))"
    " SELECT count(*) FROM f"
)
# A routine success on PostgreSQL also satisfies the edges out of its step (``e``) and returns the
# dependents to count down: one round trip fewer per commit, with the same locks in the same order.
_SUCCEED_RELEASE_AND_SATISFY_IF_LIVE_PG_SQL = (
    f"WITH f AS ({_FINISH_IF_LIVE_SQL} RETURNING id),"
    f" l AS ({_RELEASE_LEASES_SQL} AND EXISTS (SELECT 1 FROM f)),"
    " e AS (UPDATE workflow_dependency SET satisfied = %s WHERE satisfied = %s"
    " AND depends_on_id IN (SELECT id FROM f) RETURNING step_id)"
    " SELECT (SELECT count(*) FROM f), ARRAY(SELECT step_id FROM e)"
)
_DISCARD_LEASE_SQL = (
    "UPDATE workflow_lease SET log = %s, released_at = COALESCE(released_at, %s),"
    f" outcome = CASE WHEN outcome = '' THEN '{LeaseOutcome.DISCARDED}' ELSE outcome END WHERE token = %s"
)
_LEASE_OUTCOMES_SQL = "SELECT token, outcome FROM workflow_lease WHERE token IN ({tokens})"
_RUN_STEPS_BY_ID_SQL = "SELECT id, step_id, state, dedup_key FROM workflow_step WHERE run_id = %s AND step_id IN ({ids})"
_RUN_STEPS_BY_DEDUP_SQL = (
    "SELECT id, step_id, state, dedup_key FROM workflow_step WHERE run_id = %s AND dedup_key IN ({keys})"
)
_UPSERT_RECORDS_SQL = (
    'INSERT INTO workflow_record (collection, "key", data, run_id, step_id, updated_at)'
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (collection, \"key\") DO UPDATE SET data = excluded.data,"
    " run_id = excluded.run_id, step_id = excluded.step_id, updated_at = excluded.updated_at"
)
_INSERT_ARTIFACTS_SQL = (
    "INSERT INTO workflow_artifact (id, run_id, step_id, name, kind, content_type, size, sha256, body,"
    " storage_key, metadata, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# Releasing dependents: satisfy the edges out of the ended steps, then count their dependents down.
_SATISFY_EDGES_SQL = (
    "UPDATE workflow_dependency SET satisfied = %s WHERE satisfied = %s{only_optional}"
    " AND depends_on_id IN ({pks}) RETURNING step_id"
)
_COUNT_DOWN_DEPS_SQL = "UPDATE workflow_step SET pending_deps = pending_deps - %s WHERE id = %s"
_MAKE_READY_SQL = (
    f"UPDATE workflow_step SET state = '{StepState.READY}', available_at = %s, updated_at = %s"
    f" WHERE id IN ({{pks}}) AND state = '{StepState.PENDING}' AND pending_deps = 0 RETURNING id"
)
# One dependent (every chain hop): count down and make ready in one statement (SET reads the old row).
_BECOMES_READY = f"state = '{StepState.PENDING}' AND pending_deps - %s = 0"
_COUNT_DOWN_ONE_SQL = (
    f"UPDATE workflow_step SET pending_deps = pending_deps - %s,"
    f" state = CASE WHEN {_BECOMES_READY} THEN '{StepState.READY}' ELSE state END,"
    f" available_at = CASE WHEN {_BECOMES_READY} THEN %s ELSE available_at END,"
    f" updated_at = CASE WHEN {_BECOMES_READY} THEN %s ELSE updated_at END WHERE id = %s RETURNING id, state"
)
# PostgreSQL, several dependents: lock them in id order first (``l``), so concurrent commits cannot
# deadlock on them, then count each down by its number of edges just satisfied, in one statement.
# (One statement for the edges as well ran at twice the time of these two plain ones on every hop.)
_BECOMES_READY_PG = f"s.state = '{StepState.PENDING}' AND s.pending_deps - l.n = 0"
_COUNT_DOWN_MANY_PG_SQL = (
    "WITH c AS (SELECT * FROM unnest({array}::bigint[], {array}::int[]) AS c(id, n)),"
    " l AS MATERIALIZED (SELECT s.id, c.n FROM workflow_step s JOIN c ON c.id = s.id ORDER BY s.id FOR UPDATE OF s)"
    " UPDATE workflow_step s SET pending_deps = s.pending_deps - l.n,"
    f" state = CASE WHEN {_BECOMES_READY_PG} THEN '{StepState.READY}' ELSE s.state END,"
    f" available_at = CASE WHEN {_BECOMES_READY_PG} THEN %s ELSE s.available_at END,"
    f" updated_at = CASE WHEN {_BECOMES_READY_PG} THEN %s ELSE s.updated_at END"
    " FROM l WHERE s.id = l.id RETURNING s.id, s.state"
)
_LOCK_RUNS_SQL = "SELECT id FROM workflow_run WHERE id IN ({ids}) ORDER BY id FOR UPDATE"
# One statement for a batch of runs: each run's state and which step states it still holds, each
# from an index probe on (run, state), so a run of 10,000 steps costs what a run of one does.
_RUN_HOLDS_SQL = (
    "SELECT r.id, r.state,"
    f" EXISTS(SELECT 1 FROM workflow_step s WHERE s.run_id = r.id AND s.state = '{StepState.READY}'),"
    f" EXISTS(SELECT 1 FROM workflow_step s WHERE s.run_id = r.id AND s.state = '{StepState.RUNNING}'),"
    f" EXISTS(SELECT 1 FROM workflow_step s WHERE s.run_id = r.id AND s.state = '{StepState.PENDING}'),"
    f" EXISTS(SELECT 1 FROM workflow_step s WHERE s.run_id = r.id AND s.state = '{StepState.FAILED}')"
    " FROM workflow_run r WHERE r.id IN ({ids}) ORDER BY r.id"
)
_SET_RUN_STATE_SQL = "UPDATE workflow_run SET state = %s, finished_at = %s, updated_at = %s WHERE id = %s"


@dataclass(slots=True)
class Wakeups:
    """What one commit transaction must tell idle workers (a NOTIFY, delivered at commit)."""

    ready: set[int] = field(default_factory=set)  # steps it made ready
    slots_freed: Counter[str] = field(default_factory=Counter)  # capped queue -> its steps that ended

    def needed(self, claimed: Sequence[ClaimedStep]) -> bool:
        """Steps this same transaction claimed need no other worker, nor do slots it took again:
        waking one for them (in a chain, our own listener) would only cost it an empty claim."""
        if self.ready - {s.pk for s in claimed}:
            return True
        if not self.slots_freed:  # no capped queue in this commit: the usual case
            return False
        taken = Counter(s.queue for s in claimed)
        return any(n > taken[q] for q, n in self.slots_freed.items())


def dedup_waves(outcomes: Sequence[Outcome]) -> list[list[Outcome]]:
    """Split a batch so no two outcomes of one wave emit children with the same dedup key in a run.

    Children are resolved against the run before they are inserted; two siblings in one batch
    emitting the same key would both insert it. A later wave, committed in the same transaction,
    sees the first wave's child and gets its handle, as if the two commits had come one by one.
    """
    waves: list[tuple[list[Outcome], set[tuple[str, str]]]] = []
    for o in outcomes:
        keys = {(o.step.run_id, c.dedup_key) for c in o.children if c.dedup_key}
        for members, seen in waves:
            if not keys & seen:
                members.append(o)
                seen |= keys
                break
        else:
            waves.append(([o], set(keys)))
    return [members for members, _ in waves]


def storable(o: Outcome) -> Outcome:
    """The outcome with its log and error as every database can hold them (``storable_text``).

    A NUL or a lone surrogate in a log line or an exception's message made PostgreSQL refuse the
    commit, and the fallback that records the commit error carried the same log: the step then
    waited out a lease expiry per attempt. Error details that hold one are kept as their text.
    """
    log = storable_text(o.log) if o.log else o.log
    error = o.error
    if error is not None:
        details = error.details
        if details is not None:
            try:
                check_json_text(json.dumps(details), details, label="error details", field="details")
            except InvalidInput:
                details = storable_text(json.dumps(details, ensure_ascii=False))
            except (TypeError, ValueError):  # not JSON at all: the commit reports that, as before
                pass
        code, message = storable_text(error.code), storable_text(error.message)
        if (code, message, details) != (error.code, error.message, error.details):
            error = replace(error, code=code, message=message, details=details)
    return o if log is o.log and error is o.error else replace(o, log=log, error=error)


def merge_reports(a: CommitReport, b: CommitReport) -> CommitReport:
    return CommitReport(
        committed=a.committed + b.committed, discarded=a.discarded + b.discarded, succeeded=a.succeeded + b.succeeded,
        retried=a.retried + b.retried, failed=a.failed + b.failed, made_ready=a.made_ready + b.made_ready,
        runs_finished=a.runs_finished + b.runs_finished, rejected=a.rejected | b.rejected,
    )


class CommitStore:
    """Committing attempts: fencing, results, children, records, artifacts, dependents, run states."""

    # -- commit ----------------------------------------------------------------------------
    def complete_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimRequest | None, now: datetime
    ) -> tuple[CommitReport, ClaimResult]:
        # Lock order, the same in every transaction so concurrent workers cannot deadlock:
        # own steps -> dependents (sorted) -> queue rows -> run rows. So runs settle last.
        # Lean (no atomic block) unless a child goes to a queue without a row: that row is made by the ORM.
        outcomes = [storable(o) for o in outcomes]
        lean = all(c.queue in self._known_queues for o in outcomes for c in o.children)
        with self._hot_transaction(lean=lean) as cursor:
            report, touched, wakeups = CommitReport(), [], Wakeups()
            for wave in dedup_waves(outcomes):
                done, runs = self._commit(cursor, wave, now, wakeups)
                report = merge_reports(report, done)
                touched = sorted({*touched, *runs})
            claimed, unreadable, kept_running = (
                self._claim(cursor, claim, now) if claim else (ClaimResult(steps=(), wake_in=None), [], set())
            )
            if unreadable:  # rows that cannot become a ClaimedStep fail alone; the claim goes on
                failed, runs = self._commit(cursor, unreadable, now, wakeups)
                report = merge_reports(report, failed)
                touched = sorted({*touched, *runs})
            if wakeups.needed(claimed.steps):
                self._notify(cursor)
            # A run that was running and now holds a step this transaction leased stays running: no
            # other commit can end it meanwhile (our step is running, or ready, to every snapshot).
            touched = [r for r in touched if r not in kept_running]
            if touched:
                report = replace(report, runs_finished=tuple(self._settle_runs(cursor, touched, now)))
        return report, claimed

    def _commit(
        self, cursor: Any, outcomes: Sequence[Outcome], now: datetime, wakeups: Wakeups
    ) -> tuple[CommitReport, list[str]]:
        """Apply the outcomes still holding their lease; return the report and the runs to settle."""
        now_db = self._dt(now)
        finished, satisfied = False, None
        if len(outcomes) == 1:
            finished, satisfied = self._finish_if_live(cursor, outcomes[0], now_db)
        valid: list[Outcome] = []
        fenced: list[Outcome] = []
        if finished:
            valid = list(outcomes)
        else:
            live: set[tuple[int, str, bool]] = set()
            pks = sorted({o.step.pk for o in outcomes})
            for chunk in _chunks(pks):
                cursor.execute(_LOCK_LIVE_STEPS_SQL.format(pks=_marks(len(chunk))) + self._lock_suffix(),
                               [now_db, *chunk])
                for pk, token, expired in cursor.fetchall():
                    live.add((pk, token, bool(expired)))
            for outcome in outcomes:
                key = (outcome.step.pk, outcome.step.lease.token)
                reclaim = outcome.lease_outcome == LeaseOutcome.EXPIRED
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
            if not finished:
                step_row, lease_row = self._finish_rows(o, now_db)
                step_updates.append(step_row)
                lease_updates.append(lease_row)
            event = self._outcome_event(o, now)
            if event is not None:
                events.append(event)
            if state == StepState.SUCCEEDED:
                succeeded += 1
            elif state == StepState.READY:
                retried += 1
            else:
                failed += 1
        if len(step_updates) == 1 and self.is_postgres:  # one plain round trip, not a pipeline of one
            cursor.execute(_FINISH_AND_RELEASE_SQL, [*step_updates[0], *lease_updates[0]])
        elif step_updates and self.is_postgres:
            # step row: state, result, error, available_at, finished_at, updated_at, id;
            # attempt row: released_at, outcome, error_code, error_message, log, started_at, token
            state, result, error, available, ended, _, pk = (list(c) for c in zip(*step_updates, strict=True))
            _, outcome, code, message, log, started, token = (list(c) for c in zip(*lease_updates, strict=True))
            cursor.execute(_FINISH_AND_RELEASE_MANY_PG_SQL.format(array=self._array_mark(cursor)),
                           [pk, state, result, error, available, ended, token, outcome, code, message, log, started,
                            now_db, now_db])
        elif step_updates:
            cursor.executemany(_FINISH_STEPS_SQL, step_updates)
            cursor.executemany(_RELEASE_LEASES_SQL, lease_updates)
        already = self._already_committed(cursor, fenced)
        for o in fenced:
            if o.lease_outcome == LeaseOutcome.EXPIRED or o.step.lease.token in already:
                # The worker committed first (a reclaim lost the race), or this very commit went
                # through before the connection dropped and is being retried: nothing to reject.
                continue
            events.append(self._event_row(
                now, EventKind.COMMIT_REJECTED, severity=Severity.WARNING, run_id=o.step.run_id, step_id=o.step.step_id,
                queue=o.step.queue, worker_id=o.step.lease.worker_id,
                message="late commit discarded: the lease had expired, was revoked, or the run was canceled",
                payload={"attempt": o.step.attempt, "token": o.step.lease.token, "would_be": str(o.next_state)},
            ))
            cursor.execute(_DISCARD_LEASE_SQL, [o.log, now_db, o.step.lease.token])
        ready: list[int] = []
        for o in valid:
            if o.next_state == StepState.SUCCEEDED:
                ready += self._write_products(cursor, o, now, resolved.get(o.step.lease.token))
        ready += self._release_dependents(cursor, valid, now, satisfied=satisfied)
        made_ready = len(ready)
        self._insert_events(cursor, events)
        wakeups.ready.update(ready)
        wakeups.slots_freed.update(o.step.queue for o in valid if o.step.queue in self._capped_queues)
        rejected = frozenset(
            o.step.lease.token for o in fenced
            if o.lease_outcome != LeaseOutcome.EXPIRED and o.step.lease.token not in already
        )
        report = CommitReport(
            committed=len(valid),
            discarded=len(rejected),
            rejected=rejected,
            succeeded=succeeded, retried=retried, failed=failed, made_ready=made_ready,
        )
        return report, sorted({o.step.run_id for o in valid})

    def _finish_rows(self, o: Outcome, now_db: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The parameters of an outcome's step update and attempt-row update."""
        state = o.next_state
        error = o.error.to_json() if o.error else None
        step_row = (
            str(state), _dumps(o.result) if state == StepState.SUCCEEDED else None, _dumps(error),
            self._dt(o.available_at) if o.available_at else now_db,
            now_db if state in TERMINAL_STEP_STATES else None, now_db, o.step.pk,
        )
        lease_row = (
            now_db, o.lease_outcome or str(state), o.error.code if o.error else "",
            o.error.message[:10000] if o.error else "", o.log, self._dt(o.started_at), o.step.lease.token,
        )
        return step_row, lease_row

    def _finish_if_live(self, cursor: Any, o: Outcome, now_db: Any) -> tuple[bool, list[int] | None]:
        """Finish one routine outcome whose lease holds, the fence inside the UPDATE; False if it wrote nothing.

        Routine: no children (checking them may turn the outcome into a failure before it is
        written) and not a reclaim (which commits an expired lease). Anything else, and an
        outcome this finds fenced, takes the locking read in ``_commit``, which decides it.
        Also returns the dependents whose edges out of this step it satisfied (PostgreSQL, a
        success), or None when ``_release_dependents`` must still satisfy them.
        """
        if o.children or o.lease_outcome == LeaseOutcome.EXPIRED:
            return False, None
        step_row, lease_row = self._finish_rows(o, now_db)
        fence = (o.step.lease.token, now_db)
        if self.is_postgres and o.next_state == StepState.SUCCEEDED:
            cursor.execute(_SUCCEED_RELEASE_AND_SATISFY_IF_LIVE_PG_SQL, [*step_row, *fence, *lease_row, True, False])
            finished, dependents = cursor.fetchone()
            return bool(finished), list(dependents) if finished else None
        if self.is_postgres:
            cursor.execute(_FINISH_AND_RELEASE_IF_LIVE_PG_SQL, [*step_row, *fence, *lease_row])
            return bool(cursor.fetchone()[0]), None
        cursor.execute(_FINISH_IF_LIVE_SQL, [*step_row, *fence])
        if cursor.rowcount != 1:
            return False, None
        cursor.execute(_RELEASE_LEASES_SQL, lease_row)
        return True, None

    @staticmethod
    def _already_committed(cursor: Any, fenced: Sequence[Outcome]) -> set[str]:
        """Tokens whose lease row already records this very outcome (a retried, applied commit)."""
        wanted = {o.step.lease.token: o.lease_outcome for o in fenced if o.lease_outcome != LeaseOutcome.EXPIRED}
        found: set[str] = set()
        tokens = sorted(wanted)
        for chunk in _chunks(tokens):
            cursor.execute(_LEASE_OUTCOMES_SQL.format(tokens=_marks(len(chunk))), list(chunk))
            found.update(token for token, outcome in cursor.fetchall() if outcome and outcome == wanted[token])
        return found

    def _outcome_event(self, o: Outcome, now: datetime) -> tuple[Any, ...] | None:
        """The event of a commit, or None for a routine success: its attempt row records it
        (read/events.py shows it as ``step_succeeded``); retries, failures, reclaims stay events."""
        if o.next_state == StepState.SUCCEEDED:
            return None
        report = outcome_report(next_state=o.next_state, lease_outcome=o.lease_outcome, attempt=o.step.attempt,
                                error_code=o.error.code if o.error else None)
        step = o.step
        payload: dict[str, Any] = {"attempt": step.attempt, "max_attempts": step.retry.max_attempts}
        if o.started_at and o.finished_at:
            payload["duration_ms"] = round((o.finished_at - o.started_at).total_seconds() * 1000, 3)
        if o.error:
            payload.update(code=o.error.code, message=o.error.message[:2000], retryable=o.error.retryable)
        if o.next_state == StepState.READY:
            payload["next_attempt_at"] = o.available_at.isoformat() if o.available_at else None
        return self._event_row(now, report.kind, severity=report.severity, run_id=step.run_id, step_id=step.step_id,
                               queue=step.queue, worker_id=step.lease.worker_id, message=report.message, payload=payload)

    def _with_children_checked(self, cursor: Any, o: Outcome, resolved: dict[str, Any]) -> Outcome:
        """Check emitted children against the run; a bad graph fails the step, never the worker."""
        if o.next_state != StepState.SUCCEEDED or not o.children:
            return o
        try:
            resolved[o.step.lease.token] = self._resolve_children(cursor, o)
        except InvalidGraph as exc:
            error = ErrorInfo(code="invalid_graph", message=str(exc), retryable=False)
            return Outcome(step=o.step, next_state=StepState.FAILED, error=error, log=o.log, started_at=o.started_at,
                           finished_at=o.finished_at, lease_outcome=LeaseOutcome.FAILED)
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
            cursor.execute(_RUN_STEPS_BY_ID_SQL.format(ids=_marks(len(chunk))) + self._lock_suffix("SHARE"),
                           [run_id, *chunk])
            for pk, sid, state, dedup in cursor.fetchall():
                existing[sid] = (pk, state)
                if dedup:
                    by_dedup[dedup] = sid
        keys = sorted(dedup_keys - set(by_dedup))
        for chunk in _chunks(keys):
            cursor.execute(_RUN_STEPS_BY_DEDUP_SQL.format(keys=_marks(len(chunk))) + self._lock_suffix("SHARE"),
                           [run_id, *chunk])
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
            from ..engine.values import Dependency as Dep

            fresh = [
                replace(c, depends_on=tuple(Dep(step_id=alias.get(d.step_id, d.step_id), required=d.required)
                                            for d in c.depends_on))
                for c in fresh
            ]
        validate_graph(fresh, existing=set(existing))
        return fresh, existing

    def _write_products(self, cursor: Any, o: Outcome, now: datetime, children: Any) -> list[int]:
        """Insert the (resolved) children, records and artifacts of a succeeded attempt.

        Returns the ids of the children inserted ready.
        """
        made_ready: list[int] = []
        now_db = self._dt(now)
        if children:
            fresh, existing = children
            if fresh:
                self._ensure_queues(cursor, {c.queue for c in fresh}, now)
                made_ready = self._insert_steps(cursor, o.step.run_id, fresh, existing=existing, now=now)
        if o.records:
            cursor.executemany(
                _UPSERT_RECORDS_SQL,
                [(r.collection, r.key, _dumps(r.data), o.step.run_id, o.step.step_id, now_db) for r in o.records],
            )
        if o.artifacts:
            cursor.executemany(
                _INSERT_ARTIFACTS_SQL,
                [(a.id, o.step.run_id, o.step.pk, a.name, a.kind, a.content_type, a.size, a.sha256, a.body,
                  a.storage_key, _dumps(dict(a.metadata)), now_db) for a in o.artifacts],
            )
        return made_ready

    def _release_dependents(
        self, cursor: Any, valid: Sequence[Outcome], now: datetime, *, satisfied: list[int] | None = None
    ) -> list[int]:
        """Satisfy edges out of steps that just ended; dependents with none left become ready.

        ``satisfied``: the dependents of edges the finishing statement already satisfied (it
        did, for every outcome in ``valid``). Returns the ids of the steps made ready.
        """
        succeeded = sorted(o.step.pk for o in valid if o.next_state == StepState.SUCCEEDED)
        ended = sorted(o.step.pk for o in valid if o.next_state in (StepState.FAILED, StepState.CANCELED))
        if not succeeded and not ended:
            return []
        now_db = self._dt(now)
        counts = Counter(satisfied) if satisfied is not None else self._satisfy_edges(cursor, succeeded, ended)
        if not counts:
            return []
        dependents = sorted(counts)  # a fixed lock order: concurrent commits cannot deadlock here
        # A row counted down had an unmet edge, so it was not ready before: ready now is made ready.
        if len(dependents) == 1:
            (pk,) = dependents
            n = counts[pk]
            cursor.execute(_COUNT_DOWN_ONE_SQL, [n, n, n, now_db, n, now_db, pk])
            return [pk for pk, state in cursor.fetchall() if state == StepState.READY]
        if self.is_postgres:
            cursor.execute(_COUNT_DOWN_MANY_PG_SQL.format(array=self._array_mark(cursor)),
                           [dependents, [counts[pk] for pk in dependents], now_db, now_db])
            return [pk for pk, state in cursor.fetchall() if state == StepState.READY]
        cursor.executemany(_COUNT_DOWN_DEPS_SQL, [(counts[pk], pk) for pk in dependents])
        made_ready: list[int] = []
        for chunk in _chunks(dependents):
            cursor.execute(_MAKE_READY_SQL.format(pks=_marks(len(chunk))), [now_db, now_db, *chunk])
            made_ready += [pk for (pk,) in cursor.fetchall()]
        return made_ready

    @staticmethod
    def _satisfy_edges(cursor: Any, succeeded: list[int], ended: list[int]) -> Counter[int]:
        """Satisfy every edge out of the succeeded steps and the optional ones out of the ended;
        return each dependent with the number of its edges just satisfied."""
        counts: Counter[int] = Counter()
        for pks, only_optional in ((succeeded, False), (ended, True)):
            for chunk in _chunks(pks):
                cursor.execute(
                    _SATISFY_EDGES_SQL.format(only_optional=" AND required = %s" if only_optional else "",
                                              pks=_marks(len(chunk))),
                    [True, False, *([False] if only_optional else []), *chunk],
                )
                counts.update(r[0] for r in cursor.fetchall())
        return counts

    def _settle_runs(self, cursor: Any, run_ids: Sequence[str], now: datetime) -> list[str]:
        """Recompute the touched runs' states from index probes, a batch of runs per statement.

        On PostgreSQL the run rows are locked first (in id order) and probed in a later statement,
        whose snapshot sees every commit that held a lock we waited for: two workers committing a
        run's last steps at once cannot both miss that it ended.
        """
        finished: list[str] = []
        now_db = self._dt(now)
        updates, events = [], []
        for chunk in _chunks(sorted(run_ids)):
            marks = _marks(len(chunk))
            if self.is_postgres:
                cursor.execute(_LOCK_RUNS_SQL.format(ids=marks), list(chunk))
            cursor.execute(_RUN_HOLDS_SQL.format(ids=marks), list(chunk))
            for run_id, current, ready, running, pending, failed in cursor.fetchall():
                if current == RunState.CANCELED:
                    continue
                state = run_state_from_steps(ready=bool(ready), running=bool(running), pending=bool(pending),
                                             failed=bool(failed))
                if state == current:
                    continue
                terminal = state.is_terminal
                updates.append((str(state), now_db if terminal else None, now_db, run_id))
                if terminal:
                    finished.append(run_id)
                    kind, severity = run_finished_event(state)
                    events.append(self._event_row(now, kind, severity=severity, run_id=run_id, message=f"run {state}"))
        if updates:
            cursor.executemany(_SET_RUN_STATE_SQL, updates)
        self._insert_events(cursor, events)
        return finished
