"""The scheduler's guarantees: design.md section 3 and the seed's weak spots (seed-system.md section 16)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.conftest import drain, run_graph
from workflow import QueueConfig, RateLimitPolicy, RunState
from workflow.engine.values import ClaimRequest
from workflow.models import Artifact, Dependency, Event, Lease, Record, Run, Step
from workflow.stores.db import DjangoStore

pytestmark = pytest.mark.django_db(transaction=True)


def claim(rt, worker="w1", limit=10, lease=timedelta(seconds=10), **kw):
    _, result = rt.store.complete_and_claim(
        [], ClaimRequest(worker_id=worker, limit=limit, lease_duration=lease, **kw), rt.clock()
    )
    return list(result.steps)


def commit(rt, outcomes):
    report, _ = rt.store.complete_and_claim(outcomes, None, rt.clock())
    return report


# -- dependencies and run states ----------------------------------------------------------
def test_required_dependency__waits_for_success(runtime):
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "noop", "deps": ["a"]}])
    assert Step.objects.get(step_id="b").state == "pending"
    runtime.run_once()
    assert Step.objects.get(step_id="b").state == "ready"
    drain(runtime)
    assert runtime.workflow(run_id).state == RunState.SUCCEEDED


def test_optional_dependency__waits_for_any_end(runtime):
    run_id = run_graph(runtime, [
        {"id": "bad", "kind": "fail"},
        {"id": "cleanup", "kind": "noop", "optional": ["bad"]},
    ])
    drain(runtime)
    assert runtime.result(run_id, "cleanup").state == "succeeded"
    assert runtime.workflow(run_id).state == RunState.FAILED


def test_failed_step__blocks_its_dependents_and_a_retry_revives_them(runtime, tmp_path):
    """Seed weak spot 3: the original canceled dependents, so a retry could never finish the run."""
    bug = tmp_path / "bug"
    bug.touch()
    run_id = run_graph(runtime, [
        {"id": "a", "kind": "fail_while_file", "input": {"path": str(bug)}},
        {"id": "b", "kind": "noop", "deps": ["a"]},
        {"id": "c", "kind": "noop", "deps": ["b"]},
    ])
    drain(runtime)
    assert runtime.workflow(run_id).state == RunState.FAILED
    assert runtime.result(run_id, "a").error.code == "file_present"
    assert Step.objects.get(step_id="b").state == "pending"  # blocked, not canceled
    bug.unlink()
    runtime.retry_step(run_id, "a", actor="alice")
    assert runtime.workflow(run_id).state == RunState.RUNNING
    drain(runtime)
    assert runtime.workflow(run_id).state == RunState.SUCCEEDED
    assert [runtime.result(run_id, s).state for s in "abc"] == ["succeeded"] * 3
    assert Event.objects.get(kind="step_retried").actor == "alice"


def test_retryable_failure__backs_off_and_counts_attempts(runtime):
    run_id = run_graph(runtime, [{"id": "f", "kind": "flaky", "input": {"until": 3}, "retry": 5}])
    drain(runtime)
    result = runtime.result(run_id, "f")
    assert (result.state, result.attempt, result.data) == ("succeeded", 3, {"attempt": 3})
    leases = list(Lease.objects.order_by("attempt").values_list("attempt", "outcome", "error_code"))
    assert leases == [(1, "retried", "flaky"), (2, "retried", "flaky"), (3, "succeeded", "")]


def test_retryable_failure__ends_failed_after_max_attempts(runtime):
    run_id = run_graph(runtime, [{"id": "f", "kind": "flaky", "input": {"until": 9}, "retry": 2}])
    drain(runtime)
    result = runtime.result(run_id, "f")
    assert (result.state, result.attempt, result.error.code) == ("failed", 2, "flaky")


def test_unhandled_exception__is_retryable_with_its_traceback(runtime):
    run_id = run_graph(runtime, [{"id": "c", "kind": "crash", "retry": 2}])
    drain(runtime)
    result = runtime.result(run_id, "c")
    assert result.error.code == "unhandled_exception" and result.error.retryable
    assert "RuntimeError: unexpected" in result.error.details["traceback"]
    assert result.attempt == 2


def test_attempt_logs__are_kept_per_attempt(runtime):
    run_graph(runtime, [{"id": "f", "kind": "flaky", "input": {"until": 2}}])
    drain(runtime)
    first, second = Lease.objects.order_by("attempt")
    assert "attempt 1 failing" in first.log
    assert "failing" not in second.log


def test_cycle_result__counts_every_outcome(runtime):
    """Seed weak spot 9: its CycleResult left succeeded/retried/failed at zero."""
    run_graph(runtime, [
        {"id": "ok", "kind": "noop"}, {"id": "bad", "kind": "fail"}, {"id": "again", "kind": "flaky", "input": {"until": 2}},
    ])
    result = runtime.run_once()
    assert (result.claimed, result.succeeded, result.failed, result.retried) == (3, 1, 1, 1)


# -- fencing ----------------------------------------------------------------------------
def test_commit__is_discarded_after_the_lease_expired(make_runtime, clock, transactional_db):
    """Invariant 2 and seed weak spot 1: a late completion must not overwrite the winner."""
    rt = make_runtime(clock=clock)
    run_id = run_graph(rt, [{"id": "a", "kind": "produce"}])
    [stale] = claim(rt, "slow-worker")
    outcome = rt.runner().execute(stale, threading.Event())
    clock.advance(11)  # the lease (10 s) expired while the slow worker ran
    report = commit(rt, [outcome])
    assert (report.committed, report.discarded) == (0, 1)
    assert not Record.objects.exists() and not Artifact.objects.exists()
    drain(rt)  # reclaim, then another attempt commits
    step = Step.objects.get(step_id="a")
    assert (step.state, step.attempt) == ("succeeded", 2)
    assert Record.objects.count() == 1 and Artifact.objects.count() == 1
    assert Event.objects.filter(kind="commit_rejected", step_id="a").count() == 1
    assert list(Lease.objects.order_by("attempt").values_list("outcome", flat=True)) == ["expired", "succeeded"]
    # The stale worker trying again after the step succeeded changes nothing.
    assert commit(rt, [outcome]).discarded == 1
    assert runtime_state(run_id) == "succeeded"


def test_commit__a_late_success_releases_no_dependent(make_runtime, clock, transactional_db):
    """A routine success is fenced by the statement that finishes it, which (on PostgreSQL) also
    satisfies its edges: fenced, it must leave the dependent waiting and its edge unsatisfied."""
    rt = make_runtime(clock=clock)
    run_id = run_graph(rt, [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "noop", "deps": ["a"]}])
    [stale] = claim(rt, "slow-worker")
    outcome = rt.runner().execute(stale, threading.Event())
    clock.advance(11)
    assert commit(rt, [outcome]).discarded == 1
    b = Step.objects.get(step_id="b")
    assert (b.state, b.pending_deps) == ("pending", 1)
    assert not Dependency.objects.get(step=b).satisfied
    drain(rt)
    assert dict(Step.objects.values_list("step_id", "attempt")) == {"a": 2, "b": 1}
    assert Dependency.objects.get(step=b).satisfied and runtime_state(run_id) == "succeeded"


def runtime_state(run_id: str) -> str:
    return Run.objects.get(pk=run_id).state


def test_commit__after_the_run_was_canceled_is_discarded(make_runtime, clock, transactional_db):
    """Seed section 3.3: a canceled step's late success used to resurrect the run."""
    rt = make_runtime(clock=clock)
    run_id = run_graph(rt, [{"id": "a", "kind": "fanout", "input": {"n": 3}}])
    [step] = claim(rt)
    outcome = rt.runner().execute(step, threading.Event())
    rt.cancel_run(run_id, actor="bob")
    assert commit(rt, [outcome]).discarded == 1
    assert runtime_state(run_id) == "canceled"
    assert Step.objects.filter(run_id=run_id).count() == 1  # no children inserted
    assert Lease.objects.get().outcome == "canceled"
    assert Event.objects.get(kind="run_canceled").actor == "bob"


