"""Our engine's scenarios. Each call runs ONE measurement in this (fresh) interpreter and prints one JSON line.

    .venv/bin/python -m bench.ours <scenario> [options]

Scenarios (see bench/README.md): template, s1, s2, s3, s4, wake, dash, profile, and `worker` (a runworkers
wrapper the scenarios spawn: `--no-listen` turns PostgreSQL LISTEN off to measure polling).

Every scenario builds its own database: a temp dir with a SQLite file (copied from a migrated `--template`
when given, else migrated here) or a fresh PostgreSQL database (`--db pg`, created and dropped here).
Workers are real `manage.py runworkers` processes, started and registered BEFORE the run exists, so
interpreter start-up is never timed; times come from the engine's own rows (Run.started_at/finished_at,
lease rows), and the workers are stopped with SIGTERM afterwards (os.wait4 gives their peak RSS).
Settings: bench.settings (the site's: SQLite WAL + synchronous=NORMAL + IMMEDIATE transactions),
DEBUG off (as in production: no query log), the site's INFO logging of each step on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_SERVER = os.environ.get("BENCH_PG_DSN", "postgres://postgres@127.0.0.1:5432/test")
LOCKED = re.compile(r"database is locked", re.I)
now = time.perf_counter


# ---------------------------------------------------------------------------------------------- helpers
def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def r4(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def emit(obj: dict) -> None:
    print(json.dumps(obj, default=str), flush=True)


class Env:
    """A temp dir, a database, and the environment for this process and its worker children."""

    def __init__(self, db: str = "sqlite", template: str | None = None, keep: bool = False) -> None:
        self.db = db
        self.dir = tempfile.mkdtemp(prefix="bench-ours-", dir=os.environ.get("BENCH_TMPDIR"))
        self.keep = keep
        self.pg_name: str | None = None
        if db == "pg":
            self.pg_name = f"bench_wf_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            import psycopg

            with psycopg.connect(PG_SERVER, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{self.pg_name}"')
            base = PG_SERVER.rsplit("/", 1)[0]
            url = f"{base}/{self.pg_name}"
        else:
            path = os.path.join(self.dir, "db.sqlite3")
            if template:
                shutil.copyfile(template, path)
            url = f"sqlite:///{path}"
        self.vars = {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "WFSITE_VAR_DIR": self.dir,
            "DATABASE_URL": url,
            "DJANGO_DEBUG": "0",
            "DJANGO_ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
            "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
        }
        os.environ.update(self.vars)
        import django

        django.setup()
        if db == "pg" or not template:
            from django.core.management import call_command

            call_command("migrate", verbosity=0, interactive=False)

    def close(self) -> None:
        from django.db import connections

        connections.close_all()
        if self.pg_name:
            import psycopg

            with psycopg.connect(PG_SERVER, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def durability() -> dict:
    from django.db import connection

    with connection.cursor() as c:
        if connection.vendor == "sqlite":
            jm = c.execute("PRAGMA journal_mode").fetchone()[0]
            sync = c.execute("PRAGMA synchronous").fetchone()[0]
            return {"journal_mode": jm, "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, sync),
                    "transaction_mode": connection.settings_dict["OPTIONS"].get("transaction_mode"),
                    "sqlite": sqlite3.sqlite_version}
        out = {}
        for name in ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes", "server_version"):
            c.execute(f"SHOW {name}")
            out[name] = c.fetchone()[0]
        return out


class Workers:
    """`manage.py runworkers` children (or `-m bench.ours worker` with --no-listen), started and registered."""

    def __init__(self, env: Env, procs: int, threads: int, poll: float = 0.02, listen: bool = True,
                 profile: str | None = None, extra: list[str] | None = None) -> None:
        from workflow.models import Worker

        self.env = env
        self.ids = [f"bench-{uuid.uuid4().hex[:6]}-{i}" for i in range(procs)]
        self.logs = [os.path.join(env.dir, f"{w}.log") for w in self.ids]
        self.procs: list[subprocess.Popen] = []
        self.rusage: dict[str, Any] = {}
        for wid, logpath in zip(self.ids, self.logs, strict=False):
            args = ["runworkers", "--max-workers", str(threads), "--poll-interval", str(poll), "--worker-id", wid,
                    *(extra or [])]
            if listen:
                cmd = [sys.executable, os.path.join(ROOT, "manage.py"), *args]
            else:
                cmd = [sys.executable, "-m", "bench.ours", "worker", "--no-listen", "--", *args]
            if profile:
                cmd = [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--rate", "1000",
                       "--format", "raw", "--threads", "--output", profile, "--nonblocking", "--", *cmd]
            with open(logpath, "ab") as out:
                self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env.vars}, stdout=out,
                                                   stderr=subprocess.STDOUT))
        deadline = now() + 120
        while Worker.objects.filter(id__in=self.ids, stopped_at__isnull=True).count() < procs:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a worker exited early: {self.tail()}")
            if now() > deadline:
                raise TimeoutError(f"workers did not register: {self.tail()}")
            time.sleep(0.02)

    def tail(self) -> str:
        out = []
        for path in self.logs:
            with contextlib.suppress(OSError), open(path, errors="replace") as f:
                out.append(f.read()[-1500:])
        return "\n---\n".join(out)

    def hwm(self) -> list[float | None]:
        """Each worker's peak RSS so far (VmHWM of its own address space, in MiB)."""
        out: list[float | None] = []
        for p in self.procs:
            val = None
            with contextlib.suppress(OSError), open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        val = round(int(line.split()[1]) / 1024, 1)
            out.append(val)
        return out

    def stop(self, timeout: float = 60) -> dict:
        hwm = self.hwm()  # before the signal: ru_maxrss after exit would include the bench parent's
        # pages at fork time (Linux carries the pre-exec high-water mark into the child's rusage)
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if not isinstance(p.args, list) or "py-spy" not in p.args[0]
                              else signal.SIGINT)
        peaks = []
        for p in self.procs:
            deadline = now() + timeout
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    p.returncode = os.waitstatus_to_exitcode(status)
                    peaks.append(ru.ru_maxrss / 1024)  # KiB on Linux -> MiB
                    break
                if now() > deadline:
                    p.kill()
                    timeout = 5
                time.sleep(0.02)
        locked = 0
        for path in self.logs:
            with contextlib.suppress(OSError), open(path, errors="replace") as f:
                locked += len(LOCKED.findall(f.read()))
        return {"peak_rss_mb": hwm, "ru_maxrss_mb": [round(x, 1) for x in peaks], "database_locked": locked,
                "exit_codes": [p.returncode for p in self.procs]}


