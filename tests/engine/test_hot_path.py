"""The hot path's cost, pinned: SQL statements and rows written per step and per chain hop (issue 17).

A step is "commit one no-op step, then claim the next" in one ``complete_and_claim`` transaction, as a
worker with one thread does it; a chain hop is the same where the committed step releases the one it
claims. The bounds are what the store achieves today on each database: raising one needs a reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from tests.conftest import run_graph
from workflow.engine.rules import LeaseOutcome
from workflow.engine.values import ClaimRequest, Outcome, QueueConfig, RecordWrite, StepSpec, StepState
from workflow.models import Event, Lease, Step
from workflow.stores.db import DjangoStore

pytestmark = pytest.mark.django_db(transaction=True)

# (statements, rows written) per step and per hop, on each database.
BOUNDS = {
    # before issue 17: step 14 statements / 6 rows, hop 16 / 8 (SQLite); step 13 / 6, hop 16 / 9 (PostgreSQL)
    # A hop is measured as a worker claims (65 wanted, one found, one thread free): the one step fills
    # the thread, so the claim skips the wake-up query (test_claim__looks_for_a_wake_up_only_...).
    # SQLite claims and leases in one UPDATE ... RETURNING. PostgreSQL's hop releases its dependent in
    # two plain statements, not one CTE: measured, the pair costs half the CTE's time per hop.
    # A routine commit of one step fences inside its finishing UPDATE: no locking read first.
    # Transaction control (BEGIN, COMMIT) is not counted, nor SQLite's busy timeout, switched off
    # around its BEGIN (``_begin_immediate``): connection settings, no work.
    "sqlite": {"step": (6, 4), "hop": (7, 6)},
    # A routine success on PostgreSQL satisfies its step's edges in the statement that finishes it.
    "postgresql": {"step": (3, 4), "hop": (4, 6)},
}
_TRANSACTION_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|PRAGMA busy_timeout)\b", re.IGNORECASE)


# PostgreSQL's count of the rows this transaction inserted, updated and deleted, in our tables.
_PG_ROWS_WRITTEN_SQL = (
    "SELECT COALESCE(SUM(pg_stat_get_xact_tuples_inserted(oid) + pg_stat_get_xact_tuples_updated(oid)"
    " + pg_stat_get_xact_tuples_deleted(oid)), 0) FROM pg_class WHERE relkind = 'r' AND relname LIKE 'workflow%%'"
)


class Counter:
    """The statements the store sends (transaction control left out), the rows they write, and
    whether Django's atomic block was open around them."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.rows_written = 0
        self.in_atomic_block: set[bool] = set()

    def saw(self, sql: str) -> None:
        if _TRANSACTION_CONTROL.match(sql):  # Django's atomic block sends its BEGIN before it counts as open
            return
        self.statements.append(sql)
        self.in_atomic_block.add(connection.in_atomic_block)

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        params = list(params) if many else params  # the driver runs executemany's statement once per row
        for _ in params if many else (None,):
            self.saw(sql)
        return execute(sql, params, many, context)


@contextmanager
def counting() -> Iterator[Counter]:
    """Count at the driver where it can: SQLite's trace callback and count of rows changed, so what
    is counted is the store's own path (it goes through Django's cursor only while an execute
    wrapper is installed). PostgreSQL has no trace hook: its statements pass an execute wrapper (the
    same SQL, through Django's cursor), and its rows are the transaction's own count, read inside
    an outer atomic block (in which the store's transaction is a savepoint)."""
    counter = Counter()
    connection.ensure_connection()
    if connection.vendor != "sqlite":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_PG_ROWS_WRITTEN_SQL)
            before = cursor.fetchone()[0]
            with connection.execute_wrapper(counter):
                yield counter
            cursor.execute(_PG_ROWS_WRITTEN_SQL)
            counter.rows_written = cursor.fetchone()[0] - before
        return
    driver = connection.connection
    before = driver.total_changes
    driver.set_trace_callback(counter.saw)
    try:
        yield counter
    finally:
        driver.set_trace_callback(None)
    counter.rows_written = driver.total_changes - before


