"""django-q2 with the ORM broker on SQLite (WAL, synchronous=NORMAL, IMMEDIATE transactions).

n no-op tasks are enqueued with async_task() before the cluster starts; then `manage.py qcluster`
runs as a subprocess and we poll until n Success rows exist. Timing: django-q records no worker-side
start time (Task.started is set at enqueue), so `seconds` is first task `stopped` -> last task `stopped`
(its own timestamps), covering n-1 tasks; `wall_seconds` is qcluster spawn -> n-th Success row seen.
"""

from __future__ import annotations

import os

from .common import make_project, now, result, setup_and_migrate, spawn, stop, tail, tmpdir, wait_until

Q_CLUSTER = {
    "name": "bench",
    "orm": "default",
    "timeout": 60,
    "retry": 120,
    "save_limit": 0,
    "max_attempts": 1,
    "catch_up": False,
    "log_level": "WARNING",
}


def run(scenario: str = "s1", n: int = 1000, procs: int = 1, **_) -> dict:
    if scenario != "s1":
        raise ValueError("django_q2 has only scenario s1")
    conf = {**Q_CLUSTER, "workers": procs}
    with tmpdir("django-q2") as d:
        env = make_project(d, ["django_q"], f"Q_CLUSTER = {conf!r}\n", "def noop():\n    return None\n")
        dur = setup_and_migrate()
        from django.db.models import Max, Min
        from django_q.models import Success, Task
        from django_q.tasks import async_task

        t = now()
        for _ in range(n):
            async_task("benchtasks.noop")
        enqueue_s = now() - t

        log = os.path.join(d, "qcluster.log")
        t0 = now()
        proc = spawn(["-m", "django", "qcluster"], d, env, log)
        try:

            def all_done():
                if proc.poll() is not None:
                    raise RuntimeError(f"qcluster exited rc={proc.returncode}: {tail(log)}")
                return Success.objects.count() >= n

            _, t_end = wait_until(all_done, timeout=3600, interval=0.02, what="n Success rows")
        finally:
            stop([proc])
        span = Task.objects.aggregate(first=Min("stopped"), last=Max("stopped"))
        seconds = (span["last"] - span["first"]).total_seconds()
        return result(
            "django_q2",
            scenario,
            n,
            seconds,
            dur,
            "django-q2",
            timed=n - 1,
            workers=procs,
            cluster_config=conf,
            wall_seconds=round(t_end - t0, 4),
            enqueue_seconds=round(enqueue_s, 4),
            timing="first task stopped -> last task stopped (wall_seconds: qcluster spawn -> all done)",
        )