def test_lease__at_most_one_live_lease_per_step(make_runtime, clock, transactional_db):
    rt = make_runtime(clock=clock)
    run_graph(rt, [{"id": "a", "kind": "noop"}])
    assert len(claim(rt, "w1")) == 1
    assert claim(rt, "w2") == []  # already leased
    clock.advance(11)
    assert claim(rt, "w2") == []  # expired but not yet reclaimed: still nobody else's
    rt.run_once()
    assert Lease.objects.filter(released_at__isnull=True).count() == 0
    assert [outcome for _, outcome in Lease.objects.values_list("worker_id", "outcome")] == ["expired", "succeeded"]
    assert Lease.objects.first().worker_id == "w1"


def test_reclaim__counts_as_an_attempt_so_a_poison_step_ends_failed(make_runtime, clock, transactional_db):
    """Seed weak spot 8: reclaims did not count, so a step that kills its worker looped forever."""
    rt = make_runtime(clock=clock)
    run_id = run_graph(rt, [{"id": "poison", "kind": "noop", "retry": 2}])
    for _ in range(2):
        assert len(claim(rt)) == 1  # the worker "dies" holding it
        clock.advance(11)
        rt.run_once(queues=["elsewhere"])  # reclaims (global) without claiming it again
    step = Step.objects.get(step_id="poison")
    assert (step.state, step.attempt, step.error["code"]) == ("failed", 2, "lease_expired")
    assert runtime_state(run_id) == "failed"


