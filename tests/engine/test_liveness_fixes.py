"""Liveness fixes of issue 10: a configuration a real site uses must not deadlock, stall, spin or lose a step.

Each test reproduces one failure observed on the engine before the fix (see notes/hardena.md).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from tests.conftest import FakeClock, drain, run_graph
from workflow import QueueConfig, RateLimitPolicy
from workflow.engine.errors import InvalidInput, StoreConflict
from workflow.engine.values import ClaimRequest, Outcome, RecordWrite, StepSpec, StepState
from workflow.models import Event, Lease, Queue, Step
from workflow.stores.db import DjangoStore

pytestmark = pytest.mark.django_db(transaction=True)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def claim(store: DjangoStore, now: datetime, *, worker: str = "w1", limit: int = 10) -> list:
    _, result = store.complete_and_claim(
        [], ClaimRequest(worker_id=worker, limit=limit, lease_duration=timedelta(seconds=30)), now
    )
    return list(result.steps)


# -- 1. deadlocks ----------------------------------------------------------------------------------
def test_deadlock__is_reported_as_a_conflict_not_as_an_unavailable_database(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("row-lock deadlocks need PostgreSQL")
    now = datetime.now(UTC)
    Queue.objects.bulk_create([Queue(name="a", updated_at=now), Queue(name="b", updated_at=now)])
    store = DjangoStore()
    both_hold_one = threading.Barrier(2)
    errors: list[BaseException] = []

    def lock(first: str, second: str) -> None:
        try:
            with store._transaction() as cursor:
                cursor.execute("SELECT 1 FROM workflow_queue WHERE name = %s FOR UPDATE", [first])
                both_hold_one.wait(5)
                cursor.execute("SELECT 1 FROM workflow_queue WHERE name = %s FOR UPDATE", [second])
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=lock, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], StoreConflict), errors


def test_claim__locks_limited_queue_rows_in_name_order_whatever_the_rotation(runtime):
    """Two claims over the same limited queues take their row locks in one global order."""
    store = runtime.store
    store.configure_queues({name: QueueConfig(max_workers=5) for name in ("q1", "q2", "q3")}, runtime.clock())
    run_graph(runtime, [{"id": f"s{i}", "kind": "noop", "queue": f"q{i % 3 + 1}"} for i in range(6)])
    statements: list[str] = []

    def record(execute, sql, params, many, context):
        if "FROM workflow_queue" in sql and "name IN" in sql or "FROM workflow_queue WHERE name = %s" in sql:
            statements.append(f"{sql} {params}")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        for _ in range(3):  # three rotations of the claim order
            statements.clear()
            claim(store, runtime.clock(), limit=1)
            assert len(statements) == 1, statements  # one statement locks every limited row
            assert "ORDER BY name" in statements[0] and "['q1', 'q2', 'q3']" in statements[0]


# -- 2. heartbeats on their own schedule --------------------------------------------------------------
def test_long_poll_interval__still_renews_the_lease_of_a_long_step(make_runtime, transactional_db):
    rt = make_runtime(poll_interval=timedelta(seconds=30), lease_duration=timedelta(seconds=3))
    run_id = run_graph(rt, [{"id": "long", "kind": "sleep", "input": {"seconds": 8}}])
    workers = rt.start_workers(burst=True)
    assert workers.join(timeout=30)
    step = Step.objects.get(run_id=run_id)
    assert (step.state, step.attempt) == ("succeeded", 1)
    lease = Lease.objects.get()
    assert lease.outcome == "succeeded" and lease.heartbeat_at is not None
    assert lease.heartbeat_at - lease.claimed_at >= timedelta(seconds=6)  # renewed all along, not once


# -- 3. no spinning behind a full cap or an empty bucket ---------------------------------------------
@pytest.mark.parametrize("queue_config", [
    QueueConfig(max_workers=2),
    QueueConfig(rate_limit=RateLimitPolicy(rate=2, per=timedelta(seconds=10), burst=2)),
], ids=["at_cap", "rate_limited"])
def test_worker_behind_a_limit__opens_few_claim_transactions(make_runtime, transactional_db, queue_config):
    rt = make_runtime(poll_interval=timedelta(seconds=1), queues={"limited": queue_config})
    claims = []
    complete_and_claim = rt.store.complete_and_claim

    def counting(outcomes, request, now):
        if request is not None:
            claims.append(time.monotonic())
        return complete_and_claim(outcomes, request, now)

    rt.store.complete_and_claim = counting  # type: ignore[method-assign]
    run_graph(rt, [{"id": f"s{i}", "kind": "sleep", "input": {"seconds": 4}, "queue": "limited"} for i in range(6)])
    workers = rt.start_workers(max_workers=4)
    try:
        wait_until(lambda: Step.objects.filter(state="running").count() == 2, 10, "two steps to start")
        time.sleep(0.3)
        start, seen = time.monotonic(), len(claims)
        time.sleep(2.0)
        per_second = (len(claims) - seen) / (time.monotonic() - start)
    finally:
        workers.abandon()
        workers.join(10)
    assert per_second <= 3, f"{per_second:.0f} claim transactions per second while nothing can start"


def test_capped_queue__a_freed_slot_is_taken_at_once_by_the_same_worker(make_runtime, transactional_db):
    """Sleeping behind the cap must not delay the next step: the worker's own commit wakes it."""
    rt = make_runtime(poll_interval=timedelta(seconds=30), queues={"capped": QueueConfig(max_workers=1)})
    run_id = run_graph(rt, [{"id": f"s{i}", "kind": "sleep", "input": {"seconds": 0.3}, "queue": "capped"}
                            for i in range(3)])
    started = time.monotonic()
    workers = rt.start_workers(max_workers=2, burst=True)
    assert workers.join(timeout=20)
    assert Step.objects.filter(run_id=run_id, state="succeeded").count() == 3
    assert time.monotonic() - started < 5


