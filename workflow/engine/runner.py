"""One claimed attempt, start to finish: run its executor and turn whatever happens into an ``Outcome``.

The scheduler decides when an attempt runs, times out or is reclaimed; the runner decides what
that attempt's outcome is (a result, a retry after backoff, a failure) and cleans up after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .config import Clock
from .context import CancelSignal, LogBuffer, StepContext, current_log
from .errors import ConfigurationError, InvalidGraph, InvalidInput, StepError, UnknownKind, format_traceback
from .registry import Executor, Registry
from .store import ArtifactStore, Projection, ProjectionStore, Store
from .values import ArtifactWrite, ClaimedStep, ErrorInfo, Outcome, RunInfo, StepResult, StepState


class CancelFlag:
    """Set by the loop thread, read by the executor: a plain flag, cheaper than an Event per step."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """What an attempt may use of the engine: the ``StepServices`` a ``StepContext`` is given."""

    kinds: Registry
    store: Store
    artifact_store: ArtifactStore | None
    projection_store: ProjectionStore | None
    artifact_inline_limit: int
    clock: Clock

    def run_info(self, run_id: str) -> RunInfo:
        return self.store.run_info(run_id, with_counts=True)

    def step_result(self, run_id: str, step_id: str) -> StepResult | None:
        return self.store.step_result(run_id, step_id)

    def projection(self, name: str) -> Projection:
        if self.projection_store is None:
            raise ConfigurationError("no projection store is configured (settings.WORKFLOW['PROJECTION_ROOT'])")
        return self.projection_store.projection(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Runner:
    """Runs attempts and decides their outcomes; the scheduler calls it from its pool threads."""

    services: Services
    log_limit_bytes: int

    def execute(self, claimed: ClaimedStep, cancelled: CancelSignal) -> Outcome:
        """Run the executor for ``claimed`` and turn whatever happens into an ``Outcome``."""
        services = self.services
        started = services.clock()
        buffer = LogBuffer(self.log_limit_bytes)
        token = current_log.set(buffer)
        ctx: StepContext | None = None
        try:
            executor = services.kinds.executor(claimed.kind)
            ctx = StepContext(services, claimed, cancelled=cancelled, now=started, input=_decode(executor, claimed.input))
            value = executor(ctx)
            if value is not None:
                ctx.result(value)
            error = None
        except StepError as exc:
            error = ErrorInfo(code=exc.code, message=exc.message, retryable=exc.retryable, details=_details(exc))
        except UnknownKind as exc:
            error = ErrorInfo(code="unknown_kind", message=str(exc), retryable=False)
        except InvalidGraph as exc:  # an emit that would break the run's graph: retrying cannot help
            error = ErrorInfo(code="invalid_graph", message=str(exc), retryable=False)
        except InvalidInput as exc:
            code = "invalid_input" if ctx is None else "invalid_output"
            error = ErrorInfo(code=code, message=str(exc), retryable=False)
        except Exception as exc:
            error = ErrorInfo(
                code="unhandled_exception",
                message=f"{type(exc).__name__}: {exc}",
                retryable=True,
                details={"type": type(exc).__qualname__, "traceback": format_traceback(exc)},
            )
        finally:
            current_log.reset(token)
            services.store.after_step()
        finished = services.clock()
        if error is None and ctx is not None:
            return Outcome(
                step=claimed,
                next_state=StepState.SUCCEEDED,
                result=ctx.result_data,
                children=tuple(ctx.children),
                records=tuple(ctx.records),
                artifacts=tuple(ctx.artifacts),
                log=buffer.text(),
                started_at=started,
                finished_at=finished,
                lease_outcome="succeeded",
            )
        assert error is not None
        if ctx is not None:
            self.discard_blobs(ctx.artifacts)
        return self.failure(claimed, error, log=buffer.text(), started_at=started, finished_at=finished)

    def failure(
        self,
        claimed: ClaimedStep,
        error: ErrorInfo,
        *,
        log: str = "",
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
    ) -> Outcome:
        """Decide retry or failure for a failed attempt, under the step's retry policy."""
        if error.retryable and claimed.attempt < claimed.retry.max_attempts:
            delay = claimed.retry.delay(claimed.attempt)
            return Outcome(
                step=claimed,
                next_state=StepState.READY,
                error=error,
                available_at=self.services.clock() + delay,
                log=log,
                lease_outcome="expired" if error.code == "lease_expired" else "retried",
                started_at=started_at,
                finished_at=finished_at,
            )
        return Outcome(
            step=claimed,
            next_state=StepState.FAILED,
            error=error,
            log=log,
            lease_outcome="expired" if error.code == "lease_expired" else "failed",
            started_at=started_at,
            finished_at=finished_at,
        )

    def timed_out(self, claimed: ClaimedStep, limit: timedelta, *, started_at: datetime | None) -> Outcome:
        """The outcome of an attempt that ran past its timeout: a retryable ``timeout``, finished now."""
        error = ErrorInfo(code="timeout", retryable=True,
                          message=f"attempt {claimed.attempt} ran longer than its timeout of {limit.total_seconds():g}s")
        return self.failure(claimed, error, started_at=started_at, finished_at=self.services.clock())

    def lease_expired(self, claimed: ClaimedStep, *, now: datetime) -> Outcome:
        """The outcome of an attempt whose lease expired: it counts, so a poison step ends."""
        error = ErrorInfo(
            code="lease_expired",
            message=f"lease of worker {claimed.lease.worker_id} expired at {claimed.lease.expires_at.isoformat()} "
            f"(attempt {claimed.attempt} of {claimed.retry.max_attempts}); the worker died or stalled",
            retryable=True,
        )
        return self.failure(claimed, error, finished_at=now)

    def discard_blobs(self, artifacts: Iterable[ArtifactWrite]) -> None:
        """Delete blobs an attempt stored before it failed or lost its lease (no orphan files)."""
        artifact_store = self.services.artifact_store
        if artifact_store is None:
            return
        for artifact in artifacts:
            if artifact.storage_key:
                try:
                    artifact_store.delete(artifact.storage_key)
                except Exception:  # prunewf reports what could not be removed
                    pass


def _decode(executor: Executor, raw: Any) -> Any:
    return executor.decode_input(raw) if executor.is_typed else raw


def _details(exc: StepError) -> Any:
    if exc.details is not None:
        return exc.details
    if exc.cause is not None:
        return {"type": type(exc.cause).__qualname__, "traceback": format_traceback(exc.cause)}
    return None
