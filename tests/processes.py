"""Helpers for tests that start real ``runworkers`` processes."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db import connection

from workflow.models import Lease

ROOT = Path(__file__).resolve().parents[1]


def database_url() -> str:
    """The URL of the test database, so worker subprocesses use the same one."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def assert_no_overlapping_live_leases() -> None:
    """From the lease rows: per step, each lease ends (released or expired) before the next is claimed."""
    by_step: dict[int, list[Lease]] = defaultdict(list)
    for lease in Lease.objects.order_by("claimed_at", "id"):
        by_step[lease.step_id].append(lease)
    for leases in by_step.values():
        for earlier, later in zip(leases, leases[1:], strict=False):
            ended = min(earlier.released_at or earlier.expires_at, earlier.expires_at)
            assert ended <= later.claimed_at, f"two live leases on step {earlier.step_id}: {earlier} and {later}"


def max_concurrent(leases: Any) -> int:
    """The most leases live at once, from their intervals [claimed, min(released, expires))."""
    points = []
    for claimed, released, expires in leases.values_list("claimed_at", "released_at", "expires_at"):
        points += [(claimed, 1), (min(released or expires, expires), -1)]
    live = peak = 0
    for _, delta in sorted(points, key=lambda p: (p[0], p[1])):
        live += delta
        peak = max(peak, live)
    return peak