# -- 4. one unreadable row fails alone ---------------------------------------------------------------------
def test_unreadable_step_row__fails_that_step_and_the_claim_goes_on(runtime):
    run_id = run_graph(runtime, [{"id": "bad", "kind": "noop"}, {"id": "good", "kind": "noop"},
                                 {"id": "after_bad", "kind": "noop", "optional": ["bad"]}])
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:  # as a row written before validation existed would be
        cursor.execute(f"UPDATE workflow_step SET retry = %s{cast} WHERE step_id = 'bad'",
                       ['{"max_attempts": 3, "backoff": "bogus"}'])
    drain(runtime)
    bad, good, after_bad = (Step.objects.get(run_id=run_id, step_id=s) for s in ("bad", "good", "after_bad"))
    assert good.state == "succeeded" and after_bad.state == "succeeded"
    assert bad.state == "failed" and bad.error["code"] == "invalid_step" and bad.error["retryable"] is False
    assert "bogus" in bad.error["message"]
    event = Event.objects.get(kind="step_failed", step_id="bad")
    assert event.payload["code"] == "invalid_step"
    assert runtime.workflow(run_id).state == "failed"


# -- 5. nothing mirrors a transaction that rolled back --------------------------------------------------
def test_rolled_back_batch__does_not_strand_a_child_in_a_new_queue(runtime):
    run_id = run_graph(runtime, [{"id": "good", "kind": "noop"}, {"id": "bad", "kind": "noop"}])
    scheduler = runtime.scheduler(max_workers=4)
    _, claimed = scheduler._commit_and_claim([], 2)
    steps = {s.step_id: s for s in claimed.steps}
    now = runtime.clock()
    child = StepSpec(id="child", kind="noop", queue="brand-new", parent_id="good")
    good = Outcome(step=steps["good"], next_state=StepState.SUCCEEDED, children=(child,), started_at=now,
                   finished_at=now, lease_outcome="succeeded")
    # A record the database refuses (NOT NULL): the batch rolls back, then each commits alone.
    bad = Outcome(step=steps["bad"], next_state=StepState.SUCCEEDED, started_at=now, finished_at=now,
                  records=(RecordWrite(collection=None, key="k", data=1),), lease_outcome="succeeded")  # type: ignore[arg-type]
    scheduler._commit_and_claim([good, bad], 0)
    assert Step.objects.get(run_id=run_id, step_id="good").state == "succeeded"
    assert Step.objects.get(run_id=run_id, step_id="bad").error["code"] == "commit_error"
    drain(runtime)  # an all-queues worker
    assert Step.objects.get(run_id=run_id, step_id="child").state == "succeeded"
    assert Queue.objects.filter(name="brand-new").exists()


def test_all_queues_worker__claims_ready_steps_of_a_queue_without_a_row(make_runtime, transactional_db):
    """Steps stranded by an older version (their queue row missing) are found at worker start."""
    rt = make_runtime()
    run_id = run_graph(rt, [{"id": "a", "kind": "noop", "queue": "orphan"}])
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM workflow_queue WHERE name = 'orphan'")
    workers = rt.start_workers(burst=True)
    assert workers.join(timeout=20)
    assert Step.objects.get(run_id=run_id).state == "succeeded"


