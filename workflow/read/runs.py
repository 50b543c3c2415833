"""The runs list: filters, a page of runs, and their progress from one query."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.db.models.fields.json import KeyTransform

from .. import forms
from ..engine.values import TERMINAL_STEP_STATES, RunState
from ..models import Run, Step
from .pages import Page, keyset_page

RUN_STATES = [s.value for s in RunState]


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
