"""The SQLite floor: what one durable step costs with WAL + BEGIN IMMEDIATE and nothing else.

Per step: claim (BEGIN IMMEDIATE; select oldest ready row via a partial index; mark it running with a
lease token; COMMIT) then complete (BEGIN IMMEDIATE; mark succeeded where the token matches; COMMIT).
Two write transactions per step, i.e. two WAL commits.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid

from .common import now, pct, result, sqlite_durability, tmpdir

SCHEMA = """
CREATE TABLE steps (
    id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    available_at REAL NOT NULL,
    lease_token TEXT,
    result TEXT
);
CREATE INDEX steps_ready ON steps (available_at, id) WHERE state = 'ready';
"""
CLAIM_SELECT = (
    "SELECT id FROM steps WHERE state = 'ready' AND available_at <= ? ORDER BY available_at, id LIMIT 1"
)
CLAIM_UPDATE = "UPDATE steps SET state = 'running', lease_token = ? WHERE id = ?"
COMPLETE = (
    "UPDATE steps SET state = 'succeeded', result = ?, lease_token = NULL WHERE id = ? AND lease_token = ?"
)


def connect(path: str, synchronous: str = "NORMAL") -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: we issue BEGIN IMMEDIATE ourselves
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def insert_history(conn: sqlite3.Connection, rows: int) -> float:
    """Bulk-insert finished rows (one transaction, recursive CTE) so the table is big but the ready set isn't."""
    t0 = now()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
        "INSERT INTO steps (state, available_at, lease_token, result) "
        "SELECT 'succeeded', 0, NULL, '{\"ok\":true}' FROM c",
        (rows,),
    )
    conn.execute("COMMIT")
    return now() - t0


def run(scenario: str = "s1", n: int = 1000, history: int = 0, sync: str = "NORMAL", **_) -> dict:
    if scenario != "s1":
        raise ValueError("raw_sqlite has only scenario s1")
    with tmpdir("raw-sqlite") as d:
        conn = connect(os.path.join(d, "steps.db"), sync)
        conn.executescript(SCHEMA)
        history_s = insert_history(conn, history) if history else 0.0
        ts = time.time()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO steps (state, available_at) VALUES ('ready', ?)", ((ts,) for _ in range(n))
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        plan = [r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + CLAIM_SELECT, (ts,))]

        claim_ms, done = [], 0
        t0 = now()
        while True:
            c0 = now()
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(CLAIM_SELECT, (time.time(),)).fetchone()
            if row is None:
                conn.execute("COMMIT")
                break
            token = uuid.uuid4().hex
            conn.execute(CLAIM_UPDATE, (token, row[0]))
            conn.execute("COMMIT")
            claim_ms.append((now() - c0) * 1000)
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute(COMPLETE, ('{"ok":true}', row[0], token)).rowcount != 1:
                raise RuntimeError("lost lease")
            conn.execute("COMMIT")
            done += 1
        seconds = now() - t0
        assert done == n, (done, n)
        dur = sqlite_durability(conn, transactions="BEGIN IMMEDIATE", commits_per_step=2)
        conn.close()
    return result(
        "raw_sqlite",
        scenario,
        n,
        seconds,
        dur,
        "sqlite3",
        history_rows=history,
        history_insert_seconds=round(history_s, 2),
        claim_ms_p50=round(pct(claim_ms, 50), 4),
        claim_ms_p99=round(pct(claim_ms, 99), 4),
        ms_per_step=round(seconds * 1000 / n, 4),
        claim_plan=plan,
    )
