"""``Runtime``: the embeddable facade over the registry, the store and the scheduler."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import validation
from .builder import RunBuilder, check_id, check_metadata, check_run_name, to_json_value, validate_graph
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
PeriodicHook = Callable[[datetime], object]
_log = logging.getLogger("workflow.worker")


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
    # Threads stuck in executors past their step timeout a worker may hold before it drains and
    # exits non-zero, so its supervisor starts a fresh process.
    max_abandoned_threads: int = 4

    def __post_init__(self) -> None:
        # The one validation of these values: settings (conf.py), runworkers flags and
        # ``manage.py check`` all build a Config, so a value refused here is refused everywhere.
        if not isinstance(self.worker_id, str) or len(self.worker_id) > validation.MAX_WORKER_ID_LENGTH:
            _bad_setting("worker_id", f"must be a string of at most {validation.MAX_WORKER_ID_LENGTH} characters",
                         self.worker_id)
        _check_count("max_workers", self.max_workers, minimum=1)
        _check_seconds("poll_interval", self.poll_interval, minimum=timedelta(0), exclusive=True)
        _check_seconds("lease_duration", self.lease_duration, minimum=timedelta(seconds=1))
        if self.heartbeat_interval is not None:
            _check_seconds("heartbeat_interval", self.heartbeat_interval, minimum=timedelta(0), exclusive=True)
        _check_seconds("grace_period", self.grace_period, minimum=timedelta(0))
        _check_count("prefetch", self.prefetch, minimum=0)
        _check_count("artifact_inline_limit", self.artifact_inline_limit, minimum=0)
        _check_count("log_limit_bytes", self.log_limit_bytes, minimum=0)
        for name, queue in self.queues.items():
            try:
                validation.check_queue_name(name, field="queues")
            except InvalidInput as exc:
                raise ConfigurationError(f"QUEUES: {exc}", field="queues", problem=str(exc)) from None
            if not isinstance(queue, QueueConfig):
                _bad_setting("queues", f"queue {name!r} must be a QueueConfig", queue)
        if self.effective_heartbeat >= self.lease_duration:
            raise ConfigurationError(
                "HEARTBEAT_INTERVAL must be shorter than LEASE_DURATION, or leases expire under a live worker",
                field="lease_duration",
                problem=f"must be longer than the heartbeat interval ({_seconds(self.effective_heartbeat)}), "
                "or leases expire under a live worker",
            )
        _check_count("max_abandoned_threads", self.max_abandoned_threads, minimum=0)

    @property
    def effective_heartbeat(self) -> timedelta:
        return self.heartbeat_interval or self.lease_duration / 3

    def default_worker_id(self) -> str:
        return self.worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


def _bad_setting(field_name: str, problem: str, value: Any) -> None:
    shown = _seconds(value) if isinstance(value, timedelta) else repr(value)
    raise ConfigurationError(f"{field_name.upper()} {problem}, got {shown}", field=field_name, problem=problem)


def _check_count(field_name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _bad_setting(field_name, f"must be an integer of at least {minimum}", value)


def _check_seconds(field_name: str, value: Any, *, minimum: timedelta, exclusive: bool = False) -> None:
    if not isinstance(value, timedelta) or value < minimum or (exclusive and value == minimum):
        bound = "more than" if exclusive else "at least"
        _bad_setting(field_name, f"must be a duration of {bound} {_seconds(minimum)}", value)


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
        self.periodic_hooks: list[tuple[PeriodicHook, timedelta]] = []

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
        raw_input = to_json_value(f"input of package {package!r}", input, field="input")
        if run_id is not None:
            check_id("run id", run_id, field="run_id", max_length=validation.MAX_RUN_ID_LENGTH)
            existing = self.store.find_run(run_id)
            if existing is not None:
                return self._same_run(existing, package, raw_input)
        run_id = run_id or f"{package}-{uuid.uuid4()}"
        meta = check_metadata("run metadata", metadata)
        run_name = check_run_name(name) if name is not None else pkg.display_name[: validation.MAX_RUN_NAME_LENGTH]
        builder = RunBuilder(self.registry, run_id=run_id, package=package, name=run_name, metadata=meta)
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
        validation.check_queue_name(name)
        if not isinstance(config, QueueConfig):
            raise InvalidInput(f"queue {name!r}: config must be a QueueConfig, got {type(config).__name__}",
                               field="config")
        self.store.configure_queues({name: config}, self.clock(), actor=actor)

    def pause_queue(self, name: str, *, actor: str = "") -> None:
        self.store.set_queue_paused(name, True, actor=actor, now=self.clock())

    def resume_queue(self, name: str, *, actor: str = "") -> None:
        self.store.set_queue_paused(name, False, actor=actor, now=self.clock())

    # -- workers -------------------------------------------------------------------------
    def add_periodic_hook(self, hook: PeriodicHook, *, interval: timedelta) -> None:
        """Call ``hook(now)`` from every worker loop at most every ``interval`` (schedules use this).

        The hook runs on the loop thread, so it must be quick; an exception is logged, never fatal.
        """
        self.periodic_hooks.append((hook, interval))

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

        workers = Workers(Scheduler(self, **options))
        workers.thread.start()
        return workers

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

    def __init__(self, scheduler: Any, thread: threading.Thread | None = None) -> None:
        self.scheduler = scheduler
        self.thread = thread or threading.Thread(
            target=self.run_loop, name=f"workflow-scheduler-{scheduler.worker_id}", daemon=True
        )
        self.error: BaseException | None = None  # why the loop died, if it did

    def run_loop(self) -> None:
        """The loop thread's body: whatever kills the loop is kept, so the process can exit non-zero."""
        try:
            self.scheduler.run()
        except BaseException as exc:
            self.error = exc
            _log.critical("worker loop died worker=%s error=%s: %s", self.scheduler.worker_id, type(exc).__name__,
                          exc, exc_info=exc)

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
