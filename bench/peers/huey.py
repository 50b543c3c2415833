"""huey's SqliteHuey (WAL), consumer run in-process with thread workers.

What each `--fsync` setting does (huey/storage.py, SqliteStorage._create_connection, huey 3.5):
  every connection: journal_mode="wal" (default journal_mode arg), cache_size=-8000;
  default (fsync=None): no synchronous pragma -> SQLite's compiled default, read back here (FULL);
  true  (fsync=True):  PRAGMA synchronous=2 (FULL);
  false (fsync=False): PRAGMA synchronous=0 (OFF: no fsync at all, not crash-safe against power loss);
  normal: not offered by huey; a 3-line SqliteStorage subclass adds PRAGMA synchronous=1 (NORMAL) -
          the setting that matches raw_sqlite / our engine. Flagged `stock: false` in the result.
Writes use `begin exclusive`; one connection per storage shared by all worker threads under a lock.
Results of no-op tasks (None) are not stored (store_none=False), so a task costs one enqueue
transaction plus one dequeue transaction (select+delete).
"""

from __future__ import annotations

import logging
import os
import threading

from huey import SqliteHuey, signals
from huey.storage import SqliteStorage

from .common import now, result, sqlite_durability, tmpdir

FSYNC = {"default": None, "true": True, "false": False}


class NormalSyncStorage(SqliteStorage):
    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("PRAGMA synchronous=1")
        return conn


def make_huey(path: str, fsync: str) -> tuple[SqliteHuey, dict]:
    if fsync == "normal":
        huey = SqliteHuey("bench", filename=path, storage_class=NormalSyncStorage)
        issued = ['journal_mode="wal"', "cache_size=-8000", "synchronous=1 (subclass)"]
    else:
        kw = {} if FSYNC[fsync] is None else {"fsync": FSYNC[fsync]}
        huey = SqliteHuey("bench", filename=path, **kw)
        issued = ['journal_mode="wal"', "cache_size=-8000"] + (
            [] if FSYNC[fsync] is None else [f"synchronous={2 if FSYNC[fsync] else 0}"]
        )
    dur = sqlite_durability(
        huey.storage.conn,
        fsync_param=fsync,
        stock=fsync != "normal",
        pragmas_issued=issued,
        write_txn="begin exclusive",
    )
    return huey, dur


def _consume(huey: SqliteHuey, workers: int, target: int) -> tuple[float, list[float]]:
    """Start a consumer; return (seconds from start until `target` tasks completed, completion times)."""
    done, finished, lock = [], threading.Event(), threading.Lock()

    @huey.signal(signals.SIGNAL_COMPLETE)
    def _on_complete(signal, task, *_):
        with lock:
            done.append(now())
            if len(done) >= target:
                finished.set()

    consumer = huey.create_consumer(
        workers=workers, worker_type="thread", periodic=False, check_worker_health=False
    )
    t0 = now()
    consumer.start()
    try:
        if not finished.wait(timeout=3600):
            raise TimeoutError(f"only {len(done)}/{target} tasks completed")
        return done[target - 1] - t0, [t - t0 for t in done]
    finally:
        consumer.stop(graceful=True)


def run(scenario: str = "s1", n: int = 1000, procs: int = 1, fsync: str = "default", **_) -> dict:
    logging.getLogger("huey").setLevel(logging.ERROR)
    with tmpdir("huey") as d:
        huey, dur = make_huey(os.path.join(d, "huey.db"), fsync)
        if scenario == "s1":

            @huey.task()
            def noop():
                return None

            t = now()
            for _ in range(n):
                noop()
            enqueue_s = now() - t
            seconds, _times = _consume(huey, procs, n)
            return result(
                "huey",
                "s1",
                n,
                seconds,
                dur,
                "huey",
                worker_threads=procs,
                enqueue_seconds=round(enqueue_s, 4),
                timing="consumer start -> n-th SIGNAL_COMPLETE",
            )
        if scenario == "s2":

            @huey.task()
            def hop(i):
                if i < n:
                    hop(i + 1)  # calling a task from a task enqueues it: the chain's next step

            hop(1)
            seconds, times = _consume(huey, procs, n)
            steady = (times[-1] - times[0]) * 1000 / (n - 1) if n > 1 else None
            return result(
                "huey",
                "s2",
                n,
                seconds,
                dur,
                "huey",
                hops=True,
                worker_threads=procs,
                ms_per_hop_after_first=round(steady, 3) if steady else None,
                timing="consumer start -> last hop's SIGNAL_COMPLETE; each hop enqueues the next",
            )
    raise ValueError("huey scenarios: s1, s2")
