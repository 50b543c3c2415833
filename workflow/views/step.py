"""The step page and side panel, and retrying a failed step."""

from __future__ import annotations

import difflib
import re
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django_htmx.http import HttpResponseStopPolling

from .. import operator
from ..engine.values import StepState
from ..models import Step
from ..read import browse, steps
from .common import operator_action, render_fragment, viewer
from .run import refreshed_run, run_url

DIFF_LINES_MAX = 200
# Log lines open with their time; every line of two attempts would differ by it alone.
_LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?\s*")


def _log_lines(log: str) -> list[str]:
    return [_LOG_TIME.sub("", line) for line in log.splitlines()]


def attempt_history(leases: list[Any]) -> list[dict[str, Any]]:
    """Attempts newest first, each numbered in order made and compared with the one before it.

    The number is the attempt's place in the step's history (operator retries included), so two
    attempts never read the same; the engine's own counter is shown beside it when they differ.
    """
    rows: list[dict[str, Any]] = []
    previous = None
    for number, lease in enumerate(leases, start=1):
        diff: dict[str, Any] | None = None
        if previous is not None:
            lines = list(difflib.unified_diff(_log_lines(previous.log), _log_lines(lease.log),
                                              f"attempt {number - 1}", f"attempt {number}", lineterm="", n=1))
            diff = {
                "previous": number - 1,
                "error_changed": (previous.error_code, previous.error_message) != (lease.error_code, lease.error_message),
                "previous_error": (previous.error_code, previous.error_message),
                "log": [(line[:1] if line[:1] in "+-@" else " ", line) for line in lines[2:DIFF_LINES_MAX + 2]],
                "log_truncated": len(lines) > DIFF_LINES_MAX + 2,
                "worker_changed": previous.worker_id != lease.worker_id,
                "previous_worker": previous.worker_id,
            }
        rows.append({"lease": lease, "number": number, "diff": diff})
        previous = lease
    return rows[::-1]


def panel_context(step: Step, user: Any) -> dict[str, Any]:
    """The step panel; what the viewer's permissions do not cover is neither read nor shown."""
    detail = steps.step_detail(
        step,
        with_attempts=user.has_perm("workflow.view_lease"),
        with_events=user.has_perm("workflow.view_event"),
        with_records=user.has_perm("workflow.view_record"),
        with_artifacts=user.has_perm("workflow.view_artifact"),
    )
    history = attempt_history(detail.attempts)
    return {
        "attempt_rows": history,
        "current_attempt": history[0] if history else None,
        "step": step,
        "run": step.run,
        "detail": detail,
        "input_json": browse.pretty_json(step.input),
        "result_json": browse.pretty_json(step.result) if step.result is not None else "",
        "details_json": browse.pretty_json(detail.error_details) if detail.error_details is not None else "",
        "is_step_active": not StepState(step.state).is_terminal,
        "selected_step": step.step_id,
    }


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
