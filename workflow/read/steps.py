"""A run's steps: the step table, graph data, timeline, events, and one step in detail."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db.models import Q
from django.utils import timezone

from ..engine.values import StepState
from ..jsontext import JsonText
from ..models import Artifact, Dependency, Event, Lease, Queue, Record, Run, Step
from . import events as event_reads
from .graph import GraphEdge, GraphNode
from .pages import Page, keyset_page

STEP_STATES = [s.value for s in StepState]


STEP_SORTS = {
    "id": "step_id",
    "kind": "kind",
    "state": "state",
    "attempts": "attempt",
    "duration": None,  # computed; capped instead of keyset-paged
}


@dataclass(slots=True, kw_only=True)
class GraphData:
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    blocked_by: dict[str, list[str]]  # step id -> failed required dependencies (direct)


def graph_data(run: Run) -> GraphData:
    """Every step and edge of a run, in two queries of narrow columns (10,000 steps stay cheap)."""
    steps = list(Step.objects.filter(run=run).order_by().values_list("step_id", "kind", "state", "parent_step_id"))
    edges = list(
        Dependency.objects.filter(run=run).order_by()
        .values_list("depends_on__step_id", "step__step_id", "required")
    )
    state_of = {sid: state for sid, _k, state, _p in steps}
    blocked_by: dict[str, list[str]] = defaultdict(list)
    required_preds: dict[str, list[str]] = defaultdict(list)
    for src, tgt, required in edges:
        if required:
            required_preds[tgt].append(src)
            if state_of.get(src) == StepState.FAILED and state_of.get(tgt) == StepState.PENDING:
                blocked_by[tgt].append(src)
    # A pending step behind a blocked one is blocked too: propagate along required edges.
    blocked = set(blocked_by)
    succ: dict[str, list[str]] = defaultdict(list)
    for src, tgt, required in edges:
        if required:
            succ[src].append(tgt)
    frontier = list(blocked)
    while frontier:
        cur = frontier.pop()
        for nxt in succ.get(cur, ()):
            if nxt not in blocked and state_of.get(nxt) == StepState.PENDING:
                blocked.add(nxt)
                frontier.append(nxt)
    nodes = [
        GraphNode(id=sid, kind=kind, state=state, parent=parent, blocked=sid in blocked)
        for sid, kind, state, parent in steps
    ]
    return GraphData(
        nodes=nodes,
        edges=[GraphEdge(source=s, target=t, required=r) for s, t, r in edges],
        blocked_by=dict(blocked_by),
    )


def step_table(
    run: Run, *, q: str = "", state: str = "", kind: str = "", sort: str = "id", descending: bool = False,
    limit: int = 100, after: str | None = None, before: str | None = None,
) -> Page:
    """A page of a run's steps; sorts by a column are keyset-paged, by duration capped at ``limit``."""
    qs = (Step.objects.filter(run=run).defer("input", "result", "error", "metadata", "retry")
          .annotate(error_code_text=JsonText("error", "code")))
    if q:
        qs = qs.filter(Q(step_id__icontains=q) | Q(kind__icontains=q))
    if state in STEP_STATES:
        qs = qs.filter(state=state)
    if kind:
        qs = qs.filter(kind=kind)
    column = STEP_SORTS.get(sort, "step_id")
    if column is None:
        from django.db.models import DurationField, ExpressionWrapper, F

        duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        qs = qs.filter(started_at__isnull=False, finished_at__isnull=False).annotate(duration=duration)
        order = ("-duration" if descending else "duration", "id")
        return Page(rows=list(qs.order_by(*order)[:limit]))
    fields = (column, "id") if column != "step_id" else ("step_id",)
    if descending:
        return keyset_page(qs, fields=fields, descending=True, limit=limit, after=after, before=before)
    return keyset_page(qs, fields=fields, descending=False, limit=limit, after=after, before=before)


def blocked_among(pending_pks: list[int]) -> set[int]:
    """Which of these pending steps wait on a failed required dependency (one query)."""
    if not pending_pks:
        return set()
    return set(
        Dependency.objects.filter(step_id__in=pending_pks, required=True, depends_on__state=StepState.FAILED)
        .values_list("step_id", flat=True).distinct()
    )


def step_kinds(run: Run) -> list[str]:
    return list(Step.objects.filter(run=run).order_by("kind").values_list("kind", flat=True).distinct()[:200])


def run_events(run: Run, *, limit: int = 50) -> list[Event]:
    return event_reads.run_events(run, limit=limit)


