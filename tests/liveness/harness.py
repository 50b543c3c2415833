"""Run one generated site with real ``runworkers`` processes and judge it: safety, then liveness.

Everything is measured from outside the engine: the database's rows (leases, steps, events),
the workers' logs and exit codes, their CPU time (/proc) and, on PostgreSQL, the database's own
transaction counter (``pg_stat_database.xact_commit``), less the queries this harness sent.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from tests.liveness.generator import RunPlan, SitePlan
from tests.procapp.liveness import REFUSED_COLLECTION, REFUSED_MESSAGE
from tests.processes import assert_no_overlapping_live_leases, max_concurrent
from workflow import QueueConfig, RateLimitPolicy
from workflow.conf import build_runtime
from workflow.models import Event, Lease, Queue, Run, Step

TERMINAL_RUNS = ("succeeded", "failed", "canceled")
GRACE_SECONDS = 5.0
RATE_STAMP_SLACK = 0.05  # seconds a lease stamp may trail its token (see _worst_window)
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


class _RolledBack(Exception):
    """Raised inside the caller's transaction to roll back a start_run (a failed request)."""


@dataclass
class Report:
    plan: SitePlan
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def problem(self, kind: str, text: str) -> None:
        self.problems.append(f"[{kind}] {text}")

    def render(self) -> str:
        facts = " ".join(f"{k}={v}" for k, v in self.facts.items())
        lines = [self.plan.describe(), f"  measured: {facts}"]
        lines += [f"  {p}" for p in self.problems] or ["  ok"]
        return "\n".join(lines)


# -- the database trigger that refuses a record: a commit that rolls back --------------------------
def install_refusal_trigger() -> Callable[[], None]:
    """Make the database refuse records of REFUSED_COLLECTION, as a site's own constraint might."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE OR REPLACE FUNCTION liveness_refuse() RETURNS trigger AS $$ BEGIN"
                f" IF NEW.collection = '{REFUSED_COLLECTION}' THEN RAISE EXCEPTION '{REFUSED_MESSAGE}'; END IF;"
                " RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            cursor.execute("DROP TRIGGER IF EXISTS liveness_refuse ON workflow_record")
            cursor.execute("CREATE TRIGGER liveness_refuse BEFORE INSERT ON workflow_record FOR EACH ROW"
                           " EXECUTE FUNCTION liveness_refuse()")
        else:
            cursor.execute("DROP TRIGGER IF EXISTS liveness_refuse")
            cursor.execute(
                "CREATE TRIGGER liveness_refuse BEFORE INSERT ON workflow_record"
                f" WHEN NEW.collection = '{REFUSED_COLLECTION}' BEGIN SELECT RAISE(ABORT, '{REFUSED_MESSAGE}'); END"
            )

    def remove() -> None:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("DROP TRIGGER IF EXISTS liveness_refuse ON workflow_record")
                cursor.execute("DROP FUNCTION IF EXISTS liveness_refuse()")
            else:
                cursor.execute("DROP TRIGGER IF EXISTS liveness_refuse")

    return remove


# -- measurements from outside the workers ----------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks of 1/100 s


def _xacts() -> int | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


class _QueryCounter:
    """Counts the statements this harness sends, to subtract them from the database's counter."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        return execute(sql, params, many, context)


