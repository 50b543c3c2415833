"""The Schedules page: what is declared, when it fires next, how its last runs went; pause, resume, run now.

Reads ``workflow.schedules.schedule_views``; actions go through ``workflow.operator`` (POST,
CSRF, ``workflow.operate``, audited as events naming the user).
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from .. import operator
from ..schedules import schedule_views
from .common import operator_action, viewer


@viewer("workflow.view_schedule", "workflow.view_run")
def schedules(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    return render(request, "workflow/schedules.html", {"now": now, "schedules": schedule_views(now=now)})


def _back() -> HttpResponse:
    return HttpResponseRedirect(reverse("workflow:schedules"))


@operator_action
def pause_schedule(request: HttpRequest, key: str) -> HttpResponse:
    operator.pause_schedule(key, user=request.user)
    messages.success(request, f"Schedule {key} paused: it does not fire until it is resumed.")
    return _back()


@operator_action
def resume_schedule(request: HttpRequest, key: str) -> HttpResponse:
    operator.resume_schedule(key, user=request.user)
    messages.success(request, f"Schedule {key} resumed: it fires from its next tick; paused ticks are not caught up.")
    return _back()


@operator_action
def run_schedule_now(request: HttpRequest, key: str) -> HttpResponse:
    run_id = operator.run_schedule_now(key, user=request.user)
    messages.success(request, f"Schedule {key} started run {run_id}.")
    return _back()