def _request(limit: int = 1) -> ClaimRequest:
    """``limit=65``: what a one-thread worker asks for (its thread and a prefetch of short steps)."""
    return ClaimRequest(worker_id="w-hot", limit=limit, lease_duration=timedelta(seconds=30), start_now=1)


def _done(step: Any) -> Outcome:
    now = timezone.now()
    return Outcome(step=step, next_state=StepState.SUCCEEDED, result={"ok": 1}, started_at=now, finished_at=now,
                   lease_outcome=LeaseOutcome.SUCCEEDED, log="did it\n")


def _hop(store: DjangoStore, step: Any, limit: int) -> tuple[Counter, Any]:
    with counting() as counter:
        report, claimed = store.complete_and_claim([_done(step)], _request(limit), timezone.now())
    assert report.committed == 1 and report.succeeded == 1
    return counter, claimed


def _walk(runtime: Any, steps: list[dict], limit: int = 1) -> list[Counter]:
    """Claim the first step, then commit-and-claim until the run is done; the counters of each call."""
    run_graph(runtime, steps)
    store = DjangoStore()
    _, claimed = store.complete_and_claim([], _request(limit), timezone.now())
    counters = []
    while claimed.steps:
        (step,) = claimed.steps
        counter, claimed = _hop(store, step, limit)
        counters.append(counter)
    assert len(counters) == len(steps)
    assert set(Step.objects.values_list("state", flat=True)) == {"succeeded"}
    return counters


def _check(kind: str, counters: list[Counter]) -> None:
    middle = counters[1:-1]  # the first claim starts the run and the last commit finishes it
    statements = max(len(c.statements) for c in middle)
    rows = max(c.rows_written for c in middle)
    bound = BOUNDS[connection.vendor][kind]
    detail = "\n".join(counters[1].statements)
    print(f"{connection.vendor} {kind}: {statements} statements, {rows} rows written\n{detail}")
    assert statements <= bound[0] and rows <= bound[1], (
        f"{kind} costs {statements} statements and {rows} rows written (bound {bound}):\n{detail}"
    )
    # A routine commit fences inside its finishing UPDATE: no locking read of its step comes first.
    assert not any("lease_expires_at < " in sql for c in middle for sql in c.statements), detail
    # SQLite's hot transaction is lean: BEGIN IMMEDIATE and COMMIT without Django's atomic block.
    lean = connection.vendor == "sqlite"
    assert set().union(*(c.in_atomic_block for c in counters)) == {not lean}


def test_hot_path__statements_and_writes_per_independent_step(runtime):
    counters = _walk(runtime, [{"id": f"s{i}", "kind": "noop"} for i in range(5)])
    _check("step", counters)
    # What the store must still keep of each attempt: one attempt row each, with its outcome and log.
    leases = list(Lease.objects.order_by("claimed_at"))
    assert [(x.outcome, x.log) for x in leases] == [("succeeded", "did it\n")] * 5
    assert all(x.released_at and x.started_at for x in leases)


def test_hot_path__statements_and_writes_per_chain_hop(runtime):
    steps = [{"id": "s0", "kind": "noop"}] + [{"id": f"s{i}", "kind": "noop", "deps": [f"s{i - 1}"]} for i in range(1, 6)]
    counters = _walk(runtime, steps, limit=65)  # the claim finds one step of 65 wanted: it also asks when to look again
    _check("hop", counters)
    # The child is claimed in its parent's commit: no NOTIFY for it, which would wake an idle
    # worker (in a chain, this worker's own listener) into an empty claim.
    assert not any("pg_notify" in sql for c in counters for sql in c.statements)
    assert Lease.objects.filter(outcome="succeeded").count() == 6
    assert Event.objects.filter(kind="run_succeeded").count() == 1


