"""Read-side queries for the dashboard: keyset pages, aggregates and explanations.

Nothing here writes. Every function issues a fixed number of queries, whatever the number of
rows it returns, so page query counts do not grow with the data (the views' tests check it).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from . import forms
from .engine.errors import WorkflowError
from .engine.values import TERMINAL_STEP_STATES, RunState, StepState
from .graph import GraphEdge, GraphNode
from .jsontext import JsonText
from .models import Artifact, Dependency, Event, Lease, Queue, Record, Run, Step

RUN_STATES = [s.value for s in RunState]
STEP_STATES = [s.value for s in StepState]
PREVIEW_LIMIT_BYTES = 256 * 1024
LEASE_BAR_FIELDS = (
    "id", "run", "step", "attempt", "worker_id", "token", "claimed_at", "started_at", "released_at", "expires_at",
    "outcome", "error_code", "error_message", "step__step_id", "step__kind",
)
ARTIFACT_LIST_FIELDS = (
    "id", "run", "step", "name", "kind", "content_type", "size", "sha256", "storage_key", "metadata", "created_at",
    "step__step_id", "step__state",
)
CSV_PREVIEW_ROWS = 200


# -- keyset cursors ------------------------------------------------------------------------------
def encode_cursor(*values: Any) -> str:
    """Pack a row's sort values into an opaque, URL-safe cursor (``forms.parse_cursor`` reads it)."""
    raw = json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@dataclass(slots=True, kw_only=True)
class Page:
    """One keyset page: rows plus the cursors of the neighbouring pages (None at an end).

    ``scan_capped`` says the filter was only tried on a bounded window of rows: the next page
    link continues the search past that window.
    """

    rows: list[Any]
    older: str | None = None  # "next" in the list's order
    newer: str | None = None  # "previous"
    scan_capped: bool = False
    scan_window: int = 0

    @property
    def has_other_pages(self) -> bool:
        return self.older is not None or self.newer is not None


def keyset_page(
    qs: QuerySet, *, fields: Sequence[str], descending: bool, limit: int,
    after: str | None = None, before: str | None = None,
    scan: Callable[[QuerySet], QuerySet] | None = None, scan_window: int = 5000,
) -> Page:
    """Page ``qs`` by the unique tuple ``fields`` without OFFSET.

    ``after`` continues past a row in list order; ``before`` goes back. A cursor that is not
    exactly what a page made raises ``forms.BadInput`` (a 400). ``scan`` is a filter no index
    serves (a substring search): it is applied to the next ``scan_window`` rows in order only,
    so a rare match costs a bounded scan, and the page offers to search on past the window.
    """
    kinds = forms.cursor_kinds(qs.model, fields)
    back = forms.parse_cursor(before, kinds)
    fwd = forms.parse_cursor(after, kinds)

    def condition(values: list[Any], forward: bool) -> Q:
        lookup = "lt" if forward == descending else "gt"
        q = Q()
        for i in range(len(fields)):
            q |= Q(**{fields[j]: values[j] for j in range(i)}, **{f"{fields[i]}__{lookup}": values[i]})
        # The redundant bound on the first field lets the database walk the index from the cursor.
        return Q(**{f"{fields[0]}__{lookup}e": values[0]}) & q

    def order(forward: bool) -> list[str]:
        flip = forward != descending
        return [f if flip else f"-{f}" for f in fields]

    def fetch(base: QuerySet, forward: bool) -> tuple[list[Any], Any]:
        """Up to limit + 1 rows in ``forward`` order, and the scan boundary row if the window was cut."""
        ordered = base.order_by(*order(forward))
        if scan is None:
            return list(ordered[: limit + 1]), None
        window = ordered.values("pk")[:scan_window]
        rows = list(scan(base.filter(pk__in=window)).order_by(*order(forward))[: limit + 1])
        boundary = None
        if len(rows) <= limit:
            boundary = ordered.only(*fields)[scan_window - 1: scan_window].first()
        return rows, boundary

    if back is not None:
        rows, boundary = fetch(qs.filter(condition(back, False)), False)
        more = len(rows) > limit
        rows = rows[:limit][::-1]
        newer = _cursor_of(rows[0], fields) if more and rows else None
        if boundary is not None:
            newer = _cursor_of(boundary, fields)
        older = _cursor_of(rows[-1], fields) if rows else encode_cursor(*back)
        return Page(rows=rows, older=older, newer=newer, scan_capped=boundary is not None, scan_window=scan_window)
    if fwd is not None:
        qs = qs.filter(condition(fwd, True))
    rows, boundary = fetch(qs, True)
    more = len(rows) > limit
    rows = rows[:limit]
    older = _cursor_of(rows[-1], fields) if more else None
    if boundary is not None:
        older = _cursor_of(boundary, fields)
    newer = (_cursor_of(rows[0], fields) if rows else encode_cursor(*fwd)) if fwd is not None else None
    return Page(rows=rows, older=older, newer=newer, scan_capped=boundary is not None, scan_window=scan_window)