def test_heartbeat__keeps_a_long_step_from_running_twice(make_runtime, transactional_db):
    """Seed weak spot 2: with no heartbeat, a step longer than its lease ran twice."""
    rt = make_runtime(lease_duration=timedelta(seconds=1))
    run_id = run_graph(rt, [{"id": "long", "kind": "sleep", "input": {"seconds": 2.5}}])
    workers = rt.start_workers(burst=True)
    assert workers.join(timeout=30)
    assert runtime_state(run_id) == "succeeded"
    lease = Lease.objects.get()
    assert lease.outcome == "succeeded" and lease.heartbeat_at is not None


def test_cancel_run__running_steps_see_cancelled(make_runtime, transactional_db):
    rt = make_runtime()
    run_id = run_graph(rt, [{"id": "long", "kind": "sleep", "input": {"seconds": 20}}])
    workers = rt.start_workers(burst=True)
    deadline = time.monotonic() + 10
    while Step.objects.get(step_id="long").state != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    rt.cancel_run(run_id)
    assert workers.join(timeout=10), "the executor should notice the cancellation within about a second"
    assert Step.objects.get(step_id="long").state == "canceled"
    assert Event.objects.filter(kind="commit_rejected").count() == 1
    assert workers.scheduler.totals.discarded == 1


# -- concurrency, queues ------------------------------------------------------------------------
def test_max_workers__runs_steps_concurrently_in_one_process(make_runtime, transactional_db):
    """Seed weak spot 6: one step at a time per process."""
    rt = make_runtime(max_workers=4)
    run_graph(rt, [{"id": f"s{i}", "kind": "sleep", "input": {"seconds": 0.3}} for i in range(4)])
    result = rt.run_once()
    assert result.claimed == 4 and result.succeeded == 4
    spans = sorted((lease.started_at, lease.released_at) for lease in Lease.objects.all())
    assert all(start < spans[0][1] for start, _ in spans), "all four attempts overlapped in time"


