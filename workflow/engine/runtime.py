"""``Runtime``: the embeddable facade over the registry, the store and the scheduler."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .builder import RunBuilder, check_id, to_json_value, validate_graph
from .context import CancelSignal, LogBuffer, StepContext, current_log
from .errors import (
    ConfigurationError,
    InvalidGraph,
    InvalidInput,
    RunConflict,
    StepError,
    UnknownKind,
    format_traceback,
)
from .observer import NullObserver, Observer
from .registry import Registry
from .store import ArtifactStore, Projection, ProjectionStore, Store
from .values import (
    ClaimedStep,
    CycleResult,
    ErrorInfo,
    NewRun,
    Outcome,
    QueueConfig,
    RecordInfo,
    RunHandle,
    RunInfo,
    StepResult,
    StepState,
)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """How a runtime and its workers behave; built from ``settings.WORKFLOW`` by ``workflow.conf``."""

    worker_id: str = ""
    max_workers: int = 8
    poll_interval: timedelta = timedelta(seconds=1)
    lease_duration: timedelta = timedelta(seconds=30)
    heartbeat_interval: timedelta | None = None  # default: a third of the lease
    grace_period: timedelta = timedelta(seconds=30)
    prefetch: int = 0  # extra steps claimed beyond max_workers to batch commits; 0 = max_workers
    queues: Mapping[str, QueueConfig] = field(default_factory=dict)
    artifact_inline_limit: int = 256 * 1024
    log_limit_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.max_workers < 1:
            raise ConfigurationError(f"MAX_WORKERS must be at least 1, got {self.max_workers}")
        if self.lease_duration < timedelta(seconds=1):
            raise ConfigurationError(f"LEASE_DURATION must be at least one second, got {self.lease_duration}")
        if self.effective_heartbeat >= self.lease_duration:
            raise ConfigurationError("HEARTBEAT_INTERVAL must be shorter than LEASE_DURATION, or leases expire under a live worker")
        if self.poll_interval <= timedelta(0):
            raise ConfigurationError("POLL_INTERVAL must be positive")

    @property
    def effective_heartbeat(self) -> timedelta:
        return self.heartbeat_interval or self.lease_duration / 3

    def default_worker_id(self) -> str:
        return self.worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Runtime:
    """Start runs, run workers, read results and steer runs. One per process is typical."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store,
        registry: Registry,
        artifact_store: ArtifactStore | None = None,
        projection_store: ProjectionStore | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.artifact_store = artifact_store
        self.projection_store = projection_store
        self.clock = clock
        self.observer: Observer = NullObserver()  # metrics hook; workflow.prom installs a real one
        self._queues_configured = False
        self._lock = threading.Lock()

    # -- starting runs ----------------------------------------------------------------------
    def start_run(
        self,
        package: str,
        input: Any = None,
        *,
        run_id: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> RunHandle:
        """Create a run and its first steps, durably; idempotent for an existing ``run_id``.

        Raises ``UnknownPackage``, ``InvalidInput``, ``InvalidGraph``, ``UnknownKind`` or
        ``RunConflict`` (same id, other package or input); nothing is written then.
        """
        pkg = self.registry.package(package)
        raw_input = to_json_value(f"input of package {package!r}", input)
        if run_id is not None:
            check_id("run id", run_id)
            existing = self.store.find_run(run_id)
            if existing is not None:
                return self._same_run(existing, package, raw_input)
        run_id = run_id or f"{package}-{uuid.uuid4()}"
        meta = dict(metadata or {})
        for key, value in meta.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidInput(f"run metadata must map strings to strings, got {key!r}: {value!r}")
        builder = RunBuilder(self.registry, run_id=run_id, package=package, name=name or pkg.display_name, metadata=meta)
        pkg.start(builder, raw_input)
        steps = builder.steps
        if not steps:
            raise InvalidGraph(f"the entrypoint of package {package!r} produced no steps")
        validate_graph(steps)
        new = NewRun(
            id=run_id, package=package, name=builder.name, input=raw_input, metadata=builder.metadata, steps=steps
        )
        try:
            return self.store.create_run(new, self.clock())
        except RunConflict:
            # Another caller created the same id meanwhile: same package and input is success.
            existing = self.store.find_run(run_id)
            if existing is None:
                raise
            return self._same_run(existing, package, raw_input)

    @staticmethod
    def _same_run(existing: RunInfo, package: str, raw_input: Any) -> RunHandle:
        if existing.package != package or _canonical(existing.input) != _canonical(raw_input):
            raise RunConflict(
                f"run {existing.id!r} already exists with package {existing.package!r} and other input; "
                "choose another run id"
            )
        return RunHandle(id=existing.id, package=existing.package, name=existing.name, created=False)

    # -- reading -------------------------------------------------------------------------
    def workflow(self, run_id: str) -> RunInfo:
        return self.store.run_info(run_id, with_counts=True)

    def result(self, run_id: str, step_id: str) -> StepResult | None:
        return self.store.step_result(run_id, step_id)

    def record(self, collection: str, key: str) -> RecordInfo | None:
        """The record under ``key`` in ``collection`` (the last committed write), or None."""
        return self.store.get_record(collection, key)

    def records(self, collection: str, *, after_key: str = "", limit: int = 100) -> list[RecordInfo]:
        """A page of ``collection`` in key order, starting after ``after_key``."""
        return self.store.list_records(collection, after_key=after_key, limit=limit)

    def projection(self, name: str) -> Projection:
        if self.projection_store is None:
            raise ConfigurationError("no projection store is configured (settings.WORKFLOW['PROJECTION_ROOT'])")
        return self.projection_store.projection(name)

    # -- operator actions ----------------------------------------------------------------------
    def retry_step(self, run_id: str, step_id: str, *, actor: str = "") -> None:
        """Move a failed step back to ready with fresh attempts; its run is running again."""
        self.store.retry_step(run_id, step_id, actor=actor, now=self.clock())

    def cancel_run(self, run_id: str, *, actor: str = "") -> int:
        """Cancel every unfinished step; running executors see ``cancelled`` and their commits are discarded."""
        return self.store.cancel_run(run_id, actor=actor, now=self.clock())

    def configure_queue(self, name: str, config: QueueConfig, *, actor: str = "") -> None:
        """Change a queue's cap and rate limit at run time, for every worker (settings apply at start)."""
        self.store.configure_queues({name: config}, self.clock(), actor=actor)

    def pause_queue(self, name: str, *, actor: str = "") -> None:
        self.store.set_queue_paused(name, True, actor=actor, now=self.clock())

    def resume_queue(self, name: str, *, actor: str = "") -> None:
        self.store.set_queue_paused(name, False, actor=actor, now=self.clock())

    # -- workers -------------------------------------------------------------------------
    def ensure_queues(self) -> None:
        with self._lock:
            if not self._queues_configured:
                self.store.configure_queues(self.config.queues, self.clock())
                self._queues_configured = True

    def run_once(self, *, queues: list[str] | None = None, site: str | None = None) -> CycleResult:
        """Run one scheduler cycle: reclaim expired leases, claim a batch, execute it, commit."""
        from .scheduler import Scheduler

        scheduler = Scheduler(self, queues=queues, site=site, max_cycles=1)
        return scheduler.cycle()

    def start_workers(self, **options: Any) -> Workers:
        """Start a scheduler loop in a background thread; see ``Scheduler`` for the options."""
        from .scheduler import Scheduler

        scheduler = Scheduler(self, **options)
        thread = threading.Thread(target=scheduler.run, name=f"workflow-scheduler-{scheduler.worker_id}", daemon=True)
        thread.start()
        return Workers(scheduler, thread)

    def close(self) -> None:
        if self.projection_store is not None:
            self.projection_store.close()

    # -- executing one attempt ---------------------------------------------------------------
    def execute(self, claimed: ClaimedStep, cancelled: CancelSignal) -> Outcome:
        """Run the executor for ``claimed`` and turn whatever happens into an ``Outcome``."""
        started = self.clock()
        buffer = LogBuffer(self.config.log_limit_bytes)
        token = current_log.set(buffer)
        ctx: StepContext | None = None
        try:
            executor = self.registry.executor(claimed.kind)
            ctx = StepContext(self, claimed, cancelled=cancelled, now=started, input=_decode(executor, claimed.input))
            value = executor(ctx)
            if value is not None:
                ctx.result(value)
            error = None
        except StepError as exc:
            error = ErrorInfo(code=exc.code, message=exc.message, retryable=exc.retryable, details=_details(exc))
        except UnknownKind as exc:
            error = ErrorInfo(code="unknown_kind", message=str(exc), retryable=False)
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
            self.store.after_step()
        finished = self.clock()
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

    def failure(self, claimed: ClaimedStep, error: ErrorInfo, *, log: str = "", **times: Any) -> Outcome:
        """Decide retry or failure for a failed attempt, under the step's retry policy."""
        if error.retryable and claimed.attempt < claimed.retry.max_attempts:
            delay = claimed.retry.delay(claimed.attempt)
            return Outcome(
                step=claimed,
                next_state=StepState.READY,
                error=error,
                available_at=self.clock() + delay,
                log=log,
                lease_outcome="expired" if error.code == "lease_expired" else "retried",
                **times,
            )
        return Outcome(
            step=claimed,
            next_state=StepState.FAILED,
            error=error,
            log=log,
            lease_outcome="expired" if error.code == "lease_expired" else "failed",
            **times,
        )

    def discard_blobs(self, artifacts: Any) -> None:
        """Delete blobs an attempt stored before it failed or lost its lease (no orphan files)."""
        if self.artifact_store is None:
            return
        for artifact in artifacts:
            if artifact.storage_key:
                try:
                    self.artifact_store.delete(artifact.storage_key)
                except Exception:  # prunewf reports what could not be removed
                    pass


class Workers:
    """A handle on a running scheduler loop: ``stop`` drains, ``abandon`` gives up at once."""

    def __init__(self, scheduler: Any, thread: threading.Thread) -> None:
        self.scheduler = scheduler
        self.thread = thread

    def stop(self) -> None:
        self.scheduler.stop()

    def abandon(self) -> None:
        self.scheduler.abandon()

    def join(self, timeout: float | None = None) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    @property
    def is_running(self) -> bool:
        return self.thread.is_alive()


def _decode(executor: Any, raw: Any) -> Any:
    return executor.decode_input(raw) if executor.is_typed else raw


def _details(exc: StepError) -> Any:
    if exc.details is not None:
        return exc.details
    if exc.cause is not None:
        return {"type": type(exc.cause).__qualname__, "traceback": format_traceback(exc.cause)}
    return None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
