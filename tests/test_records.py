"""Records: keyed writes applied when the step commits, never from an attempt that did not."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import drain, run_graph
from workflow import Package, StepContext, StepState, permanent, retryable
from workflow.engine.runtime import utcnow
from workflow.engine.values import ClaimRequest, ErrorInfo
from workflow.models import Event, Lease, Record


@pytest.fixture
def package_kinds() -> list[Callable[[Package], None]]:
    def add_kinds(pkg: Package) -> None:
        @pkg.executor("rec")
        def rec(step: StepContext) -> None:
            for write in step.raw_input["writes"]:
                step.record(write["collection"], write["key"], write["data"])

        @pkg.executor("rec_attempt")
        def rec_attempt(step: StepContext) -> dict:
            step.record("attempts", "k", {"attempt": step.attempt, "worker": step.lease.worker_id})
            if step.attempt < (step.raw_input or {}).get("until", 1):
                raise retryable("flaky", f"attempt {step.attempt} fails after recording")
            return {"attempt": step.attempt}

        @pkg.executor("rec_fail")
        def rec_fail(step: StepContext) -> None:
            step.record("failed", "k", {"never": True})
            raise permanent("boom", "fails after recording")

    return [add_kinds]


def write(collection: str, key: str, data: Any) -> dict:
    return {"collection": collection, "key": key, "data": data}


def test_record__is_upserted_at_commit_and_remembers_run_and_step(runtime: Any) -> None:
    run_id = run_graph(runtime, [{"id": "a", "kind": "rec", "input": {"writes": [write("docs", "d1", {"v": 1})]}}])
    assert runtime.record("docs", "d1") is None  # nothing until the step commits
    drain(runtime)
    info = runtime.record("docs", "d1")
    assert info.data == {"v": 1}
    assert (info.collection, info.key, info.run_id, info.step_id) == ("docs", "d1", run_id, "a")
    assert info.updated_at is not None


def test_record__last_write_by_commit_order_wins(runtime: Any) -> None:
    first = run_graph(runtime, [
        {"id": "a", "kind": "rec", "input": {"writes": [write("docs", "k", {"by": "a"})]}},
        {"id": "b", "kind": "rec", "input": {"writes": [write("docs", "k", {"by": "b"})]}, "deps": ["a"]},
    ])
    drain(runtime)
    info = runtime.record("docs", "k")
    assert info.data == {"by": "b"} and info.step_id == "b" and info.run_id == first
    second = run_graph(runtime, [{"id": "c", "kind": "rec", "input": {"writes": [write("docs", "k", {"by": "c"})]}}])
    drain(runtime)
    info = runtime.record("docs", "k")
    assert info.data == {"by": "c"} and info.run_id == second and info.step_id == "c"
    assert Record.objects.filter(collection="docs", key="k").count() == 1


def test_record__a_step_writing_a_key_twice_keeps_its_last_write(runtime: Any) -> None:
    run_graph(runtime, [{"id": "a", "kind": "rec", "input": {"writes": [
        write("docs", "k", 1), write("docs", "k", 2), write("docs", "k", 3)]}}])
    drain(runtime)
    assert runtime.record("docs", "k").data == 3


def test_records__lists_a_collection_in_key_order_by_pages(runtime: Any) -> None:
    writes = [write("items", f"k{i:02d}", {"i": i}) for i in (5, 1, 3, 2, 4)] + [write("other", "k00", None)]
    run_graph(runtime, [{"id": "a", "kind": "rec", "input": {"writes": writes}}])
    drain(runtime)
    page = runtime.records("items", limit=3)
    assert [r.key for r in page] == ["k01", "k02", "k03"]
    rest = runtime.records("items", after_key=page[-1].key, limit=3)
    assert [r.key for r in rest] == ["k04", "k05"]
    assert [r.data for r in rest] == [{"i": 4}, {"i": 5}]
    assert runtime.records("missing") == []
    assert runtime.record("other", "k00").data is None


def test_record__of_a_retried_step_is_written_once_by_the_attempt_that_committed(runtime: Any) -> None:
    run_id = run_graph(runtime, [{"id": "r", "kind": "rec_attempt", "input": {"until": 2}, "retry": 3}])
    runtime.run_once()  # attempt 1 records, then fails
    assert runtime.result(run_id, "r").state == StepState.READY
    assert runtime.record("attempts", "k") is None
    drain(runtime)
    assert runtime.result(run_id, "r").data == {"attempt": 2}
    assert list(Record.objects.filter(collection="attempts").values_list("data", flat=True)) == [
        {"attempt": 2, "worker": runtime.record("attempts", "k").data["worker"]}
    ]


def test_record__of_a_failed_step_never_appears(runtime: Any) -> None:
    run_id = run_graph(runtime, [{"id": "f", "kind": "rec_fail"}])
    drain(runtime)
    assert runtime.result(run_id, "f").state == StepState.FAILED
    assert runtime.record("failed", "k") is None


def _claim(rt: Any, worker: str, now: Any) -> Any:
    request = ClaimRequest(worker_id=worker, limit=1, lease_duration=timedelta(seconds=1))
    _, claimed = rt.store.complete_and_claim([], request, now)
    [step] = claimed.steps
    return step


def test_record__from_a_commit_fenced_off_after_reclaim_never_appears(make_runtime: Any, transactional_db: Any) -> None:
    rt = make_runtime(lease_duration=timedelta(seconds=1))
    run_id = run_graph(rt, [{"id": "w", "kind": "rec_attempt", "retry": 3}])
    start = utcnow()
    stale = rt.runner().execute(_claim(rt, "stale-worker", start), threading.Event())
    assert stale.next_state == StepState.SUCCEEDED and stale.records  # it would write attempt 1

    # The stale worker stalls; its lease expires and the scheduler reclaims the step.
    later = start + timedelta(seconds=5)
    expired = rt.store.expired_leases(later, 10)
    assert [s.lease.token for s in expired] == [stale.step.lease.token]
    error = ErrorInfo(code="lease_expired", message="lease expired", retryable=True)
    rt.store.complete_and_claim([rt.runner().failure(s, error, finished_at=later) for s in expired], None, later)

    report, _ = rt.store.complete_and_claim([stale], None, later + timedelta(seconds=1))
    assert (report.committed, report.discarded) == (0, 1)
    assert rt.record("attempts", "k") is None
    assert Lease.objects.get(token=stale.step.lease.token).outcome == "expired"
    assert Event.objects.filter(run_id=run_id, kind="commit_rejected").exists()

    drain(rt)  # attempt 2 runs and commits its own record
    info = rt.record("attempts", "k")
    assert info.data["attempt"] == 2 and info.data["worker"] != "stale-worker"
    assert rt.result(run_id, "w").data == {"attempt": 2}


def test_record__from_a_commit_after_the_lease_expired_never_appears(make_runtime: Any, transactional_db: Any) -> None:
    rt = make_runtime(lease_duration=timedelta(seconds=1))
    run_graph(rt, [{"id": "w", "kind": "rec_attempt", "retry": 3}])
    start = utcnow()
    stale = rt.runner().execute(_claim(rt, "stale-worker", start), threading.Event())
    # Not reclaimed yet, but the lease ran out before the commit: fenced all the same.
    report, _ = rt.store.complete_and_claim([stale], None, start + timedelta(seconds=5))
    assert (report.committed, report.discarded) == (0, 1)
    assert rt.record("attempts", "k") is None


def test_record__from_a_step_of_a_canceled_run_never_appears(make_runtime: Any, transactional_db: Any) -> None:
    rt = make_runtime()
    run_id = run_graph(rt, [{"id": "w", "kind": "rec_attempt"}])
    start = utcnow()
    stale = rt.runner().execute(_claim(rt, "w1", start), threading.Event())
    rt.cancel_run(run_id, actor="tester")
    report, _ = rt.store.complete_and_claim([stale], None, utcnow())
    assert report.discarded == 1
    assert rt.record("attempts", "k") is None