def start_run(shape: str, n: int) -> tuple[str, float]:
    from workflow.conf import runtime

    t = now()
    handle = runtime().start_run("bench", {"shape": shape, "n": n})
    return handle.id, now() - t


def wait_run(run_id: str, timeout: float = 1800, interval: float = 0.25, workers: Workers | None = None) -> Any:
    from workflow.models import Run

    deadline = now() + timeout
    while True:
        run = Run.objects.get(pk=run_id)
        if run.state in ("succeeded", "failed", "canceled"):
            if run.state != "succeeded":
                raise RuntimeError(f"run {run_id} ended {run.state}")
            return run
        if workers and any(p.poll() is not None for p in workers.procs):
            raise RuntimeError(f"a worker died: {workers.tail()}")
        if now() > deadline:
            raise TimeoutError(f"run {run_id} still {run.state} after {timeout}s")
        time.sleep(interval)


def lease_rows(run_id: str) -> list[tuple]:
    from workflow.models import Lease

    return list(Lease.objects.filter(run_id=run_id).order_by("step__step_id", "attempt")
                .values_list("step__step_id", "worker_id", "claimed_at", "started_at", "released_at", "outcome"))


def versions() -> dict:
    import django

    return {"python": platform.python_version(), "django": django.get_version(), "sqlite": sqlite3.sqlite_version}


# --------------------------------------------------------------------------------------------- scenarios
def sc_template(a: argparse.Namespace) -> dict:
    """Migrate a fresh SQLite DB once; scenarios copy it (saves a migrate per repeat)."""
    env = Env("sqlite", keep=True)
    from django.db import connection

    with connection.cursor() as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    shutil.copyfile(os.path.join(env.dir, "db.sqlite3"), a.out)
    env.keep = False
    env.close()
    return {"scenario": "template", "path": a.out}


def run_throughput(env: Env, a: argparse.Namespace, shape: str = "independent") -> dict:
    """Workers up first, then one run of `n` steps of `shape`; time = Run.started_at -> finished_at."""
    workers = Workers(env, a.procs, a.threads, a.poll, listen=not a.no_listen, profile=a.profile)
    try:
        run_id, create_s = start_run(shape, a.n)
        run = wait_run(run_id, workers=workers)
    finally:
        stopped = workers.stop()
    seconds = (run.finished_at - run.started_at).total_seconds()
    from django.db.models import Count

    from workflow.models import Lease, Step

    per_worker = dict(Lease.objects.filter(run_id=run_id).values_list("worker_id").annotate(n=Count("id")))
    steps = Step.objects.filter(run_id=run_id).count()
    return {"run_id": run_id, "n": a.n, "steps": steps, "seconds": r4(seconds),
            "per_second": round(steps / seconds, 1) if seconds > 0 else None,
            "create_seconds": r4(create_s), "procs": a.procs, "threads": a.threads,
            "steps_per_worker": sorted(per_worker.values(), reverse=True), **stopped}


