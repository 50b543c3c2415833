"""Events as the consoles show them: run names, messages that add to the kind, repeats grouped.

Presentation only, over rows some query already fetched (a page of at most a few hundred): one
extra query for the run names, then pure Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..models import Event, Run


@dataclass(slots=True, kw_only=True)
class EventRow:
    """One event, with what the table prints beside its kind."""

    event: Event
    run_name: str = ""
    detail: str = ""  # the message without the words the kind and the actor badge already say


@dataclass(slots=True, kw_only=True)
class EventGroup:
    """Consecutive events of one kind, message and severity on one run (or none): shown once, ``× n``."""

    rows: list[EventRow] = field(default_factory=list)

    @property
    def first(self) -> EventRow:
        return self.rows[0]

    @property
    def rest(self) -> list[EventRow]:
        return self.rows[1:]

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def step_count(self) -> int:
        return len({r.event.step_id for r in self.rows if r.event.step_id})


def detail_of(kind: str, message: str, actor: str = "") -> str:
    """The part of ``message`` that says more than ``kind`` (and the actor badge) already do.

    ``step_succeeded`` with "step succeeded" says nothing more; "run created with 3 steps"
    becomes "with 3 steps"; "retried by ada" beside the badge "by ada" becomes nothing.
    """
    text = message.strip()
    if actor and text.lower().endswith(f" by {actor.lower()}"):
        text = text[: -len(actor) - 4].rstrip()
    words = kind.replace("_", " ").strip().lower()
    verb = words.rsplit(" ", 1)[-1]
    low = text.lower()
    if low in (words, verb, kind.lower()):
        return ""
    for prefix in (words + " ", kind.lower() + " ", kind.lower() + ": ", words + ": "):
        if low.startswith(prefix):
            return text[len(prefix):].strip()
    return text


def run_names(run_ids: Sequence[str | None]) -> dict[str, str]:
    """The names of these runs, one query (an unnamed run is absent)."""
    ids = {r for r in run_ids if r}
    if not ids:
        return {}
    return {pk: name for pk, name in Run.objects.filter(pk__in=ids).values_list("id", "name") if name}


def event_rows(events: Sequence[Event]) -> list[EventRow]:
    names = run_names([e.run_id for e in events])
    return [EventRow(event=e, run_name=names.get(e.run_id or "", ""), detail=detail_of(e.kind, e.message, e.actor))
            for e in events]


def grouped(rows: Sequence[EventRow]) -> list[EventGroup]:
    """Fold runs of consecutive rows that repeat one another into groups, order kept."""
    groups: list[EventGroup] = []
    last: Any = None
    for row in rows:
        e = row.event
        key = (e.run_id, e.kind, e.severity, e.message, e.actor, e.queue)
        if groups and key == last:
            groups[-1].rows.append(row)
        else:
            groups.append(EventGroup(rows=[row]))
            last = key
    return groups
