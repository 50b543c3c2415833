"""``Runtime``: the embeddable facade over the registry, the store and the scheduler."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from . import validation
from .builder import RunBuilder, check_id, check_metadata, check_run_name, to_json_value, validate_graph
from .config import Clock, Config, PeriodicHook
from .errors import InvalidGraph, InvalidInput, RunConflict
from .observer import NullObserver, Observer
from .registry import Registry
from .runner import Runner, Services
from .scheduler import Scheduler
from .store import ArtifactStore, Projection, ProjectionStore, Store
from .values import (
    CycleResult,
    NewRun,
    QueueConfig,
    RecordInfo,
    RunHandle,
    RunInfo,
    StepResult,
    time_ordered_uuid,
)

__all__ = ["Config", "Runtime", "Workers", "utcnow"]  # Config lives in .config; imported from here too
_log = logging.getLogger("workflow.worker")


def utcnow() -> datetime:
    return datetime.now(UTC)


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
        run_id = run_id or f"{package}-{time_ordered_uuid()}"
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
            # The id exists (an earlier call, or another caller meanwhile): same package and input
            # is success. Inserting first keeps a new run, the common case, at one round trip.
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
        return self.services().projection(name)

    # -- operator actions ----------------------------------------------------------------------
    def retry_step(self, run_id: str, step_id: str, *, actor: str = "") -> None:
        """Move a failed step back to ready with fresh attempts; its run is running again."""
        self.store.retry_step(run_id, step_id, actor=actor, now=self.clock())

    def retry_steps(
        self, pairs: Sequence[tuple[str, str]], *, actor: str = "", batch_size: int = 500,
        payload: Mapping[str, Any] | None = None,
    ) -> tuple[int, list[str], int]:
        """Retry many failed steps, ``batch_size`` per transaction; return (retried, skipped reasons, batches).

        Each batch commits on its own: a long list never holds one lock for long, and a failure
        part-way leaves the batches before it done (each step's event says so).
        """
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, got {batch_size}", field="batch_size")
        done, skipped, batches = 0, [], 0
        for start in range(0, len(pairs), batch_size):
            n, why = self.store.retry_steps(pairs[start:start + batch_size], actor=actor, now=self.clock(),
                                            payload=payload)
            done += n
            skipped.extend(why)
            batches += 1
        return done, skipped, batches

    def retry_step_with_input(self, run_id: str, step_id: str, new_input: Any, *, actor: str = "") -> None:
        """Retry a failed step with ``new_input`` (JSON); the caller has checked it against the kind's type."""
        value = to_json_value(f"input of step {step_id!r}", new_input, field="input")
        self.store.retry_step_with_input(run_id, step_id, value, actor=actor, now=self.clock())

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
        return self.scheduler(queues=queues, site=site, max_cycles=1).cycle()

    def start_workers(self, **options: Any) -> Workers:
        """Start a scheduler loop in a background thread; see ``Scheduler`` for the options."""
        workers = Workers(self.scheduler(**options))
        workers.thread.start()
        return workers

    def scheduler(self, **options: Any) -> Scheduler:
        """A scheduler over this runtime's parts as they are now; ``Scheduler`` lists the options."""
        return Scheduler(
            self.config,
            store=self.store,
            clock=self.clock,
            runner=self.runner(),
            observer=self.observer,
            periodic_hooks=tuple(self.periodic_hooks),
            on_start=self.ensure_queues,
            **options,
        )

    def runner(self) -> Runner:
        """The runner of single attempts, over the parts as they are now (tests swap the registry)."""
        return Runner(services=self.services(), log_limit_bytes=self.config.log_limit_bytes)

    def services(self) -> Services:
        """What a step's context may use: the registry, artifacts, lookups and projections."""
        return Services(
            kinds=self.registry,
            store=self.store,
            artifact_store=self.artifact_store,
            projection_store=self.projection_store,
            artifact_inline_limit=self.config.artifact_inline_limit,
            clock=self.clock,
        )

    def close(self) -> None:
        if self.projection_store is not None:
            self.projection_store.close()


class Workers:
    """A handle on a running scheduler loop: ``stop`` drains, ``abandon`` gives up at once."""

    def __init__(self, scheduler: Scheduler, thread: threading.Thread | None = None) -> None:
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


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
