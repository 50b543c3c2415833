"""The run page (header, graph, step table, timeline, events), its live fragments, and cancel."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django_htmx.http import HttpResponseStopPolling

from .. import operator
from ..forms import BadInput
from ..jsontext import JsonText
from ..models import Run, Step
from ..read import runs, steps
from ..read import timeline as read_timeline
from ..read.graph import EXPAND_PAGE, build_layout, format_expanded, parse_expanded, render_svg
from .common import current_params, operator_action, render_fragment, viewer
from .fragments import panel_context

GROUP_THRESHOLD = 200
STEPS_PER_PAGE = 100
FAILURES_SHOWN = 5
_EXPAND_KEY_MAX = 500  # a group key is "parent::kind"; longer values are not ours
_MARKER = re.compile(r'<a href="wf-step-(\d+)"')


def run_url(run_id: str, **params: str) -> str:
    url = reverse("workflow:run", args=[run_id])
    params = {k: v for k, v in params.items() if v}
    return f"{url}?{urlencode(params)}" if params else url


def step_url(run_id: str, step_id: str) -> str:
    return reverse("workflow:step", args=[run_id, step_id])


def graph_svg(run: Run, data: steps.GraphData, *, expanded: dict[str, int], selected: str | None) -> tuple[str, Any]:
    """The run's graph as SVG; step nodes open the step panel through htmx, groups expand by link.

    A selected step hidden in a collapsed group opens that group at the page holding it, so any
    step can be jumped to by id.
    """
    layout = build_layout(data.nodes, data.edges, group_threshold=GROUP_THRESHOLD, expanded=expanded)
    box = (layout.box_of or {}).get(selected or "")
    if selected and box is not None and box != selected:
        groups = layout.group_of or {}
        key = groups[selected]
        siblings = sorted(sid for sid, k in groups.items() if k == key)
        expanded = {**{k: v for k, v in expanded.items() if k != key}, key: siblings.index(selected) // EXPAND_PAGE}
        layout = build_layout(data.nodes, data.edges, group_threshold=GROUP_THRESHOLD, expanded=expanded)
    keep = ",".join(format_expanded(expanded))
    ids: list[str] = []

    def marker(step_id: str) -> str:
        ids.append(step_id)
        return f"wf-step-{len(ids) - 1}"

    def group_link(box_id: str) -> str:
        key, more, _ = box_id.rpartition("@more") if box_id.endswith("@more") else (box_id, "", "")
        opened = {k: v for k, v in expanded.items() if k != key}
        opened[key] = expanded.get(key, 0) + 1 if more else 0  # "more" shows the group's next page
        return run_url(run.id, expand=",".join(format_expanded(opened)))

    svg = render_svg(layout, step_url=marker, group_url=group_link, selected=selected)

    def link(match: re.Match[str]) -> str:
        sid = ids[int(match.group(1))]
        href = escape(run_url(run.id, step=sid, expand=keep))
        fragment = escape(step_url(run.id, sid))
        return f'<a href="{href}" hx-get="{fragment}" hx-target="#step-panel" hx-push-url="{href}"'

    # render_svg escapes every user-supplied text; the links we add are escaped here.
    return mark_safe(_MARKER.sub(link, svg)), layout  # noqa: S308


def expanded_groups(params: dict[str, str]) -> dict[str, int]:
    """The groups the operator opened, bounded in number and size whatever the URL holds."""
    values = [k for k in params.get("expand", "").split(",") if k and len(k) <= _EXPAND_KEY_MAX]
    return parse_expanded(values)


def failures(run: Run) -> dict[str, Any]:
    """The run's failed steps (first few, oldest failure first) for the failures-first banner."""
    failed = Step.objects.filter(run=run, state="failed").order_by()
    total = failed.count()
    if not total:
        return {"failed_total": 0, "failed_steps": []}
    rows = list(failed.annotate(error_code_text=JsonText("error", "code"))
                .order_by("finished_at", "step_id").values("step_id", "kind", "error_code_text")[:FAILURES_SHOWN])
    return {"failed_total": total, "failed_steps": rows}