def sc_s1(a: argparse.Namespace) -> dict:
    with Env(a.db, a.template) as env:
        out = run_throughput(env, a)
        return {"scenario": "s1", "db": a.db, "durability": durability(), **out, "versions": versions(),
                "timing": "Run.started_at (first claim) -> Run.finished_at; workers registered before the run"}


def chain_stats(run_id: str) -> dict:
    rows = [r for r in lease_rows(run_id) if r[5] == "succeeded"]
    rows.sort(key=lambda r: r[0])
    start_gap = [(b[3] - a[3]).total_seconds() * 1000 for a, b in zip(rows, rows[1:], strict=False)]  # executor start -> next
    release_claim = [(b[2] - a[4]).total_seconds() * 1000 for a, b in zip(rows, rows[1:], strict=False)]
    claim_gap = [(b[2] - a[2]).total_seconds() * 1000 for a, b in zip(rows, rows[1:], strict=False)]
    workers = {r[1] for r in rows}
    return {"hops": len(start_gap), "ms_per_hop_p50": r4(pct(start_gap, 50)), "ms_per_hop_p99": r4(pct(start_gap, 99)),
            "ms_per_hop_mean": r4(sum(start_gap) / len(start_gap)) if start_gap else None,
            "ms_per_hop_max": r4(max(start_gap)) if start_gap else None,
            "release_to_claim_ms_p50": r4(pct(release_claim, 50)), "release_to_claim_ms_p99": r4(pct(release_claim, 99)),
            "claim_to_claim_ms_p50": r4(pct(claim_gap, 50)), "workers_used": len(workers)}


def sc_s2(a: argparse.Namespace) -> dict:
    with Env(a.db, a.template) as env:
        out = run_throughput(env, a, shape="chain")
        stats = chain_stats(out["run_id"])
        return {"scenario": "s2", "db": a.db, "durability": durability(), **out, **stats,
                "timing": "hop = lease.started_at(i+1) - lease.started_at(i) (executor start to the dependent's "
                          "executor start, warm worker); release_to_claim = lease.claimed_at(i+1) - released_at(i)"}


def _store_hops(n: int) -> tuple[list[float], list[float]]:
    """A chain of ``n`` walked by the store alone, in this process, as a one-thread worker commits
    and claims (no worker loop, no executor, no thread hand-off): wall and CPU seconds per hop."""
    from datetime import timedelta

    from django.utils import timezone

    from workflow.engine.rules import LeaseOutcome
    from workflow.engine.values import ClaimRequest, Outcome, StepState
    from workflow.stores.db import DjangoStore

    store = DjangoStore()
    stop = store.start_checkpointer()
    start_run("chain", n)
    req = ClaimRequest(worker_id="hop", limit=65, lease_duration=timedelta(seconds=30), start_now=1,
                       clock=timezone.now)
    _, claimed = store.complete_and_claim([], req, timezone.now())
    walls, cpus = [], []
    try:
        while claimed.steps:
            t, c = now(), time.process_time()
            moment = timezone.now()
            outcomes = [Outcome(step=step, next_state=StepState.SUCCEEDED, started_at=moment, finished_at=moment,
                                lease_outcome=LeaseOutcome.SUCCEEDED, log="") for step in claimed.steps]
            _, claimed = store.complete_and_claim(outcomes, req, timezone.now())
            walls.append(now() - t)
            cpus.append(time.process_time() - c)
    finally:
        if stop:
            stop()
    return walls, cpus


