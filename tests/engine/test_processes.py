"""Real ``runworkers`` processes on one database: exactly-once commits, kill -9, graceful stop."""

from __future__ import annotations

import signal

import pytest

from tests.processes import assert_no_overlapping_live_leases, wait_for
from workflow.conf import build_runtime
from workflow.models import Lease, Run, Step, Worker

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

def test_three_worker_processes__drain_a_2000_step_run_exactly_once(spawn_worker):
    # A short poll: SQLite has no NOTIFY. And steps of 1 ms, not no-ops: one worker drains 2,000
    # no-op steps (claimed hundreds at a time) in a few transactions, a fraction of a second, so
    # the others may find none left.
    workers = [spawn_worker("--max-workers", "4", "--poll-interval", "0.05", name=f"w{n}") for n in range(3)]
    # Start the run only once all three are polling, so they really compete for it.
    wait_for(lambda: Worker.objects.filter(stopped_at__isnull=True).count() == 3, 60, "three workers to start")
    steps = [{"id": f"s{i}", "kind": "sleep", "input": {"seconds": 0.001}} for i in range(2000)]
    run_id = build_runtime().start_run("t", {"steps": steps}).id
    wait_for(lambda: Run.objects.get(pk=run_id).is_active is False, 120, "the run to finish")
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    for proc in workers:
        assert proc.wait(timeout=60) == 0
    assert Run.objects.get(pk=run_id).state == "succeeded"
    assert Step.objects.filter(run_id=run_id, state="succeeded").count() == 2000
    # Exactly one committed attempt per step, and every step's lease history is clean.
    succeeded = Lease.objects.filter(run_id=run_id, outcome="succeeded")
    assert succeeded.count() == 2000
    assert succeeded.values("step_id").distinct().count() == 2000
    assert_no_overlapping_live_leases()
    assert len(set(succeeded.values_list("worker_id", flat=True))) >= 2, "the work was shared"


def test_killed_worker__its_step_is_finished_by_another_after_the_lease_expires(spawn_worker):
    rt = build_runtime()
    run_id = rt.start_run("t", {"steps": [{"id": "long", "kind": "sleep", "input": {"seconds": 3}},
                                          {"id": "after", "kind": "noop", "deps": ["long"]}]}).id
    victim = spawn_worker("--lease-duration", "2", name="victim")
    wait_for(lambda: Step.objects.filter(run_id=run_id, step_id="long", state="running").exists(), 30,
             "the victim to claim the step")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    rescuer = spawn_worker("--lease-duration", "2", name="rescuer")
    wait_for(lambda: Run.objects.get(pk=run_id).state == "succeeded", 60, "the rescuer to finish the run")
    rescuer.send_signal(signal.SIGTERM)
    assert rescuer.wait(timeout=30) == 0
    leases = list(Lease.objects.filter(step__step_id="long").order_by("claimed_at").values_list("worker_id", "outcome"))
    assert leases == [("victim-0", "expired"), ("rescuer-1", "succeeded")]
    assert_no_overlapping_live_leases()


def test_sigterm__lets_a_running_step_finish_then_exits(spawn_worker):
    rt = build_runtime()
    run_id = rt.start_run("t", {"steps": [{"id": "s", "kind": "sleep", "input": {"seconds": 1.5}}]}).id
    worker = spawn_worker("--grace-period", "20", name="graceful")
    wait_for(lambda: Step.objects.filter(run_id=run_id, state="running").exists(), 30, "the claim")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert Step.objects.get(run_id=run_id).state == "succeeded"


def test_sigterm__hands_back_what_does_not_finish_within_the_grace_period(spawn_worker):
    rt = build_runtime()
    run_id = rt.start_run("t", {"steps": [{"id": "s", "kind": "sleep", "input": {"seconds": 60}}]}).id
    worker = spawn_worker("--grace-period", "0.5", name="impatient")
    wait_for(lambda: Step.objects.filter(run_id=run_id, state="running").exists(), 30, "the claim")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    step = Step.objects.get(run_id=run_id)
    assert (step.state, step.attempt) == ("ready", 0)  # handed back; the attempt does not count
    assert Lease.objects.get().outcome == "abandoned"


def test_two_worker_processes_on_their_own_queues__share_sqlites_write_lock(spawn_worker):
    """Two workers, each draining a chain on its own queue: every hop is a transaction of its own,
    and each worker takes SQLite's write lock back to back. Both must move at once; with SQLite's
    own busy handler (sleeps of 1, 2, 5 ... 100 ms between tries) one of them mostly waited: in 4
    runs of 5, one chain ran over three times as many hops as the other while both ran, or all of
    its own first."""
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite only: one write lock for the whole file")
    hops = 1500
    for queue in ("a", "b"):
        spawn_worker("--queues", queue, "--max-workers", "1", "--poll-interval", "0.05", name=f"w{queue}")
    wait_for(lambda: Worker.objects.filter(stopped_at__isnull=True).count() == 2, 60, "two workers to start")
    rt = build_runtime()
    runs = {}
    for queue in ("a", "b"):
        steps = [{"id": "s0", "kind": "noop", "queue": queue}] + [
            {"id": f"s{i}", "kind": "noop", "queue": queue, "deps": [f"s{i - 1}"]} for i in range(1, hops)]
        runs[queue] = rt.start_run("t", {"steps": steps}).id
    wait_for(lambda: not Run.objects.filter(pk__in=runs.values(), state__in=["pending", "running"]).exists(), 120,
             "both chains to finish")
    released = {q: sorted(Lease.objects.filter(run_id=r, outcome="succeeded").values_list("released_at", flat=True))
                for q, r in runs.items()}
    assert all(len(times) == hops for times in released.values())
    # While both were running, each worker committed at least a third as many hops as the other.
    start = max(times[0] for times in released.values())
    end = min(times[-1] for times in released.values())
    assert start < end, f"the chains ran one after the other: {released['a'][0]}..{released['a'][-1]}"
    during = {q: sum(start <= t <= end for t in times) for q, times in released.items()}
    assert min(during.values()) >= max(during.values()) / 3, during