# -- one step ----------------------------------------------------------------------------------
@dataclass(slots=True, kw_only=True)
class StepDetail:
    step: Step
    attempts: list[Lease]
    dependencies: list[Dependency]
    dependencies_total: int
    dependents: list[Dependency]
    dependents_total: int
    records: list[Record]
    artifacts: list[Artifact]
    events: list[Event]
    children_total: int
    reasons: list[str]  # why the step is not running (pending/ready), in words
    failed_required: list[Dependency]

    @property
    def traceback(self) -> str:
        details = (self.step.error or {}).get("details")
        if isinstance(details, dict) and isinstance(details.get("traceback"), str):
            return details["traceback"]
        return ""

    @property
    def error_details(self) -> Any:
        details = (self.step.error or {}).get("details")
        if isinstance(details, dict) and "traceback" in details:
            return {k: v for k, v in details.items() if k != "traceback"} or None
        return details


def step_detail(
    step: Step, *, limit: int = 100, with_attempts: bool = True, with_events: bool = True,
    with_records: bool = True, with_artifacts: bool = True,
) -> StepDetail:
    """Everything the step panel shows; the ``with_`` flags skip what the viewer may not see."""
    run = step.run
    deps_qs = Dependency.objects.filter(step=step).select_related("depends_on").only(
        "id", "required", "satisfied", "step_id", "depends_on__step_id", "depends_on__state", "depends_on__kind",
        "depends_on__error",
    )
    dependents_qs = Dependency.objects.filter(depends_on=step).select_related("step").only(
        "id", "required", "satisfied", "depends_on_id", "step__step_id", "step__state", "step__kind",
    )
    dependencies = list(deps_qs.order_by("depends_on__step_id")[:limit])
    dependents = list(dependents_qs.order_by("step__step_id")[:limit])
    deps_total = len(dependencies) if len(dependencies) < limit else deps_qs.count()
    dependents_total = len(dependents) if len(dependents) < limit else dependents_qs.count()
    failed_required = [d for d in dependencies if d.required and d.depends_on.state == StepState.FAILED]
    if step.state == StepState.PENDING and not failed_required and deps_total > len(dependencies):
        failed_required = list(deps_qs.filter(required=True, depends_on__state=StepState.FAILED)[:20])
    reasons = _waiting_reasons(step, failed_required, dependencies, deps_total)
    return StepDetail(
        step=step,
        attempts=list(Lease.objects.filter(step=step).order_by("claimed_at", "id")) if with_attempts else [],
        dependencies=dependencies,
        dependencies_total=deps_total,
        dependents=dependents,
        dependents_total=dependents_total,
        records=list(Record.objects.filter(run=run, step_id=step.step_id).order_by("collection", "key")[:limit])
        if with_records else [],
        artifacts=list(Artifact.objects.filter(step=step).defer("body").order_by("created_at", "id")[:limit])
        if with_artifacts else [],
        events=event_reads.step_events(run, step.step_id, limit=limit) if with_events else [],
        children_total=Step.objects.filter(run=run, parent_step_id=step.step_id).count(),
        reasons=reasons,
        failed_required=failed_required,
    )


def _waiting_reasons(
    step: Step, failed_required: list[Dependency], dependencies: list[Dependency], deps_total: int
) -> list[str]:
    """Explain, in words, why a pending or ready step is not running yet."""
    now = timezone.now()
    reasons: list[str] = []
    if step.state == StepState.PENDING:
        if failed_required:
            names = ", ".join(repr(d.depends_on.step_id) for d in failed_required[:5])
            more = f" and {len(failed_required) - 5} more" if len(failed_required) > 5 else ""
            reasons.append(
                f"Blocked: required dependency {names}{more} failed. Retry it and this step can run."
            )
        elif step.pending_deps:
            waiting = [d.depends_on.step_id for d in dependencies if not d.satisfied][:5]
            listed = f" ({', '.join(waiting)}{'…' if step.pending_deps > len(waiting) else ''})" if waiting else ""
            reasons.append(f"Waiting for {step.pending_deps} of {deps_total} dependencies to finish{listed}.")
    if step.state == StepState.READY:
        if step.available_at and step.available_at > now:
            reasons.append(f"Backing off: next attempt not before {step.available_at:%Y-%m-%d %H:%M:%S} UTC.")
        queue = Queue.objects.filter(pk=step.queue).only("paused", "max_workers").first()
        if queue is not None and queue.paused:
            reasons.append(f"Queue {step.queue!r} is paused.")
        if not reasons:
            reasons.append(f"Ready: waiting for a worker on queue {step.queue!r}.")
    return reasons