def _floor_hops(n: int) -> tuple[list[float], list[float]]:
    """The same hops' SQL (the store's own statements, imported, with the parameters the store
    binds) through a bare sqlite3 connection with the site's pragmas: what SQLite alone costs."""
    import threading
    from datetime import UTC, datetime, timedelta

    from django.db import connection

    from workflow.stores.claim import _CLAIM_AND_LEASE_SQLITE_SQL, _INSERT_LEASES_SQL
    from workflow.stores.commit import (
        _COUNT_DOWN_ONE_SQL,
        _FINISH_IF_LIVE_SQL,
        _RELEASE_LEASES_SQL,
        _SATISFY_EDGES_SQL,
    )
    from workflow.stores.control import _QUEUE_ROWS_SQL
    from workflow.stores.db import DjangoStore
    from workflow.stores.rows import _lease_token_prefix

    def qmark(sql: str) -> str:
        return sql.replace("%%", "\0").replace("%s", "?").replace("\0", "%")

    store = DjangoStore()  # its claim query and datetime adapter: the floor binds what the store binds
    claim_sql = qmark(_CLAIM_AND_LEASE_SQLITE_SQL.format(claim=store.claim_sql(1)))
    finish, release, insert_lease = qmark(_FINISH_IF_LIVE_SQL), qmark(_RELEASE_LEASES_SQL), qmark(_INSERT_LEASES_SQL)
    satisfy = qmark(_SATISFY_EDGES_SQL.format(only_optional="", pks="%s"))
    count_down, queues = qmark(_COUNT_DOWN_ONE_SQL), qmark(_QUEUE_ROWS_SQL)
    start_run("chain", n)
    path = connection.settings_dict["NAME"]
    connection.close()
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "wal_autocheckpoint=0"):
        db.execute(f"PRAGMA {pragma}")
    done = threading.Event()

    def checkpoint() -> None:  # as the worker's checkpointer does
        side = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        while not done.wait(1.0):
            side.execute("PRAGMA wal_checkpoint(PASSIVE)")
        side.close()

    threading.Thread(target=checkpoint, daemon=True).start()

    text = store._adapt_datetime

    def claim(moment: datetime) -> list[tuple]:
        t, expires = text(moment), text(moment + timedelta(seconds=30))
        db.execute(queues).fetchall()
        rows = db.execute(claim_sql, [_lease_token_prefix(), "hop", expires, t, t,
                                      "default", t, "", 65]).fetchall()
        for row in rows:
            db.execute(insert_lease, [row[0], row[1], row[10], "hop", row[13], t, expires])
        return rows

    db.execute("BEGIN IMMEDIATE")
    rows = claim(datetime.now(UTC))
    db.execute("COMMIT")
    walls, cpus = [], []
    while rows:
        t0, c0 = now(), time.process_time()
        (row,) = rows
        moment = datetime.now(UTC)
        t = text(moment)
        db.execute("BEGIN IMMEDIATE")
        db.execute(finish, ["succeeded", None, None, t, t, t, row[0], row[13], t])
        db.execute(release, [t, "succeeded", "", "", "", t, row[13]])
        for (dependent,) in db.execute(satisfy, [True, False, row[0]]).fetchall():
            db.execute(count_down, [1, 1, 1, t, 1, t, dependent]).fetchall()
        rows = claim(datetime.now(UTC))
        db.execute("COMMIT")
        walls.append(now() - t0)
        cpus.append(time.process_time() - c0)
    done.set()
    db.close()
    return walls, cpus


def sc_hop(a: argparse.Namespace) -> dict:
    """S2 taken apart: the store's chain hop alone (in-process), and that hop's SQL through bare sqlite3.

    With the worker's hop (S2) these split a hop into SQLite's work, the store's Python around
    it, and the worker's part (its loop, the executor, the hand-offs to the pool thread and back).
    """
    if a.db != "sqlite":
        raise SystemExit("the hop scenario replays SQLite's statements: run it with --db sqlite")
    with Env(a.db, a.template):
        store_wall, store_cpu = _store_hops(a.n)
        floor_wall, floor_cpu = _floor_hops(a.n)

    def us(values: list[float]) -> float | None:
        middle = values[20:] or values  # the first hops warm the statement caches
        return r4((pct(middle, 50) or 0) * 1e6)

    return {"scenario": "hop", "db": a.db, "hops": len(store_wall),
            "store_us_p50": us(store_wall), "store_cpu_us_p50": us(store_cpu),
            "floor_us_p50": us(floor_wall), "floor_cpu_us_p50": us(floor_cpu),
            "timing": "per hop: one complete_and_claim call (store), or the same statements in one "
                      "BEGIN IMMEDIATE ... COMMIT through sqlite3 (floor); p50 after 20 warm-up hops"}


