"""A run's attempts over time: one lane per worker, overlapping attempts stacked into sub-rows.

The page's cost is bounded whatever the run's size: a run of at most ``max_bars`` attempts is
drawn whole; a bigger one is sampled evenly across its whole span (every k-th attempt) plus
its first ``max_failures`` attempts that did not succeed, and the page says how many it shows. Times are
laid out in a 0..1000 x range (``X_RANGE``) that the browser zooms by changing the SVG viewBox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Count, F, Max, Min, Q, QuerySet
from django.utils import timezone

from ..models import Lease, Run

X_RANGE = 1000.0
ROW_HEIGHT = 16  # px per sub-row; the SVG is drawn 1:1 vertically
BAR_HEIGHT = 11
OVERVIEW_HEIGHT = 36
MAX_ROWS_PER_WORKER = 12
MAX_LANES = 40
MIN_BAR_WIDTH = 2.0  # in x units, so a 5 ms attempt is still a visible sliver
BAR_FIELDS = ("id", "attempt", "worker_id", "claimed_at", "released_at", "outcome", "error_code", "step__step_id")
OUTCOME_WORDS = {value: str(label) for value, label in Lease.Outcome.choices}


@dataclass(slots=True, kw_only=True)
class Bar:
    lease_id: int
    step_id: str
    attempt: int
    worker_id: str
    claimed_at: datetime
    released_at: datetime | None
    outcome: str  # "" while running
    error_code: str
    x: float = 0.0
    w: float = 0.0
    y: float = 0.0
    oy: float = 0.0  # on the overview strip

    @property
    def outcome_class(self) -> str:
        return self.outcome or "open"

    @property
    def outcome_words(self) -> str:
        return OUTCOME_WORDS.get(self.outcome, "running")


@dataclass(slots=True, kw_only=True)
class Lane:
    worker_id: str
    top: float  # px
    rows: int
    attempts: int  # the worker's attempts in the whole run
    shown: int = 0
    label: str = ""  # the id without the prefix every lane shares, so narrow screens show what differs

    @property
    def height(self) -> int:
        return self.rows * ROW_HEIGHT


@dataclass(slots=True, kw_only=True)
class Link:
    """A retry: from the end of attempt n to the start of attempt n + 1 of one step."""

    step_id: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(slots=True, kw_only=True)
class Timeline:
    bars: list[Bar] = field(default_factory=list)
    lanes: list[Lane] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    start: datetime | None = None
    end: datetime | None = None
    total: int = 0
    running: int = 0
    outcome_counts: list[tuple[str, str, int]] = field(default_factory=list)  # (class, words, count)
    hidden_workers: int = 0
    workers_total: int = 0
    retried_steps: int = 0

    @classmethod
    def empty(cls) -> Timeline:
        return cls()

    @property
    def is_sampled(self) -> bool:
        return len(self.bars) < self.total

    @property
    def height(self) -> int:
        return sum(lane.height for lane in self.lanes)

    @property
    def span_seconds(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return max((self.end - self.start).total_seconds(), 0.0)

    @property
    def overview_bar_height(self) -> float:
        return max(BAR_HEIGHT * OVERVIEW_HEIGHT / max(self.height, 1), 1.5)

    @property
    def ticks(self) -> list[tuple[float, float]]:
        """(x in 0..1000, seconds since the run's first claim) for five axis marks."""
        return [(X_RANGE * p / 4, self.span_seconds * p / 4) for p in range(5)]

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000) if self.start else 0


def timeline(run: Run, *, max_bars: int = 400, max_failures: int = 100,
             now: datetime | None = None) -> Timeline:
    """The run's attempts laid out in worker lanes, the whole run's span, at most about ``max_bars`` bars."""
    now = now or timezone.now()
    leases = Lease.objects.filter(run=run)
    agg = leases.aggregate(total=Count("id"), first=Min("claimed_at"), last_claim=Max("claimed_at"),
                           last_release=Max("released_at"), running=Count("id", filter=Q(released_at__isnull=True)))
    total = agg["total"] or 0
    if not total:
        return Timeline()
    start: datetime = agg["first"]
    end: datetime = now if agg["running"] else max(agg["last_release"] or agg["last_claim"], agg["last_claim"])
    counts = {o: n for o, n in leases.order_by().values_list("outcome").annotate(n=Count("id"))}
    per_worker = {w: n for w, n in leases.order_by().values_list("worker_id").annotate(n=Count("id"))}
    outcome_counts = [(o or "open", OUTCOME_WORDS.get(o, "running"), n)
                      for o, n in sorted(counts.items(), key=lambda item: -item[1])]

    rows = leases.select_related("step").only(*BAR_FIELDS)
    if total <= max_bars:
        picked = list(rows.order_by("claimed_at", "id"))
    else:
        picked = _sample(rows, total=total, max_bars=max_bars, max_failures=max_failures)
    bars = [Bar(lease_id=le.id, step_id=le.step.step_id, attempt=le.attempt, worker_id=le.worker_id,
                claimed_at=le.claimed_at, released_at=le.released_at, outcome=le.outcome, error_code=le.error_code)
            for le in picked]
    span = max((end - start).total_seconds(), 0.001)
    for bar in bars:
        stop = bar.released_at or now
        bar.x = X_RANGE * (bar.claimed_at - start).total_seconds() / span
        bar.w = max(X_RANGE * (stop - bar.claimed_at).total_seconds() / span, MIN_BAR_WIDTH)
        bar.w = min(bar.w, X_RANGE)
        bar.x = min(bar.x, X_RANGE - bar.w)  # a sliver at the very end stays on the axis
    lanes, shown, hidden = _lanes(bars, per_worker)
    links, retried = _links(shown)
    scale = OVERVIEW_HEIGHT / max(sum(lane.height for lane in lanes), 1)
    for bar in shown:
        bar.oy = bar.y * scale
    return Timeline(bars=shown, lanes=lanes, links=links, start=start, end=end, total=total, running=agg["running"],
                    outcome_counts=outcome_counts, hidden_workers=hidden, workers_total=len(lanes) + hidden,
                    retried_steps=retried)


