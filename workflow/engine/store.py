"""What the engine needs from a database. ``workflow.stores.db.DjangoStore`` implements it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Protocol

from .values import (
    ClaimedStep,
    ClaimRequest,
    CommitReport,
    NewRun,
    Outcome,
    QueueConfig,
    RecordInfo,
    RunHandle,
    RunInfo,
    StepResult,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    steps: tuple[ClaimedStep, ...]
    # Seconds until something may be claimable; None: nothing waits for us, or every free thread got
    # a step (one ends before anything else can start, and its outcome claims again).
    wake_in: float | None
    throttled: tuple[tuple[str, str], ...] = ()  # (queue, reason: at_cap | rate_limited | paused) skipped


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerInfo:
    worker_id: str
    host: str
    pid: int
    queues: tuple[str, ...] | None
    site: str | None
    max_workers: int


class Store(Protocol):
    def create_run(self, run: NewRun, now: datetime) -> RunHandle: ...
    def find_run(self, run_id: str) -> RunInfo | None: ...
    def run_info(self, run_id: str, *, with_counts: bool = False) -> RunInfo: ...
    def step_result(self, run_id: str, step_id: str) -> StepResult | None: ...
    def get_record(self, collection: str, key: str) -> RecordInfo | None: ...
    def list_records(self, collection: str, *, after_key: str = "", limit: int = 100) -> list[RecordInfo]: ...

    def complete_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimRequest | None, now: datetime
    ) -> tuple[CommitReport, ClaimResult]: ...
    def expired_leases(self, now: datetime, limit: int) -> list[ClaimedStep]: ...
    def heartbeat(
        self, tokens: Sequence[str], now: datetime, expires_at: datetime, *, started: Sequence[str] = ()
    ) -> set[str]: ...
    def live_tokens(self, tokens: Sequence[str]) -> set[str]: ...
    def hand_back(self, tokens: Sequence[str], now: datetime) -> int: ...
    def leased_to(self, worker_id: str) -> set[str]: ...

    def retry_step(self, run_id: str, step_id: str, *, actor: str, now: datetime) -> None: ...
    def retry_steps(
        self, pairs: Sequence[tuple[str, str]], *, actor: str, now: datetime, payload: Mapping[str, Any] | None = None
    ) -> tuple[int, list[str]]:
        """Retry each failed (run id, step id) in one transaction; return how many, and why not the others."""
        ...

    def retry_step_with_input(self, run_id: str, step_id: str, new_input: Any, *, actor: str, now: datetime) -> None:
        """Retry a failed step with a new input; the first original input is kept, the change audited."""
        ...

    def cancel_run(self, run_id: str, *, actor: str, now: datetime) -> int: ...
    def set_queue_paused(self, name: str, paused: bool, *, actor: str, now: datetime) -> None: ...
    def configure_queues(self, queues: Mapping[str, QueueConfig], now: datetime, *, actor: str = "") -> None: ...
    def adopt_queues(self, now: datetime) -> list[str]:
        """Make every queue holding ready steps known to all-queues workers; return those added."""
        ...

    def register_worker(self, info: WorkerInfo, now: datetime) -> None: ...
    def worker_seen(self, worker_id: str, running: int, now: datetime) -> None: ...
    def worker_stopped(self, worker_id: str, now: datetime) -> None: ...
    def record_event(self, kind: str, *, severity: str = "info", message: str = "", **fields: Any) -> None: ...

    def listen(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake`` when another process makes steps ready; return a stopper (None: unsupported)."""
        ...

    def start_checkpointer(self) -> Callable[[], None] | None:
        """Start database housekeeping off the hot path; return a stopper (None: nothing to do)."""
        ...

    def after_step(self) -> None:
        """Release per-thread resources an executor may have opened (database connections)."""
        ...

    def keeps_thread_connections(self) -> bool:
        """Whether a thread's connection outlives a step, so a pool thread may commit what it ran
        without reconnecting (with ``CONN_MAX_AGE=0`` it would reconnect once per step)."""
        ...

    def thread_done(self) -> None:
        """Close what the calling thread opened: a pool thread is ending."""
        ...


class ArtifactStore(Protocol):
    """Large artifact bytes outside the engine's rows (the seed's ``ArtifactStore``)."""

    def put(self, key: str, content_type: str, body: bytes | IO[bytes]) -> tuple[str, int, str]:
        """Store ``body`` under ``key``; return (stored key, size, sha256 hex). Streams file-likes."""
        ...

    def open(self, key: str) -> IO[bytes]: ...
    def delete(self, key: str) -> None: ...
    def uri(self, key: str) -> str: ...


class Projection(Protocol):
    def exec(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int: ...
    def query(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]: ...


class ProjectionStore(Protocol):
    def projection(self, name: str) -> Projection: ...
    def close(self) -> None: ...
