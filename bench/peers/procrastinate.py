"""procrastinate on PostgreSQL: P worker processes, each `app.run_worker(concurrency=1, wait=False)`.

Creates its own database on the server (dropped afterwards), applies procrastinate's schema, defers n
no-op jobs (batch_defer), then starts P worker processes; each opens the app (connection pool), reports
ready, and on a common go signal runs the worker API that `procrastinate worker --concurrency 1
--one-shot` runs, exiting when the queue is empty.
Per job: fetch (procrastinate_fetch_job, one txn) + finish (procrastinate_finish_job, one txn), events
rows written by triggers. Timing: first 'started' event -> last 'succeeded' event (server timestamps);
wall_seconds: go signal -> last worker exited.
"""

from __future__ import annotations

import os
import sys

import psycopg
from psycopg.conninfo import make_conninfo

from .common import PG_DSN, now, pg_durability, result, spawn, stop, tail, tmpdir, unique_name, wait_until

APP_MODULE = """
import os
from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ["BENCH_PROCRASTINATE_DSN"]))


@app.task(name="noop")
def noop():
    return None
"""
WORKER_SCRIPT = """
import asyncio, os, sys
from benchapp import app

async def main(ready, go):
    async with app.open_async():
        open(ready, "w").close()
        while not os.path.exists(go):
            await asyncio.sleep(0.001)
        await app.run_worker_async(concurrency=1, wait=False, install_signal_handlers=False)

asyncio.run(main(*sys.argv[1:3]))
"""
WORKER_OPTIONS = {"concurrency": 1, "wait": False}


def run(scenario: str = "s1", n: int = 1000, procs: int = 1, dsn: str = PG_DSN, **_) -> dict:
    if scenario != "s1":
        raise ValueError("procrastinate has only scenario s1")
    dbname = unique_name("bench_procrastinate")
    db_dsn = make_conninfo(dsn, dbname=dbname)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        with tmpdir("procrastinate") as d:
            for name, text in (("benchapp.py", APP_MODULE), ("benchworker.py", WORKER_SCRIPT)):
                with open(os.path.join(d, name), "w") as f:
                    f.write(text)
            env = {
                "BENCH_PROCRASTINATE_DSN": db_dsn,
                "PYTHONPATH": os.pathsep.join(filter(None, [d, os.environ.get("PYTHONPATH")])),
            }
            os.environ["BENCH_PROCRASTINATE_DSN"] = db_dsn
            sys.path.insert(0, d)
            import benchapp

            with benchapp.app.open():
                benchapp.app.schema_manager.apply_schema()
                t = now()
                benchapp.noop.batch_defer(*({} for _ in range(n)))
                enqueue_s = now() - t

            logs = [os.path.join(d, f"worker{i}.log") for i in range(procs)]
            ready = [os.path.join(d, f"ready{i}") for i in range(procs)]
            go = os.path.join(d, "go")
            workers = [spawn(["benchworker.py", ready[i], go], d, env, logs[i]) for i in range(procs)]
            try:
                wait_until(
                    lambda: all(map(os.path.exists, ready)) or any(w.poll() is not None for w in workers),
                    timeout=120,
                    interval=0.005,
                    what="workers ready",
                )
                t0 = now()
                open(go, "w").close()
                rcs = [w.wait(timeout=3600) for w in workers]
            finally:
                stop(workers)
            wall = now() - t0
            if any(rcs):
                bad = next(i for i, r in enumerate(rcs) if r)
                raise RuntimeError(f"worker rc={rcs}: {tail(logs[bad])}")

        with psycopg.connect(db_dsn, autocommit=True) as conn:
            done = conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            ).fetchone()[0]
            first, last = conn.execute(
                "SELECT min(at) FILTER (WHERE type = 'started'), max(at) FILTER (WHERE type = 'succeeded') "
                "FROM procrastinate_events"
            ).fetchone()
            durability = pg_durability(conn)
        if done != n:
            raise RuntimeError(f"only {done}/{n} jobs succeeded")
        seconds = (last - first).total_seconds()
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return result(
        "procrastinate",
        scenario,
        n,
        seconds,
        {**durability, "commits_per_job": 2},
        "procrastinate",
        worker_procs=procs,
        worker_options=WORKER_OPTIONS,
        wall_seconds=round(wall, 4),
        enqueue_seconds=round(enqueue_s, 4),
        timing="first 'started' event -> last 'succeeded' event (wall_seconds: go signal -> last worker exit)",
    )
