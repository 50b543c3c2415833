"""The throughput chart's geometry (an SVG drawn by the template)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from .throughput import Throughput


@dataclass(frozen=True, slots=True, kw_only=True)
class Chart:
    """Geometry for the throughput SVG; the template draws it (and escapes every text)."""

    width: int
    height: int
    plot_top: int
    plot_bottom: int
    plot_left: int
    plot_right: int
    bars: list[dict[str, Any]]
    gridlines: list[dict[str, Any]]
    ticks: list[dict[str, Any]]
    claim_points: str
    summary: str


def chart(data: Throughput, *, width: int = 1100, height: int = 190, compact: bool = False) -> Chart:
    """Stacked bars (succeeded below, failed above) per bucket, and a line of attempts started."""
    left = 6 if compact else 40
    right = width - (6 if compact else 10)
    top = 6 if compact else 10
    bottom = height - (4 if compact else 22)
    n = max(len(data.buckets), 1)
    peak = data.peak
    scale_max = _nice_ceiling(peak)
    slot = (right - left) / n
    gap = min(2.0, slot * 0.2)
    plot_h = bottom - top

    def y(value: float) -> float:
        return bottom - (value / scale_max) * plot_h if scale_max else bottom

    bars = []
    points = []
    for i, b in enumerate(data.buckets):
        x = left + i * slot + gap / 2
        w = max(slot - gap, 1.0)
        ok_top = y(b.succeeded)
        fail_top = y(b.succeeded + b.failed)
        stamp = timezone.localtime(b.start).strftime("%H:%M")
        bars.append({
            "x": round(x, 2), "w": round(w, 2),
            "ok_y": round(ok_top, 2), "ok_h": round(bottom - ok_top, 2),
            "fail_y": round(fail_top, 2), "fail_h": round(ok_top - fail_top, 2),
            "hit_y": top, "hit_h": plot_h,
            "title": f"{stamp}: {b.succeeded} succeeded, {b.failed} failed, {b.claimed} started"
                     + (f", {b.retried} retried" if b.retried else ""),
            "bucket": b,
        })
        points.append(f"{round(x + w / 2, 2)},{round(y(b.claimed), 2)}")
    gridlines = []
    if scale_max and not compact:
        for frac in (0, 0.5, 1):
            value = scale_max * frac
            gridlines.append({"y": round(y(value), 2), "label": _short_number(value)})
    ticks = []
    if not compact and data.buckets:
        every = max(1, math.ceil(n / 6))
        for i in range(0, n, every):
            ticks.append({"x": round(left + i * slot + slot / 2, 2),
                          "label": timezone.localtime(data.buckets[i].start).strftime("%H:%M")})
    summary = (f"Over the last {data.window.label}: {data.succeeded} steps succeeded and {data.failed} failed "
               f"({data.per_minute:.1f} per minute); {data.claimed} attempts started, {data.retried} retried.")
    return Chart(width=width, height=height, plot_top=top, plot_bottom=bottom, plot_left=left, plot_right=right,
                 bars=bars, gridlines=gridlines, ticks=ticks, claim_points=" ".join(points), summary=summary)


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 0
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * exp:
            return m * exp
    return 10 * exp


def _short_number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"
