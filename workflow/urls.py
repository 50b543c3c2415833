"""Every dashboard page, for a site to mount anywhere: ``path("workflows/", include("workflow.urls"))``.

Two namespaces, as the pages are named today: ``workflow:`` (overview, runs, steps, login) and
``consoles:`` (the operator consoles, under ``ops/``). Each view gets ``request.htmx`` whether or
not the site runs django-htmx's middleware.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.urls import URLPattern, include, path, register_converter

from . import views
from .views import auth, bulk, consoles, consoles_start, schedules


class IdConverter:
    """Ids and names may hold any printable character: "~" escapes "/" (~2F) and "~" (~7E).

    A segment of dots only ("." or "..") is escaped as ~2E per dot: browsers and proxies fold
    those path segments away, so the link would open the parent page. NUL never matches.
    """

    regex = r"[^/\x00]+"
    _unescape = re.compile(r"~(7E|2F|2E)")
    _chars = {"7E": "~", "2F": "/", "2E": "."}

    def to_python(self, value: str) -> str:
        return self._unescape.sub(lambda m: self._chars[m.group(1)], value)

    def to_url(self, value: str) -> str:
        text = str(value)
        if text and text.strip(".") == "":
            return "~2E" * len(text)
        return text.replace("~", "~7E").replace("/", "~2F")


register_converter(IdConverter, "wfid")


def page(route: str, view: Callable[..., Any], name: str) -> URLPattern:
    return path(route, auth.with_htmx_details(view), name=name)


dashboard_patterns = [
    page("", consoles.overview, "overview"),  # the one overview; ops/ serves it too
    page("runs/", views.runs, "runs"),
    page("bulk/runs/", views.runs_bulk, "runs_bulk"),
    page("runs/<wfid:run_id>/", views.run_detail, "run"),
    page("runs/<wfid:run_id>/cancel/", views.cancel_run, "cancel_run"),
    page("runs/<wfid:run_id>/results/", views.results, "results"),
    page("runs/<wfid:run_id>/artifacts/", views.artifacts, "artifacts"),
    page("runs/<wfid:run_id>/steps/<wfid:step_id>/", views.step_detail, "step"),
    page("runs/<wfid:run_id>/steps/<wfid:step_id>/retry/", views.retry_step, "retry_step"),
    page("runs/<wfid:run_id>/steps/<wfid:step_id>/edit-and-retry/", views.retry_step_edit, "retry_step_edit"),
    page("artifacts/<wfid:artifact_id>/download/", views.download_artifact, "download_artifact"),
    page("records/", views.records, "records"),
    page("search/", views.search, "search"),
    page("schedules/", schedules.schedules, "schedules"),
    page("schedules/<str:key>/pause/", schedules.pause_schedule, "pause_schedule"),
    page("schedules/<str:key>/resume/", schedules.resume_schedule, "resume_schedule"),
    page("schedules/<str:key>/run/", schedules.run_schedule_now, "run_schedule_now"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
]

console_patterns = [
    page("", consoles.overview, "overview"),
    page("steps/", consoles.steps, "steps"),
    page("steps/retry/", bulk.retry_preview, "steps_retry"),
    page("steps/retry/confirm/", bulk.retry_confirm, "steps_retry_confirm"),
    page("queues/", consoles.queues, "queues"),
    page("queues/<wfid:name>/pause/", consoles.pause_queue, "pause_queue"),
    page("queues/<wfid:name>/resume/", consoles.resume_queue, "resume_queue"),
    page("events/", consoles.events, "events"),
    page("packages/", consoles_start.packages, "packages"),
    page("packages/<str:name>/start/", consoles_start.start_run, "start_run"),
    page("submissions/", consoles_start.submissions, "submissions"),
    page("engine/", consoles.engine, "engine"),
]

urlpatterns = [
    path("ops/", include((console_patterns, "consoles"))),
    path("", include((dashboard_patterns, "workflow"))),
]
