"""A hook for whoever wants to count what a worker does (metrics), without the engine knowing who.

The scheduler calls these at each transition it drives. The default does nothing; the Django
side (``workflow.prom``) implements it with Prometheus counters. Implementations must be cheap
and must not raise: they run on the worker's loop thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from .values import ClaimedStep, Outcome


class Observer(Protocol):
    def steps_claimed(self, steps: Sequence[ClaimedStep], now: datetime) -> None:
        """Steps this worker just leased (``ClaimedStep.available_at`` tells how long each waited)."""

    def step_finished(self, outcome: Outcome) -> None:
        """An attempt's outcome committed: ``lease_outcome`` is succeeded, retried, failed or expired."""

    def commit_rejected(self, outcome: Outcome) -> None:
        """An attempt's commit was fenced off (lease lost, revoked, or the run canceled)."""

    def leases_reclaimed(self, count: int) -> None:
        """Expired leases this worker turned into failed attempts."""

    def queue_throttled(self, queue: str, reason: str) -> None:
        """A claim took nothing from ``queue`` because of its ``reason`` (paused, cap, rate)."""


class NullObserver:
    """The default: observes nothing."""

    def steps_claimed(self, steps: Sequence[ClaimedStep], now: datetime) -> None:
        return None

    def step_finished(self, outcome: Outcome) -> None:
        return None

    def commit_rejected(self, outcome: Outcome) -> None:
        return None

    def leases_reclaimed(self, count: int) -> None:
        return None

    def queue_throttled(self, queue: str, reason: str) -> None:
        return None
