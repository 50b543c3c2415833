"""The engine's pure decisions (workflow.engine.rules), tested without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workflow.engine.rules import (
    EventKind,
    LeaseOutcome,
    Severity,
    bucket_refill,
    heartbeat_interval,
    next_token_seconds,
    outcome_report,
    run_finished_event,
    run_state_from_steps,
)
from workflow.engine.values import RunState, StepState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("holds", "expected"),
    [
        ({"ready": True}, RunState.RUNNING),
        ({"running": True, "failed": True}, RunState.RUNNING),  # a failed branch waits for the running one
        ({"failed": True}, RunState.FAILED),
        ({"pending": True}, RunState.FAILED),  # blocked: nothing can release it until an operator retries
        ({}, RunState.SUCCEEDED),
    ],
)
def test_run_state_from_steps__follows_what_the_run_still_holds(holds, expected):
    flags = {"ready": False, "running": False, "pending": False, "failed": False, **holds}
    assert run_state_from_steps(**flags) == expected


def test_run_finished_event__a_failed_run_is_an_error():
    assert run_finished_event(RunState.FAILED) == (EventKind.RUN_FAILED, Severity.ERROR)
    assert run_finished_event(RunState.SUCCEEDED) == (EventKind.RUN_SUCCEEDED, Severity.INFO)
    assert run_finished_event(RunState.CANCELED) == (EventKind.RUN_CANCELED, Severity.INFO)
    with pytest.raises(KeyError):
        run_finished_event(RunState.RUNNING)


def test_outcome_report__names_the_event_of_each_outcome():
    ok = outcome_report(next_state=StepState.SUCCEEDED, lease_outcome=LeaseOutcome.SUCCEEDED, attempt=1,
                        error_code=None)
    assert (ok.kind, ok.severity, ok.message) == (EventKind.STEP_SUCCEEDED, Severity.INFO, "step succeeded")
    retry = outcome_report(next_state=StepState.READY, lease_outcome=LeaseOutcome.RETRIED, attempt=2,
                           error_code="timeout")
    assert (retry.kind, retry.severity) == (EventKind.STEP_RETRYING, Severity.WARNING)
    assert retry.message == "attempt 2 failed with timeout; will retry"
    failed = outcome_report(next_state=StepState.FAILED, lease_outcome=LeaseOutcome.FAILED, attempt=3, error_code=None)
    assert (failed.kind, failed.severity, failed.message) == (EventKind.STEP_FAILED, Severity.ERROR, "step failed with ?")


def test_outcome_report__a_reclaimed_lease_reports_lease_expired_whether_or_not_it_retries():
    for state in (StepState.READY, StepState.FAILED):
        report = outcome_report(next_state=state, lease_outcome=LeaseOutcome.EXPIRED, attempt=1,
                                error_code="lease_expired")
        assert report.kind == EventKind.LEASE_EXPIRED
    assert outcome_report(next_state=StepState.READY, lease_outcome="expired", attempt=1,
                          error_code="x").kind == EventKind.LEASE_EXPIRED  # the stored text is the enum's value


def test_bucket_refill__accrues_at_the_rate_up_to_the_burst():
    assert bucket_refill(tokens=0.0, burst=5, per_second=2.0, refilled_at=T0, now=T0 + timedelta(seconds=1)) == 2.0
    assert bucket_refill(tokens=0.5, burst=5, per_second=2.0, refilled_at=T0, now=T0 + timedelta(seconds=10)) == 5.0
    assert bucket_refill(tokens=None, burst=3, per_second=1.0, refilled_at=T0, now=T0) == 0.0


def test_bucket_refill__a_bucket_never_refilled_is_full_and_time_never_runs_backwards():
    assert bucket_refill(tokens=0.0, burst=4, per_second=1.0, refilled_at=None, now=T0) == 4.0
    # Another worker refilled it a moment "later" by its clock: nothing accrues, nothing is taken away.
    assert bucket_refill(tokens=1.5, burst=4, per_second=1.0, refilled_at=T0 + timedelta(seconds=3), now=T0) == 1.5


def test_next_token_seconds__waits_for_the_missing_fraction_of_a_token():
    assert next_token_seconds(0.25, per_second=0.5) == pytest.approx(1.5)
    assert next_token_seconds(1.0, per_second=0.5) is None
    assert next_token_seconds(0.0, per_second=0.0) is None  # a bucket that never refills has no next token


def test_heartbeat_interval__is_never_longer_than_a_third_of_the_lease():
    lease = timedelta(seconds=30)
    assert heartbeat_interval(lease) == timedelta(seconds=10)
    assert heartbeat_interval(lease, timedelta(seconds=4)) == timedelta(seconds=4)
    assert heartbeat_interval(lease, timedelta(seconds=20)) == timedelta(seconds=10)


def test_event_kinds__cover_every_kind_the_dashboard_filters_on_that_the_engine_writes():
    from workflow.forms import EVENT_KINDS

    written = {k.value for k in EventKind}
    # commit_error and worker_error are error codes of failed steps, listed by the filter but never an event kind.
    assert set(EVENT_KINDS) - written == {"commit_error", "worker_error"}
