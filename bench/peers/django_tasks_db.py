"""django-tasks-db (DatabaseBackend) on SQLite (WAL, synchronous=NORMAL, transaction_mode IMMEDIATE).

On Django 5.2 the tasks API comes from the `django_tasks` backport. n no-op tasks are enqueued, then P
`manage.py db_worker --batch --interval 0 --no-startup-delay --no-reload` processes run until the queue is
empty (--batch: exit when no task is left). Note: the worker's claim forces an EXCLUSIVE transaction on
SQLite (django_tasks_db.utils.exclusive_transaction) whatever transaction_mode says.
Timing: first task started_at -> last finished_at (its own timestamps); wall_seconds counts process start.
"""

from __future__ import annotations

import os

from .common import make_project, now, result, setup_and_migrate, spawn, stop, tail, tmpdir, version

TASKS = 'TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}\n'
TASK_MODULE = """
try:
    from django.tasks import task  # Django >= 6.0
except ImportError:
    from django_tasks import task  # backport on Django 5.2


@task()
def noop():
    return None
"""
WORKER_ARGS = [
    "db_worker",
    "--batch",
    "--interval",
    "0",
    "--no-startup-delay",
    "--no-reload",
    "--verbosity",
    "0",
]


def run(scenario: str = "s1", n: int = 1000, procs: int = 1, **_) -> dict:
    if scenario != "s1":
        raise ValueError("django_tasks_db has only scenario s1")
    with tmpdir("django-tasks-db") as d:
        env = make_project(d, ["django_tasks", "django_tasks_db"], TASKS, TASK_MODULE)
        dur = setup_and_migrate()
        from benchtasks import noop
        from django.db.models import Max, Min
        from django_tasks_db.models import DBTaskResult

        t = now()
        for _ in range(n):
            noop.enqueue()
        enqueue_s = now() - t

        logs = [os.path.join(d, f"worker{i}.log") for i in range(procs)]
        t0 = now()
        workers = [
            spawn(["-m", "django", *WORKER_ARGS, "--worker-id", f"w{i}"], d, env, logs[i])
            for i in range(procs)
        ]
        try:
            rcs = [w.wait(timeout=3600) for w in workers]
        finally:
            stop(workers)
        wall = now() - t0
        if any(rcs):
            raise RuntimeError(f"db_worker rc={rcs}: {tail(logs[rcs.index(next(r for r in rcs if r))])}")
        qs = DBTaskResult.objects.all()
        done = qs.filter(status="SUCCESSFUL").count()
        if done != n:
            raise RuntimeError(
                f"only {done}/{n} SUCCESSFUL; statuses: {list(qs.values_list('status').distinct())}"
            )
        span = qs.aggregate(first=Min("started_at"), last=Max("finished_at"))
        seconds = (span["last"] - span["first"]).total_seconds()
        return result(
            "django_tasks_db",
            scenario,
            n,
            seconds,
            {**dur, "claim_txn": "EXCLUSIVE (forced)"},
            "django-tasks-db",
            worker_procs=procs,
            worker_args=WORKER_ARGS,
            django_tasks_version=version("django-tasks"),
            wall_seconds=round(wall, 4),
            enqueue_seconds=round(enqueue_s, 4),
            timing="first task started_at -> last finished_at (wall_seconds: worker spawn -> exit)",
        )
