"""Pure decisions the engine makes, kept out of the store so each is stated once and tested alone.

The store runs the SQL; these functions say what the rows mean: which state a run ends in, how
an attempt's outcome is reported, how a queue's token bucket refills, how often a lease is renewed.
Nothing here touches a database or a clock.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from .values import RunState, StepState


class EventKind(enum.StrEnum):
    """Every kind of event the engine, its store and the schedules write (``workflow_event.kind``)."""

    RUN_CREATED = "run_created"
    RUN_SUCCEEDED = "run_succeeded"
    RUN_FAILED = "run_failed"
    RUN_CANCELED = "run_canceled"
    STEP_CLAIMED = "step_claimed"  # not stored: read from the attempt (lease) row (ROUTINE_KINDS)
    STEP_SUCCEEDED = "step_succeeded"  # not stored: read from the attempt (lease) row (ROUTINE_KINDS)
    STEP_RETRYING = "step_retrying"  # an attempt failed; another one is due
    STEP_FAILED = "step_failed"
    STEP_RETRIED = "step_retried"  # an operator retried a failed step
    STEP_INPUT_EDITED = "step_input_edited"  # an operator patched a failed step's input before retrying it
    STEP_HANDED_BACK = "step_handed_back"
    LEASE_EXPIRED = "lease_expired"
    COMMIT_REJECTED = "commit_rejected"
    QUEUE_THROTTLED = "queue_throttled"
    QUEUE_CONFIGURED = "queue_configured"
    QUEUE_PAUSED = "queue_paused"
    QUEUE_RESUMED = "queue_resumed"
    WORKER_STARTED = "worker_started"
    WORKER_STOPPED = "worker_stopped"
    SCHEDULE_REMOVED = "schedule_removed"
    SCHEDULE_MISSED = "schedule_missed"
    SCHEDULE_SKIPPED = "schedule_skipped"
    SCHEDULE_BUFFERED = "schedule_buffered"
    SCHEDULE_ERROR = "schedule_error"
    SCHEDULE_PAUSED = "schedule_paused"
    SCHEDULE_RESUMED = "schedule_resumed"
    SCHEDULE_RUN_NOW = "schedule_run_now"


# The routine transitions are not written as event rows (two writes per step saved on the hot path):
# each attempt's row already says when it was claimed and how it ended; readers derive them.
ROUTINE_KINDS = (EventKind.STEP_CLAIMED, EventKind.STEP_SUCCEEDED)


class Severity(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LeaseOutcome(enum.StrEnum):
    """How one attempt (one lease) ended (``workflow_lease.outcome``; empty while it is live)."""

    SUCCEEDED = "succeeded"
    RETRIED = "retried"  # failed, another attempt is due
    FAILED = "failed"
    EXPIRED = "expired"  # the lease ran out and was reclaimed
    CANCELED = "canceled"  # its run was canceled
    DISCARDED = "discarded"  # a late commit, after the lease was lost
    ABANDONED = "abandoned"  # handed back at shutdown


# -- runs ------------------------------------------------------------------------------------------
def run_state_from_steps(*, ready: bool, running: bool, pending: bool, failed: bool) -> RunState:
    """The state a (not canceled) run is in, from which step states it still holds.

    Anything ready or running keeps it running; a failed step, or a pending one that nothing can
    release, leaves it failed (blocked until an operator retries); otherwise every step succeeded.
    """
    if ready or running:
        return RunState.RUNNING
    if failed or pending:
        return RunState.FAILED
    return RunState.SUCCEEDED


def run_finished_event(state: RunState) -> tuple[EventKind, Severity]:
    """The event a run that just reached a terminal ``state`` writes."""
    kind = {RunState.SUCCEEDED: EventKind.RUN_SUCCEEDED, RunState.FAILED: EventKind.RUN_FAILED,
            RunState.CANCELED: EventKind.RUN_CANCELED}[state]
    return kind, Severity.ERROR if state == RunState.FAILED else Severity.INFO


# -- attempts --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeReport:
    kind: EventKind
    severity: Severity
    message: str


def outcome_report(*, next_state: StepState, lease_outcome: str, attempt: int, error_code: str | None) -> OutcomeReport:
    """The event kind, severity and message of a committed attempt.

    A reclaimed lease reports ``lease_expired`` whether it will retry or not: the worker vanished,
    the step did not raise.
    """
    code = error_code or "?"
    expired = lease_outcome == LeaseOutcome.EXPIRED
    if next_state == StepState.SUCCEEDED:
        return OutcomeReport(kind=EventKind.STEP_SUCCEEDED, severity=Severity.INFO, message="step succeeded")
    if next_state == StepState.READY:
        return OutcomeReport(kind=EventKind.LEASE_EXPIRED if expired else EventKind.STEP_RETRYING,
                             severity=Severity.WARNING, message=f"attempt {attempt} failed with {code}; will retry")
    return OutcomeReport(kind=EventKind.LEASE_EXPIRED if expired else EventKind.STEP_FAILED,
                         severity=Severity.ERROR, message=f"step failed with {code}")


# -- token buckets ---------------------------------------------------------------------------------
def bucket_refill(*, tokens: float | None, burst: int, per_second: float, refilled_at: datetime | None,
                  now: datetime) -> float:
    """The level of a token bucket at ``now``: ``tokens`` at ``refilled_at``, plus what accrued since.

    A bucket never refilled is full; time never runs backwards (a ``refilled_at`` after ``now``
    adds nothing); the level never passes ``burst``.
    """
    elapsed = max((now - refilled_at).total_seconds(), 0.0) if refilled_at is not None else math.inf
    return min(float(burst), (tokens or 0.0) + elapsed * per_second)


def next_token_seconds(level: float, *, per_second: float) -> float | None:
    """Seconds until the bucket holds a whole token; None when it holds one (or never refills)."""
    if level >= 1 or per_second <= 0:
        return None
    return (1 - level) / per_second


# -- leases ----------------------------------------------------------------------------------------
def heartbeat_interval(lease_duration: timedelta, configured: timedelta | None = None) -> timedelta:
    """How often a worker renews its leases: as configured, and never less often than thrice a lease.

    The lease must outlive several heartbeats, or one slow beat lets a second worker run the step.
    """
    third = lease_duration / 3
    return min(configured, third) if configured is not None else third


# -- claims ----------------------------------------------------------------------------------------
SHORT_STEP_SECONDS = 0.005  # steps shorter than this on average are claimed ahead of the threads
PREFETCH_SECONDS = 0.05  # how much of their work a worker claims ahead, per thread
MAX_PREFETCH = 512


def claim_capacity(max_workers: int, average_step_seconds: float) -> int:
    """How many steps a worker may hold: its threads, plus about ``PREFETCH_SECONDS`` of work per
    thread when steps are short, so claims and commits batch (sub-millisecond steps by the hundred).

    Long steps are never claimed ahead: one would wait here while another worker sits idle.
    """
    if average_step_seconds >= SHORT_STEP_SECONDS:
        return max_workers
    held = int(max_workers * PREFETCH_SECONDS / max(average_step_seconds, 1e-6))
    return max_workers + min(MAX_PREFETCH, max(64, max_workers, held))
