"""Event lists on the run and step pages: repeats grouped, messages that add to the kind."""

from __future__ import annotations

from collections.abc import Sequence

from django import template

from ..models import Event
from ..read import event_rows

register = template.Library()


@register.filter
def event_groups(events: Sequence[Event]) -> list[event_rows.EventGroup]:
    """Consecutive repeats folded into one group (no query: the page already knows the run)."""
    return event_rows.grouped([event_rows.EventRow(event=e, detail=event_rows.detail_of(e.kind, e.message, e.actor))
                               for e in events])
