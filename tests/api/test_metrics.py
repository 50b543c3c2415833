"""/metrics: promtool accepts it; gauges match the rows; worker counters count what workers did."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import drain, run_graph
from tests.processes import wait_for
from workflow.conf import build_runtime
from workflow.engine.values import ClaimRequest, QueueConfig, RateLimitPolicy
from workflow.models import Run, Worker
from workflow.prom import WorkerMetrics

FAILED = [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "fail", "deps": ["a"]}, {"id": "c", "kind": "noop", "deps": ["b"]}]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def promtool_check(text: str) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus'; .ci/run installs it)")
    result = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


@pytest.fixture(autouse=True)
def _roomy_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded test machine must not skip a reader: these tests check values, the budget test checks skipping."""
    from workflow import prom

    monkeypatch.setattr(prom, "SCRAPE_BUDGET_SECONDS", 30.0)


def scrape(client: Client | None = None, **headers: str) -> Any:
    return (client or Client()).get("/metrics", headers=headers)


def test_metrics__promtool_accepts_and_gauges_match_rows(runtime: Any) -> None:
    failed = run_graph(runtime, FAILED)
    drain(runtime)
    run_graph(runtime, [{"id": "w1", "kind": "noop"}, {"id": "w2", "kind": "noop", "deps": ["w1"]}])  # stays: no worker
    response = scrape()
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    promtool_check(text)
    found = samples(text)
    assert value(found, "workflow_runs", state="failed") == 1 == Run.objects.filter(state="failed").count()
    assert value(found, "workflow_runs", state="pending") == 1
    assert value(found, "workflow_steps", state="succeeded") == 1  # a (finished in the last hour)
    assert value(found, "workflow_steps", state="failed") == 1
    assert value(found, "workflow_steps", state="ready") == 1  # w1
    assert value(found, "workflow_steps", state="pending") == 1  # w2; c of the failed run is not active
    assert value(found, "workflow_queue_ready", queue="default") == 1
    assert value(found, "workflow_queue_running", queue="default") == 0
    assert value(found, "workflow_queue_oldest_ready_age_seconds", queue="default") >= 0
    assert value(found, "workflow_leases", state="active") == 0
    assert all(value(found, "workflow_scrape_collector_success", collector=c) == 1
               for c in ("runs", "steps", "queues", "leases", "workers"))
    assert failed


def test_metrics__tokens_and_expired_leases(make_runtime: Any, clock: Any, transactional_db: Any) -> None:
    rt = make_runtime(clock=clock)
    rt.configure_queue("slow", QueueConfig(rate_limit=RateLimitPolicy(rate=2, per=timedelta(seconds=1), burst=5)))
    run_graph(rt, [{"id": "s", "kind": "noop"}])
    rt.store.complete_and_claim([], ClaimRequest(worker_id="dead", limit=1, lease_duration=timedelta(seconds=5),
                                                 clock=clock), clock())
    found = samples(scrape().content.decode())
    # The fake clock is in the past: the lease of the claimed step expired long ago in real time.
    assert value(found, "workflow_leases", state="expired") == 1
    assert value(found, "workflow_queue_running", queue="default") == 1
    assert value(found, "workflow_queue_tokens", queue="slow") == 5


def test_metrics__token_restricts_access(transactional_db: Any, settings: Any) -> None:
    settings.WORKFLOW = {**settings.WORKFLOW, "METRICS_TOKEN": "s3cret"}
    assert scrape().status_code == 401
    assert scrape(Authorization="Bearer wrong").status_code == 401
    assert scrape(Authorization="Bearer s3cret").status_code == 200