def test_hot_path__a_capped_hop_that_takes_back_the_slot_it_freed_wakes_no_one(runtime):
    """A NOTIFY per capped hop woke this worker's own loop into an empty claim, which held the
    commit lock while the next hop finished: half of a capped chain's hops crossed threads."""
    store = DjangoStore()
    store.configure_queues({"capped": QueueConfig(max_workers=1)}, timezone.now())
    steps = [{"id": f"s{i}", "kind": "noop", "queue": "capped", **({"deps": [f"s{i - 1}"]} if i else {})}
             for i in range(4)]
    run_graph(runtime, steps)
    _, claimed = store.complete_and_claim([], _request(), timezone.now())
    statements = []
    for _ in range(2):
        counter, claimed = _hop(store, claimed.steps[0], limit=1)
        statements += counter.statements
    assert len(claimed.steps) == 1 and not any("pg_notify" in sql for sql in statements)
    # A capped commit that does not take its slot back frees it for the others: those are told.
    with counting() as counter:
        store.complete_and_claim([_done(claimed.steps[0])], None, timezone.now())
    if connection.vendor == "postgresql":
        assert any("pg_notify" in sql for sql in counter.statements), counter.statements


def test_hot_path__a_slot_freed_in_one_capped_queue_is_told_though_the_claim_took_another(runtime):
    """Two capped queues: taking a slot of queue b does not hand on the slot queue a freed."""
    store = DjangoStore()
    store.configure_queues({"a": QueueConfig(max_workers=1), "b": QueueConfig(max_workers=1)}, timezone.now())
    run_graph(runtime, [{"id": "a0", "kind": "noop", "queue": "a"}, {"id": "a1", "kind": "noop", "queue": "a"},
                        {"id": "b0", "kind": "noop", "queue": "b"}])
    _, claimed = store.complete_and_claim([], replace(_request(), queues=("a",)), timezone.now())
    with counting() as counter:
        _, taken = store.complete_and_claim([_done(claimed.steps[0])], replace(_request(), queues=("b",)),
                                            timezone.now())
    assert [s.step_id for s in taken.steps] == ["b0"]
    if connection.vendor == "postgresql":
        assert any("pg_notify" in sql for sql in counter.statements), counter.statements


