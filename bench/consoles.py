"""Benchmark: server time of each operator console page over 1,000,000 finished steps and 1,000,000 events.

    .venv/bin/python -m bench.consoles [--steps 1000000] [--events 1000000] [--days 30] [--repeat 5]
                                        [--keep | --reuse DIR]

Seeds a throwaway SQLite database (``WFSITE_VAR_DIR`` and ``DATABASE_URL`` point into a temporary
directory, so ``var/`` is untouched) with raw bulk SQL: runs of 10 steps, every step finished
over the last ``--days`` days (3% failed, with 8 error codes), one lease per step, the events,
plus a live tail (ready and running steps, limited queues, workers). Then renders each page
in-process with Django's test client, logged in as a superuser, and prints the median of
``--repeat`` timings per page (after one warm-up) as JSON; the server time includes every query
and the template rendering, not the network.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

CHUNK = 20_000
CODES = ["gateway_timeout", "http_429", "parse_error", "invalid_amount", "dns_failure", "quota_exceeded",
         "publish_rejected", "lease_expired"]


def setup(var_dir: str) -> None:
    os.environ["WFSITE_VAR_DIR"] = var_dir
    os.environ["DATABASE_URL"] = f"sqlite:///{var_dir}/bench.sqlite3"
    os.environ["DJANGO_SETTINGS_MODULE"] = "wfsite.settings"
    os.environ["DJANGO_DEBUG"] = "0"  # no query log: time what production would
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")  # Django's SQLite datetime format (UTC)


def seed(*, steps: int, events: int, days: int) -> dict[str, Any]:
    from django.db import connection, transaction

    rng = random.Random(7)
    now = datetime.now(UTC).replace(tzinfo=None)
    span = days * 86400
    per_run = 10
    runs = steps // per_run
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        step_pk = 0
        for first in range(0, runs, CHUNK // per_run):
            run_rows, step_rows, lease_rows = [], [], []
            for r in range(first, min(first + CHUNK // per_run, runs)):
                created = now - timedelta(seconds=span * (1 - r / runs) + 60)
                run_failed = False
                for s in range(per_run):
                    step_pk += 1
                    finished = created + timedelta(seconds=5 + s * 2 + rng.random())
                    failed = rng.random() < 0.03
                    run_failed |= failed
                    code = rng.choice(CODES) if failed else None
                    error = json.dumps({"code": code, "message": f"{code} on attempt 3", "retryable": False}) if failed else None
                    step_rows.append((
                        step_pk, f"run-{r:07d}", f"s{s}", "demo.count", "io" if s % 2 else "default", "",
                        "{}", "{}", "{}", "failed" if failed else "succeeded", 1, 3, 0, _ts(created), None, None, None,
                        '{"ok": true}' if not failed else None, error, _ts(created), _ts(finished),
                        _ts(finished - timedelta(seconds=1)), _ts(finished),
                    ))
                    lease_rows.append((
                        step_pk, f"run-{r:07d}", 1, f"worker-{step_pk % 4}", f"tok-{step_pk}",
                        _ts(finished - timedelta(seconds=1)), _ts(finished - timedelta(seconds=1)),
                        _ts(finished + timedelta(seconds=29)), _ts(finished), "failed" if failed else "succeeded",
                        code or "", "", "",
                    ))
                meta = '{"started_by": "ops"}' if r % 500 == 0 else "{}"
                run_rows.append((f"run-{r:07d}", "demo", "Demo: word report", "{}", meta,
                                 "failed" if run_failed else "succeeded", _ts(created), _ts(created),
                                 _ts(created), _ts(created + timedelta(seconds=30))))
            cur.executemany(
                "INSERT INTO workflow_run (id, package, name, input, metadata, state, created_at, updated_at,"
                " started_at, finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", run_rows)
            cur.executemany(
                "INSERT INTO workflow_step (id, run_id, step_id, kind, queue, site, input, metadata, retry, priority, state,"
                " attempt, max_attempts, pending_deps, available_at, lease_token, lease_owner, lease_expires_at,"
                " result, error, created_at, updated_at, started_at, finished_at) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                step_rows)
            cur.executemany(
                "INSERT INTO workflow_lease (step_id, run_id, attempt, worker_id, token, claimed_at, started_at,"
                " expires_at, released_at, outcome, error_code, error_message, log)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", lease_rows)
        kinds = ["step_claimed", "step_succeeded", "step_succeeded", "step_claimed", "run_created", "step_retrying",
                 "step_failed", "lease_expired"]
        for first in range(0, events, CHUNK):
            rows = []
            for i in range(first, min(first + CHUNK, events)):
                kind = kinds[i % len(kinds)]
                severity = {"step_failed": "error", "step_retrying": "warning", "lease_expired": "error",
                            "step_claimed": "debug"}.get(kind, "info")
                r = (i * runs) // events
                rows.append((_ts(now - timedelta(seconds=span * (1 - i / events))), kind, severity, f"run-{r:07d}",
                             f"s{i % per_run}", "io" if i % 2 else "default", f"worker-{i % 4}", "",
                             f"{kind.replace('_', ' ')}", json.dumps({"attempt": 1, "duration_ms": i % 900})))
            cur.executemany(
                "INSERT INTO workflow_event (created_at, kind, severity, run_id, step_id, queue, worker_id, actor,"
                " message, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
        # The live tail: two active runs with ready and running steps, limited queues, four workers.
        live_created = _ts(now - timedelta(minutes=3))
        for n in range(2):
            cur.execute("INSERT INTO workflow_run (id, package, name, input, metadata, state, created_at, updated_at)"
                        " VALUES (%s, 'demo', 'live', '{}', '{\"started_by\": \"ops\"}', 'running', %s, %s)",
                        [f"live-{n}", live_created, live_created])
        live = []
        for i in range(300):
            step_pk += 1
            state = "running" if i < 8 else ("ready" if i < 200 else "pending")
            live.append((step_pk, f"live-{i % 2}", f"l{i}", "demo.count", "io" if i % 3 else "default",
                         "eu" if i % 10 == 0 else "", state, live_created,
                         f"lt-{i}" if state == "running" else None, f"worker-{i % 4}" if state == "running" else None,
                         _ts(now + timedelta(seconds=20)) if state == "running" else None, live_created, live_created))
        cur.executemany(
            "INSERT INTO workflow_step (id, run_id, step_id, kind, queue, site, input, metadata, retry, priority, state, attempt,"
            " max_attempts, pending_deps, available_at, lease_token, lease_owner, lease_expires_at, created_at,"
            " updated_at) VALUES (%s, %s, %s, %s, %s, %s, '{}', '{}', '{}', 0, %s, 1, 3, 0, %s, %s, %s, %s, %s, %s)", live)
        cur.executemany(
            "INSERT INTO workflow_lease (step_id, run_id, attempt, worker_id, token, claimed_at, expires_at, outcome,"
            " error_code, error_message, log) SELECT id, run_id, 1, lease_owner, lease_token, %s, lease_expires_at,"
            " '', '', '', '' FROM workflow_step WHERE state = 'running' AND run_id = %s",
            [(live_created, "live-0"), (live_created, "live-1")])
        cur.execute("INSERT INTO workflow_queue (name, max_workers, rate, per_seconds, burst, paused, tokens,"
                    " refilled_at, updated_at) VALUES ('io', 4, 20, 1, 5, 0, 0.4, %s, %s),"
                    " ('default', NULL, NULL, 1, 1, 0, 0, NULL, %s)", [_ts(now), _ts(now), _ts(now)])
        for w in range(4):
            cur.execute("INSERT INTO workflow_worker (id, host, pid, queues, site, max_workers, running, started_at,"
                        " seen_at, stopped_at) VALUES (%s, 'bench', %s, NULL, '', 8, 2, %s, %s, NULL)",
                        [f"worker-{w}", 1000 + w, _ts(now - timedelta(hours=1)), _ts(now)])
    return {"runs": runs + 2, "steps": step_pk, "leases": step_pk - 292, "events": events,
            "seed_seconds": round(time.perf_counter() - started, 1)}


PAGES = [
    ("overview (1h window)", "consoles:overview", {}),
    ("overview (24h window)", "consoles:overview", {"window": "24h"}),
    ("overview live fragment", "consoles:overview", {"fragment": "live", "_htmx": "1"}),
    ("failing steps by code (24h)", "consoles:steps", {"state": "failed", "code": "http_429", "since": "24h"}),
    ("failing steps by code (7d)", "consoles:steps", {"state": "failed", "code": "http_429", "since": "7d"}),
    ("failing steps, absent code (7d)", "consoles:steps", {"state": "failed", "code": "absent", "since": "7d"}),
    ("ready steps of a queue", "consoles:steps", {"state": "ready", "queue": "io"}),
    ("queue monitor (1h)", "consoles:queues", {}),
    ("queue monitor (24h)", "consoles:queues", {"window": "24h"}),
    ("events (newest)", "consoles:events", {}),
    ("events kind=step_failed", "consoles:events", {"kind": "step_failed"}),
    ("events severity=error, last 24h", "consoles:events", {"severity": "error", "range": "24h"}),
    ("events queue=io", "consoles:events", {"queue": "io"}),
    ("events worker=worker-2", "consoles:events", {"worker": "worker-2"}),
    ("events worker=absent (full scan)", "consoles:events", {"worker": "absent"}),
    ("events of one run", "consoles:events", {"run": "run-0050000"}),
    ("events sorted by kind", "consoles:events", {"sort": "kind"}),
    ("events oldest first", "consoles:events", {"sort": "oldest"}),
    ("events kind in (2), sorted by kind", "consoles:events", {"kind": ["step_failed", "run_created"], "sort": "kind"}),
    ("events severity in (warning, error)", "consoles:events", {"severity": ["warning", "error"]}),
    ("events live tail (poll)", "consoles:events", {"fragment": "new", "newer_than": "999990", "_htmx": "1"}),
    ("packages catalogue", "consoles:packages", {}),
    ("start-run form", "consoles:start_run", {"_args": ["demo"]}),
    ("recent submissions (poll)", "consoles:submissions", {}),
    ("engine status", "consoles:engine", {}),
]


def measure(repeat: int) -> list[dict[str, Any]]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    user = User.objects.filter(username="bench").first() or User.objects.create_superuser("bench", password="bench-pw-1")
    client = Client()
    client.force_login(user)
    results = []
    for label, name, params in PAGES:
        params = dict(params)
        args = params.pop("_args", [])
        headers = {"HTTP_HX_REQUEST": "true"} if params.pop("_htmx", None) else {}
        url = reverse(name, args=args)
        connection.queries_log.clear()
        with CaptureQueriesContext(connection) as ctx:
            first = client.get(url, params, **headers)  # warm-up (and the query count)
        query_count = len(ctx.captured_queries)  # read now: the next request clears the query log
        assert first.status_code in (200, 204, 286), (label, first.status_code)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            client.get(url, params, **headers)
            times.append((time.perf_counter() - t0) * 1000)
        results.append({"page": label, "median_ms": round(statistics.median(times), 1),
                        "max_ms": round(max(times), 1), "queries": query_count,
                        "bytes": len(first.content)})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30, help="finished history spread over this many days")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--reuse", metavar="DIR", help="measure a directory kept by --keep, without seeding")
    args = parser.parse_args(argv)
    var_dir = args.reuse or tempfile.mkdtemp(prefix="wf-bench-consoles-")
    try:
        setup(var_dir)
        seeded = {"reused": var_dir} if args.reuse else seed(steps=args.steps, events=args.events, days=args.days)
        results = measure(args.repeat)
        worst = max(r["median_ms"] for r in results)
        print(json.dumps({"seeded": seeded, "pages": results, "worst_median_ms": worst,
                          "budget_ms": 200, "within_budget": worst < 200}, indent=2))
        for r in results:
            print(f"{r['page']:<36} {r['median_ms']:>8.1f} ms  (max {r['max_ms']:.1f}, {r['queries']} queries)",
                  file=sys.stderr)
        return 0 if worst < 200 else 1
    finally:
        if args.keep or args.reuse:
            print(f"kept {var_dir}", file=sys.stderr)
        else:
            shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
