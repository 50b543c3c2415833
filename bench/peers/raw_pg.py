"""The PostgreSQL floor: the same claim-then-complete loop with FOR UPDATE SKIP LOCKED, P processes.

Each process: claim (BEGIN; SELECT oldest ready row FOR UPDATE SKIP LOCKED via a partial index; UPDATE to
running with a token; COMMIT), then complete (UPDATE ... WHERE id AND token; COMMIT). Uses its own
uniquely named table in the target database and drops it afterwards.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid

import psycopg

from .common import PG_DSN, pg_durability, result, unique_name

CLAIM_SELECT = (
    "SELECT id FROM {t} WHERE state = 'ready' AND available_at <= now() "
    "ORDER BY available_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
)
CLAIM_UPDATE = "UPDATE {t} SET state = 'running', lease_token = %s WHERE id = %s"
COMPLETE = (
    "UPDATE {t} SET state = 'succeeded', result = %s, lease_token = NULL WHERE id = %s AND lease_token = %s"
)


def _worker(dsn: str, table: str, barrier, out) -> None:
    sel, upd, comp = (q.format(t=table) for q in (CLAIM_SELECT, CLAIM_UPDATE, COMPLETE))
    done = 0
    with psycopg.connect(dsn) as conn:  # non-autocommit: each `with conn.transaction()` is one txn
        conn.execute("SELECT 1")
        conn.commit()
        barrier.wait()
        while True:
            with conn.transaction():
                row = conn.execute(sel, prepare=True).fetchone()
                if row is None:
                    break
                token = uuid.uuid4().hex
                conn.execute(upd, (token, row[0]), prepare=True)
            with conn.transaction():
                if conn.execute(comp, ('{"ok":true}', row[0], token), prepare=True).rowcount != 1:
                    raise RuntimeError("lost lease")
            done += 1
    out.put((done, time.monotonic()))


def run(scenario: str = "s1", n: int = 1000, procs: int = 1, dsn: str = PG_DSN, **_) -> dict:
    if scenario != "s1":
        raise ValueError("raw_pg has only scenario s1")
    table = unique_name("bench_raw_steps")
    with psycopg.connect(dsn, autocommit=True) as conn:
        durability = pg_durability(conn)
        conn.execute(
            f"CREATE TABLE {table} (id bigserial PRIMARY KEY, state text NOT NULL, "
            "available_at timestamptz NOT NULL, lease_token text, result text)"
        )
        conn.execute(f"CREATE INDEX {table}_ready ON {table} (available_at, id) WHERE state = 'ready'")
        conn.execute(
            f"INSERT INTO {table} (state, available_at) "
            "SELECT 'ready', now() - interval '1 second' FROM generate_series(1, %s)",
            (n,),
        )
        conn.execute(f"ANALYZE {table}")
    try:
        ctx = mp.get_context("fork")  # the parent holds no connection while children run
        barrier, out = ctx.Barrier(procs + 1), ctx.Queue()
        children = [ctx.Process(target=_worker, args=(dsn, table, barrier, out)) for _ in range(procs)]
        for c in children:
            c.start()
        barrier.wait(timeout=60)
        t0 = time.monotonic()
        reports = [out.get(timeout=3600) for _ in children]
        for c in children:
            c.join()
        seconds = max(t for _, t in reports) - t0
        per_proc = [d for d, _ in reports]
        with psycopg.connect(dsn, autocommit=True) as conn:
            succeeded = conn.execute(f"SELECT count(*) FROM {table} WHERE state = 'succeeded'").fetchone()[0]
        assert succeeded == n == sum(per_proc), (succeeded, n, per_proc)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    return result(
        "raw_pg",
        scenario,
        n,
        seconds,
        {**durability, "isolation": "read committed", "commits_per_step": 2},
        "psycopg",
        procs=procs,
        steps_per_proc=per_proc,
        ms_per_step=round(seconds * 1000 / n, 4),
    )