def test_store_cursor__binds_server_side_only_where_the_site_allows_prepared_statements(runtime):
    """The site's ``prepare_threshold`` decides (Django's default, None, keeps PgBouncer working);
    the store works either way."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no server-side binding")
    import psycopg

    connection.ensure_connection()
    raw = connection.connection
    assert raw.prepare_threshold == 5  # wfsite.settings sets it for PostgreSQL
    store = DjangoStore()
    cursor = store._raw_cursor(connection)
    assert isinstance(cursor, psycopg.Cursor) and not isinstance(cursor, psycopg.ClientCursor)
    raw.prepare_threshold = None
    try:
        assert isinstance(store._raw_cursor(connection), psycopg.ClientCursor)
        steps = [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "noop", "deps": ["a"]}]
        _walk(runtime, steps, limit=65)  # asserts every step succeeded
    finally:
        raw.prepare_threshold = 5


def test_store_cursor__is_the_drivers_unless_an_execute_wrapper_is_installed(runtime):
    """Django's cursor wrapper costs about 9 µs a statement, which the store skips; an execute
    wrapper (an APM hook, a test) still sees every statement the store sends."""
    from django.db.backends.utils import CursorWrapper

    run_graph(runtime, [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "noop", "deps": ["a"]}])
    store = DjangoStore()
    with store._cursor() as cursor:
        assert not isinstance(cursor, CursorWrapper)
    seen: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        with store._cursor() as cursor:
            assert isinstance(cursor, CursorWrapper)
        _, claimed = store.complete_and_claim([], _request(), timezone.now())
        (a,) = claimed.steps
        _, claimed = store.complete_and_claim([_done(a)], _request(), timezone.now())
    assert [s.step_id for s in claimed.steps] == ["b"]
    assert sum("SET state = 'running', attempt" in sql for sql in seen) == 2  # both claims
    assert any("UPDATE workflow_step SET state = %s, result = %s" in sql for sql in seen)  # a's commit


_HISTORY_TABLES = ("workflow_step", "workflow_run", "workflow_lease", "workflow_event")


def _hot_statements() -> dict[str, str]:
    """Every SQL statement of the claim, commit and lease stores, with placeholders for its lists."""
    from workflow.stores import claim, commit, leases

    claim_query = DjangoStore().claim_sql(1)  # the claim as SQLite composes it: statements embed it whole
    out = {}
    for module in (claim, commit, leases):
        for name in dir(module):
            sql = getattr(module, name)
            if (name.endswith("_SQL") and isinstance(sql, str) and "_PG_" not in name and "WITH " not in sql
                    and "FOR UPDATE" not in sql):  # PostgreSQL-only statements
                lists = {key: "%s, %s" for key in re.findall(r"(?<!\{)\{(\w+)\}(?!\})", sql)}
                sql = sql.format(**{**lists, "index_hint": " INDEXED BY step_ready_idx", "skip_locked": "",
                                    "only_optional": "", "due": "NULL", "expiry": "NULL", "columns": "id",
                                    "claim": claim_query,
                                    "awaiting": f"CASE WHEN id IN ({claim_query}) THEN NULL ELSE %s END"})
                out[f"{module.__name__.rsplit('.', 1)[-1]}.{name}"] = sql
    return out


@pytest.mark.django_db
def test_hot_statements__read_through_an_index_never_through_history():
    """No statement of the hot path walks a table that grows with history (SQLite: its plans are
    fixed by the schema; a pending-runs walk and a full step scan were both found this way)."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite plans: PostgreSQL chooses by statistics, which an empty test database lacks")
    statements = _hot_statements()
    assert len(statements) > 20
    with connection.cursor() as cursor:
        for name, sql in statements.items():
            sql = sql.replace("%s", "?")
            plan = [row[3] for row in cursor.execute(f"EXPLAIN QUERY PLAN {sql}", [None] * sql.count("?")).fetchall()]
            # SQLite names an aliased table by its alias ("SCAN r"): a scan of an alias of a history table counts.
            aliases = {alias for table, alias in re.findall(r"\b(workflow_\w+) (?:AS )?([a-z])\b", sql)
                       if table in _HISTORY_TABLES}
            scans = [line for line in plan if any(line == f"SCAN {t}" or line.startswith(f"SCAN {t} ") and
                                                   "step_running_idx" not in line for t in (*_HISTORY_TABLES, *aliases))]
            assert not scans, f"{name} scans history: {plan}\n{sql}"
            if name == "claim._START_RUNS_SQL":
                assert any("sqlite_autoindex_workflow_run_1" in line for line in plan), plan


def test_claim__leases_in_claim_order_and_only_the_first_start_now_start(runtime):
    """One statement claims and leases a queue's steps (both databases): the steps come back by
    priority, then due time; the first ``start_now`` are executing, the rest wait for a thread; each
    token is unique and names its step."""
    run_graph(runtime, [{"id": f"s{i}", "kind": "noop"} for i in range(6)])
    priorities = {"s0": -1, "s1": 5, "s2": 0, "s3": 9, "s4": 0, "s5": 2}
    for step_id, priority in priorities.items():
        Step.objects.filter(step_id=step_id).update(priority=priority)
    store = DjangoStore()
    request = ClaimRequest(worker_id="w-order", limit=5, lease_duration=timedelta(seconds=30), start_now=2)
    _, claimed = store.complete_and_claim([], request, timezone.now())
    assert [s.step_id for s in claimed.steps] == ["s3", "s1", "s5", "s2", "s4"]  # s2, s4: same priority, by id
    rows = {s.step_id: s for s in Step.objects.filter(state="running")}
    assert sorted(rows) == ["s1", "s2", "s3", "s4", "s5"]
    assert {sid for sid, s in rows.items() if s.awaiting_thread_since is None} == {"s3", "s1"}
    tokens = [s.lease.token for s in claimed.steps]
    assert len(set(tokens)) == 5 and all(t.endswith(f"{s.pk:x}") for t, s in zip(tokens, claimed.steps, strict=True))
    assert [rows[s.step_id].lease_token for s in claimed.steps] == tokens
    assert all(s.lease.attempt == 1 for s in claimed.steps)
    leases = dict(Lease.objects.values_list("token", "step__step_id"))
    assert leases == {s.lease.token: s.step_id for s in claimed.steps}


