"""Real runworkers processes: a schedule fires exactly once per tick with three workers, one killed mid-way.

A six-field cron (a tick every two seconds) stands in for ``* * * * *`` so the test takes ~25 s, not minutes.
"""

from __future__ import annotations

import signal
import time
from datetime import timedelta

import pytest
from django.utils.dateparse import parse_datetime

from tests.processes import wait_for
from workflow.models import Event, Lease, Run, Schedule, Worker

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

TICK_SECONDS = 2


def test_three_workers__one_run_per_tick_even_when_one_is_killed(spawn_worker, monkeypatch):
    monkeypatch.setenv("WF_TEST_SCHEDULE_CRON", f"*/{TICK_SECONDS} * * * * *")
    workers = [spawn_worker("--max-workers", "2", "--lease-duration", "3", name=f"s{n}") for n in range(3)]
    wait_for(lambda: Worker.objects.filter(stopped_at__isnull=True).count() == 3, 60, "three workers to start")
    wait_for(lambda: Run.objects.filter(id__startswith="sched:t:tick:").exists(), 30, "the first tick")
    time.sleep(8)
    workers[0].send_signal(signal.SIGKILL)
    workers[0].wait(timeout=10)
    time.sleep(10)
    for proc in workers[1:]:
        proc.send_signal(signal.SIGTERM)
    for proc in workers[1:]:
        assert proc.wait(timeout=60) == 0

    runs = list(Run.objects.filter(id__startswith="sched:t:tick:").order_by("id"))
    instants = [parse_datetime(r.metadata["scheduled_at"].replace("Z", "+00:00")) for r in runs]
    assert len(runs) >= 8, f"only {len(runs)} ticks fired"
    # One run per tick and no tick lost, kill -9 included: consecutive instants are one tick apart.
    gaps = {b - a for a, b in zip(instants, instants[1:], strict=False)}
    assert gaps == {timedelta(seconds=TICK_SECONDS)}, f"ticks skipped or doubled: {gaps}"
    assert all(r.id == f"sched:t:tick:{r.metadata['scheduled_at']}" for r in runs)
    assert Event.objects.filter(kind="run_created", run_id__in=[r.id for r in runs]).count() == len(runs)
    # The schedule's counts were moved once per tick, never twice.
    row = Schedule.objects.get(package="t", name="tick")
    assert row.fired_count == len(runs) and row.missed_count == 0
    # Each run's step was committed once.
    finished = [r for r in runs if r.state == "succeeded"]
    assert len(finished) >= len(runs) - 1
    assert Lease.objects.filter(run__in=finished, outcome="succeeded").count() == len(finished)