def _cursor_of(row: Any, fields: Sequence[str]) -> str:
    return encode_cursor(*(getattr(row, f) for f in fields))


# -- runs ----------------------------------------------------------------------------------------
RUN_SCAN_WINDOW = 5000  # runs a substring or metadata filter is tried on per page


@dataclass(slots=True, kw_only=True)
class RunFilters:
    """The runs list's filters, parsed by ``forms.parse_runs_filter``; errors are per field."""

    package: str = ""
    state: str = ""
    q: str = ""
    meta: str = ""  # key=value, as typed
    meta_pair: tuple[str, str] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    field_errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Any) -> RunFilters:
        parsed = forms.parse_runs_filter(params)
        v = parsed.values
        return cls(
            package=v["package"], state=v["state"], q=v["q"],
            meta=params.get("meta", "").strip() if "meta" not in parsed.errors else "",
            meta_pair=v["meta"] or None,
            created_after=v["created_after"], created_before=v["created_before"],
            field_errors=parsed.errors,
        )

    @property
    def errors(self) -> list[str]:
        return [f"{name.replace('_', ' ').capitalize()}: {text}" for name, text in self.field_errors.items()]

    def apply(self, qs: QuerySet[Run]) -> QuerySet[Run]:
        """The filters an index serves (package, state, creation time)."""
        if self.package:
            qs = qs.filter(package=self.package)
        if self.state:
            qs = qs.filter(state=self.state)
        if self.created_after:
            qs = qs.filter(created_at__gte=self.created_after)
        if self.created_before:
            qs = qs.filter(created_at__lt=self.created_before)
        return qs

    @property
    def needs_scan(self) -> bool:
        return bool(self.q or self.meta_pair)

    def apply_scanned(self, qs: QuerySet[Run]) -> QuerySet[Run]:
        """The filters no index serves: a name substring, a metadata key's value."""
        if self.q:
            qs = qs.filter(Q(id__startswith=self.q) | Q(name__icontains=self.q))
        if self.meta_pair:
            key, value = self.meta_pair
            # KeyTransform takes the key literally: "a__contains" is a key, not a lookup.
            qs = qs.alias(wf_meta_value=KeyTransform(key, "metadata")).filter(wf_meta_value=value)
        return qs

    @property
    def is_filtered(self) -> bool:
        return any([self.package, self.state, self.q, self.meta, self.created_after, self.created_before])


def runs_page(filters: RunFilters, *, limit: int = 50, after: str | None = None, before: str | None = None) -> Page:
    qs = filters.apply(Run.objects.defer("input"))
    scan = filters.apply_scanned if filters.needs_scan else None
    return keyset_page(
        qs, fields=("created_at", "id"), descending=True, limit=limit, after=after, before=before,
        scan=scan, scan_window=RUN_SCAN_WINDOW,
    )


NEW_RUNS_CAP = 100  # "100+ new runs": counting further would cost without telling more


def runs_pinned(filters: RunFilters, cursor: str | None, *, limit: int = 50) -> tuple[Page, int] | None:
    """The page that starts at the run the operator is looking at, and how many newer runs match.

    Lets a live list refresh states in place while new runs are announced, not inserted.
    None without a cursor; a cursor this site did not make is ``forms.BadInput`` (a 400).
    A name or metadata filter is tried on a bounded window of rows, as on every runs page.
    """
    fields = ("created_at", "id")
    values = forms.parse_cursor(cursor, forms.cursor_kinds(Run, fields))
    if values is None:
        return None
    created, run_id = values
    qs = filters.apply(Run.objects.defer("input"))
    newer = Q(created_at__gt=created) | Q(created_at=created, id__gt=run_id)
    newer_runs = qs.filter(created_at__gte=created).filter(newer)
    if filters.needs_scan:
        window = newer_runs.order_by("created_at", "id").values("pk")[:RUN_SCAN_WINDOW]
        newer_runs = filters.apply_scanned(qs.filter(pk__in=window))
    new_count = newer_runs.order_by()[:NEW_RUNS_CAP + 1].count()
    scan = filters.apply_scanned if filters.needs_scan else None
    page = keyset_page(qs.filter(created_at__lte=created).exclude(newer), fields=fields, descending=True,
                       limit=limit, scan=scan, scan_window=RUN_SCAN_WINDOW)
    page.newer = cursor
    return page, new_count


