"""The step page and side panel, and retrying a failed step."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django_htmx.http import HttpResponseStopPolling

from .. import operator
from ..models import Step
from .common import operator_action, render_fragment, viewer
from .fragments import panel_context
from .run import refreshed_run, run_url


def _get_step(run_id: str, step_id: str) -> Step:
    return get_object_or_404(Step.objects.select_related("run"), run_id=run_id, step_id=step_id)


@viewer("workflow.view_run", "workflow.view_step")
def step_detail(request: HttpRequest, run_id: str, step_id: str) -> HttpResponse:
    step = _get_step(run_id, step_id)
    context = panel_context(step, request.user)
    context["as_page"] = request.GET.get("as_page") == "1"  # the step page's own poll: no link to itself
    if request.htmx and not request.htmx.boosted:
        response = render_fragment(request, "workflow/_step_panel.html", context)
        if request.GET.get("poll") and not (context["is_step_active"] and step.run.is_active):
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "workflow/step.html", context)


@operator_action
def retry_step(request: HttpRequest, run_id: str, step_id: str) -> HttpResponse:
    operator.retry_step(run_id, step_id, user=request.user)
    messages.success(request, f"Step {step_id} will run again.")
    step = _get_step(run_id, step_id)
    if request.htmx:
        panel = render_to_string("workflow/_step_panel.html", panel_context(step, request.user), request)
        return refreshed_run(request, step.run, panel=panel)
    return HttpResponseRedirect(run_url(run_id, step=step_id))
