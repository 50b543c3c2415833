"""Many workers on one PostgreSQL: wake-ups, global rate limits, chaos with kill -9, a server restart."""

from __future__ import annotations

import bisect
import os
import random
import signal
import subprocess
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection

from tests.processes import assert_no_overlapping_live_leases, max_concurrent, wait_for
from workflow import QueueConfig, RateLimitPolicy
from workflow.conf import build_runtime
from workflow.models import Lease, Run, Step

pytestmark = [pytest.mark.postgres, pytest.mark.processes, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL tests run when DATABASE_URL points at PostgreSQL (make test does)")


def test_notify__wakes_an_idle_worker_without_waiting_for_the_poll(spawn_worker):
    worker = spawn_worker("--poll-interval", "120", name="sleepy")
    wait_for(lambda: "worker started" in open_log(worker), 30, "the worker to start")
    time.sleep(0.5)  # it is now idle, blocked for up to two minutes
    run_id = build_runtime().start_run("t", {"steps": [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "noop",
                                                                                 "deps": ["a"]}]}).id
    wait_for(lambda: Run.objects.get(pk=run_id).state == "succeeded", 20, "NOTIFY to wake the worker")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


def open_log(proc: subprocess.Popen) -> str:
    return proc.log_path.read_text()  # type: ignore[attr-defined]


def test_rate_limit__holds_across_three_processes(spawn_worker):
    rt = build_runtime()
    rt.store.configure_queues({"limited": QueueConfig(rate_limit=RateLimitPolicy(rate=50, burst=1))}, rt.clock())
    run_id = rt.start_run("t", {"steps": [{"id": f"s{i}", "kind": "noop", "queue": "limited"} for i in range(300)]}).id
    workers = [spawn_worker("--burst", name=f"r{n}") for n in range(3)]
    wait_for(lambda: Run.objects.get(pk=run_id).state == "succeeded", 60, "the limited run to finish")
    for proc in workers:
        proc.wait(timeout=30)
    starts = sorted(Lease.objects.filter(run_id=run_id).values_list("claimed_at", flat=True))
    assert len(starts) == 300
    worst = max(bisect.bisect_left(starts, t + timedelta(seconds=1)) - i for i, t in enumerate(starts))
    assert worst <= 50, f"{worst} starts within one second"
    assert len(set(Lease.objects.filter(run_id=run_id).values_list("worker_id", flat=True))) >= 2


def test_chaos__killed_workers_lose_nothing_and_commit_each_step_once(spawn_worker):
    """4 processes x 8 threads, 20,000 steps with random retryable failures, kill -9 every second."""
    rt = build_runtime()
    cap = 6
    rt.store.configure_queues({"capped": QueueConfig(max_workers=cap)}, rt.clock())
    steps = [{"id": f"s{i}", "kind": "chaos", "retry": 20, "queue": "capped" if i % 10 == 0 else None}
             for i in range(20_000)]
    run_id = rt.start_run("t", {"steps": steps}).id
    args = ("--max-workers", "8", "--lease-duration", "2")
    workers = {n: spawn_worker(*args, name=f"c{n}") for n in range(4)}
    stop = threading.Event()
    kills = 0

    def killer() -> None:
        nonlocal kills
        while not stop.wait(1.0):
            n = random.choice(list(workers))
            workers[n].send_signal(signal.SIGKILL)
            workers[n].wait(timeout=10)
            kills += 1
            workers[n] = spawn_worker(*args, name=f"c{n}")  # the supervisor restarts it

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        wait_for(lambda: Run.objects.get(pk=run_id).state in ("succeeded", "failed"), 600, "the chaos run")
    finally:
        stop.set()
        thread.join(timeout=30)
        for proc in workers.values():
            proc.send_signal(signal.SIGTERM)
        for proc in workers.values():
            proc.wait(timeout=60)
    assert kills >= 3
    assert Run.objects.get(pk=run_id).state == "succeeded"
    assert Step.objects.filter(run_id=run_id, state="succeeded").count() == 20_000
    committed = Lease.objects.filter(run_id=run_id, outcome="succeeded")
    assert committed.count() == 20_000 and committed.values("step_id").distinct().count() == 20_000
    assert Lease.objects.filter(run_id=run_id, outcome="expired").exists(), "some leases died with their worker"
    assert_no_overlapping_live_leases()
    assert max_concurrent(Lease.objects.filter(run_id=run_id, step__queue="capped")) <= cap


def test_postgres_restart__mid_run_loses_nothing(spawn_worker):
    rt = build_runtime()
    steps = [{"id": f"s{i}", "kind": "sleep", "input": {"seconds": 0.01}} for i in range(1500)]
    run_id = rt.start_run("t", {"steps": steps}).id
    worker = spawn_worker("--max-workers", "4", name="survivor")
    wait_for(lambda: Step.objects.filter(run_id=run_id, state="succeeded").count() > 100, 60, "progress")
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True,
                   timeout=120)
    connection.close()
    wait_for(lambda: _state(run_id) == "succeeded", 180, "the run to finish after the restart")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    committed = Lease.objects.filter(run_id=run_id, outcome="succeeded")
    assert committed.count() == 1500 and committed.values("step_id").distinct().count() == 1500


def _state(run_id: str) -> str:
    try:
        return Run.objects.get(pk=run_id).state
    except Exception:
        connection.close()
        return "unknown"