@dataclass(slots=True, kw_only=True)
class Progress:
    """Done/total for a run, with counts by state in reading order."""

    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in TERMINAL_STEP_STATES)

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0

    def segments(self) -> list[tuple[str, int, float]]:
        """(state, count, percent of total) for a stacked bar, terminal states first."""
        total = self.total or 1
        order = ("succeeded", "failed", "canceled", "running", "ready", "pending")
        return [(s, self.counts[s], 100 * self.counts[s] / total) for s in order if self.counts.get(s)]


def progress_for(run_ids: Iterable[str]) -> dict[str, Progress]:
    """Step counts by state for several runs, in ONE grouped query."""
    ids = list(run_ids)
    out: dict[str, Progress] = {rid: Progress(counts={}) for rid in ids}
    if not ids:
        return out
    rows = Step.objects.filter(run_id__in=ids).order_by().values_list("run_id", "state").annotate(n=Count("id"))
    for run_id, state, n in rows:
        out[run_id].counts[state] = n
    return out


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


@dataclass(slots=True, kw_only=True)
class TimelineBar:
    lease: Lease
    step_id: str
    left: float  # percent of the span
    width: float
    is_open: bool


@dataclass(slots=True, kw_only=True)
class Timeline:
    bars: list[TimelineBar]
    start: datetime | None
    end: datetime | None
    total: int
    workers: list[str]

    @classmethod
    def empty(cls) -> Timeline:
        return cls(bars=[], start=None, end=None, total=0, workers=[])

    @property
    def span_seconds(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return (self.end - self.start).total_seconds()

    @property
    def ticks(self) -> list[tuple[float, float]]:
        """(percent, seconds since start) for five axis marks."""
        return [(p, self.span_seconds * p / 100) for p in (0, 25, 50, 75, 100)]


def timeline(run: Run, *, limit: int = 200) -> Timeline:
    """The latest ``limit`` attempts of a run, as bars proportional to their duration."""
    now = timezone.now()
    total = Lease.objects.filter(run=run).count()
    leases = list(
        Lease.objects.filter(run=run).select_related("step")
        .only(*LEASE_BAR_FIELDS).order_by("-claimed_at", "-id")[:limit]
    )[::-1]
    if not leases:
        return Timeline(bars=[], start=None, end=None, total=0, workers=[])
    start = min(le.claimed_at for le in leases)
    end = max((le.released_at or now) for le in leases)
    span = max((end - start).total_seconds(), 0.001)
    bars = []
    for le in leases:
        stop = le.released_at or now
        left = 100 * (le.claimed_at - start).total_seconds() / span
        width = max(100 * (stop - le.claimed_at).total_seconds() / span, 0.4)
        bars.append(TimelineBar(lease=le, step_id=le.step.step_id, left=left, width=min(width, 100 - left) or 0.4,
                                is_open=le.released_at is None))
    workers = sorted({le.worker_id for le in leases})
    return Timeline(bars=bars, start=start, end=end, total=total, workers=workers)


def run_events(run: Run, *, limit: int = 50) -> list[Event]:
    return list(Event.objects.filter(run=run).order_by("-id")[:limit])


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
        events=list(Event.objects.filter(run=run, step_id=step.step_id).order_by("-id")[:limit]) if with_events else [],
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


# -- results, artifacts and records -------------------------------------------------------------
def results_page(
    run: Run, *, q: str = "", kind: str = "", state: str = "", limit: int = 50,
    after: str | None = None, before: str | None = None,
) -> Page:
    qs = Step.objects.filter(run=run).defer("input", "result", "error", "metadata", "retry")
    if q:
        qs = qs.filter(step_id__icontains=q)
    if kind:
        qs = qs.filter(kind=kind)
    if state in STEP_STATES:
        qs = qs.filter(state=state)
    return keyset_page(qs, fields=("step_id",), descending=False, limit=limit, after=after, before=before)


def artifacts_page(
    run: Run, *, q: str = "", step: str = "", kind: str = "", content_type: str = "", limit: int = 50,
    after: str | None = None, before: str | None = None,
) -> Page:
    qs = Artifact.objects.filter(run=run).select_related("step").only(*ARTIFACT_LIST_FIELDS)
    if q:
        qs = qs.filter(name__icontains=q)
    if step:
        qs = qs.filter(step__step_id=step)
    if kind:
        qs = qs.filter(kind=kind)
    if content_type:
        qs = qs.filter(content_type__startswith=content_type)
    return keyset_page(
        qs, fields=("created_at", "id"), descending=False, limit=limit, after=after, before=before,
    )


def records_page(
    *, collection: str = "", q: str = "", run_id: str = "", limit: int = 50,
    after: str | None = None, before: str | None = None,
) -> Page:
    qs = Record.objects.all()
    if collection:
        qs = qs.filter(collection=collection)
    if q:
        qs = qs.filter(key__icontains=q)
    if run_id:
        qs = qs.filter(run_id=run_id)
    return keyset_page(qs, fields=("collection", "key"), descending=False, limit=limit, after=after, before=before)


def record_collections(*, limit: int = 200) -> list[str]:
    return list(Record.objects.order_by("collection").values_list("collection", flat=True).distinct()[:limit])


class BlobMissing(LookupError):
    """The artifact's external blob is gone from the store."""


def open_artifact(artifact: Artifact) -> Any:
    """A binary file object with the artifact's bytes (inline body or external store)."""
    if artifact.is_inline:
        return io.BytesIO(bytes(artifact.body or b""))
    from .conf import runtime

    store = runtime().artifact_store
    if store is None:
        raise BlobMissing(f"artifact {artifact.name!r} is stored externally but no artifact store is configured")
    try:
        return store.open(artifact.storage_key)
    except (OSError, WorkflowError) as exc:  # FileNotFoundError, or a key the store refuses
        raise BlobMissing(f"the blob of artifact {artifact.name!r} ({artifact.id}) is missing from the store") from exc


@dataclass(slots=True, kw_only=True)
class Preview:
    """What the preview pane shows; ``mode`` picks the template branch. Text is never marked safe."""

    mode: str  # json | text | csv | image | html | binary | missing
    text: str = ""
    rows: list[list[str]] = field(default_factory=list)
    truncated: bool = False
    message: str = ""


def preview_artifact(artifact: Artifact) -> Preview:
    ctype = (artifact.content_type or "").split(";")[0].strip().lower()
    if ctype.startswith("image/"):
        return Preview(mode="image")
    textual = ctype.startswith("text/") or ctype in {"application/json", "application/xml", "application/x-ndjson"}
    if not textual and not ctype.endswith("+json"):
        return Preview(mode="binary", message=f"{ctype or 'unknown type'}, {artifact.size:,} bytes: download to view.")
    try:
        with open_artifact(artifact) as fh:
            data = fh.read(PREVIEW_LIMIT_BYTES + 1)
    except BlobMissing as exc:
        return Preview(mode="missing", message=str(exc))
    truncated = len(data) > PREVIEW_LIMIT_BYTES
    text = data[:PREVIEW_LIMIT_BYTES].decode("utf-8", errors="replace")
    if ctype == "application/json" or ctype.endswith("+json"):
        if not truncated:
            try:
                return Preview(mode="json", text=json.dumps(json.loads(text), indent=2, ensure_ascii=False))
            except ValueError:
                pass
        return Preview(mode="text", text=text, truncated=truncated)
    if ctype == "text/csv":
        rows = []
        for i, row in enumerate(csv.reader(io.StringIO(text))):
            if i >= CSV_PREVIEW_ROWS:
                truncated = True
                break
            rows.append(row)
        return Preview(mode="csv", rows=rows, truncated=truncated)
    if ctype in {"text/html", "application/xhtml+xml"}:
        return Preview(mode="html", text=text, truncated=truncated)
    return Preview(mode="text", text=text, truncated=truncated)


def pretty_json(value: Any) -> str:
    """Indent JSON for a <pre>; the template escapes it."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