# -- 8. throttling is visible ------------------------------------------------------------------------------
def test_queue_throttled__once_per_queue_and_reason_per_minute_across_processes(make_runtime, transactional_db):
    clock = FakeClock()
    rt = make_runtime(clock=clock, queues={
        "capped": QueueConfig(max_workers=1),
        "slow": QueueConfig(rate_limit=RateLimitPolicy(rate=1, per=timedelta(seconds=60), burst=1)),
    })
    rt.ensure_queues()
    run_graph(rt, [{"id": f"{q}{i}", "kind": "noop", "queue": q} for q in ("capped", "slow") for i in range(3)])
    first, second = DjangoStore(), DjangoStore()  # two processes: each its own memory
    assert len(claim(first, clock(), limit=10)) == 2  # one of each queue; then both are throttled
    for store in (first, second, first, second):
        clock.advance(1)
        assert claim(store, clock(), limit=10) == []

    def reasons() -> list[tuple[str, str]]:
        return sorted((e.queue, e.payload["reason"]) for e in Event.objects.filter(kind="queue_throttled"))

    assert reasons() == [("capped", "at_cap"), ("slow", "rate_limited")]
    clock.advance(61)
    assert len(claim(DjangoStore(), clock(), limit=10)) == 1  # a token came back; the cap still holds
    assert reasons() == [("capped", "at_cap"), ("capped", "at_cap"), ("slow", "rate_limited")]


# -- 10. step timeouts ----------------------------------------------------------------------------------------
def test_timeout__set_on_the_step_the_emit_or_the_kind_is_stored(transactional_db):
    from workflow import Config, Package, Registry, Runtime

    pkg = Package("timeouts")

    @pkg.entrypoint
    def start(run):
        run.step("given", kind="plain", timeout=2.5)
        run.step("delta", kind="plain", timeout=timedelta(minutes=1))
        run.step("kind_default", kind="slow_by_default")
        run.step("parent", kind="emitter")

    @pkg.executor("plain")
    def plain(step):
        return None

    @pkg.executor("slow_by_default", timeout=timedelta(seconds=90))
    def slow_by_default(step):
        return None

    @pkg.executor("emitter")
    def emitter(step):
        step.emit("child", kind="plain", timeout=4)
        step.emit("child_of_kind", kind="slow_by_default")
        step.emit("child_without", kind="plain")

    from workflow.engine.builder import RunBuilder

    rt = Runtime(Config(), store=DjangoStore(), registry=Registry([pkg]))
    run_id = rt.start_run("timeouts").id
    drain(rt)
    stored = dict(Step.objects.filter(run_id=run_id).values_list("step_id", "timeout_seconds"))
    assert stored == {"given": 2.5, "delta": 60.0, "kind_default": 90.0, "parent": None, "child": 4.0,
                      "child_of_kind": 90.0, "child_without": None}
    for bad in (0, -1, "5", float("nan")):
        with pytest.raises(InvalidInput, match="timeout"):
            RunBuilder(rt.registry, run_id="r", package="timeouts", name="r", metadata={}).step(
                "bad", kind="plain", timeout=bad)


def test_timeout__reaches_the_claimed_step(runtime):
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop", "timeout": 1.5}])
    assert Step.objects.get(run_id=run_id).timeout_seconds == 1.5
    (claimed,) = claim(runtime.store, runtime.clock())
    assert claimed.timeout == timedelta(seconds=1.5)


def test_timeout__fails_the_attempt_frees_the_slot_and_fences_the_late_return(make_runtime, transactional_db):
    rt = make_runtime(queues={"one": QueueConfig(max_workers=1)})
    run_id = run_graph(rt, [
        {"id": "stuck", "kind": "hang", "input": {"seconds": 1.5}, "queue": "one", "timeout": 0.3, "retry": 1},
        {"id": "next", "kind": "noop", "queue": "one"},
    ])
    workers = rt.start_workers(max_workers=2)
    try:
        wait_until(lambda: Step.objects.get(run_id=run_id, step_id="next").state == "succeeded", 5,
                   "the next step to get the slot the stuck one held")
        stuck = Step.objects.get(run_id=run_id, step_id="stuck")
        assert stuck.state == "failed"
        assert (stuck.error["code"], stuck.error["retryable"]) == ("timeout", True)
        assert workers.scheduler._abandoned_threads == 1
        wait_until(lambda: workers.scheduler._abandoned_threads == 0, 5, "the stuck executor to return")
    finally:
        workers.stop()
        assert workers.join(10)
    assert Step.objects.get(run_id=run_id, step_id="stuck").state == "failed"  # its late success is dropped
    assert list(Lease.objects.filter(step__step_id="stuck").values_list("outcome", "error_code")) == [
        ("failed", "timeout")]
    assert not Event.objects.filter(kind="commit_rejected").exists()


