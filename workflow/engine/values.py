"""Values the engine passes around: states, policies, specs and reports.

Everything here is a frozen, keyword-only dataclass or an enum; nothing touches a database.
"""

from __future__ import annotations

import enum
import math
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from .errors import InvalidInput


class StepState(enum.StrEnum):
    PENDING = "pending"  # waiting on dependencies
    READY = "ready"  # may be claimed once available_at has passed
    RUNNING = "running"  # leased by a worker
    SUCCEEDED = "succeeded"  # committed its result; never runs again
    FAILED = "failed"  # out of attempts or failed permanently; an operator may retry it
    CANCELED = "canceled"  # its run was canceled

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STEP_STATES


TERMINAL_STEP_STATES = (StepState.SUCCEEDED, StepState.FAILED, StepState.CANCELED)
ACTIVE_STEP_STATES = (StepState.PENDING, StepState.READY, StepState.RUNNING)


class RunState(enum.StrEnum):
    PENDING = "pending"  # created, no step claimed yet
    RUNNING = "running"  # some step is ready, running or waiting on one
    SUCCEEDED = "succeeded"  # every step succeeded
    FAILED = "failed"  # a step failed and nothing is ready or running
    CANCELED = "canceled"  # an operator canceled it

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_RUN_STATES


TERMINAL_RUN_STATES = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED)
ACTIVE_RUN_STATES = (RunState.PENDING, RunState.RUNNING)