# -- running a site -------------------------------------------------------------------------------------
def run_site(plan: SitePlan, spawn_worker: Callable[..., subprocess.Popen]) -> Report:
    report = Report(plan)
    rt = build_runtime()
    # Every planned queue is declared, as a site's settings.WORKFLOW["QUEUES"] would declare it.
    rt.store.configure_queues(
        {q.name: QueueConfig(max_workers=q.cap, rate_limit=RateLimitPolicy(rate=q.rate, burst=q.burst) if q.rate
                             else None) for q in plan.queues},
        rt.clock(),
    )
    runs = list(plan.runs)
    for run in runs:
        if run.at is None:
            _start(rt, run, report)

    args = ["--poll-interval", str(plan.poll_interval), "--lease-duration", str(plan.lease_duration),
            "--grace-period", str(GRACE_SECONDS)]
    workers = [
        spawn_worker(*args, "--max-workers", str(w.max_workers), *(["--site", w.site] if w.site else []),
                     name=f"live{plan.seed}w{n}")
        for n, w in enumerate(plan.workers)
    ]
    started = time.monotonic()
    while not all("worker started" in _log(p) for p in workers):
        if time.monotonic() - started > 90 or any(p.poll() is not None for p in workers):
            report.problem("start", "the workers did not start: " + " | ".join(_log(p)[-500:] for p in workers))
            return report
        time.sleep(0.1)
    report.facts["startup_s"] = round(time.monotonic() - started, 1)

    counter = _QueryCounter()
    xact0 = _xacts()
    cpu0 = {p.pid: _cpu_seconds(p.pid) for p in workers}
    t0 = time.monotonic()
    events = sorted(
        [(run.at, "start", run) for run in runs if run.at is not None]
        + ([(plan.pause[1], "pause", None), (plan.pause[1] + plan.pause[2], "resume", None)] if plan.pause else [])
        + ([(plan.site_rollback_at, "site_rollback", None)] if plan.site_rollback_at is not None else []),
        key=lambda e: (e[0], e[1]),
    )
    pause_window: list[datetime] = []
    with connection.execute_wrapper(counter):
        while True:
            now = time.monotonic() - t0
            while events and events[0][0] <= now:
                _, what, run = events.pop(0)
                if what == "start":
                    _start(rt, run, report)
                elif what == "pause":
                    rt.pause_queue(plan.pause[0], actor="liveness")  # type: ignore[index]
                    pause_window.append(timezone.now())
                elif what == "resume":
                    pause_window.append(timezone.now())
                    rt.resume_queue(plan.pause[0], actor="liveness")  # type: ignore[index]
                else:
                    runs.append(_site_rollback(rt, plan, report))
            if not events and not Run.objects.filter(pk__in=[r.run_id for r in runs]).exclude(
                    state__in=TERMINAL_RUNS).exists():
                break
            if now > plan.bound_seconds:
                report.problem("liveness", f"not every run reached a final state within the bound of "
                                           f"{plan.bound_seconds:.0f}s")
                break
            time.sleep(0.25)
        elapsed = time.monotonic() - t0
        cpu = sum(_cpu_seconds(p.pid) - cpu0[p.pid] for p in workers)
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in workers:
            try:
                codes.append(proc.wait(timeout=GRACE_SECONDS + 30))
            except subprocess.TimeoutExpired:
                codes.append(None)
        xact1 = _xacts()
    report.facts["run_s"] = round(elapsed, 1)
    if any(code != 0 for code in codes):
        report.problem("exit", f"workers exited with {codes} after SIGTERM")
    worker_seconds = max(elapsed, 0.1) * len(workers)
    attempts = Lease.objects.count()
    report.facts["attempts"] = attempts
    report.facts["cpu_per_worker"] = round(cpu / worker_seconds, 3)
    _check_idle_load(plan, report, worker_seconds, attempts, cpu,
                     None if xact0 is None or xact1 is None else xact1 - xact0 - counter.count)
    _check_final_states(runs, report)
    _check_safety(plan, runs, report, pause_window)
    _check_logs(workers, report)
    return report


def _log(proc: subprocess.Popen) -> str:
    return proc.log_path.read_text()  # type: ignore[attr-defined]


def _start(rt: Any, run: RunPlan, report: Report) -> None:
    if run.bad_step is None:
        rt.start_run("live", {"steps": run.steps}, run_id=run.run_id)
        return
    try:
        rt.start_run("live", {"steps": run.steps}, run_id=run.run_id)
        report.facts["bad_row"] = "accepted_by_start_run"
    except Exception as exc:  # validation refused it: write the row as an older release or a hand edit did
        report.facts["bad_row"] = f"refused_by_start_run({type(exc).__name__})_then_raw_sql"
        good = [{**s, "retry": {}} if s["id"] == run.bad_step else s for s in run.steps]
        bad = next(s for s in run.steps if s["id"] == run.bad_step)["retry"]
        with transaction.atomic():
            rt.start_run("live", {"steps": good}, run_id=run.run_id)
            import json

            with connection.cursor() as cursor:
                cursor.execute("UPDATE workflow_step SET retry = %s WHERE run_id = %s AND step_id = %s",
                               [json.dumps(bad), run.run_id, run.bad_step])