def fingerprint(run: Run) -> str:
    """Changes whenever a step of the run changes: lets a poll skip redrawing an unchanged graph."""
    agg = Step.objects.filter(run=run).order_by().aggregate(n=Count("id"), last=Max("updated_at"))
    return f"{agg['n']}-{agg['last'].timestamp() if agg['last'] else 0}-{run.state}"


def step_table_context(run: Run, params: dict[str, str]) -> dict[str, Any]:
    sort = params.get("sort", "id")
    sort = sort if sort in steps.STEP_SORTS else "id"
    descending = params.get("dir") == "desc"
    page = steps.step_table(
        run, q=params.get("sq", ""), state=params.get("sstate", ""), kind=params.get("skind", ""), sort=sort,
        descending=descending, limit=STEPS_PER_PAGE, after=params.get("safter"), before=params.get("sbefore"),
    )
    filters = {k: params[k] for k in ("sq", "sstate", "skind") if params.get(k)}
    # The poll sends the filter form (hx-include), so its own URL keeps only the page position.
    poll = {k: params[k] for k in ("safter", "sbefore") if params.get(k)}
    base = reverse("workflow:run", args=[run.id])

    def link(**extra: str) -> dict[str, str]:
        query = {**filters, **{k: v for k, v in extra.items() if v}}
        return {"href": f"{base}?{urlencode(query)}#step-table",
                "hx": f"{base}?{urlencode({**query, 'fragment': 'steps'})}"}

    columns = []
    for key, label, numeric in (("id", "Step", False), ("kind", "Kind", False), ("state", "State", False),
                                ("attempts", "Attempts", True), ("queue", "Queue", False),
                                ("started", "Started", False), ("duration", "Duration", True)):
        col: dict[str, Any] = {"label": label, "numeric": numeric, "sortable": key in steps.STEP_SORTS}
        if col["sortable"]:
            active = sort == key
            # Duration opens longest first; other columns open ascending and flip on a second click.
            desc_next = (not descending) if active else key == "duration"
            col.update(link(sort=key, dir="desc" if desc_next else ""), active=active,
                       aria=("descending" if descending else "ascending") if active else "none",
                       arrow=("↓" if descending else "↑") if active else "")
        columns.append(col)
    sort_keep = {"sort": sort if sort != "id" else "", "dir": "desc" if descending else ""}
    return {
        "step_columns": columns,
        "step_prev": link(**sort_keep, sbefore=page.newer or "") if page.newer else None,
        "step_next": link(**sort_keep, safter=page.older or "") if page.older else None,
        "steps_poll_url": run_url(run.id, **poll, fragment="steps"),
        "blocked_pks": steps.blocked_among([s.pk for s in page.rows if s.state == "pending"]),
        "step_page": page,
        "step_sort": sort,
        "step_desc": descending,
        "step_q": params.get("sq", ""),
        "step_state": params.get("sstate", ""),
        "step_kind": params.get("skind", ""),
        "step_kinds": steps.step_kinds(run),
        "step_states": steps.STEP_STATES,
        "steps_capped": sort == "duration",
        "steps_url": reverse("workflow:run", args=[run.id]),
    }


