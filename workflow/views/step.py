"""The step page and side panel, and retrying a failed step."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.urls import reverse
from django_htmx.http import HttpResponseStopPolling

from .. import forms, operator
from ..engine.errors import InvalidInput
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
    context["edit_open"] = request.GET.get("edit") == "1"  # the panel's "Edit input and retry…" link opens the form
    if request.htmx and not request.htmx.boosted:
        response = render_fragment(request, "workflow/_step_panel.html", context)
        if request.GET.get("poll") and not (context["is_step_active"] and step.run.is_active):
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "workflow/step.html", context)


@operator_action
def retry_step_edit(request: HttpRequest, run_id: str, step_id: str) -> HttpResponse:
    """Retry a failed step with the input edited on its page; a bad input changes nothing (400, error beside it)."""
    step = _get_step(run_id, step_id)
    text = request.POST.get("input", "")
    error = ""
    try:
        value = forms.parse_json(text, label="The input")
    except forms.BadInput as exc:
        error = str(exc)
    else:
        try:
            operator.retry_step_with_input(run_id, step_id, value, user=request.user)
        except InvalidInput as exc:
            error = str(exc)
    if error:
        context = panel_context(step, request.user)
        context.update(as_page=True, edit_text=text, edit_error=error)
        return render(request, "workflow/step.html", context, status=400)
    messages.success(request, f"Step {step_id} will run again with the edited input; the original input is kept.")
    return HttpResponseRedirect(reverse("workflow:step", args=[run_id, step_id]))


@operator_action
def retry_step(request: HttpRequest, run_id: str, step_id: str) -> HttpResponse:
    operator.retry_step(run_id, step_id, user=request.user)
    messages.success(request, f"Step {step_id} will run again.")
    step = _get_step(run_id, step_id)
    if request.htmx:
        panel = render_to_string("workflow/_step_panel.html", panel_context(step, request.user), request)
        return refreshed_run(request, step.run, panel=panel)
    return HttpResponseRedirect(run_url(run_id, step=step_id))
