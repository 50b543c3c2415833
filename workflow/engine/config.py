"""``Config``: how a runtime and its workers behave, checked once where it is built."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import validation
from .errors import ConfigurationError, InvalidInput
from .values import QueueConfig

Clock = Callable[[], datetime]
PeriodicHook = Callable[[datetime], object]


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