def _site_rollback(rt: Any, plan: SitePlan, report: Report) -> RunPlan:
    """A request starts a run in a new queue and then fails; the next request's run must still run."""
    step = {"id": "s", "kind": "work", "input": {"seconds": 0}, "queue": plan.site_rollback_queue, "site": "",
            "deps": [], "retry": {}}
    try:
        with transaction.atomic():
            rt.start_run("live", {"steps": [step]}, run_id=f"live-{plan.seed}-rolled-back")
            raise _RolledBack
    except _RolledBack:
        pass
    if Run.objects.filter(pk=f"live-{plan.seed}-rolled-back").exists():
        report.problem("safety", "a start_run rolled back with its caller's transaction was kept")
    after = RunPlan(run_id=f"live-{plan.seed}-after-rollback", steps=[step], at=0, expected={"s": "succeeded"})
    _start(rt, after, report)
    return after


# -- the judgement --------------------------------------------------------------------------------------
def _check_final_states(runs: list[RunPlan], report: Report) -> None:
    queues = set(Queue.objects.values_list("name", flat=True))
    for run in runs:
        state = Run.objects.filter(pk=run.run_id).values_list("state", flat=True).first()
        if state != run.expected_run:
            report.problem("liveness", f"run {run.run_id} is {state}, expected {run.expected_run}")
        steps = {s.step_id: s for s in Step.objects.filter(run_id=run.run_id)}
        for sid, expected in run.expected.items():
            step = steps.get(sid)
            got = step.state if step else "missing"
            if got != expected:
                where = ""
                if step is not None:
                    where = f" (queue {step.queue}{' has no queue row' if step.queue not in queues else ''},"
                    where += f" attempt {step.attempt}, error {step.error_code or '-'})"
                report.problem("liveness", f"step {run.run_id}/{sid} is {got}, expected {expected}{where}")
        # Fan-out children: one step per dedup key, every one of them run to success.
        keys = {k for fan, ks in run.fans.items() if steps.get(fan) and steps[fan].state == "succeeded" for k in ks}
        made = [s for s in steps.values() if s.dedup_key]
        if sorted(s.dedup_key for s in made) != sorted(keys):
            report.problem("safety", f"run {run.run_id}: dedup keys {sorted(s.dedup_key for s in made)} "
                                     f"!= the fan-outs' {sorted(keys)}")
        for s in steps.values():
            if (s.dedup_key or s.step_id.endswith(":join")) and s.state != "succeeded":
                report.problem("liveness", f"fan-out step {run.run_id}/{s.step_id} is {s.state} in queue {s.queue}"
                                           f"{' (no queue row)' if s.queue not in queues else ''}")


def _check_safety(plan: SitePlan, runs: list[RunPlan], report: Report, pause_window: list[datetime]) -> None:
    committed: dict[int, int] = defaultdict(int)
    for step_pk in Lease.objects.filter(outcome="succeeded").values_list("step_id", flat=True):
        committed[step_pk] += 1
    for pk, step_id, state in Step.objects.values_list("id", "step_id", "state"):
        want = 1 if state == "succeeded" else 0
        if committed.get(pk, 0) != want:
            report.problem("safety", f"step {step_id} ({state}) has {committed.get(pk, 0)} committed results")
    try:
        assert_no_overlapping_live_leases()
    except AssertionError as exc:
        report.problem("safety", str(exc))
    peaks = {}
    for name, queue in plan.limited.items():
        leases = Lease.objects.filter(step__queue=name)
        if queue.cap is not None:
            peak = max_concurrent(leases)
            peaks[name] = peak
            if peak > queue.cap:
                report.problem("safety", f"queue {name}: {peak} leases live at once, cap {queue.cap}")
        if queue.rate is not None:
            worst = _worst_window(sorted(leases.values_list("claimed_at", flat=True)), queue.rate, queue.burst)
            if worst:
                report.problem("safety", f"queue {name}: rate {queue.rate}/s burst {queue.burst} exceeded: {worst}")
    if peaks:
        report.facts["cap_peaks"] = ",".join(f"{k}:{v}" for k, v in peaks.items())
    if plan.pause and len(pause_window) == 2:
        start, end = pause_window[0] + timedelta(seconds=1), pause_window[1]
        n = Lease.objects.filter(step__queue=plan.pause[0], claimed_at__gt=start, claimed_at__lt=end).count()
        if n:
            report.problem("safety", f"{n} steps of paused queue {plan.pause[0]} were claimed while it was paused")