def test_claim__across_two_queues_only_the_first_start_now_of_the_whole_claim_start(runtime):
    """The start-now budget spans queues (a capped one among them): the first ``start_now`` steps
    of the whole claim, in the order it took them, are executing; every later one waits for a thread."""
    runtime.store.configure_queues({"capped": QueueConfig(max_workers=10)}, timezone.now())
    run_graph(runtime, [{"id": f"{q}{i}", "kind": "noop", "queue": q} for q in ("capped", "plain") for i in range(3)])
    store = DjangoStore()
    request = ClaimRequest(worker_id="w-two", limit=5, lease_duration=timedelta(seconds=30), start_now=4)
    _, claimed = store.complete_and_claim([], request, timezone.now())
    assert len(claimed.steps) == 5 and {s.queue for s in claimed.steps} == {"capped", "plain"}
    waiting = dict(Step.objects.filter(state="running").values_list("step_id", "awaiting_thread_since"))
    assert [waiting[s.step_id] is None for s in claimed.steps] == [True] * 4 + [False]


def test_claim__looks_for_a_wake_up_only_while_a_thread_is_left_free(runtime):
    """A claim that found fewer steps than it wanted tells the worker when to look again, unless every
    free thread got a step: then an outcome comes first and claims again, so it skips the query."""
    run_graph(runtime, [{"id": "now", "kind": "noop"}, {"id": "later", "kind": "noop"}])
    Step.objects.filter(step_id="later").update(available_at=timezone.now() + timedelta(seconds=40))
    store = DjangoStore()

    def claim(start_now: int) -> tuple[Any, list[str]]:
        request = ClaimRequest(worker_id="w-wake", limit=10, lease_duration=timedelta(seconds=30), start_now=start_now)
        with counting() as counter:
            _, claimed = store.complete_and_claim([], request, timezone.now())
        return claimed, counter.statements

    claimed, statements = claim(start_now=2)  # one step for two free threads: when is the next one due?
    assert [s.step_id for s in claimed.steps] == ["now"]
    assert 30 < claimed.wake_in <= 40
    assert any("MIN(available_at)" in sql for sql in statements)
    Step.objects.filter(step_id="now").update(state="ready", lease_token=None, lease_owner=None,
                                              lease_expires_at=None)
    claimed, statements = claim(start_now=1)  # the one free thread got it: nothing else can start
    assert [s.step_id for s in claimed.steps] == ["now"] and claimed.wake_in is None
    assert not any("MIN(available_at)" in sql for sql in statements)
    claimed, statements = claim(start_now=0)  # every thread busy, nothing due: wait for an outcome
    assert claimed.steps == () and claimed.wake_in is None
    assert not any("MIN(available_at)" in sql for sql in statements)


def test_hot_transaction__a_failed_statement_rolls_the_whole_commit_back_and_the_next_starts_clean(runtime):
    """A lean commit (SQLite) that fails midway leaves nothing of itself and no open transaction:
    the batch's good outcome is not committed, and commits alone afterwards."""
    run_graph(runtime, [{"id": "good", "kind": "noop"}, {"id": "bad", "kind": "noop"}])
    store = DjangoStore()
    _, claimed = store.complete_and_claim([], _request(limit=2), timezone.now())
    steps = {s.step_id: s for s in claimed.steps}
    bad = Outcome(step=steps["bad"], next_state=StepState.SUCCEEDED, started_at=timezone.now(),
                  finished_at=timezone.now(), lease_outcome=LeaseOutcome.SUCCEEDED,
                  records=(RecordWrite(collection=None, key="k", data=1),))  # type: ignore[arg-type]  # NOT NULL
    with pytest.raises(IntegrityError):
        store.complete_and_claim([_done(steps["good"]), bad], None, timezone.now())
    assert not connection.in_atomic_block and connection.get_autocommit()
    if connection.vendor == "sqlite":
        assert not connection.connection.in_transaction
    assert dict(Step.objects.values_list("step_id", "state")) == {"good": "running", "bad": "running"}
    assert not Lease.objects.exclude(outcome="").exists()
    report, _ = store.complete_and_claim([_done(steps["good"])], None, timezone.now())
    assert report.committed == 1 and Step.objects.get(step_id="good").state == "succeeded"


