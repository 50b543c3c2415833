"""One search box for the whole dashboard: a run id or name, a step id, an error code."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from ..engine.values import ACTIVE_RUN_STATES
from ..models import Run, Step
from ..read import runs as read_runs
from .common import viewer
from .run import run_url

QUERY_MAX = 300
SHOWN = 10
# Step ids have no index of their own: they are looked up among active runs and the last day's
# finished steps (both indexed), which is where an operator's step id comes from.
RECENT = timedelta(days=1)


@viewer("workflow.view_run")
def search(request: HttpRequest) -> HttpResponse:
    """Go straight to the one thing a query names; otherwise list what matched, by kind."""
    q = request.GET.get("q", "").strip()[:QUERY_MAX]
    if not q:
        return HttpResponseRedirect(reverse("workflow:runs"))
    exact = Run.objects.filter(pk=q).only("id").first()
    if exact is not None:
        return HttpResponseRedirect(run_url(exact.id))
    runs = read_runs.runs_page(read_runs.RunFilters(q=q), limit=SHOWN).rows
    steps: list[Any] = []
    code_count = 0
    if request.user.has_perm("workflow.view_step"):
        since = timezone.now() - RECENT
        active = Run.objects.filter(state__in=ACTIVE_RUN_STATES).values("id")
        recent = Step.objects.filter(step_id=q).filter(run_id__in=active) | Step.objects.filter(
            step_id=q, finished_at__gte=since)
        steps = list(recent.select_related("run").only("step_id", "state", "run__id", "run__name")
                     .order_by("-id")[:SHOWN])
        code_count = Step.objects.filter(state="failed", finished_at__gte=since, error__code=q).count()
    found = len(runs) + len(steps) + (1 if code_count else 0)
    if found == 1:
        if runs:
            return HttpResponseRedirect(run_url(runs[0].id))
        if steps:
            return HttpResponseRedirect(run_url(steps[0].run_id, step=steps[0].step_id))
        return HttpResponseRedirect(_code_url(q))
    context = {"q": q, "runs": runs, "steps": steps, "code_count": code_count, "code_url": _code_url(q),
               "runs_url": f"{reverse('workflow:runs')}?{urlencode({'q': q})}", "shown": SHOWN}
    return render(request, "workflow/search.html", context)


def _code_url(code: str) -> str:
    return f"{reverse('consoles:steps')}?{urlencode({'state': 'failed', 'code': code, 'since': '24h'})}"
