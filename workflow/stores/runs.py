"""Creating runs and their first steps, and reading runs, results and records back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    transaction,
)
from django.db.models import Count

from ..engine.errors import NotFound, RunConflict, StoreUnavailable
from ..engine.rules import EventKind
from ..engine.values import (
    ErrorInfo,
    NewRun,
    RecordInfo,
    RunHandle,
    RunInfo,
    RunState,
    StepResult,
    StepSpec,
    StepState,
)
from ..models import Record, Run, Step
from .rows import (
    _chunks,
    _dumps,
)

_STEP_COLUMNS = (
    "run_id, step_id, kind, queue, site, parent_step_id, dedup_key, input, metadata, retry, state,"
    " max_attempts, pending_deps, priority, timeout_seconds, available_at, created_at, updated_at, attempt"
)
# One multi-row INSERT per chunk of steps: ``{rows}`` repeats ``_STEP_ROW_MARKS`` once per step.
_INSERT_STEPS_SQL = f"INSERT INTO workflow_step ({_STEP_COLUMNS}) VALUES {{rows}} RETURNING id, step_id"
_STEP_ROW_MARKS = "(" + ", ".join(["%s"] * 18) + ", 0)"
_INSERT_RUN_SQL = (
    "INSERT INTO workflow_run (id, package, name, input, metadata, state, created_at, updated_at)"
    f" VALUES (%s, %s, %s, %s, %s, '{RunState.PENDING}', %s, %s)"
)
_INSERT_EDGES_SQL = (
    "INSERT INTO workflow_dependency (run_id, step_id, depends_on_id, required, satisfied)"
    " VALUES (%s, %s, %s, %s, %s)"
)
_INSERT_EDGES_ROWS_SQL = (
    "INSERT INTO workflow_dependency (run_id, step_id, depends_on_id, required, satisfied) VALUES {rows}"
)
_EDGE_ROW_MARKS = "(%s, %s, %s, %s, %s)"


class RunsStore:
    """Creating runs and their first steps, and reading runs, results and records back."""

    # -- runs -----------------------------------------------------------------------------
    def create_run(self, run: NewRun, now: datetime) -> RunHandle:
        try:
            with transaction.atomic(using=self.using):
                with self.connection.cursor() as cursor:
                    now_db = self._dt(now)
                    cursor.execute(_INSERT_RUN_SQL, [run.id, run.package, run.name, _dumps(run.input),
                                                     _dumps(dict(run.metadata)), now_db, now_db])
                    self._ensure_queues(cursor, {s.queue for s in run.steps}, now)
                    self._insert_steps(cursor, run.id, run.steps, existing={}, now=now)
                    self._notify(cursor)
                    self._insert_events(cursor, [self._event_row(
                        now, EventKind.RUN_CREATED, run_id=run.id, message=f"run created with {len(run.steps)} step{'' if len(run.steps) == 1 else 's'}",
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
    ) -> list[int]:
        """Insert steps and their edges; ``existing`` maps step ids already in the run to (pk, state).

        Returns the ids of those inserted ready.
        """
        # Multi-row INSERT ... RETURNING: one statement per 500 steps, and the new ids come back with it.
        # Values children share (retry policy, empty metadata, timestamps) are encoded once.
        now_db = self._dt(now)
        ready, pending = str(StepState.READY), str(StepState.PENDING)
        retry_json: dict[int, str] = {}  # by identity: the specs keep each policy alive meanwhile
        ready_ids: list[str] = []
        rows = []
        for s_ in specs:
            unmet = 0
            for dep in s_.depends_on:
                if dep.step_id not in existing or not dep.is_met_by(existing[dep.step_id][1]):
                    unmet += 1
            if unmet == 0:
                ready_ids.append(s_.id)
            policy = s_.retry
            retry = retry_json.get(id(policy))
            if retry is None:
                retry = retry_json[id(policy)] = _dumps(policy.to_json()) or "{}"
            rows.append((
                run_id, s_.id, s_.kind, s_.queue, s_.site, s_.parent_id, s_.dedup_key,
                _dumps(s_.input),
                _dumps(dict(s_.metadata)) if s_.metadata else "{}", retry, pending if unmet else ready,
                policy.max_attempts, unmet, s_.priority, s_.timeout.total_seconds() if s_.timeout is not None else None,
                self._dt(s_.not_before) if s_.not_before else now_db, now_db, now_db,
            ))
        pks: dict[str, int] = {}
        for chunk in _chunks(rows):
            cursor.execute(
                _INSERT_STEPS_SQL.format(rows=", ".join([_STEP_ROW_MARKS] * len(chunk))),
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
        if edges and self.is_postgres:  # psycopg pipelines executemany already
            cursor.executemany(_INSERT_EDGES_SQL, edges)
        elif edges:  # SQLite: a multi-row INSERT per 500 edges takes half the time of one INSERT per edge
            for chunk in _chunks(edges):
                cursor.execute(
                    _INSERT_EDGES_ROWS_SQL.format(rows=", ".join([_EDGE_ROW_MARKS] * len(chunk))),
                    [value for row in chunk for value in row],
                )
        return [pks[sid] for sid in ready_ids]

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
        emitted = Step.objects.using(self.using).filter(run_id=run_id, parent_step_id=step_id).order_by("id")
        return StepResult(
            run_id=run_id, step_id=step_id, state=StepState(step.state), data=step.result,
            error=ErrorInfo.from_json(step.error) if step.error else None, attempt=step.attempt,
            finished_at=step.finished_at, emitted=tuple(emitted.values_list("step_id", flat=True)),
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