def test_metrics__budget_skips_a_reader_and_says_so(transactional_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from workflow import prom

    monkeypatch.setattr(prom, "SCRAPE_BUDGET_SECONDS", 0.0)
    found = samples(prom.exposition().decode())
    assert value(found, "workflow_scrape_collector_success", collector="runs") == 0
    assert ("workflow_runs", (("state", "failed"),)) not in found


# -- worker counters, in process -------------------------------------------------------------------
@pytest.fixture
def counted(runtime: Any) -> tuple[Any, CollectorRegistry]:
    registry = CollectorRegistry()
    runtime.observer = WorkerMetrics(registry=registry)
    return runtime, registry


def _now(registry: CollectorRegistry) -> dict:
    from prometheus_client import generate_latest

    return samples(generate_latest(registry).decode())


def test_worker_counters__claims_outcomes_failures_durations(counted: Any) -> None:
    rt, registry = counted
    run_graph(rt, FAILED)
    drain(rt)
    found = _now(registry)
    assert value(found, "workflow_steps_claimed_total", queue="default", kind="noop") == 1
    assert value(found, "workflow_steps_claimed_total", queue="default", kind="fail") == 1
    assert value(found, "workflow_steps_finished_total", queue="default", kind="noop", outcome="succeeded") == 1
    assert value(found, "workflow_steps_finished_total", queue="default", kind="fail", outcome="failed") == 1
    assert value(found, "workflow_step_failures_total", queue="default", kind="fail", error_code="boom") == 1
    assert value(found, "workflow_step_duration_seconds_count", queue="default", kind="noop") == 1
    assert value(found, "workflow_queue_wait_seconds_count", queue="default") == 2


def test_worker_counters__retries(counted: Any) -> None:
    rt, registry = counted
    run_graph(rt, [{"id": "f", "kind": "flaky", "input": {"until": 2}, "retry": 3}])
    drain(rt)
    found = _now(registry)
    assert value(found, "workflow_step_retries_total", queue="default", kind="flaky") == 1
    assert value(found, "workflow_steps_finished_total", queue="default", kind="flaky", outcome="retried") == 1


def test_worker_counters__throttled_by_pause(counted: Any) -> None:
    rt, registry = counted
    run_graph(rt, [{"id": "s", "kind": "noop"}])
    rt.pause_queue("default")
    assert rt.run_once().claimed == 0
    assert value(_now(registry), "workflow_queue_throttled_total", queue="default", reason="paused") == 1


def test_worker_counters__rejected_commit_when_the_run_is_canceled(counted: Any) -> None:
    rt, registry = counted
    run_id = run_graph(rt, [{"id": "long", "kind": "sleep", "input": {"seconds": 1.0}}])
    canceller = threading.Timer(0.3, lambda: build_runtime().cancel_run(run_id))
    canceller.start()
    rt.run_once()
    canceller.join()
    assert value(_now(registry), "workflow_commits_rejected_total") == 1


def test_worker_counters__reclaimed_leases(make_runtime: Any, clock: Any, transactional_db: Any) -> None:
    rt = make_runtime(clock=clock)
    registry = CollectorRegistry()
    rt.observer = WorkerMetrics(registry=registry)
    run_graph(rt, [{"id": "s", "kind": "noop"}])
    rt.store.complete_and_claim([], ClaimRequest(worker_id="dead", limit=1, lease_duration=timedelta(seconds=5),
                                                 clock=clock), clock())
    clock.advance(60)
    rt.run_once()
    found = _now(registry)
    assert value(found, "workflow_leases_reclaimed_total") == 1
    assert value(found, "workflow_steps_finished_total", queue="default", kind="noop", outcome="expired") == 1


# -- worker counters, from real runworkers processes -------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_runworkers_metrics_port__serves_what_the_worker_did(spawn_worker: Any) -> None:
    port = _free_port()
    worker = spawn_worker("--metrics-port", str(port), "--metrics-addr", "127.0.0.1", name="metered")
    wait_for(lambda: Worker.objects.filter(stopped_at__isnull=True).exists(), 60, "the worker to start")
    run_id = build_runtime().start_run("t", {"steps": FAILED}).id
    wait_for(lambda: Run.objects.get(pk=run_id).state == "failed", 60, "the run to fail")
    text = ""
    for _ in range(50):  # the server thread starts with the worker
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            break
        except OSError:
            time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    found = samples(text)
    assert value(found, "workflow_steps_finished_total", queue="default", kind="noop", outcome="succeeded") == 1
    assert value(found, "workflow_step_failures_total", queue="default", kind="fail", error_code="boom") == 1
    promtool_check(text)


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_multiprocess_mode__sums_two_workers(spawn_worker: Any, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import generate_latest, multiprocess

    shared = tmp_path / "prom"
    shared.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    workers = [spawn_worker("--max-workers", "2", name=f"mp{n}") for n in range(2)]
    wait_for(lambda: Worker.objects.filter(stopped_at__isnull=True).count() == 2, 60, "two workers to start")
    steps = [{"id": f"s{i}", "kind": "sleep", "input": {"seconds": 0.02}} for i in range(40)]
    run_id = build_runtime().start_run("t", {"steps": steps}).id
    wait_for(lambda: Run.objects.get(pk=run_id).state == "succeeded", 60, "the run to finish")
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    for proc in workers:
        assert proc.wait(timeout=30) == 0
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(shared))
    found = samples(generate_latest(registry).decode())
    assert value(found, "workflow_steps_claimed_total", queue="default", kind="sleep") == 40
    assert value(found, "workflow_steps_finished_total", queue="default", kind="sleep", outcome="succeeded") == 40
    assert len(list(shared.glob("counter_*.db"))) >= 2, "each process wrote its own file"