def test_hot_transaction__a_child_in_a_new_queue_commits_in_an_atomic_block(runtime):
    """The queue row a new queue needs is made by the ORM, which a lean commit cannot host: such a
    commit opens Django's atomic block (on every database), and the row exists once it commits."""
    run_graph(runtime, [{"id": "parent", "kind": "noop"}])
    store = DjangoStore()
    _, claimed = store.complete_and_claim([], _request(), timezone.now())
    (parent,) = claimed.steps
    child = StepSpec(id="child", kind="noop", queue="fresh-queue", parent_id="parent")
    done = Outcome(step=parent, next_state=StepState.SUCCEEDED, children=(child,), started_at=timezone.now(),
                   finished_at=timezone.now(), lease_outcome=LeaseOutcome.SUCCEEDED)
    with counting() as counter:
        report, _ = store.complete_and_claim([done], None, timezone.now())
    assert report.committed == 1 and counter.in_atomic_block == {True}
    assert Step.objects.get(step_id="child").queue == "fresh-queue"
    assert "fresh-queue" in store._known_queues


@contextmanager
def _write_lock_held_elsewhere() -> Iterator[Any]:
    """Another process's view of the file: a connection of its own holding SQLite's write lock."""
    import sqlite3

    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        if other.in_transaction:
            other.rollback()
        other.close()


def _busy_timeout_ms() -> int:
    return connection.connection.execute("PRAGMA busy_timeout").fetchone()[0]


def test_hot_transaction__waits_for_another_process_write_lock_then_commits(runtime):
    """SQLite: a commit that finds the file locked tries again in short sleeps of its own until
    the lock is free, commits, and leaves the connection's busy timeout as it found it."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only: PostgreSQL has row locks, not a file's write lock")
    import threading

    run_graph(runtime, [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "noop", "deps": ["a"]}])
    store = DjangoStore()
    _, claimed = store.complete_and_claim([], _request(), timezone.now())
    connection.ensure_connection()
    configured = _busy_timeout_ms()
    assert configured == 30_000  # wfsite's OPTIONS timeout
    begins: list[str] = []
    connection.connection.set_trace_callback(lambda sql: begins.append(sql) if sql.startswith("BEGIN") else None)
    try:
        with _write_lock_held_elsewhere() as other:
            releaser = threading.Timer(0.3, other.commit)
            releaser.start()
            report, claimed = store.complete_and_claim([_done(claimed.steps[0])], _request(), timezone.now())
            releaser.join()
    finally:
        connection.connection.set_trace_callback(None)
    assert report.committed == 1 and [s.step_id for s in claimed.steps] == ["b"]
    # Tried again and again from Python (SQLite's own busy handler retries inside one statement).
    assert len(begins) > 2 and set(begins) == {"BEGIN IMMEDIATE"}, begins
    assert _busy_timeout_ms() == configured


def test_hot_transaction__gives_up_after_the_connections_timeout_and_loses_nothing(runtime, monkeypatch):
    """A lock held past the connection's timeout: the commit raises StoreUnavailable (the worker
    keeps its outcome and retries), writes nothing, and the busy timeout is restored."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only: PostgreSQL has row locks, not a file's write lock")
    import time

    from workflow.engine.errors import StoreUnavailable

    run_graph(runtime, [{"id": "a", "kind": "noop"}])
    store = DjangoStore()
    _, claimed = store.complete_and_claim([], _request(), timezone.now())
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.2)
    with _write_lock_held_elsewhere():
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.complete_and_claim([_done(claimed.steps[0])], None, timezone.now())
        waited = time.monotonic() - started
    assert 0.2 <= waited < 5, waited  # it waited the timeout out, not SQLite's 30 s, and not less
    assert Step.objects.get(step_id="a").state == "running"
    report, _ = store.complete_and_claim([_done(claimed.steps[0])], None, timezone.now())
    assert report.committed == 1 and Step.objects.get(step_id="a").state == "succeeded"
    connection.ensure_connection()
    assert _busy_timeout_ms() == 200


