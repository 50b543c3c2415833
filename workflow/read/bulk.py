"""What a bulk retry would do, read before anything is written: the preview and its binding.

A preview is bound to what it showed by ``as_of`` (the moment it was read) and ``max_id`` (the
highest step row it selected): the confirmed action retries only failed steps matching the same
filters that had failed by ``as_of`` and whose row id is at most ``max_id``, so a step that fails
after the preview (a new one, or one retried elsewhere that failed again: its ``finished_at``
moves) is never swept in silently. The action also refuses to retry more steps than previewed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..engine.values import RunState, StepState
from ..models import Dependency, Step

BULK_MAX = 10_000  # steps one confirmation retries; more matching: the lowest ids, then preview again
BATCH_SIZE = 500  # steps per transaction when the action runs
SAMPLE_ROWS = 50  # steps the preview lists
DEPENDENTS_MAX = 100_000  # blocked dependents the preview walks before it says "at least"
_CHUNK = 500  # ids per IN (...) while walking the graph


@dataclass(slots=True, kw_only=True)
class RetryPreview:
    """The failed steps a bulk retry would rerun, and the blocked dependents that would then run."""

    as_of: datetime
    matching: int  # failed steps matching the filters (runs not canceled), whatever the cap
    canceled_runs: int  # failed steps matching but in canceled runs: never retried
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (run id, step id) selected, id order
    max_id: int = 0
    sample: list[Step] = field(default_factory=list)
    runs: int = 0  # distinct runs of the selected steps
    runs_restarting: int = 0  # of those, runs not running now: they become running
    dependents: int = 0
    dependents_exact: bool = True

    @property
    def selected(self) -> int:
        return len(self.pairs)

    @property
    def is_capped(self) -> bool:
        return self.matching > self.selected

    @property
    def total_rerun(self) -> int:
        return self.selected + self.dependents


def failed_matching(qs: Any, *, as_of: datetime, max_id: int | None = None) -> Any:
    """``qs`` (already filtered by the view's filters) narrowed to failed steps bound to the preview."""
    qs = qs.filter(state=StepState.FAILED, finished_at__lte=as_of)
    if max_id is not None:
        qs = qs.filter(id__lte=max_id)
    return qs


def retry_preview(qs: Any, *, as_of: datetime, max_id: int | None = None, limit: int = BULK_MAX,
                  count_dependents: bool = True) -> RetryPreview:
    """Read what retrying the failed steps of ``qs`` would do; nothing is written."""
    failed = failed_matching(qs, as_of=as_of, max_id=max_id)
    live = failed.exclude(run__state=RunState.CANCELED)
    rows = list(live.order_by("id").values_list("id", "run_id", "step_id", "run__state")[:limit])
    preview = RetryPreview(
        as_of=as_of,
        matching=live.count() if len(rows) >= limit else len(rows),
        canceled_runs=failed.filter(run__state=RunState.CANCELED).count(),
        pairs=[(r, s) for _, r, s, _ in rows],
        max_id=rows[-1][0] if rows else 0,
    )
    run_states = {r: state for _, r, _, state in rows}
    preview.runs = len(run_states)
    preview.runs_restarting = sum(1 for state in run_states.values() if state != RunState.RUNNING)
    preview.sample = list(
        Step.objects.filter(pk__in=[pk for pk, *_ in rows[:SAMPLE_ROWS]])
        .select_related("run")
        .only("id", "run_id", "step_id", "kind", "queue", "state", "attempt", "max_attempts", "error", "finished_at",
              "run__id", "run__name")
        .order_by("id")
    )
    if count_dependents and rows:
        preview.dependents, preview.dependents_exact = blocked_dependents(
            {pk for pk, *_ in rows}, set(run_states)
        )
    return preview


def blocked_dependents(selected: set[int], run_ids: set[str], *, limit: int = DEPENDENTS_MAX) -> tuple[int, bool]:
    """How many pending steps would run once the ``selected`` failed steps succeed; (count, exact).

    A pending step waits on every unsatisfied edge (a failed dependency leaves a required edge
    unsatisfied; an optional one is satisfied by any end). It will run if it is reached from the
    selected failures along unsatisfied edges and not from any other failed step of the same runs
    (a failure this retry leaves alone keeps it blocked). Dependencies never cross runs.
    """
    runs = sorted(run_ids)
    others: set[int] = set()
    for start in range(0, len(runs), _CHUNK):
        others.update(Step.objects.filter(run_id__in=runs[start:start + _CHUNK], state=StepState.FAILED)
                      .values_list("id", flat=True))
    others -= selected
    reached, exact = _pending_reach(selected, limit)
    if others and reached:
        doomed, doomed_exact = _pending_reach(others, limit)
        reached -= doomed
        exact = exact and doomed_exact
    return len(reached), exact


def _pending_reach(sources: Iterable[int], limit: int) -> tuple[set[int], bool]:
    """Pending steps reachable from ``sources`` along unsatisfied edges (breadth first, bounded)."""
    seen: set[int] = set()
    frontier = list(sources)
    while frontier:
        found: list[int] = []
        for start in range(0, len(frontier), _CHUNK):
            found.extend(
                Dependency.objects.filter(depends_on_id__in=frontier[start:start + _CHUNK], satisfied=False,
                                          step__state=StepState.PENDING).values_list("step_id", flat=True)
            )
        frontier = [pk for pk in dict.fromkeys(found) if pk not in seen]
        seen.update(frontier)
        if len(seen) > limit:
            return seen, False
    return seen, True