def test_timeout__cooperative_code_sees_cancelled_and_the_step_is_retried(make_runtime, transactional_db):
    rt = make_runtime()
    run_id = run_graph(rt, [{"id": "s", "kind": "sleep", "input": {"seconds": 30}, "timeout": 0.2, "retry": 2}])
    workers = rt.start_workers(max_workers=1, burst=True)
    assert workers.join(timeout=10)  # each attempt stopped at its timeout, not after 30 s
    # The executor saw step.cancelled and returned at once (it would sleep 30 s otherwise).
    wait_until(lambda: workers.scheduler._abandoned_threads == 0, 2, "the cancelled executors to return")
    step = Step.objects.get(run_id=run_id)
    assert (step.state, step.attempt, step.error["code"]) == ("failed", 2, "timeout")
    assert list(Lease.objects.order_by("attempt").values_list("outcome", flat=True)) == ["retried", "failed"]


def test_too_many_abandoned_threads__the_worker_drains_and_exits_non_zero(make_runtime, transactional_db, settings):
    from workflow.conf import build_runtime, reset_runtime

    settings.WORKFLOW = {**settings.WORKFLOW, "MAX_ABANDONED_THREADS": 1, "GRACE_PERIOD": 5}
    reset_runtime()
    run_id = run_graph(build_runtime(), [{"id": f"h{i}", "kind": "hang", "input": {"seconds": 2}, "timeout": 0.2, "retry": 1}
                            for i in range(2)] + [{"id": "n", "kind": "noop", "deps": ["h0"]}])
    started = time.monotonic()
    try:
        with pytest.raises(CommandError, match="MAX_ABANDONED_THREADS=1"):
            call_command("runworkers", "--max-workers", "2", verbosity=0)
    finally:
        reset_runtime()
    assert time.monotonic() - started < 10
    assert Step.objects.filter(run_id=run_id, state="failed", error__code="timeout").count() == 2


# -- 12. no hoarding of long steps -------------------------------------------------------------------------
def test_long_steps__are_shared_by_two_workers_not_hoarded_by_the_first(make_runtime, transactional_db):
    first, second = make_runtime(), make_runtime()
    run_graph(first, [{"id": f"s{i}", "kind": "sleep", "input": {"seconds": 1.0}} for i in range(4)])
    a = first.start_workers(max_workers=2, worker_id="a", burst=True)
    wait_until(lambda: Step.objects.filter(state="running").exists(), 10, "the first worker to claim")
    b = second.start_workers(max_workers=2, worker_id="b", burst=True)
    assert a.join(timeout=20) and b.join(timeout=20)
    by_worker = sorted(Lease.objects.values_list("worker_id", flat=True))
    assert by_worker == ["a", "a", "b", "b"]


def test_prefetched_step__is_not_shown_running_until_it_starts(make_runtime, transactional_db):
    from workflow.read import queues

    rt = make_runtime(prefetch=2)
    run_graph(rt, [{"id": f"s{i}", "kind": "sleep", "input": {"seconds": 30}} for i in range(3)])
    workers = rt.start_workers(max_workers=1)
    try:
        wait_until(lambda: Step.objects.filter(state="running").count() == 3, 10, "three claims")
        (figures,) = [f for f in queues.queue_figures() if f.name == "default"]
        assert figures.running == 1  # one thread: one executing, two waiting in the worker
    finally:
        workers.abandon()
        workers.join(10)


@pytest.mark.processes
def test_two_limited_queues__two_processes_claim_without_deadlocks(spawn_worker):
    """Observed before the fix: 30-54 deadlocks per 200 steps with a capped and a rate-limited queue."""
    if connection.vendor != "postgresql":
        pytest.skip("row-lock deadlocks need PostgreSQL")
    from tests.processes import assert_no_overlapping_live_leases
    from workflow.conf import build_runtime
    from workflow.models import Run

    rt = build_runtime()
    rt.store.configure_queues({
        "capped": QueueConfig(max_workers=4),
        "limited": QueueConfig(rate_limit=RateLimitPolicy(rate=400, burst=20)),
        "other": QueueConfig(max_workers=6),
    }, rt.clock())
    steps = [{"id": f"s{i}", "kind": "noop", "queue": ("capped", "limited", "other")[i % 3]} for i in range(240)]
    workers = [spawn_worker("--max-workers", "8", name=f"d{n}") for n in range(2)]
    wait_until(lambda: all("worker started" in p.log_path.read_text() for p in workers), 60, "two workers")
    run_id = rt.start_run("t", {"steps": steps}).id
    wait_until(lambda: not Run.objects.get(pk=run_id).is_active, 60, "the run to finish")
    for proc in workers:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    logs = "".join(p.log_path.read_text() for p in workers).lower()
    assert Run.objects.get(pk=run_id).state == "succeeded"
    assert "deadlock" not in logs and "database unavailable" not in logs
    assert_no_overlapping_live_leases()
