"""Read-side queries for the dashboard: keyset pages, aggregates and explanations.

Nothing here writes. Every function issues a fixed number of queries, whatever the number of
rows it returns, so page query counts do not grow with the data (the views' tests check it).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.db.models.fields.json import KT
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .engine.errors import WorkflowError
from .engine.values import TERMINAL_STEP_STATES, RunState, StepState
from .graph import GraphEdge, GraphNode
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
    """Pack a row's sort values into an opaque, URL-safe cursor."""
    raw = json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> list[Any] | None:
    """Unpack a cursor, or None when it is missing or was tampered with."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(values, list) or len(values) != size:
        return None
    return values


@dataclass(slots=True, kw_only=True)
class Page:
    """One keyset page: rows plus the cursors of the neighbouring pages (None at an end)."""

    rows: list[Any]
    older: str | None = None  # "next" in the list's order
    newer: str | None = None  # "previous"

    @property
    def has_other_pages(self) -> bool:
        return self.older is not None or self.newer is not None


def keyset_page(
    qs: QuerySet, *, fields: Sequence[str], descending: bool, limit: int,
    after: str | None = None, before: str | None = None, convert: Sequence[Any] = (),
) -> Page:
    """Page ``qs`` by the unique tuple ``fields`` without OFFSET.

    ``after`` continues past a row in list order; ``before`` goes back. ``convert`` turns cursor
    values back into field values (for example ``parse_datetime``), one callable per field.
    """
    convert = list(convert) or [None] * len(fields)

    def condition(values: list[Any], forward: bool) -> Q:
        values = [c(v) if c and v is not None else v for c, v in zip(convert, values, strict=True)]
        lookup = "lt" if forward == descending else "gt"
        q = Q()
        for i in range(len(fields)):
            q |= Q(**{fields[j]: values[j] for j in range(i)}, **{f"{fields[i]}__{lookup}": values[i]})
        return q

    def order(forward: bool) -> list[str]:
        flip = forward != descending
        return [f if flip else f"-{f}" for f in fields]

    back = decode_cursor(before, len(fields))
    fwd = decode_cursor(after, len(fields))
    if back is not None:
        rows = list(qs.filter(condition(back, False)).order_by(*order(False))[: limit + 1])
        more = len(rows) > limit
        rows = rows[:limit][::-1]
        newer = _cursor_of(rows[0], fields) if more and rows else None
        older = _cursor_of(rows[-1], fields) if rows else None
        return Page(rows=rows, older=older, newer=newer)
    if fwd is not None:
        qs = qs.filter(condition(fwd, True))
    rows = list(qs.order_by(*order(True))[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    older = _cursor_of(rows[-1], fields) if more else None
    newer = _cursor_of(rows[0], fields) if fwd is not None and rows else None
    return Page(rows=rows, older=older, newer=newer)


def _cursor_of(row: Any, fields: Sequence[str]) -> str:
    return encode_cursor(*(getattr(row, f) for f in fields))


def _parse_dt(value: str) -> datetime | None:
    return parse_datetime(value)


# -- runs ----------------------------------------------------------------------------------------
@dataclass(slots=True, kw_only=True)
class RunFilters:
    package: str = ""
    state: str = ""
    q: str = ""
    meta: str = ""  # key=value
    created_after: datetime | None = None
    created_before: datetime | None = None
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_params(cls, params: Any) -> RunFilters:
        f = cls(
            package=params.get("package", "").strip(),
            state=params.get("state", "").strip(),
            q=params.get("q", "").strip(),
            meta=params.get("meta", "").strip(),
        )
        if f.state and f.state not in RUN_STATES:
            f.errors.append(f"Unknown state {f.state!r}.")
            f.state = ""
        for name in ("created_after", "created_before"):
            raw = params.get(name, "").strip()
            if not raw:
                continue
            value = _parse_form_datetime(raw)
            if value is None:
                f.errors.append(f"{name.replace('_', ' ').capitalize()} is not a date and time: {raw!r}.")
            setattr(f, name, value)
        if f.meta and "=" not in f.meta:
            f.errors.append("Metadata filter must look like key=value.")
        return f

    def apply(self, qs: QuerySet[Run]) -> QuerySet[Run]:
        if self.package:
            qs = qs.filter(package=self.package)
        if self.state:
            qs = qs.filter(state=self.state)
        if self.q:
            qs = qs.filter(Q(id=self.q) | Q(id__startswith=self.q) | Q(name__icontains=self.q))
        if self.meta and "=" in self.meta:
            key, _, value = self.meta.partition("=")
            qs = qs.filter(**{f"metadata__{key.strip()}": value.strip()})
        if self.created_after:
            qs = qs.filter(created_at__gte=self.created_after)
        if self.created_before:
            qs = qs.filter(created_at__lt=self.created_before)
        return qs

    @property
    def is_filtered(self) -> bool:
        return any([self.package, self.state, self.q, self.meta, self.created_after, self.created_before])


def _parse_form_datetime(raw: str) -> datetime | None:
    """Accept ``<input type=datetime-local>`` values and ISO strings; naive means the site's zone."""
    value = parse_datetime(raw)
    if value is None:
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            return None
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    return value


def runs_page(filters: RunFilters, *, limit: int = 50, after: str | None = None, before: str | None = None) -> Page:
    qs = filters.apply(Run.objects.defer("input"))
    return keyset_page(
        qs, fields=("created_at", "id"), descending=True, limit=limit, after=after, before=before,
        convert=(_parse_dt, None),
    )


NEW_RUNS_CAP = 100  # "100+ new runs": counting further would cost without telling more


def runs_pinned(filters: RunFilters, cursor: str | None, *, limit: int = 50) -> tuple[Page, int] | None:
    """The page that starts at the run the operator is looking at, and how many newer runs match.

    Lets a live list refresh states in place while new runs are announced, not inserted.
    None when the cursor is missing or tampered with.
    """
    values = decode_cursor(cursor, 2)
    if values is None:
        return None
    created = _parse_dt(values[0]) if isinstance(values[0], str) else None
    if created is None or not isinstance(values[1], str):
        return None
    qs = filters.apply(Run.objects.defer("input"))
    newer = Q(created_at__gt=created) | Q(created_at=created, id__gt=values[1])
    new_count = qs.filter(newer).order_by()[:NEW_RUNS_CAP + 1].count()
    rows = list(qs.exclude(newer).order_by("-created_at", "-id")[: limit + 1])
    older = _cursor_of(rows[limit - 1], ("created_at", "id")) if len(rows) > limit else None
    return Page(rows=rows[:limit], older=older, newer=cursor), new_count


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
          .annotate(error_code_text=KT("error__code")))
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


def step_detail(step: Step, *, limit: int = 100) -> StepDetail:
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
        attempts=list(Lease.objects.filter(step=step).order_by("claimed_at", "id")),
        dependencies=dependencies,
        dependencies_total=deps_total,
        dependents=dependents,
        dependents_total=dependents_total,
        records=list(Record.objects.filter(run=run, step_id=step.step_id).order_by("collection", "key")[:limit]),
        artifacts=list(Artifact.objects.filter(step=step).defer("body").order_by("created_at", "id")[:limit]),
        events=list(Event.objects.filter(run=run, step_id=step.step_id).order_by("-id")[:limit]),
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
        convert=(_parse_dt, None),
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


def state_counts_in(steps: Iterable[Step]) -> Counter[str]:
    return Counter(s.state for s in steps)