def _commit_batch(runtime: Any, n: int) -> tuple[Counter, dict[str, Any]]:
    """Claim ``n`` independent steps, then commit them in one call: a third succeed, a third fail
    for good, a third fail retryably; the statements of that commit, and each step after it."""
    from workflow.engine.values import ErrorInfo

    run_graph(runtime, [{"id": f"s{i}", "kind": "noop"} for i in range(n)])
    store = DjangoStore()
    _, claimed = store.complete_and_claim([], _request(limit=n), timezone.now())
    assert len(claimed.steps) == n
    now = timezone.now()
    outcomes = []
    for step in claimed.steps:
        i = int(step.step_id[1:])
        if i % 3 == 0:
            outcomes.append(_done(step))
            continue
        retry = i % 3 == 2
        error = ErrorInfo(code=f"e{i}", message=f"boom {i}", retryable=retry)
        outcomes.append(Outcome(
            step=step, next_state=StepState.READY if retry else StepState.FAILED, error=error, started_at=now,
            finished_at=now, available_at=now + timedelta(minutes=5) if retry else None, log=f"log {i}\n",
            lease_outcome=LeaseOutcome.RETRIED if retry else LeaseOutcome.FAILED,
        ))
    outcomes.reverse()  # their events are written in the order of the outcomes, not of the steps' ids
    with counting() as counter:
        report, _ = store.complete_and_claim(outcomes, None, now)
    events = Event.objects.filter(kind__in=["step_failed", "step_retrying"]).order_by("id")
    assert list(events.values_list("step_id", flat=True)) == [
        o.step.step_id for o in outcomes if o.next_state != StepState.SUCCEEDED]
    assert (report.succeeded, report.failed, report.retried) == (len(range(0, n, 3)), len(range(1, n, 3)),
                                                                 len(range(2, n, 3)))
    return counter, {s.step_id: s for s in Step.objects.prefetch_related("leases")}


@pytest.fixture(params=["server-side binding", "client-side binding"])
def binding(request: Any) -> Iterator[str]:
    """PostgreSQL: the store's arrays go in binary where psycopg binds on the server, as text where
    the site turned prepared statements off (client-side binding); both must write the same rows."""
    if request.param == "client-side binding" and connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    connection.ensure_connection()
    if connection.vendor != "postgresql":
        yield request.param
        return
    raw = connection.connection
    threshold = raw.prepare_threshold
    if request.param == "client-side binding":
        raw.prepare_threshold = None
    try:
        with DjangoStore()._cursor() as cursor:
            assert DjangoStore._array_mark(cursor) == ("%b" if request.param == "server-side binding" else "%s")
        yield request.param
    finally:
        raw.prepare_threshold = threshold


def test_commit__a_batch_writes_every_outcome_and_on_postgresql_in_statements_not_per_outcome(runtime, binding):
    counter, steps = _commit_batch(runtime, 9)
    for step_id, step in steps.items():
        i = int(step_id[1:])
        (lease,) = step.leases.all()
        if i % 3 == 0:
            assert (step.state, step.result, step.error, lease.outcome, lease.log) == (
                "succeeded", {"ok": 1}, None, "succeeded", "did it\n")
        else:
            retry = i % 3 == 2
            assert step.state == ("ready" if retry else "failed") and step.result is None
            assert step.error == {"code": f"e{i}", "message": f"boom {i}", "retryable": retry, "details": None}
            assert (lease.outcome, lease.error_code, lease.error_message, lease.log) == (
                "retried" if retry else "failed", f"e{i}", f"boom {i}", f"log {i}\n")
            assert (step.finished_at is None) == retry and (step.available_at > lease.released_at) == retry
        assert step.lease_token is None and lease.released_at is not None and lease.started_at is not None
    if connection.vendor == "postgresql":
        Step.objects.all().delete()
        Event.objects.all().delete()
        bigger, _ = _commit_batch(runtime, 30)
        assert len(bigger.statements) == len(counter.statements), "\n".join(bigger.statements)