class BackoffKind(enum.StrEnum):
    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often a step may run and how long to wait between attempts.

    ``max_attempts`` counts executions, the first included; a reclaimed lease counts too.
    """

    max_attempts: int = 3
    backoff: BackoffKind = BackoffKind.EXPONENTIAL
    initial_backoff: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    max_backoff: timedelta = timedelta(minutes=5)
    jitter: float = 0.1  # +/- this fraction of the delay, so retries of a burst spread out

    def __post_init__(self) -> None:
        # A string is accepted and becomes the enum, so ``backoff="linear"`` really is linear.
        object.__setattr__(self, "backoff", _backoff_kind(self.backoff))
        _check_int("RetryPolicy", "retry", "max_attempts", self.max_attempts, minimum=1)
        _check_duration("RetryPolicy", "retry", "initial_backoff", self.initial_backoff)
        _check_duration("RetryPolicy", "retry", "max_backoff", self.max_backoff)
        _check_number("RetryPolicy", "retry", "backoff_coefficient", self.backoff_coefficient, minimum=1.0)
        _check_number("RetryPolicy", "retry", "jitter", self.jitter, minimum=0.0, maximum=1.0)

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> timedelta:
        """Return the wait before the attempt after ``attempt`` (1-based)."""
        base = self.initial_backoff.total_seconds()
        n = max(attempt, 1)
        if self.backoff is BackoffKind.LINEAR:
            seconds = base * n
        elif self.backoff is BackoffKind.EXPONENTIAL:
            seconds = base * (self.backoff_coefficient ** (n - 1))
        else:
            seconds = base
        seconds = min(seconds, self.max_backoff.total_seconds())
        if self.jitter:
            seconds *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return timedelta(seconds=max(seconds, 0.0))

    def to_json(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "backoff": str(self.backoff),
            "initial_backoff": self.initial_backoff.total_seconds(),
            "backoff_coefficient": self.backoff_coefficient,
            "max_backoff": self.max_backoff.total_seconds(),
            "jitter": self.jitter,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RetryPolicy:
        if not data:
            return cls()
        return cls(
            max_attempts=int(data.get("max_attempts", 3)),
            backoff=BackoffKind(data.get("backoff", "exponential")),
            initial_backoff=timedelta(seconds=float(data.get("initial_backoff", 1))),
            backoff_coefficient=float(data.get("backoff_coefficient", 2.0)),
            max_backoff=timedelta(seconds=float(data.get("max_backoff", 300))),
            jitter=float(data.get("jitter", 0.1)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitPolicy:
    """A token bucket shared by every worker: ``rate`` starts per ``per``, up to ``burst`` at once."""

    rate: float
    per: timedelta = timedelta(seconds=1)
    burst: int = 1

    def __post_init__(self) -> None:
        _check_number("RateLimitPolicy", "rate_limit", "rate", self.rate, minimum=0.0, exclusive=True)
        _check_duration("RateLimitPolicy", "rate_limit", "per", self.per, positive=True)
        _check_int("RateLimitPolicy", "rate_limit", "burst", self.burst, minimum=1)

    @property
    def per_second(self) -> float:
        return self.rate / self.per.total_seconds()


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """A named lane: ``max_workers`` caps running steps across all workers (None: no cap)."""

    max_workers: int | None = None
    rate_limit: RateLimitPolicy | None = None

    def __post_init__(self) -> None:
        if self.max_workers is not None:
            _check_int("QueueConfig", "max_workers", "max_workers", self.max_workers, minimum=1, none_ok=True)
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimitPolicy):
            raise InvalidInput(
                f"QueueConfig.rate_limit must be a RateLimitPolicy or None, got {type(self.rate_limit).__name__}",
                field="rate_limit",
            )


def _backoff_kind(value: Any) -> BackoffKind:
    try:
        return BackoffKind(value)
    except ValueError:
        known = ", ".join(kind.value for kind in BackoffKind)
        raise InvalidInput(f"RetryPolicy.backoff must be one of {known}, got {value!r}", field="retry.backoff") from None


def _field(prefix: str, name: str) -> str:
    return name if prefix == name else f"{prefix}.{name}"


def _check_int(owner: str, prefix: str, name: str, value: Any, *, minimum: int, none_ok: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or None" if none_ok else ""
        raise InvalidInput(f"{owner}.{name} must be an integer of at least {minimum}{extra}, got {value!r}",
                           field=_field(prefix, name))


def _check_number(
    owner: str, prefix: str, name: str, value: Any, *, minimum: float, maximum: float | None = None,
    exclusive: bool = False,
) -> None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    low_ok = is_number and (value > minimum if exclusive else value >= minimum)
    if not low_ok or (maximum is not None and value > maximum):
        bound = f"greater than {minimum:g}" if exclusive else f"at least {minimum:g}"
        if maximum is not None:
            bound = f"between {minimum:g} and {maximum:g}"
        raise InvalidInput(f"{owner}.{name} must be a number {bound}, got {value!r}", field=_field(prefix, name))


def _check_duration(owner: str, prefix: str, name: str, value: Any, *, positive: bool = False) -> None:
    if not isinstance(value, timedelta) or value < timedelta(0) or (positive and not value):
        bound = "positive" if positive else "non-negative"
        raise InvalidInput(f"{owner}.{name} must be a {bound} timedelta, got {value!r}", field=_field(prefix, name))


@dataclass(frozen=True, slots=True, kw_only=True)
class Dependency:
    """An edge to another step of the same run.

    ``required``: wait for its success (a failure blocks this step); otherwise wait for any end state.
    """

    step_id: str
    required: bool = True

    def is_met_by(self, state: str) -> bool:
        """Whether a dependency in ``state`` releases this edge."""
        return state == StepState.SUCCEEDED or (not self.required and state in TERMINAL_STEP_STATES)


@dataclass(frozen=True, slots=True)
class StepHandle:
    """What ``RunBuilder.step`` and ``StepContext.emit`` return: a name to depend on."""

    id: str


def require(*handles: StepHandle | str) -> tuple[Dependency, ...]:
    """Build required dependencies on ``handles`` (the seed's ``Require``)."""
    return tuple(Dependency(step_id=_handle_id(h), required=True) for h in handles)


def after(*handles: StepHandle | str) -> tuple[Dependency, ...]:
    """Build optional dependencies: wait for ``handles`` to end, whatever their outcome."""
    return tuple(Dependency(step_id=_handle_id(h), required=False) for h in handles)


def _handle_id(handle: StepHandle | str) -> str:
    return handle.id if isinstance(handle, StepHandle) else str(handle)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSpec:
    """A step to persist: built by ``RunBuilder.step`` or ``StepContext.emit``."""

    id: str
    kind: str
    input: Any = None
    queue: str = "default"
    site: str = ""
    dedup_key: str | None = None
    depends_on: tuple[Dependency, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    metadata: Mapping[str, str] = field(default_factory=dict)
    parent_id: str | None = None
    priority: int = 0  # claims take the highest first, then the earliest available
    not_before: datetime | None = None  # not claimable before this instant (``run_after``)
    timeout: timedelta | None = None  # an attempt running longer fails with retryable code "timeout"


def time_ordered_uuid() -> uuid.UUID:
    """A version 7 UUID (RFC 9562): the millisecond clock first, then 74 random bits.

    New runs keyed by it land at the right edge of every index that leads with the run id; a
    uuid4 lands each on a random page, which its commit must then write back (a quarter of a
    task's cost with 10,000 queued).
    """
    ms = time.time_ns() // 1_000_000 & (1 << 48) - 1
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits: 12 for rand_a, 62 for rand_b
    return uuid.UUID(int=ms << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | rand & (1 << 62) - 1)


_set = object.__setattr__


def checked_step_spec(
    *, id: str, kind: str, input: Any, queue: str, site: str, dedup_key: str | None,
    depends_on: tuple[Dependency, ...], retry: RetryPolicy, metadata: Mapping[str, str], parent_id: str | None,
    priority: int, not_before: datetime | None, timeout: timedelta | None,
) -> StepSpec:
    """Build a ``StepSpec`` whose every field was already checked (``builder.build_spec``).

    The same value as ``StepSpec(...)`` (which has no ``__post_init__``), built about three times
    faster by setting its slots directly: a step emitting 10,000 children builds 10,000 specs.
    """
    spec = object.__new__(StepSpec)
    _set(spec, "id", id)
    _set(spec, "kind", kind)
    _set(spec, "input", input)
    _set(spec, "queue", queue)
    _set(spec, "site", site)
    _set(spec, "dedup_key", dedup_key)
    _set(spec, "depends_on", depends_on)
    _set(spec, "retry", retry)
    _set(spec, "metadata", metadata)
    _set(spec, "parent_id", parent_id)
    _set(spec, "priority", priority)
    _set(spec, "not_before", not_before)
    _set(spec, "timeout", timeout)
    return spec


# A field added to StepSpec (or a __post_init__) must be added here too: refuse to import otherwise.
_code = checked_step_spec.__code__
if (
    _code.co_varnames[: _code.co_kwonlyargcount] != tuple(f.name for f in fields(StepSpec))
    or hasattr(StepSpec, "__post_init__")
):
    raise TypeError("checked_step_spec must set exactly StepSpec's fields")
del _code


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRun:
    id: str
    package: str
    name: str
    input: Any
    metadata: Mapping[str, str]
    steps: Sequence[StepSpec]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunHandle:
    id: str
    package: str
    name: str
    created: bool = True  # False when start_run found the same run already started


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    """A run as executors and callers of ``Runtime.workflow`` see it."""

    id: str
    package: str
    name: str
    state: RunState
    input: Any
    metadata: Mapping[str, str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    step_counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    code: str
    message: str
    retryable: bool
    details: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "retryable": self.retryable, "details": self.details}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ErrorInfo:
        return cls(
            code=data.get("code", ""),
            message=data.get("message", ""),
            retryable=bool(data.get("retryable")),
            details=data.get("details"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StepResult:
    """A step's outcome as ``Runtime.result`` and ``StepContext.dependency_result`` return it."""

    run_id: str
    step_id: str
    state: StepState
    data: Any
    error: ErrorInfo | None
    attempt: int
    finished_at: datetime | None
    emitted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseInfo:
    """The fenced claim a step runs under."""

    token: str
    worker_id: str
    attempt: int
    claimed_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedStep:
    """A step a worker holds a lease on, with everything needed to execute it."""

    pk: int
    run_id: str
    step_id: str
    kind: str
    queue: str
    site: str
    input: Any
    metadata: Mapping[str, str]
    parent_id: str | None
    retry: RetryPolicy
    lease: LeaseInfo
    timeout: timedelta | None = None
    available_at: datetime | None = None  # when it became claimable (queue wait = claim time - this)

    @property
    def attempt(self) -> int:
        return self.lease.attempt


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordWrite:
    collection: str
    key: str
    data: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordInfo:
    """A record as committed: the last write by commit order, and which step wrote it."""

    collection: str
    key: str
    data: Any
    run_id: str
    step_id: str
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactWrite:
    """An artifact to commit with the step: inline ``body`` or a blob already in the artifact store."""

    id: str
    name: str
    kind: str
    content_type: str
    size: int
    sha256: str
    body: bytes | None = None
    storage_key: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactRef:
    """Points to an artifact a step stored (the seed's ``ArtifactRef``)."""

    id: str
    uri: str
    name: str
    kind: str
    content_type: str
    size: int
    sha256: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What one attempt produced, ready to commit. ``next_state`` was decided by the engine."""

    step: ClaimedStep
    next_state: StepState  # succeeded, ready (retry), failed
    result: Any = None
    error: ErrorInfo | None = None
    available_at: datetime | None = None  # for a retry
    children: tuple[StepSpec, ...] = ()
    records: tuple[RecordWrite, ...] = ()
    artifacts: tuple[ArtifactWrite, ...] = ()
    log: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lease_outcome: str = ""  # succeeded | retried | failed | expired


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRequest:
    worker_id: str
    limit: int
    lease_duration: timedelta
    queues: tuple[str, ...] | None = None  # None: every queue
    site: str | None = None  # None: only steps without a site
    # Read again once the claim holds its locks, so lease start times are never earlier than
    # the releases that made room for them (queue caps are then provable from the lease rows).
    clock: Callable[[], datetime] | None = None
    # How many of the claimed steps start at once (free threads); the rest wait, not shown running.
    start_now: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitReport:
    committed: int = 0
    discarded: int = 0  # fenced off: the lease was lost, revoked or the run canceled
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    made_ready: int = 0
    runs_finished: tuple[str, ...] = ()
    rejected: frozenset[str] = frozenset()  # lease tokens whose commit was fenced off


@dataclass(slots=True, kw_only=True)
class CycleResult:
    """What one scheduler cycle did (every field filled in, unlike the seed's)."""

    reclaimed: int = 0
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    discarded: int = 0
    runs_finished: list[str] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.succeeded + self.retried + self.failed + self.discarded

    def add(self, report: CommitReport) -> None:
        self.succeeded += report.succeeded
        self.retried += report.retried
        self.failed += report.failed
        self.discarded += report.discarded
        self.runs_finished.extend(report.runs_finished)
