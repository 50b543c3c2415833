"""Operator consoles: the engine overview, failing steps, queue monitor, events and engine status.

Thin views over ``workflow.metrics`` (aggregates) and ``workflow.operator`` (pause and resume).
Every page is login-only with view permissions; actions are POST, CSRF-checked, need
``workflow.operate`` and are audited by the operator service.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.db import connections
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from .. import forms, operator
from ..models import Artifact, Dependency, Event, Lease, Queue, Record, Run, Step, Worker
from ..read import charts, engine_status, event_rows, pages, throughput
from ..read import events as event_reads
from ..read import queues as read_queues
from ..read import steps as read_steps
from .common import operator_action, render_fragment, viewer

EVENTS_PER_PAGE = 100
STEPS_PER_PAGE = 50
EVENT_KINDS = forms.EVENT_KINDS
EVENT_RANGES = forms.EVENT_RANGES
OVERVIEW_PERMS = ("workflow.view_run", "workflow.view_step", "workflow.view_queue", "workflow.view_worker",
                  "workflow.view_lease")
QUEUE_PERMS = ("workflow.view_queue", "workflow.view_step", "workflow.view_worker")


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


# -- overview ------------------------------------------------------------------------------------
def overview_context(request: HttpRequest) -> dict[str, Any]:
    now = timezone.now()
    win = throughput.window(request.GET.get("window"))
    series = throughput.throughput(win, now=now)[None]
    run_counts = throughput.run_state_counts()
    queues = read_queues.queue_figures(now=now)
    return {
        "now": now,
        "win": win,
        "windows": throughput.WINDOWS.values(),
        "chart": charts.chart(series),
        "series": series,
        "run_counts": run_counts,
        "run_total": sum(n for n, _ in run_counts.values()),
        "run_total_capped": any(capped for _, capped in run_counts.values()),
        "step_counts": throughput.step_state_counts(since=timedelta(hours=24), now=now),
        "claimed_awaiting": throughput.claimed_awaiting_thread(),
        "failures": throughput.failure_groups(now=now),
        "leases": engine_status.lease_counts(now=now),
        "workers": engine_status.workers(now=now, limit=20),
        "queues": queues,
        "stalled": [q for q in queues if q.is_stalled],
    }


@viewer(*OVERVIEW_PERMS)
def overview(request: HttpRequest) -> HttpResponse:
    context = overview_context(request)
    if request.htmx and request.GET.get("fragment") == "live":
        return _no_store(render_fragment(request, "workflow/consoles/_overview_body.html", context))
    return render(request, "workflow/consoles/overview.html", context)


# -- steps across runs (failing steps by code, steps by state, a queue's steps) ---------------------
StepFilters = forms.StepFilters  # the filters live in forms.py, shared with the API


@viewer("workflow.view_run", "workflow.view_step")
def steps(request: HttpRequest) -> HttpResponse:
    filters = StepFilters.from_params(request.GET)
    now = timezone.now()
    qs = filters.apply(
        Step.objects.only("id", "run_id", "step_id", "kind", "queue", "site", "state", "attempt", "max_attempts",
                          "error", "available_at", "finished_at", "updated_at", "lease_owner"),
        now,
    )
    if filters.is_terminal and filters.since:
        page = pages.keyset_page(qs, fields=("finished_at", "id"), descending=True, limit=STEPS_PER_PAGE,
                                   after=request.GET.get("after"), before=request.GET.get("before"))
    else:
        page = pages.keyset_page(qs, fields=("id",), descending=True, limit=STEPS_PER_PAGE,
                                   after=request.GET.get("after"), before=request.GET.get("before"))
    from urllib.parse import urlencode

    return render(request, "workflow/consoles/steps.html", {
        "retry_url": f"{reverse('consoles:steps_retry')}?{urlencode(filters.query)}",
        "filters": filters, "page": page, "states": read_steps.STEP_STATES, "since_choices": throughput.SINCE_CHOICES,
        "queue_names": sorted(Queue.objects.values_list("name", flat=True)[:200]),
    })


# -- queue monitor ---------------------------------------------------------------------------------
def queues_context(request: HttpRequest, params: dict[str, str] | None = None) -> dict[str, Any]:
    params = params if params is not None else {k: request.GET.get(k, "") for k in request.GET}
    now = timezone.now()
    win = throughput.window(params.get("window"))
    figures = read_queues.queue_figures(now=now)
    series = throughput.throughput(win, now=now, queues=[f.name for f in figures])
    cards = [{"q": f, "chart": charts.chart(series[f.name], width=360, height=60, compact=True),
              "series": series[f.name]} for f in figures]
    return {"now": now, "win": win, "windows": throughput.WINDOWS.values(), "cards": cards,
            "live_workers": engine_status.live_workers(now=now), "poll_url": _queues_url(win.key, fragment="live")}


def _queues_url(window_key: str, **extra: str) -> str:
    from urllib.parse import urlencode

    params = {"window": window_key, **extra}
    return f"{reverse('consoles:queues')}?{urlencode(params)}"


@viewer(*QUEUE_PERMS)
def queues(request: HttpRequest) -> HttpResponse:
    context = queues_context(request)
    if request.htmx and request.GET.get("fragment") == "live":
        return _no_store(render_fragment(request, "workflow/consoles/_queues_body.html", context))
    return render(request, "workflow/consoles/queues.html", context)


def _after_queue_action(request: HttpRequest) -> HttpResponse:
    if request.htmx:
        from .common import current_params

        context = queues_context(request, current_params(request))
        return render_fragment(request, "workflow/consoles/_queues_body.html", context)
    return HttpResponseRedirect(reverse("consoles:queues"))


@operator_action
def pause_queue(request: HttpRequest, name: str) -> HttpResponse:
    forms.check_text(name, label="The queue name", max_length=forms.column_length(Queue, "name"))
    operator.pause_queue(name, user=request.user)
    messages.success(request, f"Queue {name} paused: workers claim nothing from it until it is resumed.")
    return _after_queue_action(request)


@operator_action
def resume_queue(request: HttpRequest, name: str) -> HttpResponse:
    forms.check_text(name, label="The queue name", max_length=forms.column_length(Queue, "name"))
    operator.resume_queue(name, user=request.user)
    messages.success(request, f"Queue {name} resumed.")
    return _after_queue_action(request)


# -- events ----------------------------------------------------------------------------------------
@viewer("workflow.view_event")
def events(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    filters = forms.EventFilters.from_params(request.GET, now)  # parsed in forms.py, shared with the API
    qs, fields, directions, as_events = event_reads.console_source(filters)  # claims and successes: attempt rows
    if request.htmx and request.GET.get("fragment") == "new":
        # Live tail: rows newer than the newest one the page shows, newest first.
        try:
            newer_than = int(request.GET.get("newer_than", "")[:20])
        except ValueError:
            return HttpResponse(status=204)
        if not 0 <= newer_than < 2**63:
            return HttpResponse(status=204)
        rows = as_events(list(qs.filter(id__gt=newer_than).order_by("-id")[:EVENTS_PER_PAGE]))
        if not rows:
            return HttpResponse(status=204)
        return render_fragment(request, "workflow/consoles/_event_rows.html",
                               {"groups": event_rows.grouped(event_rows.event_rows(rows)), "fresh": True})
    page = pages.keyset_page(qs, fields=fields, descending=directions, limit=EVENTS_PER_PAGE,
                             after=request.GET.get("after"), before=request.GET.get("before"))
    page.rows = as_events(page.rows)
    # Live means the newest events on top: only the default order, on its first page.
    is_live = (not request.GET.get("after") and not request.GET.get("before") and filters.until_at is None
               and not filters.sort)
    from urllib.parse import urlencode

    base_pairs = [(k, v) for k, v in filters.query_pairs if k != "sort"]
    return render(request, "workflow/consoles/events.html", {
        "filters": filters, "page": page, "groups": event_rows.grouped(event_rows.event_rows(page.rows)),
        "events": page.rows, "kinds": sorted(set(EVENT_KINDS) | set(filters.kind)), "is_live": is_live,
        "severities": Event.Severity.values, "ranges": EVENT_RANGES,
        "more_count": sum(1 for n in ("queue", "worker", "since", "until") if getattr(filters, n)),
        "more_open": bool({"queue", "worker", "since", "until"} & set(filters.field_errors)),
        "sort_urls": {name: f"?{urlencode([*base_pairs, *([('sort', name)] if name != 'newest' else [])])}"
                      for name in forms.EVENT_SORTS},
        "live_url": f"{reverse('consoles:events')}?{urlencode([(k, v) for k, v in base_pairs if k != 'until'])}",
        "baseline_id": page.rows[0].id if page.rows else (qs.order_by("-id").values_list("id", flat=True).first() or 0),
        "poll_url": f"{reverse('consoles:events')}?{urlencode([*filters.query_pairs, ('fragment', 'new')])}",
    })


# -- engine status -----------------------------------------------------------------------------------
def _setting_rows(config: Any) -> list[tuple[str, str]]:
    rows = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "queues":
            value = ", ".join(sorted(value)) or "none configured"
        elif isinstance(value, timedelta):
            value = f"{value.total_seconds():g} s"
        elif value in ("", None):
            value = "(default)"
        rows.append((f.name, str(value)))
    rows.append(("effective_heartbeat", f"{config.effective_heartbeat.total_seconds():g} s"))
    return rows


def _database_facts(using: str = "default") -> dict[str, Any]:
    import os

    connection = connections[using]
    db = settings.DATABASES[using]
    facts: dict[str, Any] = {"vendor": connection.vendor, "engine": db["ENGINE"], "name": str(db.get("NAME", "")),
                             "host": db.get("HOST") or "", "size": None, "version": ""}
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT sqlite_version()")
            facts["version"] = f"SQLite {cursor.fetchone()[0]}"
            cursor.execute("PRAGMA journal_mode")
            facts["journal_mode"] = cursor.fetchone()[0]
            try:
                facts["size"] = os.path.getsize(facts["name"])
            except (OSError, TypeError):
                facts["size"] = None
        elif connection.vendor == "postgresql":
            cursor.execute("SELECT version(), pg_database_size(current_database())")
            version, size = cursor.fetchone()
            facts["version"] = version.split(",")[0]
            facts["size"] = size
    return facts


def _migrations(using: str = "default") -> dict[str, Any]:
    applied = MigrationRecorder(connections[using]).applied_migrations()
    by_app: dict[str, list[str]] = {}
    for app, name in applied:
        by_app.setdefault(app, []).append(name)
    apps = [{"app": app, "count": len(names), "latest": sorted(names)[-1]} for app, names in sorted(by_app.items())]
    return {"total": len(applied), "apps": apps, "workflow": sorted(by_app.get("workflow", []))}


@viewer(*OVERVIEW_PERMS)
def engine(request: HttpRequest) -> HttpResponse:
    from ..conf import build_config, workflow_settings

    now = timezone.now()
    config = build_config()
    using = workflow_settings().get("DATABASE", "default")
    return render(request, "workflow/consoles/engine.html", {
        "now": now,
        "db": _database_facts(using),
        "migrations": _migrations(using),
        "counts": engine_status.row_counts([Run, Step, Dependency, Lease, Event, Artifact, Record, Queue, Worker],
                                     using=using),
        "leases": engine_status.lease_counts(now=now),
        "open_leases": Lease.objects.live().count(),
        "queue_rows": Queue.objects.all()[:200],
        "configured_queues": sorted(config.queues.items()),
        "workers": engine_status.workers(now=now, seen_within=timedelta(days=1), limit=50),
        "settings_rows": _setting_rows(config),
        "liveness": engine_status.liveness_window(),
        "expired_steps": list(Step.objects.expired_leases(now).only("id", "run_id", "step_id", "lease_owner",
                                                                     "lease_expires_at").order_by("lease_expires_at")[:10]),
        "recent_ops": list(Event.objects.filter(~Q(actor=""), kind__in=["queue_paused", "queue_resumed"])
                           .order_by("-id")[:5]),
    })
