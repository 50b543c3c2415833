"""The queue monitor: caps, running, ready, token level, and why a queue is not moving."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Count, Min, Q
from django.utils import timezone

from ..engine.rules import bucket_refill, next_token_seconds
from ..engine.values import StepState
from ..models import Queue, Step, Worker
from .engine_status import live_workers


# -- queues ----------------------------------------------------------------------------------------
@dataclass(slots=True, kw_only=True)
class QueueFigures:
    """Everything the queue monitor shows for one queue, computed now from real rows."""

    name: str
    row: Queue | None
    ready: int = 0  # ready and due now
    waiting_backoff: int = 0  # ready but not due yet (retry backoff)
    next_due: datetime | None = None
    oldest_ready: datetime | None = None
    running: int = 0
    ready_by_site: dict[str, int] = field(default_factory=dict)
    tokens_now: float | None = None
    next_token_seconds: float | None = None
    live_workers: int = 0
    reasons: list[str] = field(default_factory=list)
    now: datetime | None = None

    @property
    def paused(self) -> bool:
        return bool(self.row and self.row.paused)

    @property
    def cap(self) -> int | None:
        return self.row.max_workers if self.row else None

    @property
    def rate(self) -> float | None:
        return self.row.rate if self.row else None

    @property
    def burst(self) -> int:
        return self.row.burst if self.row else 1

    @property
    def per_seconds(self) -> float:
        return self.row.per_seconds if self.row else 1.0

    @property
    def oldest_age_seconds(self) -> float | None:
        if self.oldest_ready is None or self.now is None:
            return None
        return max((self.now - self.oldest_ready).total_seconds(), 0.0)

    @property
    def cap_percent(self) -> float:
        return min(100.0, 100 * self.running / self.cap) if self.cap else 0.0

    @property
    def token_percent(self) -> float:
        if self.tokens_now is None or not self.burst:
            return 0.0
        return max(0.0, min(100.0, 100 * self.tokens_now / self.burst))

    @property
    def is_stalled(self) -> bool:
        return bool(self.reasons)

    @property
    def status(self) -> str:
        if self.paused:
            return "paused"
        if self.reasons:
            return "stalled"
        if self.running or self.ready:
            return "moving"
        if self.waiting_backoff:
            return "backing off"
        return "idle"

    @property
    def rate_text(self) -> str:
        if self.rate is None:
            return "unlimited"
        per = self.per_seconds
        unit = "s" if per == 1 else ("min" if per == 60 else ("h" if per == 3600 else f"{per:g} s"))
        return f"{self.rate:g} per {unit}, burst {self.burst}"


def bucket_level(row: Queue, now: datetime) -> tuple[float | None, float | None]:
    """The token bucket's level now and the seconds until the next whole token.

    The stored ``tokens`` is the level at ``refilled_at``; the engine refills lazily at claim
    time, so the level now is what the claim would compute (``rules.bucket_refill``).
    """
    if row.rate is None:
        return None, None
    per_second = row.rate / (row.per_seconds or 1.0)
    level = bucket_refill(tokens=row.tokens, burst=row.burst, per_second=per_second, refilled_at=row.refilled_at,
                          now=now)
    return level, next_token_seconds(level, per_second=per_second)


def queue_figures(*, now: datetime | None = None) -> list[QueueFigures]:
    """Every known queue (rows, configured, or holding steps) with its figures and stall reasons.

    Five queries whatever the number of queues and steps: queue rows, ready steps grouped by
    queue and site (ready-only index), running grouped by queue (running-only index), live workers.
    """
    from ..conf import build_config

    now = now or timezone.now()
    rows = {q.name: q for q in Queue.objects.all()}
    names = set(rows) | set(build_config().queues)
    ready_rows = (Step.objects.filter(state=StepState.READY).order_by().values("queue", "site")
                  .annotate(due=Count("id", filter=Q(available_at__lte=now)),
                            later=Count("id", filter=Q(available_at__gt=now)),
                            oldest=Min("available_at", filter=Q(available_at__lte=now)),
                            next_due=Min("available_at", filter=Q(available_at__gt=now))))
    # Claimed but still waiting for a thread (prefetched) is not running yet.
    running = dict(Step.objects.filter(state=StepState.RUNNING, awaiting_thread_since__isnull=True).order_by()
                   .values_list("queue")
                   .annotate(n=Count("id")))
    figures: dict[str, QueueFigures] = {}

    def get(name: str) -> QueueFigures:
        if name not in figures:
            figures[name] = QueueFigures(name=name, row=rows.get(name), now=now)
        return figures[name]

    for name in names:
        get(name)
    for r in ready_rows:
        f = get(r["queue"])
        f.ready += r["due"]
        f.waiting_backoff += r["later"]
        if r["due"]:
            f.ready_by_site[r["site"] or ""] = f.ready_by_site.get(r["site"] or "", 0) + r["due"]
        if r["oldest"] and (f.oldest_ready is None or r["oldest"] < f.oldest_ready):
            f.oldest_ready = r["oldest"]
        if r["next_due"] and (f.next_due is None or r["next_due"] < f.next_due):
            f.next_due = r["next_due"]
    for name, n in running.items():
        get(name).running = n
    alive = live_workers(now=now)
    for f in figures.values():
        if f.row is not None:
            f.tokens_now, f.next_token_seconds = bucket_level(f.row, now)
        serving = [w for w in alive if not w.queues or f.name in w.queues]
        f.live_workers = len(serving)
        f.reasons = stall_reasons(f, serving)
    return sorted(figures.values(), key=lambda f: f.name)


def stall_reasons(f: QueueFigures, serving: list[Worker]) -> list[str]:
    """Why due ready steps of this queue are not being claimed, in plain words (empty if they can be)."""
    if not f.ready:
        return []
    reasons: list[str] = []
    steps = f"{f.ready} ready step{'s' if f.ready != 1 else ''}"
    if f.paused:
        reasons.append(f"Paused: {steps} wait until an operator resumes the queue.")
    if f.cap is not None and f.running >= f.cap:
        reasons.append(f"At its cap: {f.running} of {f.cap} allowed steps are running; the next starts when one finishes.")
    if f.tokens_now is not None and f.tokens_now < 1:
        when = f" (next token in {f.next_token_seconds:.1f} s)" if f.next_token_seconds is not None else ""
        reasons.append(f"Out of tokens: the rate limit ({f.rate_text}) allows no start right now{when}.")
    if not serving:
        reasons.append(f"No live worker serves queue {f.name!r}: {steps} wait for a worker process "
                       "(start one with manage.py runworkers).")
    else:
        sites = {w.site or "" for w in serving}
        for site, n in sorted(f.ready_by_site.items()):
            if site and site not in sites:
                reasons.append(f"No worker for site {site!r}: {n} ready step{'s' if n != 1 else ''} need a worker "
                               f"started with --site {site}, and none of the {len(serving)} live workers runs it.")
    return reasons
