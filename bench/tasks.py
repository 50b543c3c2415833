"""Django tasks through ``WorkflowBackend``: enqueue and drain n no-op tasks; the cost of one enqueue.

    .venv/bin/python -m bench.tasks [--n 10000] [--template PATH] [--procs 1] [--threads 1]

Prints one JSON line (the main runner's group TASKS puts it beside django-tasks-db's ``db_worker``
measured the same way: n no-op tasks enqueued first, then workers drain them; time = first task
started -> last finished, from the rows). ``enqueue_ms_p50`` is one ``enqueue()`` inside
``transaction.atomic()``, as under ``ATOMIC_REQUESTS`` in a view.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .ours import Env, Workers, emit, pct, r4, summarize_profile, versions

TASKS_SETTING = {"default": {"BACKEND": "workflow.tasks.WorkflowBackend", "OPTIONS": {"RETRY": {"max_attempts": 3}}}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tasks", description=__doc__)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--template")
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--enqueues", type=int, default=500, help="single enqueues timed for the per-call cost")
    ap.add_argument("--profile", metavar="PATH", help="record the worker with py-spy (raw stacks) into PATH")
    a = ap.parse_args(argv)
    os.environ["BENCH_TASKS"] = "1"  # bench.settings turns TASKS on for this process and its workers
    try:
        with Env("sqlite", a.template) as env:
            from django.db import transaction
            from django.db.models import Max, Min

            from bench.benchapp.tasks import noop
            from workflow.models import Lease, Step

            single = []
            for _ in range(a.enqueues):
                t = time.perf_counter()
                with transaction.atomic():
                    noop.enqueue()
                single.append((time.perf_counter() - t) * 1000)
            Step.objects.all().delete()
            t = time.perf_counter()
            for _ in range(a.n):
                noop.enqueue()
            enqueue_s = time.perf_counter() - t
            workers = Workers(env, a.procs, a.threads, 0.05, profile=a.profile)
            try:
                deadline = time.perf_counter() + 1800
                while Step.objects.filter(state__in=["ready", "running", "pending"]).exists():
                    if time.perf_counter() > deadline or any(p.poll() is not None for p in workers.procs):
                        raise RuntimeError(f"tasks did not drain: {workers.tail()}")
                    time.sleep(0.2)
            finally:
                stopped = workers.stop()
            done = Step.objects.filter(state="succeeded").count()
            if done != a.n:
                raise RuntimeError(f"only {done}/{a.n} tasks succeeded")
            span = Lease.objects.aggregate(first=Min("started_at"), last=Max("released_at"))
            claims = Lease.objects.values("claimed_at").distinct().count()
            seconds = (span["last"] - span["first"]).total_seconds()
            emit({"scenario": "tasks", "n": a.n, "seconds": r4(seconds), "per_second": round(a.n / seconds, 1),
                  "claim_transactions": claims, "enqueue_seconds": r4(enqueue_s), "enqueue_ms_p50": r4(pct(single, 50)),
                  "enqueue_ms_p99": r4(pct(single, 99)), "procs": a.procs, "threads": a.threads, **stopped,
                  "versions": versions(), **(summarize_profile(a.profile) if a.profile else {}),
                  "timing": "first lease started_at -> last released_at; workers start after the enqueues"})
    except Exception as exc:  # noqa: BLE001 - one JSON line, whatever happened
        emit({"scenario": "tasks", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