def sc_s3(a: argparse.Namespace) -> dict:
    with Env(a.db, a.template) as env:
        out = run_throughput(env, a, shape="fanout")
        from workflow.models import Lease

        run_id = out["run_id"]
        fan = Lease.objects.get(run_id=run_id, step__step_id="fanout")
        first_child = (Lease.objects.filter(run_id=run_id, step__step_id__startswith="k")
                       .order_by("started_at").values_list("started_at", flat=True).first())
        join = Lease.objects.get(run_id=run_id, step__step_id="join")
        last_child = (Lease.objects.filter(run_id=run_id, step__step_id__startswith="k")
                      .order_by("-released_at").values_list("released_at", flat=True).first())
        return {"scenario": "s3", "db": a.db, "durability": durability(), **out,
                "emit_seconds": r4((fan.released_at - fan.started_at).total_seconds()),
                "commit_seconds": r4((first_child - fan.released_at).total_seconds()),
                "drain_seconds": r4((last_child - first_child).total_seconds()),
                "join_seconds": r4((join.released_at - last_child).total_seconds()),
                "peak_rss_mb_max": max(x or 0 for x in out["peak_rss_mb"]),
                "timing": "emit = fanout executor (building 10k child specs); commit = fanout lease released_at "
                          "(commit start) -> first child's executor start; total = Run.started_at -> finished_at"}


SEED_RUNS = """
WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r WHERE i < %(runs)d - 1)
INSERT INTO workflow_run (id, package, name, input, metadata, state, created_at, updated_at, started_at, finished_at)
SELECT printf('hist-%%07d', i), 'bench', 'history', NULL, '{}', '%(state)s', ts, ts, ts, ts
FROM (SELECT i, strftime('%%Y-%%m-%%d %%H:%%M:%%f', '2026-01-01', '+' || i || ' seconds') AS ts FROM r)
"""
SEED_STEPS = """
WITH RECURSIVE s(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM s WHERE j < %(per)d - 1)
INSERT INTO workflow_step (run_id, step_id, kind, queue, site, parent_step_id, dedup_key, input, metadata, retry,
    state, attempt, max_attempts, pending_deps, priority, available_at, lease_token, lease_owner, lease_expires_at,
    result, error, created_at, updated_at, started_at, finished_at)
SELECT r.id, printf('s%%06d', s.j), 'noop', 'default', '', NULL, NULL, NULL, '{}', '{}', 'succeeded', 1, 3, 0, 0,
    r.created_at, NULL, NULL, NULL, NULL, NULL, r.created_at, r.created_at, r.created_at, r.finished_at
FROM workflow_run r CROSS JOIN s WHERE r.id LIKE 'hist-%%' ORDER BY r.id, s.j
"""


def seed_history(runs: int, per_run: int) -> float:
    """Bulk-insert `runs` finished runs with `per_run` succeeded steps each (raw SQL, one transaction)."""
    from django.db import connection, transaction

    t = now()
    with transaction.atomic(), connection.cursor() as c:
        c.execute("PRAGMA cache_size = -200000")
        c.execute(SEED_RUNS % {"runs": runs, "state": "succeeded"})
        if per_run:
            c.execute(SEED_STEPS % {"per": per_run})
    with connection.cursor() as c:  # as a long-lived database would be: history checkpointed, not in the WAL
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return now() - t


def claim_latency(count: int, batch: int = 3000) -> dict:
    """Time `DjangoStore.complete_and_claim([], ClaimRequest(limit=1))` in a loop (in-process)."""
    from django.db import connection

    from workflow.conf import runtime
    from workflow.engine.runtime import utcnow
    from workflow.engine.values import ClaimRequest
    from workflow.stores.db import DjangoStore

    run_id, _ = start_run("independent", max(batch, count))
    if connection.vendor == "sqlite":
        with connection.cursor() as c:
            c.execute("ANALYZE")  # the trap: statistics taken while the new steps are all ready
    store = DjangoStore()
    plan = []
    if connection.vendor == "sqlite":
        with connection.cursor() as c:
            c.execute("EXPLAIN QUERY PLAN " + store.claim_sql(1).replace("%s", "?"),
                      ["default", "9999-12-31 00:00:00", "", 1])
            plan = [r[-1] for r in c.fetchall()]
    req = ClaimRequest(worker_id="bench-claim", limit=1, lease_duration=timedelta(minutes=30))
    times = []
    for _ in range(count):
        t = now()
        _, got = store.complete_and_claim([], req, utcnow())
        times.append((now() - t) * 1000)
        assert len(got.steps) == 1
    runtime().cancel_run(run_id)
    return {"claim_ms_p50": r4(pct(times, 50)), "claim_ms_p99": r4(pct(times, 99)), "claims": count,
            "claim_plan": plan}


