"""The run's attempt timeline drawn in Python: a template loop over hundreds of bars, each with
links, a tooltip and four coordinates, cost a second of rendering; this costs milliseconds."""

from __future__ import annotations

import html
from urllib.parse import urlencode

from django import template
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from ..models import Run
from ..read.timeline import BAR_HEIGHT, OVERVIEW_HEIGHT, Bar, Timeline
from .workflow_tags import duration, short_time

register = template.Library()


def _n(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def _title(bar: Bar) -> str:
    end = short_time(bar.released_at) if bar.released_at else "now"
    code = f" ({bar.error_code})" if bar.error_code else ""
    return (f"{bar.step_id} · attempt {bar.attempt} on {bar.worker_id}\n"
            f"{short_time(bar.claimed_at)} → {end} ({duration(bar.claimed_at, bar.released_at)}): "
            f"{bar.outcome_words}{code}")


@register.simple_tag
def timeline_lanes(run: Run, tl: Timeline) -> SafeString:
    """The lanes: one band per worker, a bar per attempt (a link to its step), a line per retry."""
    e = html.escape
    run_path = reverse("workflow:run", args=[run.id])
    links: dict[str, tuple[str, str]] = {}

    def link(step_id: str) -> tuple[str, str]:
        if step_id not in links:
            links[step_id] = (e(f"{run_path}?{urlencode({'step': step_id})}"),
                              e(reverse("workflow:step", args=[run.id, step_id])))
        return links[step_id]

    h = tl.height
    out = [f'<svg class="tl-svg" data-tl-lanes viewBox="0 0 1000 {h}" preserveAspectRatio="none" height="{h}" '
           f'role="img" aria-label="Attempts by worker over time: {len(tl.bars)} bars">']
    for i, lane in enumerate(tl.lanes):
        even = " even" if i % 2 else ""
        out.append(f'<rect class="tl-lane{even}" x="-100000" width="200000" y="{_n(lane.top)}" height="{lane.height}"/>')
    for ln in tl.links:
        out.append(f'<line class="tl-link" data-step="{e(ln.step_id)}" x1="{_n(ln.x1)}" y1="{_n(ln.y1)}" '
                   f'x2="{_n(ln.x2)}" y2="{_n(ln.y2)}"/>')
    for bar in tl.bars:
        href, fragment = link(bar.step_id)
        step = e(bar.step_id)
        out.append(
            f'<a href="{href}" hx-get="{fragment}" hx-target="#step-panel" hx-push-url="{href}" class="tl-a" '
            f'data-step="{step}"><rect class="tl-b out-{bar.outcome_class}" data-step="{step}" '
            f'data-attempt="{bar.attempt}" x="{_n(bar.x)}" y="{_n(bar.y)}" width="{_n(bar.w)}" '
            f'height="{BAR_HEIGHT}" rx="2"><title>{e(_title(bar))}</title></rect></a>')
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308  (every user text above is escaped)


@register.simple_tag
def timeline_overview(tl: Timeline) -> SafeString:
    """The whole run in a strip, the same bars squeezed, with the brush the operator drags."""
    oh = _n(tl.overview_bar_height)
    out = [f'<svg class="tl-overview" data-tl-overview viewBox="0 0 1000 {OVERVIEW_HEIGHT}" preserveAspectRatio="none" '
           f'height="{OVERVIEW_HEIGHT}" role="slider" tabindex="0" aria-label="Zoom: drag a range of the whole run; '
           f'arrow keys pan, + and − zoom, 0 resets" aria-valuemin="0" aria-valuemax="100" aria-valuenow="0" '
           f'aria-valuetext="whole run">']
    out += [f'<rect class="tl-ob out-{bar.outcome_class}" x="{_n(bar.x)}" y="{_n(bar.oy)}" width="{_n(bar.w)}" '
            f'height="{oh}"/>' for bar in tl.bars]
    out.append(f'<rect class="tl-brush" data-tl-brush x="0" y="0" width="1000" height="{OVERVIEW_HEIGHT}"/></svg>')
    return mark_safe("".join(out))  # noqa: S308  (no user text)