def live_context(run: Run, params: dict[str, str], *, user: Any, with_graph: bool = True) -> dict[str, Any]:
    expanded = expanded_groups(params)
    progress = runs.progress_for([run.id])[run.id]
    context: dict[str, Any] = {
        "run": run,
        "progress": progress,
        "expanded": ",".join(format_expanded(expanded)),
        **failures(run),
        "fingerprint": fingerprint(run),
        "timeline": read_timeline.timeline(run) if user.has_perm("workflow.view_lease") else read_timeline.Timeline.empty(),
        "events": steps.run_events(run) if user.has_perm("workflow.view_event") else [],
        "with_graph": with_graph,
        "expand_page": EXPAND_PAGE,
    }
    if with_graph:
        data = steps.graph_data(run)
        selected = params.get("step") or None
        svg, layout = graph_svg(run, data, expanded=expanded, selected=selected)
        # The graph opens on the selected step, else on the first failure (failures first).
        focus = selected or next((f["step_id"] for f in context["failed_steps"]), None)
        context.update(graph=svg, layout=layout, blocked_count=sum(1 for n in data.nodes if n.blocked),
                       graph_focus=(layout.box_of or {}).get(focus or "", ""))
    return context


@viewer("workflow.view_run", "workflow.view_step")
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    run = get_object_or_404(Run, pk=run_id)
    params = {k: request.GET.get(k, "") for k in request.GET}
    fragment = params.get("fragment")
    if request.htmx and fragment == "live":
        fp = fingerprint(run)
        context = live_context(run, params, user=request.user, with_graph=params.get("v") != fp)
        context["live_url"] = _live_url(run, params)
        response = render_fragment(request, "workflow/_run_live_response.html", context)
        return _stop_if_done(run, response)
    if request.htmx and fragment == "steps":
        context = {"run": run, "rows_only": True, **step_table_context(run, params)}
        response = render_fragment(request, "workflow/_step_table.html", context)
        return _stop_if_done(run, response)
    context = live_context(run, params, user=request.user)
    context.update(step_table_context(run, params))
    context["live_url"] = _live_url(run, params)
    selected = params.get("step")
    if selected:

        step = Step.objects.filter(run=run, step_id=selected).select_related("run").first()
        if step is not None:
            context.update(panel_context(step, request.user))
    return render(request, "workflow/run.html", context)


def _live_url(run: Run, params: dict[str, str]) -> str:
    keep = {k: params[k] for k in ("step",) if params.get(k)}
    expand = ",".join(format_expanded(expanded_groups(params)))  # bounded, whatever the URL held
    return run_url(run.id, fragment="live", expand=expand, **keep)


def _stop_if_done(run: Run, response: HttpResponse) -> HttpResponse:
    if not run.is_active:
        response.status_code = HttpResponseStopPolling.status_code
    return response


@operator_action
def cancel_run(request: HttpRequest, run_id: str) -> HttpResponse:
    canceled = operator.cancel_run(run_id, user=request.user)
    messages.success(request, f"Run {run_id} canceled ({canceled} unfinished steps canceled).")
    run = get_object_or_404(Run, pk=run_id)
    if request.htmx:
        panel = ""
        step = Step.objects.filter(run=run, step_id=request.POST.get("step", "")).select_related("run").first()
        if step is not None:

            panel = render_to_string("workflow/_step_panel.html", panel_context(step, request.user), request)
        return refreshed_run(request, run, panel=panel)
    return HttpResponseRedirect(run_url(run.id))


def refreshed_run(request: HttpRequest, run: Run, *, panel: str = "") -> HttpResponse:
    """After an action: the step panel (if any) plus the run's live regions, out of band."""
    params = current_params(request)
    context = live_context(run, params, user=request.user)
    context["live_url"] = _live_url(run, params)
    context["oob"] = True
    try:
        table_context = step_table_context(run, params)
    except BadInput:  # the page's own URL held a stale cursor: the action is done, show the first page
        table_context = step_table_context(run, {k: v for k, v in params.items() if k not in ("safter", "sbefore")})
    table = {"run": run, "oob": True, "rows_only": True, **table_context}
    html = panel
    html += render_to_string("workflow/_run_live_response.html", context, request)
    html += render_to_string("workflow/_step_table.html", table, request)
    html += render_to_string("workflow/_messages_oob.html", {}, request)  # once: messages iterate per render
    return HttpResponse(html)