def _sample(rows: QuerySet[Lease], *, total: int, max_bars: int, max_failures: int) -> list[Lease]:
    """Every k-th attempt by id (ids grow with claim time, so the sample spans the whole run),
    plus the first attempts that did not succeed. Each is one pass over the run's attempts, as
    the count already is; what reaches Python and the page is bounded by ``max_bars``."""
    picked: dict[int, Lease] = {}
    for le in rows.exclude(outcome=Lease.Outcome.SUCCEEDED).order_by("claimed_at", "id")[:max_failures]:
        picked[le.id] = le
    budget = max(max_bars - len(picked), 1)
    stride = -(-total // budget)
    sampled = rows.annotate(nth=F("id") % stride).filter(nth=0).order_by("claimed_at", "id")[:budget]
    for le in sampled:
        picked.setdefault(le.id, le)
    return sorted(picked.values(), key=lambda le: (le.claimed_at, le.id))


def _lanes(bars: list[Bar], per_worker: dict[str, int]) -> tuple[list[Lane], list[Bar], int]:
    """Group bars by worker (lanes in order of first claim); stack overlapping ones into sub-rows.

    A worker none of whose attempts made the sample still gets its (empty) lane, so the lanes
    are the run's workers whatever was drawn.
    """
    by_worker: dict[str, list[Bar]] = {}
    for bar in bars:  # already in claim order
        by_worker.setdefault(bar.worker_id, []).append(bar)
    for worker_id in sorted(per_worker):
        by_worker.setdefault(worker_id, [])
    lanes: list[Lane] = []
    shown: list[Bar] = []
    top = 0.0
    for worker_id, own in list(by_worker.items())[:MAX_LANES]:
        ends: list[float] = []  # the right edge of each sub-row so far
        for bar in own:
            row = next((i for i, e in enumerate(ends) if e <= bar.x), None)
            if row is None:
                if len(ends) < MAX_ROWS_PER_WORKER:
                    ends.append(0.0)
                    row = len(ends) - 1
                else:  # more overlap than rows: the least busy row takes it
                    row = min(range(len(ends)), key=lambda i: ends[i])
            ends[row] = max(ends[row], bar.x + bar.w)
            bar.y = top + row * ROW_HEIGHT + (ROW_HEIGHT - BAR_HEIGHT) / 2
            shown.append(bar)
        lanes.append(Lane(worker_id=worker_id, top=top, rows=max(len(ends), 1), attempts=per_worker.get(worker_id, 0),
                          shown=len(own)))
        top += lanes[-1].height
    common = _common_prefix([lane.worker_id for lane in lanes])
    for lane in lanes:
        lane.label = f"…{lane.worker_id[len(common):]}" if common else lane.worker_id
    return lanes, shown, max(len(by_worker) - MAX_LANES, 0)


def _common_prefix(ids: list[str]) -> str:
    """The prefix all ``ids`` share, cut after a separator (``worker-``, ``vm:2613:``); empty for one id."""
    if len(ids) < 2:
        return ""
    first, last = min(ids), max(ids)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    cut = max(first.rfind(sep, 0, n) for sep in "-:@._/") + 1
    return first[:cut] if cut >= 3 else ""


def _links(bars: list[Bar]) -> tuple[list[Link], int]:
    """Connect each attempt to the step's next shown attempt; count the steps that were retried."""
    by_step: dict[str, list[Bar]] = {}
    for bar in bars:
        by_step.setdefault(bar.step_id, []).append(bar)
    links = []
    retried = 0
    for step_id, own in by_step.items():
        if len(own) < 2:
            continue
        retried += 1
        own.sort(key=lambda b: b.attempt)
        for a, b in zip(own, own[1:], strict=False):
            links.append(Link(step_id=step_id, x1=a.x + a.w, y1=a.y + BAR_HEIGHT / 2, x2=b.x, y2=b.y + BAR_HEIGHT / 2))
    return links, retried