def test_queue_cap__holds_across_claims(make_runtime, transactional_db):
    rt = make_runtime(queues={"narrow": QueueConfig(max_workers=1)})
    rt.ensure_queues()
    run_graph(rt, [{"id": f"s{i}", "kind": "noop", "queue": "narrow"} for i in range(3)])
    [held] = claim(rt, "w1")
    assert claim(rt, "w2") == []  # another worker: the cap is global
    commit(rt, [rt.runner().execute(held, threading.Event())])
    [second] = claim(rt, "w2", limit=5)  # one slot freed: one more, not five
    commit(rt, [rt.runner().execute(second, threading.Event())])
    drain(rt)
    assert Step.objects.filter(state="succeeded").count() == 3


def test_rate_limit__refills_over_time(make_runtime, clock, transactional_db):
    policy = RateLimitPolicy(rate=2, per=timedelta(seconds=1), burst=2)
    rt = make_runtime(clock=clock, queues={"slow": QueueConfig(rate_limit=policy)})
    rt.ensure_queues()
    run_graph(rt, [{"id": f"s{i}", "kind": "noop", "queue": "slow"} for i in range(6)])
    assert len(claim(rt)) == 2  # the burst
    assert claim(rt) == []
    clock.advance(0.5)
    assert len(claim(rt)) == 1
    clock.advance(10)
    assert len(claim(rt)) == 2  # never more than the burst at once


def test_paused_queue__waits_and_resumes_without_loss(runtime):
    runtime.ensure_queues()
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop", "queue": "later"}])
    runtime.pause_queue("later", actor="ops")
    assert runtime.run_once().claimed == 0
    runtime.resume_queue("later", actor="ops")
    drain(runtime)
    assert runtime_state(run_id) == "succeeded"
    assert list(Event.objects.filter(queue="later", kind__in=["queue_paused", "queue_resumed"])
                .values_list("kind", "actor")) == [("queue_resumed", "ops"), ("queue_paused", "ops")]
    throttled = Event.objects.get(queue="later", kind="queue_throttled")
    assert throttled.payload == {"reason": "paused"}


def test_site__routes_steps_to_workers_of_that_site(runtime):
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop"}])
    Step.objects.filter(run_id=run_id).update(site="eu")
    assert runtime.run_once().claimed == 0
    assert runtime.run_once(site="us").claimed == 0
    assert runtime.run_once(site="eu").claimed == 1


# -- atomicity and resilience ---------------------------------------------------------------------
def test_commit__writes_result_children_records_artifacts_and_events_together_or_not_at_all(runtime, monkeypatch):
    """Invariant 4: a failure inside the commit leaves none of the step's products behind."""
    original = DjangoStore._write_products

    def broken(self, cursor, outcome, now, children):
        original(self, cursor, outcome, now, children)
        raise RuntimeError("disk full")

    monkeypatch.setattr(DjangoStore, "_write_products", broken)
    run_id = run_graph(runtime, [{"id": "p", "kind": "produce"}])
    runtime.run_once()
    step = Step.objects.get(step_id="p")
    assert step.state == "failed" and step.error["code"] == "commit_error"
    assert "disk full" in step.error["message"]
    assert not Record.objects.exists() and not Artifact.objects.exists()
    assert not Lease.objects.filter(step__step_id="p", outcome="succeeded").exists()  # what shows "step_succeeded"
    monkeypatch.undo()
    runtime.retry_step(run_id, "p")
    drain(runtime)
    assert Record.objects.count() == 1 and runtime_state(run_id) == "succeeded"


def test_worker_loop__survives_executor_errors(make_runtime, transactional_db):
    rt = make_runtime()
    run_graph(rt, [{"id": "c", "kind": "crash", "retry": 2}, {"id": "f", "kind": "fail"}, {"id": "ok", "kind": "noop"}])
    workers = rt.start_workers(burst=True)
    assert workers.join(timeout=30)
    assert dict(Step.objects.values_list("step_id", "state")) == {"c": "failed", "f": "failed", "ok": "succeeded"}


def test_succeeded_step__is_never_run_again(runtime):
    """Invariant 1."""
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop"}])
    drain(runtime)
    assert drain(runtime) == 0
    assert Lease.objects.filter(step__run_id=run_id).count() == 1


