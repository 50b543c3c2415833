"""Keyset paging: opaque cursors and pages that never use OFFSET."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from .. import forms


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
    qs: QuerySet, *, fields: Sequence[str], descending: bool | Sequence[bool], limit: int,
    after: str | None = None, before: str | None = None,
    scan: Callable[[QuerySet], QuerySet] | None = None, scan_window: int = 5000,
) -> Page:
    """Page ``qs`` by the unique tuple ``fields`` without OFFSET.

    ``after`` continues past a row in list order; ``before`` goes back. A cursor that is not
    exactly what a page made raises ``forms.BadInput`` (a 400). ``scan`` is a filter no index
    serves (a substring search): it is applied to the next ``scan_window`` rows in order only,
    so a rare match costs a bounded scan, and the page offers to search on past the window.
    ``descending`` is one direction for every field, or one per field (``(False, True)`` is
    ``ORDER BY kind, id DESC``, which an index on ``(kind, -id)`` serves).
    """
    desc = [descending] * len(fields) if isinstance(descending, bool) else list(descending)
    kinds = forms.cursor_kinds(qs.model, fields)
    back = forms.parse_cursor(before, kinds)
    fwd = forms.parse_cursor(after, kinds)

    def condition(values: list[Any], forward: bool) -> Q:
        def lookup(i: int) -> str:
            return "lt" if forward == desc[i] else "gt"

        q = Q()
        for i in range(len(fields)):
            q |= Q(**{fields[j]: values[j] for j in range(i)}, **{f"{fields[i]}__{lookup(i)}": values[i]})
        # The redundant bound on the first field lets the database walk the index from the cursor.
        return Q(**{f"{fields[0]}__{lookup(0)}e": values[0]}) & q

    def order(forward: bool) -> list[str]:
        return [f if forward != d else f"-{f}" for f, d in zip(fields, desc, strict=True)]

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
