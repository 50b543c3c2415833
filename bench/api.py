"""Benchmark: server time of ``/metrics`` over 1,000,000 finished steps, and of the API's runs list over
1,000,000 runs.

    .venv/bin/python -m bench.api [--steps 1000000] [--runs 1000000] [--days 30] [--repeat 7] [--keep | --reuse DIR]

Seeds a throwaway SQLite database the way ``bench.consoles`` does (runs of 10 finished steps over the
last ``--days`` days, 3% failed, plus a live tail of ready and running steps), then adds finished runs
without steps until there are ``--runs`` runs. Each endpoint is called in-process with Django's test
client (a bearer token for the API, none for /metrics), one warm-up then the median of ``--repeat``.
Budgets: /metrics < 200 ms, runs list < 50 ms (unfiltered, a later page, by state, by package; a
metadata filter is measured but not budgeted: no index serves it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.consoles import CHUNK, _ts, seed, setup

BUDGETS_MS = {"metrics": 200.0, "api_runs": 50.0}


def add_runs(total: int, days: int) -> int:
    """Finished runs (no steps) until the table holds ``total`` runs."""
    from django.db import connection, transaction

    from workflow.models import Run

    have = Run.objects.count()
    now = datetime.now(UTC).replace(tzinfo=None)
    span = days * 86400
    extra = max(total - have, 0)
    with transaction.atomic(), connection.cursor() as cur:
        for first in range(0, extra, CHUNK):
            rows = []
            for i in range(first, min(first + CHUNK, extra)):
                created = now - timedelta(seconds=span * (1 - i / extra) + 90)
                rows.append((f"old-{i:07d}", "demo", "Demo: word report", "{}", "{}",
                             "failed" if i % 37 == 0 else "succeeded", _ts(created), _ts(created), _ts(created),
                             _ts(created + timedelta(seconds=30))))
            cur.executemany(
                "INSERT INTO workflow_run (id, package, name, input, metadata, state, created_at, updated_at,"
                " started_at, finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
        cur.execute("ANALYZE")
    return extra


def _time(call: Any, repeat: int) -> tuple[Any, list[float]]:
    first = call()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return first, times


def measure(repeat: int) -> list[dict[str, Any]]:
    from django.contrib.auth.models import User
    from django.test import Client

    from workflow.api.tokens import create_token

    user = User.objects.filter(username="bench").first() or User.objects.create_superuser("bench", password="bench-pw-1")
    auth = {"Authorization": f"Bearer {create_token(user, name='bench')[1]}"}
    client = Client()
    first_page = client.get("/api/v1/runs", headers=auth).json()
    cases = [
        ("metrics", "/metrics", {}, {}),
        ("api_runs", "/api/v1/runs", {}, auth),
        ("api_runs", "/api/v1/runs", {"after": first_page["next"]}, auth),
        ("api_runs", "/api/v1/runs", {"state": "failed"}, auth),
        ("api_runs", "/api/v1/runs", {"package": "demo", "limit": 200}, auth),
        # No index serves a metadata filter (a JSON key): it scans newest-first until a page fills. Reported,
        # not budgeted; the dashboard's runs page has the same cost, through the same read model.
        ("api_runs_meta", "/api/v1/runs", {"meta": "started_by=ops"}, auth),
        ("other", "/api/v1/queues", {}, auth),
        ("other", "/api/v1/events", {}, auth),
        ("other", "/api/v1/engine", {}, auth),
    ]
    results = []
    for group, url, params, headers in cases:
        response, times = _time(lambda u=url, p=params, h=headers: client.get(u, p, headers=h), repeat)
        assert response.status_code == 200, (url, response.status_code, response.content[:300])
        results.append({"group": group, "url": url, "params": params, "median_ms": round(statistics.median(times), 1),
                        "max_ms": round(max(times), 1), "bytes": len(response.content)})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--reuse", metavar="DIR", help="measure a directory kept by --keep, without seeding")
    args = parser.parse_args(argv)
    var_dir = args.reuse or tempfile.mkdtemp(prefix="wf-bench-api-")
    try:
        setup(var_dir)
        seeded: dict[str, Any] = {"reused": var_dir}
        if not args.reuse:
            t0 = time.perf_counter()
            seeded = seed(steps=args.steps, events=100_000, days=args.days)
            seeded["extra_runs"] = add_runs(args.runs, args.days)
            seeded["seed_seconds"] = round(time.perf_counter() - t0, 1)
        results = measure(args.repeat)
        verdict = {group: max(r["median_ms"] for r in results if r["group"] == group) for group in BUDGETS_MS}
        ok = all(verdict[g] < BUDGETS_MS[g] for g in BUDGETS_MS)
        print(json.dumps({"seeded": seeded, "results": results, "worst_median_ms": verdict, "budgets_ms": BUDGETS_MS,
                          "within_budget": ok}, indent=2, default=str))
        for r in results:
            print(f"{r['url']:<20} {json.dumps(r['params']):<42} {r['median_ms']:>8.1f} ms (max {r['max_ms']:.1f})",
                  file=sys.stderr)
        return 0 if ok else 1
    finally:
        if args.keep or args.reuse:
            print(f"kept {var_dir}", file=sys.stderr)
        else:
            shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
