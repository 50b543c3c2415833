"""Small presentation helpers: state badges in colour and words, durations, pretty JSON."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

STATE_WORDS = {
    "pending": "pending", "ready": "ready", "running": "running", "succeeded": "succeeded", "failed": "failed",
    "canceled": "canceled", "blocked": "blocked",
}


@register.simple_tag
def state_badge(state: str, blocked: bool = False) -> str:
    """A badge that names the state in words and colours it; blocked pending steps say so."""
    word = "blocked" if blocked and state == "pending" else state
    css = word if word in STATE_WORDS else "unknown"
    return format_html('<span class="badge state-{}"><span class="dot" aria-hidden="true"></span>{}</span>', css, word)


@register.filter
def duration(start: datetime | None, end: datetime | None = None) -> str:
    """Human duration between two moments (end defaults to now); '—' without a start."""
    if start is None:
        return "—"
    return format_seconds(((end or timezone.now()) - start).total_seconds())


@register.filter
def seconds(value: timedelta | float | None) -> str:
    if value is None:
        return "—"
    total = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return format_seconds(total)


def format_seconds(total: float) -> str:
    if total < 0:
        total = 0
    if total < 1:
        return f"{int(total * 1000)} ms"
    if total < 60:
        return f"{total:.1f} s"
    minutes, secs = divmod(int(total), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


@register.filter
def pretty_json(value: Any) -> str:
    """Indented JSON for a <pre>; still escaped by the template (never mark it safe)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@register.filter
def compact_json(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))
    return text if len(text) <= int(limit) else text[: int(limit) - 1] + "…"


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.simple_tag
def sort_link_dir(current: str, desc: bool, column: str) -> str:
    """The direction a sort header link should request: flip when it is the current column."""
    if current == column:
        return "" if desc else "desc"
    return ""


@register.filter
def short_time(value: datetime | None) -> str:
    if value is None:
        return "—"
    local = timezone.localtime(value)
    if local.date() == timezone.localdate():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M")


@register.simple_tag
def copy_button(value: Any, label: str = "id") -> str:
    """A small button that copies `value` (dashboard.js); ids are long and typed by no one."""
    return format_html(
        '<button type="button" class="copy-btn" data-copy="{}" title="Copy {}" aria-label="Copy {} {}">'
        '<svg aria-hidden="true" viewBox="0 0 16 16" width="13" height="13"><rect x="5" y="5" width="9" height="9" rx="1.5"/>'
        '<path d="M3 11V3.5A1.5 1.5 0 0 1 4.5 2H11"/></svg></button>', value, label, label, value)


@register.filter
def when(value: datetime | None) -> str:
    """A <time> element: the server's short time, which dashboard.js turns into "3 min ago" in the
    viewer's time zone (or UTC), with the full date and time on hover."""
    if value is None:
        return "—"
    return format_html('<time datetime="{}" data-when title="{}">{}</time>',
                       value.isoformat(), full_time(value), short_time(value))


@register.filter
def full_time(value: datetime | None) -> str:
    if value is None:
        return "—"
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " " + timezone.localtime(value).tzname()
