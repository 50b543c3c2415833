"""The overview and the runs list, with bulk cancel and bulk retry-failed."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import HttpResponseClientRefresh

from .. import operator
from ..engine.registry import registry
from ..read import pages
from ..read import runs as read_runs
from .common import operator_action, render_fragment, viewer

RUNS_PER_PAGE = 50
MAX_BULK = 500


@viewer("workflow.view_run")
def runs(request: HttpRequest) -> HttpResponse:
    filters = read_runs.RunFilters.from_params(request.GET)
    # A live poll from an operator who scrolled, filtered or paged keeps the rows in place ("pin")
    # and announces newer runs in a bar instead of pushing the rows down.
    pinned = read_runs.runs_pinned(filters, request.GET.get("pin"), limit=RUNS_PER_PAGE) if request.htmx else None
    if pinned is not None:
        page, new_runs = pinned
    else:
        page = read_runs.runs_page(
            filters, limit=RUNS_PER_PAGE, after=request.GET.get("after"), before=request.GET.get("before")
        )
        new_runs = 0
    progress = read_runs.progress_for(run.id for run in page.rows)
    rows = [(run, progress[run.id]) for run in page.rows]
    any_active = any(run.is_active for run in page.rows)
    package_names = sorted({p.name for p in registry.packages()} | ({filters.package} - {""}))
    context = {
        "filters": filters,
        "page": page,
        "rows": rows,
        "any_active": any_active,
        "packages": package_names,
        "states": read_runs.RUN_STATES,
        "poll_url": _poll_url(request),
        "new_runs": new_runs,
        "new_runs_capped": new_runs > read_runs.NEW_RUNS_CAP,
        "top_cursor": pages.encode_cursor(page.rows[0].created_at, page.rows[0].id) if page.rows else "",
        "is_pinned_view": filters.is_filtered or bool(request.GET.get("after") or request.GET.get("before")),
        "fresh_url": _fresh_url(request),
    }
    if request.htmx and request.htmx.target == "runs-table":
        # The list keeps refreshing when nothing on it is active: new runs must still appear.
        return render_fragment(request, "workflow/_runs_table.html", context)
    return render(request, "workflow/runs.html", context)


def _poll_url(request: HttpRequest) -> str:
    """This page's URL without a previous poll's pin (the poll adds the current one)."""
    params = request.GET.copy()
    params.pop("pin", None)
    return f"{request.path}?{params.urlencode()}" if params else request.path


def _fresh_url(request: HttpRequest) -> str:
    """The first page of the same filters: where "show new runs" leads."""
    params = request.GET.copy()
    for key in ("pin", "after", "before"):
        params.pop(key, None)
    return f"{request.path}?{params.urlencode()}" if params else request.path


@operator_action
def runs_bulk(request: HttpRequest) -> HttpResponse:
    """Cancel, or retry the failed steps of, the selected runs; report counts as a message."""
    action = request.POST.get("action", "")
    run_ids = [rid for rid in request.POST.getlist("run") if rid][:MAX_BULK]
    if action not in {"cancel", "retry_failed"}:
        messages.error(request, "Unknown bulk action.")
    elif not run_ids:
        messages.warning(request, "Select at least one run first.")
    elif action == "cancel":
        result = operator.cancel_runs(run_ids, user=request.user)
        _report(request, f"Canceled {result.done} of {len(run_ids)} selected runs", result)
    else:
        result = operator.retry_failed_in_runs(run_ids, user=request.user)
        _report(request, f"Retried {result.done} failed steps in {len(run_ids)} selected runs", result)
    if request.htmx:
        return HttpResponseClientRefresh()
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = reverse("workflow:runs")
    return HttpResponseRedirect(back)


def _report(request: HttpRequest, text: str, result: operator.BulkResult) -> None:
    if result.skipped:
        reasons = "; ".join(result.skipped[:3]) + ("; …" if len(result.skipped) > 3 else "")
        messages.warning(request, f"{text}; {len(result.skipped)} skipped ({reasons}).")
    elif result.done:
        messages.success(request, f"{text}.")
    else:
        messages.info(request, f"{text}: nothing to do.")
