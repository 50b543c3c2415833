"""Benchmark: prune 100,000 finished runs; report the time and that active and recent runs survive.

    .venv/bin/python -m bench.prune [--runs 100000] [--active 1000] [--recent 1000] [--blobs 1000]
                                     [--batch-size 500]

Seeds a throwaway SQLite database (``WFSITE_VAR_DIR`` set to a temporary directory, so the
real ``var/`` is untouched) with bulk inserts: each old finished run has 1 step, 1 lease and
1 event; ``--blobs`` of them also have an external artifact (a real file). Active runs and
recently finished runs are seeded the same way and must survive. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any


def setup(var_dir: str) -> None:
    os.environ["WFSITE_VAR_DIR"] = var_dir
    os.environ.pop("DATABASE_URL", None)  # always the throwaway SQLite file
    os.environ["DJANGO_SETTINGS_MODULE"] = "wfsite.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(*, old: int, active: int, recent: int, blobs: int, store: Any) -> dict[str, list[str]]:
    """Bulk-insert runs with one step, one lease and one event each; return the ids by group."""
    from django.db import connection, transaction

    now = datetime.now(UTC)
    dt = connection.ops.adapt_datetimefield_value
    groups = {
        "old": ("succeeded", now - timedelta(days=60), old),
        "active": ("running", None, active),
        "recent": ("succeeded", now - timedelta(days=1), recent),
    }
    ids: dict[str, list[str]] = {}
    step_pk = 0
    created = dt(now - timedelta(days=90))
    blob_rows = []
    with transaction.atomic(), connection.cursor() as cursor:
        for group, (state, finished, count) in groups.items():
            run_ids = [f"{group}-{i:07d}" for i in range(count)]
            ids[group] = run_ids
            step_state = "succeeded" if state == "succeeded" else "running"
            for start in range(0, count, 10_000):
                chunk = run_ids[start : start + 10_000]
                runs, steps, leases, events = [], [], [], []
                for run_id in chunk:
                    step_pk += 1
                    token = f"tok{step_pk:012d}"
                    running = step_state == "running"
                    runs.append((run_id, "bench", "bench", None, "{}", state, created, created, created,
                                 dt(finished) if finished else None))
                    steps.append((step_pk, run_id, "only", "noop", "default", "", None, None, None, "{}", "{}",
                                  step_state, 1, 3, 0, created, token if running else None,
                                  "w" if running else None, dt(now + timedelta(hours=1)) if running else None,
                                  None, None, created, created, created, dt(finished) if finished else None))
                    leases.append((step_pk, run_id, 1, "w", token, created, created, None, dt(now + timedelta(hours=1)),
                                   None if running else created, "" if running else "succeeded", "", "", ""))
                    events.append((created, "step_succeeded", "info", run_id, "only", "default", "w", "", "", "{}"))
                cursor.executemany(
                    "INSERT INTO workflow_run (id, package, name, input, metadata, state, created_at, updated_at,"
                    " started_at, finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", runs)
                cursor.executemany(
                    "INSERT INTO workflow_step (id, run_id, step_id, kind, queue, site, parent_step_id, dedup_key,"
                    " input, metadata, retry, state, attempt, max_attempts, pending_deps, available_at, lease_token,"
                    " lease_owner, lease_expires_at, result, error, created_at, updated_at, started_at, finished_at)"
                    " VALUES (" + ", ".join(["%s"] * 25) + ")", steps)
                cursor.executemany(
                    "INSERT INTO workflow_lease (step_id, run_id, attempt, worker_id, token, claimed_at, started_at,"
                    " heartbeat_at, expires_at, released_at, outcome, error_code, error_message, log)"
                    " VALUES (" + ", ".join(["%s"] * 14) + ")", leases)
                cursor.executemany(
                    "INSERT INTO workflow_event (created_at, kind, severity, run_id, step_id, queue, worker_id,"
                    " actor, message, payload) VALUES (" + ", ".join(["%s"] * 10) + ")", events)
            # External artifacts (real files) on the first ``blobs`` runs of each group.
            from workflow.stores.artifacts import new_key

            for n, run_id in enumerate(run_ids[: blobs if group == "old" else min(blobs, 10)]):
                artifact_id, key = new_key()
                stored, size, digest = store.put(key, "application/octet-stream", f"blob of {run_id}".encode())
                blob_rows.append((artifact_id, run_id, step_pk - count + n + 1, "out.bin", "binary",
                                  "application/octet-stream", size, digest, None, stored, "{}", created))
        cursor.executemany(
            "INSERT INTO workflow_artifact (id, run_id, step_id, name, kind, content_type, size, sha256, body,"
            " storage_key, metadata, created_at) VALUES (" + ", ".join(["%s"] * 12) + ")", blob_rows)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000, help="old finished runs to prune")
    parser.add_argument("--active", type=int, default=1000)
    parser.add_argument("--recent", type=int, default=1000)
    parser.add_argument("--blobs", type=int, default=1000, help="old runs that also own an external blob")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    var_dir = tempfile.mkdtemp(prefix="bench-prune-", dir=os.environ.get("BENCH_TMPDIR"))
    try:
        setup(var_dir)
        from workflow.models import Artifact, Event, Lease, Run, Step
        from workflow.stores.artifacts import FileArtifactStore
        from workflow.stores.retention import prune_runs

        store = FileArtifactStore(os.path.join(var_dir, "blobs"))
        started = time.perf_counter()
        ids = seed(old=args.runs, active=args.active, recent=args.recent, blobs=args.blobs, store=store)
        seed_seconds = time.perf_counter() - started
        survivors = ids["active"] + ids["recent"]
        surviving_blobs = list(Artifact.objects.filter(run_id__in=survivors).values_list("storage_key", flat=True))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        started = time.perf_counter()
        dry = prune_runs(older_than=timedelta(days=30), batch_size=args.batch_size, dry_run=True, artifact_store=store)
        dry_seconds = time.perf_counter() - started
        started = time.perf_counter()
        report = prune_runs(older_than=timedelta(days=30), batch_size=args.batch_size, artifact_store=store)
        prune_seconds = time.perf_counter() - started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        def count(model: Any, run_ids: list[str]) -> int:
            field = "pk__in" if model is Run else "run_id__in"
            return sum(model.objects.filter(**{field: run_ids[i : i + 500]}).count()
                       for i in range(0, len(run_ids), 500))

        left_old = {m.__name__: count(m, ids["old"]) for m in (Run, Step, Lease, Event, Artifact)}
        kept = {m.__name__: count(m, survivors) for m in (Run, Step, Lease, Event)}
        active_states = set(Run.objects.filter(pk__in=ids["active"][:500]).values_list("state", flat=True))
        result = {
            "benchmark": "prune_finished_runs",
            "database": "sqlite (throwaway, WAL)",
            "old_runs": args.runs,
            "active_runs": args.active,
            "recent_runs": args.recent,
            "batch_size": args.batch_size,
            "seed_seconds": round(seed_seconds, 2),
            "dry_run_seconds": round(dry_seconds, 2),
            "dry_run_would_remove_runs": dry.runs,
            "prune_seconds": round(prune_seconds, 2),
            "runs_per_second": round(report.runs / prune_seconds),
            "batches": report.batches,
            "removed": {"runs": report.runs, "steps": report.steps, "leases": report.leases, "events": report.events,
                        "artifacts": report.artifacts, "blobs": report.blobs, "blob_failures": report.blob_failures},
            "old_rows_left": left_old,
            "blob_files_left": sum(1 for _ in store.keys()),
            "survivors": kept,
            "survivors_intact": kept == {"Run": len(survivors), "Step": len(survivors), "Lease": len(survivors),
                                         "Event": len(survivors)}
                                  and all(store.exists(k) for k in surviving_blobs),
            "active_states": sorted(active_states),
            "max_rss_mib_before_prune": round(rss_before, 1),
            "max_rss_mib_after_prune": round(rss_after, 1),
            "python": sys.version.split()[0],
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