def sc_s4(a: argparse.Namespace) -> dict:
    """History H (0 or 1M) seeded once; then `repeats` x (claim-latency loop, S1 run) in the same DB."""
    with Env(a.db, a.template) as env:
        seed_s = seed_history(a.history // a.per_run, a.per_run) if a.history else 0.0
        from workflow.models import Step

        finished = Step.objects.filter(state="succeeded").count()
        reps = []
        for _ in range(a.repeats):
            lat = claim_latency(a.claims)
            thr = run_throughput(env, a)
            reps.append({**lat, **{k: thr[k] for k in ("seconds", "per_second", "database_locked", "peak_rss_mb")}})
        return {"scenario": "s4", "db": a.db, "durability": durability(), "history": a.history,
                "finished_steps_before": finished, "seed_seconds": r4(seed_s), "repeats": reps,
                "procs": a.procs, "threads": a.threads, "n": a.n,
                "timing": "claim: one complete_and_claim([], limit=1) call (BEGIN IMMEDIATE .. COMMIT) in-process, "
                          "after ANALYZE taken with all new steps ready; throughput as s1"}


def sc_wake(a: argparse.Namespace) -> dict:
    """An idle warm worker; single-step runs started one at a time: run.created_at -> lease.claimed_at."""
    with Env(a.db, a.template) as env:
        from workflow.models import Lease, Run

        workers = Workers(env, 1, 1, a.poll, listen=not a.no_listen)
        lat = []
        try:
            time.sleep(0.3)
            rng = random.Random(7)
            for _ in range(a.n):
                time.sleep(rng.uniform(0.0, a.jitter))
                run_id, _ = start_run("independent", 1)
                wait_run(run_id, interval=0.005, workers=workers)
                created = Run.objects.get(pk=run_id).created_at
                claimed = Lease.objects.get(run_id=run_id).claimed_at
                lat.append((claimed - created).total_seconds() * 1000)
        finally:
            stopped = workers.stop()
        return {"scenario": "wake", "db": a.db, "listen": not a.no_listen, "poll_interval": a.poll, "runs": a.n,
                "wake_ms_p50": r4(pct(lat, 50)), "wake_ms_p99": r4(pct(lat, 99)), "durability": durability(), **stopped,
                "timing": "Run.created_at -> its step's lease.claimed_at, worker idle and warm"}


def sc_profile(a: argparse.Namespace) -> dict:
    """s1 or s2 with the worker under py-spy (raw collapsed stacks); returns the top frames."""
    out_path = a.out or os.path.join(tempfile.gettempdir(), f"bench-profile-{a.shape}.txt")
    a.profile = out_path
    with Env(a.db, a.template) as env:
        shape = {"s1": "independent", "s2": "chain", "s3": "fanout"}[a.shape]
        res = run_throughput(env, a, shape=shape)
    return {"scenario": "profile", "shape": a.shape, "profile_file": out_path, "seconds": res["seconds"],
            "per_second": res["per_second"], "n": a.n, "threads": a.threads, **summarize_profile(out_path)}


def summarize_profile(path: str, top: int = 25) -> dict:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output.

    Only the worker's threads (the scheduler loop and the executors) count: start-up imports on the
    main thread are left out. Shares are of those threads' non-idle samples."""
    import collections

    self_c: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    engine: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    total = 0
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            frames = stack.split(";")
            if not stack or "workflow-" not in frames[0]:
                continue
            n = int(count)
            threads[re.sub(r"^thread \(\d+\): ", "", re.sub(r"-bench-\w+-\d+$", "", frames[0]))] += n
            total += n
            names = [re.sub(r" \((?:.*/)?([^/]*?):\d+\)$", r" (\1)", fr) for fr in frames[1:]]
            if names:
                self_c[names[-1]] += n
            for name in set(names):
                incl[name] += n
            for name in {re.sub(r":\d+\)$", ")", fr) for fr in frames[1:] if "workflow/" in fr}:
                engine[name] += n

    def share(c: collections.Counter, k: int = top) -> list:
        return [[name, round(100 * v / total, 1)] for name, v in c.most_common(k)] if total else []

    return {"samples": total, "threads_pct": share(threads, 8), "self_pct": share(self_c),
            "inclusive_pct": share(incl), "engine_inclusive_pct": share(engine, 30)}


STORE_CALLS = ("complete_and_claim", "expired_leases", "heartbeat", "live_tokens", "leased_to", "hand_back",
               "worker_seen", "register_worker", "worker_stopped", "record_event")


def count_store_calls(path: str) -> None:
    """Count the worker's database round trips (each store call is one transaction) into ``path``.

    The file is rewritten every 0.1 s as ``<store calls> <claim transactions>``, so a scenario can
    read the counts at the start and the end of its window.
    """
    import threading

    from workflow.stores.db import DjangoStore

    counts = [0, 0]
    for name in STORE_CALLS:
        original = getattr(DjangoStore, name)

        def counted(self: Any, *args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
            counts[0] += 1
            if _name == "complete_and_claim" and args[1] is not None:
                counts[1] += 1
            return _original(self, *args, **kw)

        setattr(DjangoStore, name, counted)

    def write() -> None:
        while True:
            with open(path + ".tmp", "w") as f:
                f.write(f"{counts[0]} {counts[1]}")
            os.replace(path + ".tmp", path)
            time.sleep(0.1)

    threading.Thread(target=write, daemon=True).start()


def sc_worker(a: argparse.Namespace, rest: list[str]) -> None:
    """runworkers in this process; --no-listen: no LISTEN connection, the worker only polls."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    if a.no_listen:
        from workflow.stores.db import DjangoStore

        DjangoStore.listen = lambda self, wake: None  # type: ignore[method-assign]
    if a.count_store_calls:
        count_store_calls(a.count_store_calls)
    from django.core.management import call_command

    call_command(*rest)


def sc_idle(a: argparse.Namespace) -> dict:
    """Idle at cap: a queue capped at 2 is full of 7 s steps and more wait; how busy are the workers?

    Counts each worker's store calls (one database transaction each) and claim transactions over
    ``--window`` seconds once the cap is full, and its CPU time from /proc. Nothing can start in
    that window, so every transaction is overhead.
    """
    with Env(a.db, a.template) as env:
        from workflow.conf import runtime
        from workflow.engine.values import QueueConfig
        from workflow.models import Step

        runtime().configure_queue("capped", QueueConfig(max_workers=2))
        counters = [os.path.join(env.dir, f"calls-{i}") for i in range(a.procs)]
        workers = Workers(env, 0, a.threads)  # its stop() only; the workers, with counters, start here
        procs, logs = [], []
        for i, path in enumerate(counters):
            wid = f"idle-{uuid.uuid4().hex[:6]}-{i}"
            log_path = os.path.join(env.dir, f"{wid}.log")
            logs.append(log_path)
            cmd = [sys.executable, "-m", "bench.ours", "worker", "--count-store-calls", path, "--",
                   "runworkers", "--max-workers", str(a.threads), "--poll-interval", str(a.poll), "--worker-id", wid]
            with open(log_path, "ab") as out:
                procs.append(subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env.vars}, stdout=out,
                                              stderr=subprocess.STDOUT))
        workers.procs, workers.logs = procs, logs
        try:
            run_id, _ = start_run("capped", a.n)
            deadline = now() + 120
            while Step.objects.filter(run_id=run_id, state="running").count() < 2:
                if now() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError("the capped queue never filled")
                time.sleep(0.05)
            time.sleep(0.5)

            def read() -> list[tuple[int, int, float]]:
                out = []
                for p, path in zip(procs, counters, strict=True):
                    calls, claims = (int(x) for x in open(path).read().split())
                    with open(f"/proc/{p.pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    out.append((calls, claims, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")))
                return out

            t0, before = now(), read()
            time.sleep(a.window)
            t1, after = now(), read()
            running = Step.objects.filter(run_id=run_id, state="running").count()
        finally:
            stopped = workers.stop()
        seconds = t1 - t0
        calls = [(b[0] - a_[0]) / seconds for a_, b in zip(before, after, strict=True)]
        claims = [(b[1] - a_[1]) / seconds for a_, b in zip(before, after, strict=True)]
        cpu = [(b[2] - a_[2]) / seconds for a_, b in zip(before, after, strict=True)]
        return {"scenario": "idle", "db": a.db, "procs": a.procs, "threads": a.threads, "poll_interval": a.poll,
                "window_s": r4(seconds), "running_at_end": running,
                "transactions_per_s_per_worker": r4(max(calls)), "claims_per_s_per_worker": r4(max(claims)),
                "cpu_per_worker": r4(max(cpu)), **stopped,
                "timing": "store calls (one transaction each) per second per worker while the cap is full"}


# ------------------------------------------------------------------------------------- dashboard (issue 3)
def sc_dash(a: argparse.Namespace) -> dict:
    """1M finished runs (raw SQL) + one real 10,000-step run; server time of dashboard pages, test client."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with Env("sqlite", a.template) as env:
        seed_s = seed_history(a.runs, a.per_run)
        with connection.cursor() as c:
            c.execute("ANALYZE")
        workers = Workers(env, 1, 4, 0.02)
        try:
            run_id, _ = start_run("independent", a.n)
            wait_run(run_id, workers=workers)
        finally:
            workers.stop()
        from django.contrib.auth import get_user_model
        from django.test import Client
        from django.urls import NoReverseMatch, reverse

        user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-pass")
        client = Client()
        client.force_login(user)
        pages: dict[str, Any] = {}

        def timed(name: str, url_name: str, args: tuple = (), query: str = "") -> Any:
            try:
                url = reverse(f"workflow:{url_name}", args=args) + query
            except NoReverseMatch as exc:
                pages[name] = {"missing": f"no URL {url_name!r}: {exc}"}
                return None
            times, resp, nq = [], None, None
            try:
                for i in range(a.repeats + 1):  # the first request warms caches; not counted
                    with CaptureQueriesContext(connection) as q:
                        t = now()
                        resp = client.get(url)
                        dt = (now() - t) * 1000
                    if i:
                        times.append(dt)
                    nq = len(q.captured_queries)
            except Exception as exc:  # a page under construction must not stop the bench
                pages[name] = {"url": url, "error": f"{type(exc).__name__}: {exc}"[:500]}
                return None
            pages[name] = {"url": url, "status": resp.status_code, "ms_p50": r4(pct(times, 50)),
                           "ms": [r4(t) for t in times], "queries": nq, "bytes": len(resp.content)}
            return resp

        first = timed("runs_first_page", "runs")
        # Deep page: follow the keyset "older" link 50 times (each a real request).
        deep_q, hops = "", 0
        if first is not None and first.status_code == 200:
            resp = first
            for _ in range(a.deep):
                m = re.search(rb'href="([^"]*\?[^"]*(?:before|cursor|older|after)=[^"]*)"[^>]*>[^<]*(?:[Oo]lder|[Nn]ext)',
                              resp.content) or re.search(rb'href="([^"]*\?[^"]*(?:before|cursor|older)=[^"]*)"',
                                                         resp.content)
                if not m:
                    break
                href = m.group(1).decode().replace("&amp;", "&")
                deep_q = href[href.index("?"):]
                resp = client.get(reverse("workflow:runs") + deep_q)
                hops += 1
        if hops:
            timed("runs_deep_page", "runs", query=deep_q)
            pages["runs_deep_page"]["hops"] = hops
        else:
            pages["runs_deep_page"] = {"missing": "no keyset 'older' link found on the runs page"}
        timed("run_page_10k_steps", "run", (run_id,))
        # An opened group is paged (200 steps a page), so this page has a bound whatever the group's size.
        timed("run_page_10k_expanded_group", "run", (run_id,), query="?expand=%3A%3Anoop%405")
        timed("step_page", "step", (run_id, f"s{a.n // 2:06d}"))
        return {"scenario": "dash", "runs_seeded": a.runs, "steps_per_seeded_run": a.per_run, "seed_seconds": r4(seed_s),
                "run_steps": a.n, "pages": pages, "durability": durability(), "versions": versions(),
                "timing": f"Django test client GET in-process as a superuser, median of {a.repeats} after one warm-up"}


# ------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":
        rest = argv[argv.index("--") + 1:] if "--" in argv else []
        ap = argparse.ArgumentParser()
        ap.add_argument("--no-listen", action="store_true")
        ap.add_argument("--count-store-calls", metavar="PATH")
        a = ap.parse_args(argv[1: argv.index("--")] if "--" in argv else argv[1:])
        sc_worker(a, rest)
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.ours", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=["template", "s1", "s2", "hop", "s3", "s4", "wake", "idle", "dash", "profile"])
    ap.add_argument("--db", choices=["sqlite", "pg"], default="sqlite")
    ap.add_argument("--template", help="a migrated SQLite file to copy instead of migrating")
    ap.add_argument("--out")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--poll", type=float, default=0.02, help="worker --poll-interval (idle polling only)")
    ap.add_argument("--no-listen", action="store_true")
    ap.add_argument("--history", type=int, default=0)
    ap.add_argument("--per-run", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--claims", type=int, default=2000)
    ap.add_argument("--jitter", type=float, default=0.1)
    ap.add_argument("--deep", type=int, default=50)
    ap.add_argument("--shape", default="s1")
    ap.add_argument("--window", type=float, default=5.0, help="idle: seconds measured while the queue is at its cap")
    a = ap.parse_args(argv)
    a.profile = None
    fn = {"template": sc_template, "s1": sc_s1, "s2": sc_s2, "hop": sc_hop, "s3": sc_s3, "s4": sc_s4, "wake": sc_wake, "idle": sc_idle,
          "dash": sc_dash, "profile": sc_profile}[a.scenario]
    try:
        emit(fn(a))
    except Exception as exc:
        import traceback

        emit({"scenario": a.scenario, "error": f"{type(exc).__name__}: {exc}"[:2000],
              "traceback": traceback.format_exc()[-3000:]})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