def test_emit__children_get_derived_ids_and_fan_in(runtime):
    run_id = run_graph(runtime, [{"id": "root", "kind": "fanout", "input": {"n": 3}}])
    drain(runtime)
    steps = dict(Step.objects.filter(run_id=run_id).values_list("step_id", "parent_step_id"))
    assert steps == {"root": None, "root:emit:001": "root", "root:emit:002": "root", "root:emit:003": "root", "join": "root"}
    assert runtime_state(run_id) == "succeeded"


def test_claim_query__uses_the_ready_index_even_after_analyze(runtime):
    """Invariant 7: the claim never scans finished history, even after ANALYZE saw only ready rows."""
    run_id = run_graph(runtime, [{"id": f"s{i}", "kind": "noop"} for i in range(3000)])
    # History, as a site has it: finished steps that never sit in the ready index. Without it the
    # ready index, bloated by 3,000 rows that all just left it, is as big as the whole table's
    # indexes and PostgreSQL may fairly pick another one; with it the ready index must win.
    old = run_graph(runtime, [{"id": "h0", "kind": "noop"}])
    Step.objects.bulk_create([
        Step(run_id=old, step_id=f"h{i}", kind="noop", state="succeeded", available_at=timezone.now(),
             created_at=timezone.now(), updated_at=timezone.now()) for i in range(1, 20001)
    ], batch_size=2000)
    store = DjangoStore()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # the trap: statistics taken while every row of the run is ready
        finished = Step.objects.filter(run_id=run_id).exclude(step_id__in=["s1", "s2", "s3"])
        finished.update(state="succeeded")
        if connection.vendor == "postgresql":
            cursor.execute("ANALYZE workflow_step")
        sql = store.claim_sql(1)
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql.replace("%s", "?"), ["default", "2100-01-01", "", 10])
            plan = " ".join(str(row) for row in cursor.fetchall())
        else:
            cursor.execute("EXPLAIN " + sql, ["default", "2100-01-01", "", 10])
            plan = " ".join(row[0] for row in cursor.fetchall())
    assert "step_ready_idx" in plan, plan


def test_queue_settings__change_at_run_time_for_every_worker(runtime):
    runtime.ensure_queues()
    run_graph(runtime, [{"id": f"s{i}", "kind": "noop", "queue": "tunable"} for i in range(4)])
    runtime.configure_queue("tunable", QueueConfig(max_workers=1), actor="ops")
    assert len(claim(runtime, "w1")) == 1
    runtime.configure_queue("tunable", QueueConfig(max_workers=None), actor="ops")
    assert len(claim(runtime, "w2")) == 3
    assert Event.objects.filter(kind="queue_configured", actor="ops").count() == 2


def test_lost_connection_after_commit__is_retried_without_committing_twice(make_runtime, transactional_db):
    """Issue 5: the database commits, the connection drops before the worker hears it, the worker retries."""
    from workflow import StoreUnavailable

    rt = make_runtime()
    run_id = run_graph(rt, [{"id": "a", "kind": "produce"}, {"id": "b", "kind": "noop", "deps": ["a"]}])
    original = rt.store.complete_and_claim
    dropped = []

    def flaky_connection(outcomes, claim_request, now):
        result = original(outcomes, claim_request, now)
        if outcomes and not dropped:
            dropped.append(outcomes[0].step.step_id)
            raise StoreUnavailable("server closed the connection unexpectedly")
        return result

    rt.store.complete_and_claim = flaky_connection
    workers = rt.start_workers(burst=True)
    assert workers.join(timeout=30)
    assert dropped == ["a"]
    assert runtime_state(run_id) == "succeeded"
    assert Lease.objects.filter(step__step_id="a").count() == 1
    assert Record.objects.count() == 1 and Artifact.objects.count() == 1
    assert not Event.objects.filter(kind="commit_rejected").exists()