def _worst_window(starts: list[datetime], rate: float, burst: int) -> str:
    """A token bucket of ``burst`` refilled at ``rate``/s allows at most burst + rate * t starts in t seconds.

    A lease is stamped with its claim's time, the latest of its queues' refills: it may trail the
    moment its own token was spent by the time the claim then waited for other queues' row locks.
    The window gets ``RATE_STAMP_SLACK`` for that; a bucket that leaks shows far more.
    """
    for i, first in enumerate(starts):
        for j in range(i + burst, len(starts)):
            span = (starts[j] - first).total_seconds()
            if j - i + 1 > burst + rate * (span + RATE_STAMP_SLACK) + 1e-6:
                return f"{j - i + 1} starts in {span:.3f}s"
            if span > 10:
                break
    return ""


def _check_logs(workers: list[subprocess.Popen], report: Report) -> None:
    deadlocks = tracebacks = unavailable = 0
    examples: list[str] = []
    for proc in workers:
        text = _log(proc)
        deadlocks += len(re.findall("deadlock detected", text, re.IGNORECASE))
        unavailable += text.count("database unavailable")
        for block in _tracebacks(text):
            if REFUSED_MESSAGE in block:
                continue  # the refused commit is logged with its cause: that is the point of it
            tracebacks += 1
            if len(examples) < 2:
                examples.append(block.strip().splitlines()[-1][:300])
    report.facts["deadlocks"] = deadlocks
    if deadlocks:
        report.problem("liveness", f"{deadlocks} 'deadlock detected' in the worker logs")
    if tracebacks:
        report.problem("liveness", f"{tracebacks} tracebacks in the worker logs, e.g. {examples}")
    lost = Lease.objects.filter(outcome__in=("expired", "discarded")).count()
    rejected = Event.objects.filter(kind="commit_rejected").count()
    report.facts["leases_lost"] = lost
    if lost or rejected:
        codes = sorted(set(Step.objects.filter(leases__outcome__in=("expired", "discarded"))
                           .values_list("step_id", flat=True)))[:5]
        report.problem("liveness", f"healthy workers lost {lost} leases ({rejected} commits rejected), "
                                   f"e.g. steps {codes}; no worker was killed")


def _tracebacks(text: str) -> list[str]:
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            current = [line]
            blocks.append(current)
        elif current is not None:
            if _LOG_LINE.match(line):
                current = None
            else:
                current.append(line)
    return ["\n".join(b) for b in blocks]


def _check_idle_load(plan: SitePlan, report: Report, worker_seconds: float, attempts: int, cpu: float,
                     xacts: int | None) -> None:
    """A worker waiting on a full cap, a pause or an empty bucket must not spin.

    Allowed per worker-second: one claim per poll (at most 20), a heartbeat and a worker row
    update per heartbeat interval, a reclaim scan; per attempt, a few transactions for its claim,
    commit and the wake-ups its commit sends every other worker.
    """
    heartbeat = plan.lease_duration / 3
    per_second = min(1 / plan.poll_interval, 20) + 2 / heartbeat + 1 / min(heartbeat, 5) + 2
    workers = len(plan.workers)
    if xacts is not None:
        budget = worker_seconds * per_second + attempts * (3 + workers) + 100
        report.facts["xact_per_worker_s"] = round(xacts / worker_seconds, 1)
        if xacts > budget:
            report.problem("idle_load", f"{xacts} transactions ({xacts / worker_seconds:.0f}/s per worker) over a "
                                        f"budget of {budget:.0f} ({per_second:.1f}/s per worker + "
                                        f"{3 + workers} per attempt)")
    # CPU, the measure SQLite has: an idle worker uses well under 1% of a core; a claim and its
    # commit a few milliseconds; a worker spinning at a full cap 10-40%.
    cpu_budget = worker_seconds * (0.012 + 0.002 * min(1 / plan.poll_interval, 20)) + attempts * 0.01 + 0.3 * workers
    if cpu > cpu_budget:
        report.problem("idle_load", f"workers used {cpu:.1f}s CPU in {worker_seconds:.0f} worker-seconds "
                                    f"({cpu / worker_seconds:.2f} per worker), over a budget of {cpu_budget:.1f}s")
